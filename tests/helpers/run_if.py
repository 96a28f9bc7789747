"""Skip markers for optional hardware (adapted from lightning-hydra-template's RunIf idea)."""

from __future__ import annotations

import pytest
import torch


def run_if(min_gpus: int = 0):
    """``@run_if(min_gpus=1)`` skips the test without enough CUDA devices; also adds the ``gpu`` marker."""
    n = torch.cuda.device_count()

    def wrap(fn):
        fn = pytest.mark.gpu(fn)
        return pytest.mark.skipif(n < min_gpus, reason=f"needs {min_gpus} GPU(s), found {n}")(fn)

    return wrap
