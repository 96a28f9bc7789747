"""Make hyper-parameters checkpoint-safe.

torch >= 2.6 loads checkpoints with ``weights_only=True``, which refuses OmegaConf containers. LightningModules call
:func:`plain` on config-typed arguments before ``save_hyperparameters`` so checkpoints hold only builtin types.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(value: Any) -> Any:
    """OmegaConf containers -> builtin dicts/lists (resolved); anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
