"""SupAP's step H^- as a scalar loop-free formula, the oracle of the roadmap and happier tests (ROADMAP Eq. 4).

Defaults are those of :class:`common.ranking.SupAPStep` (the paper configs): tau 0.01, rho 100, delta 0.05,
start 0.5, offset 1.44, the current linear branch; ``offset=None`` is the continuous variant.
"""

from __future__ import annotations

import math


def sig(z: float) -> float:
    """sigma(z) with z clamped to [-50, 50], as the original ``tau_sigmoid``."""
    z = max(-50.0, min(50.0, z))
    return 1.0 / (1.0 + math.exp(-z))


def h_minus(x: float, tau=0.01, rho=100.0, delta=0.05, start=0.5, offset=1.44, linear_mode="x_minus_delta") -> float:
    if offset is None:
        offset = sig(delta / tau) + start
    if x <= 0:
        return sig(x / tau)
    if x <= delta:
        return start + sig(x / tau)
    return rho * (x - delta) + offset if linear_mode == "x_minus_delta" else rho * x + offset
