"""Save and restore the global RNG states (python, numpy, torch CPU and CUDA) in checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning import Callback


class RNGStateCallback(Callback):
    """Its ``state_dict`` goes into every checkpoint; loading it on resume restores the RNG streams, so dropout and
    any other randomness of the training step continue as in an uninterrupted run (per-rank states under DDP)."""

    def state_dict(self) -> dict[str, Any]:
        version, py_state, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # only tensors and builtins, so checkpoints load with torch.load(weights_only=True)
        state = {
            "python": [version, torch.tensor(py_state, dtype=torch.int64), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, py_state, gauss = state_dict["python"]
        random.setstate((version, tuple(int(v) for v in py_state.tolist()), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
