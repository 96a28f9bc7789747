"""Which precision the candidate pass scores in: what the hardware offers, measured once per process.

The candidate pass (:mod:`common.metrics.retrieval_candidates`) scores every (query, gallery) pair with one matmul in
a low precision, then rescores in float64 the few pairs whose order the error bound leaves open. Its result is the
float64 ranking whatever the precision, so the precision is a pure speed choice, and the right one depends on the
machine: bfloat16 is 2-3x faster than float32 on CPUs with AVX-512 BF16 or AMX, but about 100x slower on AVX2-only
CPUs, where torch has no bf16 kernel and falls back to a scalar loop (float16 likewise).

:func:`candidate_precision` therefore times a small matmul in each precision the device may offer (CPU: float32,
bfloat16 and float16, all through ``torch.mm``, on one thread and by that thread's CPU time, so that other processes
on the cores do not bend the comparison; CUDA: float32, TF32, bfloat16, float16, by wall time), drops those clearly
slower than float32 after a tiny first round (a slow path costs milliseconds, not seconds), times the rest on a
larger product and keeps the fastest. int8 (``torch._int_mm``, int32 accumulation) is probed and reported beside
them but is not a candidate-pass precision: a unit vector quantised to 127 steps of its largest entry carries an
input error up to ``sqrt(d) max|x_i| / 254`` (about 1e-2 at d = 512, several times bf16's ``2^-9``), a window that
would send far more pairs to float64 rescoring. A lower precision widens the error window, so it must be at least
:data:`LOW_PRECISION_MARGIN` times faster than float32 to be chosen, and among precisions within 15% of the fastest
the tighter one wins. The choice is cached per device for the life of the process and logged once at debug level.
:func:`choose_precision` holds the rule alone (tested with injected timings).

Error model of each precision (:class:`Precision`), used by the candidate pass's bound: inputs are rounded to the
matmul's input format (per-vector error measured exactly, except TF32 whose rounding mode is not exposed: the
worst case ``2^-10 |x|`` is used), products are exact in the float32 accumulator, the accumulation adds at most
``gamma_d = d u_acc / (1 - d u_acc)`` times ``|x^| |y^|`` (any summation order), and the output is rounded to the
output format (``u_out |b|`` plus half its subnormal spacing). Tensor cores truncate while aligning the products
they sum together, so ``u_acc`` is taken four times float32's on CUDA for the low precisions.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from common.metrics.retrieval_engine import torch_threads

log = logging.getLogger(__name__)

__all__ = ["Precision", "PrecisionChoice", "PRECISIONS", "candidate_precision", "choose_precision", "precision_by_name"]

LOW_PRECISION_MARGIN = 1.25  # a wider error window is worth it only when the matmul is this much faster
_CLOSE = 1.15  # precisions within this factor of the fastest count as equally fast; the tightest of them wins
_TINY = (32, 256, 256)  # first round (m, n, d): about 4 MFLOP, about 10 ms on a 0.3 GFLOP/s scalar fallback
_CPU_PROBE = (256, 2048, 256)  # second round: about 270 MFLOP, a few ms per product on one core
_CUDA_PROBE = (2048, 4096, 512)


@dataclass(frozen=True)
class Precision:
    """A matmul precision and its error model (see the module docstring)."""

    name: str  # "fp32", "tf32", "bf16", "fp16", "fp64"
    dtype: torch.dtype  # dtype of the matmul's inputs and output (tf32: float32 inputs, TF32 math)
    u_acc: float  # unit roundoff of the accumulation
    u_out: float  # unit roundoff of the output rounding (0: the output is the accumulator)
    abs_out: float  # absolute error of the output rounding near zero (half the subnormal spacing)
    input_bound: float  # 0: input rounding measured per vector; else the worst case |x^ - x| <= input_bound |x|
    tightness: int  # rank of the error window, smaller is tighter (for ties on speed)

    def round_inputs(self, x: Tensor) -> Tensor:
        """``x`` rounded to the matmul's input format (TF32: left in float32, rounded inside the matmul)."""
        return x.to(self.dtype)


