"""The Detector-style scorer API: ``fit(train: Features) -> self``, ``score(x: Features) -> Tensor[N]``.

Scores are "higher = more OOD" (energies). Fitted statistics are ``nn.Module`` buffers, so a scorer saved inside a
LightningModule checkpoint is restored with its fit (buffers are created on load from the checkpoint's shapes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from heat.features import Features


class Scorer(nn.Module):
    """Base class of every OOD scorer. Subclasses implement :meth:`fit` and :meth:`score`."""

    #: names of the buffers that :meth:`fit` creates; used to tell whether the scorer is fitted.
    fitted_buffers: tuple[str, ...] = ()

    def fit(self, train: Features) -> Scorer:  # noqa: ARG002 - stateless scorers ignore the train set
        return self

    def score(self, x: Features) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return all(getattr(self, n, None) is not None for n in self.fitted_buffers)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(train_features) first")

    def set_buffer(self, name: str, value: Tensor) -> None:
        """(Re)register a fitted buffer."""
        if name in self._buffers:
            self._buffers[name] = value
        else:
            self.__dict__.pop(name, None)  # a plain ``None`` placeholder set in __init__
            self.register_buffer(name, value)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected, errors):
        for name in self.fitted_buffers:
            key = prefix + name
            if key in state_dict:
                self.set_buffer(name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected, errors)

    def forward(self, x: Features) -> Tensor:
        return self.score(x)


def l2_normalize(z: Tensor, eps: float = 1e-10) -> Tensor:
    """``z / ||z||_2`` row-wise (HEAT normalises with a small epsilon in the denominator)."""
    return z / (z.norm(dim=-1, keepdim=True) + eps)


def chunked(n: int, chunk: int):
    """Yield slices covering ``range(n)`` in steps of ``chunk``."""
    for s in range(0, n, chunk):
        yield slice(s, min(n, s + chunk))
