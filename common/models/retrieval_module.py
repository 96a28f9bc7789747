"""The retrieval LightningModule shared by ROADMAP, HAPPIER and their baselines.

One network (backbone + :class:`~common.backbones.head.RetrievalHead`), a dict of weighted losses, an optional
cross-batch memory, and exact retrieval evaluation (:class:`~common.models.embedding_eval.EmbeddingEvalMixin`).

Total loss of a step (``w`` = ``loss_weights``, ``M`` = memory, active from its activation epoch)::

    L = sum_name w[name] * loss[name](z, y)  +  M.weight * sum_name w[name] * loss[name](z, y, z_M, y_M)

Every loss has the signature ``loss(embeddings [B, D], labels [B] or [B, L], ref_embeddings=None, ref_labels=None)``;
the retrieval losses follow :mod:`common.losses.base`, so the batch is checked, cast to fp32 and turned into one
cosine matrix once per step (and once more against the memory), which every term then reads. A method's combined
loss (ROADMAP = SupAP + calibration, HAPPIER = Sup-H-AP + clustering) is this weighted sum, and each term is logged
as ``train/<name>``. Losses that own parameters (the proxies of NSM / HAPPIER's clustering term, CSL) get their own
param group, with the lr and weight decay given in ``loss_param_groups[name]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from common.data.errors import check_labels
from common.losses.base import RetrievalLoss, fp32_region, prepare_inputs
from common.models.distributed import all_gather_no_grad, all_gather_with_grad, world_size
from common.models.embedding_eval import EmbeddingEvalMixin
from common.models.nonfinite import NonFiniteLossError, check_nan_policy, loss_is_finite
from common.utils.hparams import plain

__all__ = ["NonFiniteLossError", "RetrievalModule"]


class RetrievalModule(EmbeddingEvalMixin, L.LightningModule):
    """Args:
    net: a :class:`~common.backbones.head.RetrievalNet` (images -> L2-normalised embeddings).
    losses: ``{name: loss module}``.
    loss_weights: ``{name: weight}`` (default 1 for each).
    optimizer: ``_partial_`` optimizer (lr, weight_decay are the defaults of every group).
    scheduler: ``_partial_`` LR scheduler, or None; ``scheduler_interval``: "epoch" or "step".
    lr_backbone, lr_head: per-group learning rates (None = the optimizer's lr).
    loss_param_groups: ``{loss name: {"lr": ..., "weight_decay": ...}}`` for losses with parameters.
    memory: optional cross-batch memory with ``update(z, y, idx)``, ``get() -> (z, y)``, ``is_active(epoch)``
        and ``weight``.
    warmup_epochs: the backbone is frozen (no gradient) for the first ``warmup_epochs`` epochs.
    nan_policy: "raise" stops with the step and batch indices on a NaN/Inf loss; "skip" skips that batch's update
        and counts it in ``train/skipped_batches``.
    compile: wrap the network with ``torch.compile`` at ``setup("fit")``.
    eval_metrics, recall_at, per_level_metrics: what the evaluation computes (see
        :func:`common.metrics.retrieval.evaluate_retrieval`).
    save_test_embeddings: write the gathered test embeddings and labels to ``<run dir>/test_embeddings.npz``.
    gather_global_batch: under DDP, the losses (and the memory) see the embeddings of every rank, gathered with
        gradient (:mod:`common.models.distributed`), so a rank loss on N GPUs equals the loss on the global batch.

    Memory under DDP: every rank enqueues the *global* batch (the gathered embeddings, or, with
    ``gather_global_batch=False``, a detached gather made for the memory alone), in rank order, so all ranks hold the
    same memory, equal to that of one process fed the global batches. The memory buffers are therefore excluded from
    DDP's buffer broadcast (which would otherwise send the whole memory, e.g. 59551 x 512 floats, from rank 0 at
    every step).
    """

    def __init__(
        self,
        net: nn.Module,
        losses: Mapping[str, nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        loss_weights: Mapping[str, float] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        lr_backbone: float | None = None,
        lr_head: float | None = None,
        loss_param_groups: Mapping[str, Mapping[str, float]] | None = None,
        memory: nn.Module | None = None,
        warmup_epochs: int = 0,
        nan_policy: str = "raise",
        compile: bool = False,
        eval_metrics: tuple[str, ...] = ("recall", "precision_at_1", "map_at_r"),
        recall_at: tuple[int, ...] = (1, 10, 100),
        per_level_metrics: bool = False,
        gather_global_batch: bool = True,
        save_test_embeddings: bool = False,
    ) -> None:
        super().__init__()
        # builtin types only in the checkpoint's hyper-parameters (torch.load(weights_only=True))
        loss_weights, loss_param_groups = plain(loss_weights), plain(loss_param_groups)
        eval_metrics, recall_at = tuple(plain(eval_metrics)), tuple(plain(recall_at))
        check_nan_policy(nan_policy)
        if not losses:
            raise ValueError("RetrievalModule needs at least one loss in `model.losses`")
        self.save_hyperparameters(ignore=["net", "losses", "memory", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.losses = nn.ModuleDict(dict(losses))
        foreign = [name for name, loss in self.losses.items() if not isinstance(loss, RetrievalLoss)]
        if foreign:
            raise TypeError(
                f"losses {foreign} are not retrieval losses: subclass common.losses.base.RetrievalLoss, or wrap a "
                f"pytorch-metric-learning loss in common.losses.pml_adapter.PMLLoss"
            )
        weights = dict(loss_weights or {})
        unknown = set(weights) - set(self.losses)
        if unknown:
            raise ValueError(f"loss_weights name unknown losses {sorted(unknown)}; losses are {sorted(self.losses)}")
        self.loss_weights = {name: float(weights.get(name, 1.0)) for name in self.losses}
        self.register_load_state_dict_pre_hook(_remap_wrapped_loss_keys)
        self.memory = memory
        if memory is not None:  # identical on every rank by construction (see above): no broadcast from rank 0
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self, [f"memory.{name}" for name, _ in memory.named_buffers()]
            )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.eval_metrics, self.recall_at, self.per_level_metrics = (
            list(eval_metrics),
            list(recall_at),
            per_level_metrics,
        )
        self.save_test_embeddings = save_test_embeddings  # read by EmbeddingEvalMixin at test time
        self.skipped_batches = 0

    # ----- forward -----
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)

    # ----- training -----
    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.hparams.warmup_epochs
        backbone = getattr(self.net, "backbone", None)
        if backbone is not None and self.hparams.warmup_epochs > 0:
            for p in backbone.parameters():
                p.requires_grad_(not frozen and not self._is_frozen_bn_param(p))

    def _is_frozen_bn_param(self, p: torch.Tensor) -> bool:
        if not getattr(self.net, "freeze_bn", False):
            return False
        bn_params = {
            id(q)
            for m in self.net.backbone.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for q in m.parameters()
        }
        return id(p) in bn_params

    def compute_loss(
        self,
        z: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor | None = None,
        memory_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum of the losses on the batch (and on the memory when active). Returns (total, parts).

        ``memory_batch``: ``(z, y, idx)`` to enqueue instead of the loss batch (the global batch under DDP when the
        losses see only the local one).
        """
        parts: dict[str, torch.Tensor] = {}
        total = z.new_zeros(())
        with fp32_region(z.device.type):
            inputs = prepare_inputs(z, y)  # one check and one cosine matrix, shared by every term
            for name, loss_fn in self.losses.items():
                value = loss_fn.from_inputs(inputs)
                parts[name] = value.detach()
                total = total + self.loss_weights[name] * value
            if self.memory is not None:
                mem_z, mem_y, mem_idx = memory_batch if memory_batch is not None else (z, y, idx)
                self.memory.update(mem_z.detach(), mem_y, mem_idx)  # enqueue before read (XBM)
                if self.memory.is_active(self.current_epoch):
                    ref_z, ref_y = self.memory.get()
                    inputs = prepare_inputs(z, y, ref_z, ref_y)
                    for name, loss_fn in self.losses.items():
                        value = loss_fn.from_inputs(inputs)
                        parts[f"{name}_memory"] = value.detach()
                        total = total + self.memory.weight * self.loss_weights[name] * value
        return total, parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        y = check_labels(batch["label"], name="batch['label']", allow_multilabel=True)  # each loss says what it takes
        z = self.embed(batch["image"])  # [B, D]
        idx = batch.get("index")
        idx = torch.as_tensor(idx, device=y.device) if idx is not None else None
        memory_batch = None
        if world_size() > 1:
            if self.hparams.gather_global_batch:  # [world * B, D], gradient to the local slice
                z, y = all_gather_with_grad(z), all_gather_no_grad(y)
                idx = all_gather_no_grad(idx) if idx is not None else None
            elif self.memory is not None:  # local losses, but the memory still holds every rank's items
                memory_batch = (
                    all_gather_no_grad(z.detach()),
                    all_gather_no_grad(y),
                    all_gather_no_grad(idx) if idx is not None else None,
                )
        total, parts = self.compute_loss(z, y, idx, memory_batch)
        if not loss_is_finite(self, total, parts, batch_idx, self.hparams.nan_policy):
            return None
        bs = z.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        return total

    # ----- optimisation -----
    def configure_optimizers(self):
        hp = self.hparams
        net = self.net._orig_mod if hasattr(self.net, "_orig_mod") else self.net
        groups: list[dict] = []
        backbone = getattr(net, "backbone", None)
        if backbone is not None:
            params = [p for p in backbone.parameters() if not self._is_frozen_bn_param(p)]
            groups.append({"params": params, "name": "backbone", **({"lr": hp.lr_backbone} if hp.lr_backbone else {})})
            rest = [p for n, p in net.named_parameters() if not n.startswith("backbone.")]
        else:
            rest = list(net.parameters())
        groups.append({"params": rest, "name": "head", **({"lr": hp.lr_head} if hp.lr_head else {})})
        extra = dict(hp.loss_param_groups or {})
        for name, loss_fn in self.losses.items():
            params = [p for p in loss_fn.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "name": f"loss/{name}", **dict(extra.get(name, {}))})
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": hp.scheduler_interval}}


def _remap_wrapped_loss_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load checkpoints written before the ROADMAPLoss / HAPPIERLoss wrappers were removed.

    Such a checkpoint holds the clustering proxies as ``losses.<wrapper name>.cluster.proxies`` (and a single loss
    under its old name, e.g. ``losses.main.proxies``). Each ``losses.`` key the module does not have is renamed to
    the one key of the module's losses that ends with the same parameter path (``proxies``, ``proxy_labels``), when
    there is exactly one; anything else is left for ``load_state_dict`` to report.
    """
    own = [k for k in module.state_dict() if k.startswith("losses.")]
    head = prefix + "losses."
    for key in [k for k in state_dict if k.startswith(head) and k[len(prefix) :] not in own]:
        old_path = key[len(head) :].split(".")  # [old name, (wrapped term,) param...]
        matches = [k for k in own if old_path[-1] == k.split(".")[-1] and k[len("losses.") :].count(".") == 1]
        if len(matches) == 1 and prefix + matches[0] not in state_dict:
            state_dict[prefix + matches[0]] = state_dict.pop(key)