_F32 = 2.0**-24
PRECISIONS: dict[str, Precision] = {
    "fp64": Precision("fp64", torch.float64, 2.0**-53, 0.0, 0.0, 0.0, 0),
    "fp32": Precision("fp32", torch.float32, _F32, 0.0, 0.0, 0.0, 1),
    "fp16": Precision("fp16", torch.float16, _F32, 2.0**-11, 2.0**-25, 0.0, 2),
    "tf32": Precision("tf32", torch.float32, _F32, 0.0, 0.0, 2.0**-10, 3),
    "bf16": Precision("bf16", torch.bfloat16, _F32, 2.0**-8, 2.0**-134, 0.0, 4),
}
_TENSOR_CORE = ("tf32", "bf16", "fp16")


def precision_by_name(name: str, device: torch.device) -> Precision:
    """The :class:`Precision` ``name`` as it behaves on ``device`` (CUDA tensor cores: a looser ``u_acc``)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose from {sorted(PRECISIONS)}")
    if name == "tf32" and device.type != "cuda":
        raise ValueError("tf32 is a CUDA precision; on CPU use 'fp32', 'bf16' or 'fp16'")
    p = PRECISIONS[name]
    if device.type == "cuda" and name in _TENSOR_CORE:
        p = Precision(p.name, p.dtype, 4.0 * p.u_acc, p.u_out, p.abs_out, p.input_bound, p.tightness)
    return p


class exact_matmul_mode:
    """Context for matmuls whose error the bound accounts for: float32 matmuls in IEEE float32 (or TF32 when
    ``tf32``), whatever ``torch.set_float32_matmul_precision`` says (on CPU "medium" would let oneDNN use bf16),
    and on CUDA no reduced-precision (bf16/fp16) split-K reductions. Restores the previous settings."""

    def __init__(self, tf32: bool = False) -> None:
        self.tf32 = tf32

    def __enter__(self) -> None:
        m = torch.backends.cuda.matmul
        self.saved = (
            torch.get_float32_matmul_precision(),
            m.allow_bf16_reduced_precision_reduction,
            m.allow_fp16_reduced_precision_reduction,
        )
        torch.set_float32_matmul_precision("high" if self.tf32 else "highest")
        m.allow_bf16_reduced_precision_reduction = False
        m.allow_fp16_reduced_precision_reduction = False

    def __exit__(self, *exc) -> None:
        m = torch.backends.cuda.matmul
        torch.set_float32_matmul_precision(self.saved[0])
        m.allow_bf16_reduced_precision_reduction, m.allow_fp16_reduced_precision_reduction = self.saved[1:]


def lp_matmul(p: Precision, q: Tensor, g: Tensor, out: Tensor | None = None) -> Tensor:
    """``q @ g.T`` in precision ``p`` (``q [C, D]``, ``g [B, D]`` already in ``p.dtype``), under
    :class:`exact_matmul_mode`. Always ``torch.mm``: on CPU, numpy's BLAS threads would spin against torch's
    OpenMP threads between the calls (several times slower on a small machine)."""
    with exact_matmul_mode(tf32=p.name == "tf32"):
        return torch.mm(q, g.T, out=out)


@dataclass(frozen=True)
class PrecisionChoice:
    """The outcome of the probe on one device: ``rates`` in GFLOP/s (``None``: dropped after the first round)."""

    device: str
    capability: str  # torch.backends.cpu.get_cpu_capability() on CPU, the GPU's name on CUDA
    precision: Precision
    rates: dict[str, float | None] = field(default_factory=dict)

    def describe(self) -> str:
        rates = ", ".join(
            f"{k} {'slow' if v is None else f'{v:.0f}'}{'' if k in PRECISIONS else ' (probed only)'}"
            for k, v in self.rates.items()
        )
        unit = "GFLOP/s on one core" if self.device == "cpu" else "GFLOP/s"
        return f"{self.device} [{self.capability}]: candidate pass in {self.precision.name} ({unit}: {rates})"


def choose_precision(rates: dict[str, float | None]) -> str:
    """The precision to use given measured matmul rates (GFLOP/s; ``None`` = dropped as slow); ``fp32`` must be
    among them. A lower precision needs :data:`LOW_PRECISION_MARGIN` x float32's rate; among those within 15% of
    the fastest, the tightest error window wins. Never returns a precision measured slower than float32, nor one
    that is only probed (int8)."""
    base = rates.get("fp32")
    if base is None or base <= 0:
        raise ValueError("the float32 rate must be measured")
    ok = {
        k: v
        for k, v in rates.items()
        if k in PRECISIONS and v is not None and (k == "fp32" or v >= LOW_PRECISION_MARGIN * base)
    }
    best = max(ok.values())
    close = [k for k, v in ok.items() if v * _CLOSE >= best]
    return min(close, key=lambda k: PRECISIONS[k].tightness)


def _timed_rounds(names: list[str], shape: tuple[int, int, int], device: torch.device, rounds: int) -> dict[str, float]:
    """Best rate (GFLOP/s) of each precision over ``rounds`` interleaved timings (after one warm-up each).

    CPU: one thread, timed by that thread's CPU time, so other processes competing for the cores (a shared node, a
    busy laptop) do not bend the comparison: the rates are one core's, and their ratios are the kernels'. CUDA: wall
    time between synchronisations.
    """
    if device.type == "cpu":
        with torch_threads(1):
            return _timed_rounds_on(names, shape, device, rounds, time.thread_time, lambda: None)
    return _timed_rounds_on(names, shape, device, rounds, time.perf_counter, torch.cuda.synchronize)


def _timed_rounds_on(names, shape, device, rounds, clock, sync) -> dict[str, float]:
    m, n, d = shape
    gen = torch.Generator().manual_seed(0)
    q32, g32 = torch.randn(m, d, generator=gen).to(device), torch.randn(n, d, generator=gen).to(device)
    calls = {}
    for k in names:
        if k == "int8":  # probed only: int8 inputs, int32 output
            q, g = (t.mul(127 / t.abs().max()).round().to(torch.int8) for t in (q32, g32))
            out = torch.empty(m, n, dtype=torch.int32, device=device)
            calls[k] = functools.partial(torch._int_mm, q, g.T, out=out)
        else:
            p = precision_by_name(k, device)
            q, g = p.round_inputs(q32), p.round_inputs(g32)
            out = torch.empty(m, n, dtype=p.dtype, device=device)
            calls[k] = functools.partial(lp_matmul, p, q, g, out)
        try:
            calls[k]()  # warm-up: kernel selection, JIT, first-touch allocation
        except RuntimeError:  # no kernel for this precision here (int8 on some builds): not offered
            if k == "fp32":
                raise
            del calls[k]
    sync()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for k in calls:
            t0 = clock()
            calls[k]()
            sync()
            best[k] = min(best[k], clock() - t0)
    return {k: 2.0 * m * n * d / max(t, 1e-9) / 1e9 for k, t in best.items()}


def _offered(device: torch.device) -> list[str]:
    if device.type == "cpu":
        return ["fp32", "bf16", "fp16", "int8"]
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        names = ["fp32", "fp16"]
        if major >= 8:  # Ampere and later: TF32 and bf16 tensor cores, int8 torch._int_mm
            names += ["tf32", "bf16", "int8"]
        return names
    return ["fp32"]


def probe_rates(device: torch.device) -> dict[str, float | None]:
    """Measured matmul rates (GFLOP/s, int8: GOP/s) of the precisions ``device`` offers; ``None`` for those dropped
    after the tiny first round (below half of float32's rate there: far from the margin a lower precision needs)."""
    names = _offered(device)
    tiny = _timed_rounds(names, _TINY, device, rounds=5)
    kept = [k for k in tiny if k == "fp32" or tiny[k] >= 0.5 * tiny["fp32"]]
    full = _timed_rounds(kept, _CUDA_PROBE if device.type == "cuda" else _CPU_PROBE, device, rounds=7)
    return {k: full.get(k) for k in names}


def _capability(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return torch.backends.cpu.get_cpu_capability()
    return device.type


@functools.cache
def _cached_choice(device_str: str) -> PrecisionChoice:
    device = torch.device(device_str)
    rates = probe_rates(device)
    choice = PrecisionChoice(device_str, _capability(device), precision_by_name(choose_precision(rates), device), rates)
    log.debug("retrieval metrics: %s", choice.describe())
    return choice


def candidate_precision(device: str | torch.device = "cpu") -> PrecisionChoice:
    """The candidate pass's precision on ``device``: probed on first use, then cached for the process."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _cached_choice(str(device))
