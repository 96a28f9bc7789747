"""Checkpoints say which kind of module wrote them, and every load checks it.

:class:`CheckpointIdentityMixin` (a base of every method's LightningModule) records the module's class as
``checkpoint["module_class"]`` (e.g. ``"gallop.module.GalLoPModule"``) and, whenever a checkpoint is loaded
(``trainer.fit/test(ckpt_path=...)``, ``Module.load_from_checkpoint``), checks before any tensor is copied:

1. the recorded class equals the loading module's class;
2. the trainable tensors match strictly: every parameter that requires grad is in the checkpoint, and (for modules
   that load non-strictly, where torch does not check) the checkpoint holds no tensor the module does not have. GalLoP
   saves only its prompts and projection (``strict_loading = False``): without this check a foreign file would load
   nothing and evaluate an untrained model. It also covers checkpoints written before the class was recorded.

A mismatch raises :class:`CheckpointMismatchError` naming both classes (and the file, when the trainer knows it).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MODULE_CLASS_KEY", "CheckpointIdentityMixin", "CheckpointMismatchError", "check_checkpoint_identity"]

MODULE_CLASS_KEY = "module_class"


class CheckpointMismatchError(ValueError):
    """A checkpoint written by another kind of module (or another configuration of it) was given to this one."""


def module_class_name(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _norm(key: str) -> str:
    """State-dict key without the ``_orig_mod.`` level that ``torch.compile`` inserts."""
    return key.replace("._orig_mod.", ".").removeprefix("_orig_mod.")


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def check_checkpoint_identity(module: torch.nn.Module, checkpoint: dict[str, Any], source: str | None = None) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` was written by a module like ``module``."""
    mine = module_class_name(module)
    theirs = checkpoint.get(MODULE_CLASS_KEY)
    where = f" {source}" if source else ""
    if theirs is not None and theirs != mine:
        raise CheckpointMismatchError(
            f"checkpoint{where} was written by {theirs}, but this run builds {mine}: it is another kind of model. "
            f"Pass a checkpoint written by a {type(module).__name__} run."
        )
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"checkpoint{where} holds no 'state_dict'; it is not a Lightning checkpoint")
    keys = {_norm(k) for k in state}
    own = {_norm(k) for k in module.state_dict()}
    trainable = {_norm(n) for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(trainable - keys)
    # strict modules get torch's strict check right after this hook (which also knows buffers that modules register
    # while loading, e.g. HEAT's fitted priors); non-strict ones get it here
    unexpected = [] if getattr(module, "strict_loading", True) else sorted(keys - own)
    if missing or unexpected:
        written_by = theirs or "a module that did not record its class"
        parts = []
        if missing:
            parts.append(f"{len(missing)} trainable tensors of {mine} are missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors are not in {mine} ({_few(unexpected)})")
        raise CheckpointMismatchError(
            f"checkpoint{where} (written by {written_by}) does not fit this {mine}: {'; '.join(parts)}. It comes from "
            f"another model or another configuration (backbone, prompts, losses with parameters)."
        )


class CheckpointIdentityMixin:
    """LightningModule mixin: record the module class in every checkpoint and check it on every load.

    Put it first among the bases (``class M(CheckpointIdentityMixin, L.LightningModule)``). A module that overrides
    ``on_save_checkpoint``/``on_load_checkpoint`` calls ``super()`` in them.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[MODULE_CLASS_KEY] = module_class_name(self)
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = getattr(self, "_trainer", None)
        source = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        check_checkpoint_identity(self, checkpoint, str(source) if source else None)
        super().on_load_checkpoint(checkpoint)
