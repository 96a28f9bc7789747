"""The GalLoP LightningModule (also runs CoOp and zero-shot CLIP: the ``net`` decides).

Training (GalLoP, Lafon et al., ECCV 2024; formula in :mod:`gallop.global_local_loss`): ``L = CE(s * g_kept, y) +
mean_m CE(s * topk_reduce(l)_m, y)`` with the frozen CLIP logit scale ``s``; CoOp: ``CE(s * g, y)``. Only the prompts and
``local_proj`` train. A NaN/Inf loss stops the run or skips the batch (``nan_policy``, the guard of
``common.models.nonfinite`` that every module uses).

Evaluation, one job per module:

- per batch, what each item contributes (OOD scores, correctness): :mod:`gallop.eval_batch`;
- kept per split (:class:`common.data.splits.EvalSplit`, read from the datamodule's ``test_splits``) and gathered
  across DDP ranks in dataset order: :mod:`gallop.eval_store`;
- the test metrics and their names (``test/acc``, ``test/ood/<set>/<score>/<metric>``, ``test/ood/avg/...``,
  ``test/dg/<set>/acc``, ``test/dg/avg_acc``): :mod:`gallop.eval_metrics`; validation logs ``val/acc``;
- heatmaps of the first ``heatmap_images`` ID test images to wandb: :mod:`gallop.wandb_heatmaps`.

Checkpoints hold only the trainable tensors (``strict_loading = False``). Under DDP (``trainer.world_size > 1``)
training refuses a train loader without a distributed sampler (:mod:`gallop.ddp`), and evaluation needs each item's
dataset ``index`` (to drop the items ``DistributedSampler`` repeats); the metrics equal those of one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from common.data.splits import EvalSplit
from common.models.checkpoint_identity import CheckpointIdentityMixin
from common.models.nonfinite import check_nan_policy, loss_is_finite
from gallop.ddp import require_sharded_training
from gallop.eval_batch import batch_values
from gallop.eval_metrics import id_split, test_metrics
from gallop.eval_store import EvalStore
from gallop.global_local_loss import gallop_loss, prompt_dropout
from gallop.wandb_heatmaps import log_heatmaps

#: the splits used when no datamodule describes its loaders
DEFAULT_TEST_SPLITS = (EvalSplit("test", "id"),)
DEFAULT_VAL_SPLITS = (EvalSplit("val", "id"),)


class GalLoPModule(CheckpointIdentityMixin, L.LightningModule):
    """Args:
    net: a :class:`gallop.model.GalLoP`, :class:`~gallop.model.CoOp` or :class:`~gallop.model.ZeroShotCLIP`.
    optimizer: ``_partial_`` optimizer over the trainable parameters (GalLoP: SGD lr 0.002, momentum 0.9, wd 1e-2).
    scheduler: ``_partial_`` epoch-wise scheduler (cosine, ``T_max`` = epochs), or None.
    topk: one top-k per local prompt (``[5, 10, 15, 20]``).
    prompt_dropout: ``p`` of global prompt dropout (0.75).
    ood_temperature: ``T`` of MCM / GL-MCM (1.0).
    class_names: class names; default ``trainer.datamodule.class_names``.
    heatmap_images: how many ID test images get a heatmap in wandb (0 = none).
    nan_policy: "raise" (a NaN/Inf loss stops the run, :class:`~common.models.nonfinite.NonFiniteLossError`) or
        "skip" (the batch is skipped and counted in ``train/skipped_batches``).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        topk: Sequence[int] = (5, 10, 15, 20),
        prompt_dropout: float = 0.75,
        ood_temperature: float = 1.0,
        class_names: Sequence[str] | None = None,
        heatmap_images: int = 4,
        nan_policy: str = "raise",
    ) -> None:
        super().__init__()
        check_nan_policy(nan_policy)
        # only plain values go into the checkpoint: a partial or a ListConfig (Hydra's lists) cannot be read back by
        # a weights-only load, which `trainer.test(ckpt_path=...)` does
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "topk", "class_names"], logger=False)
        self.net = net
        self.topk = list(topk)
        self.dropout = prompt_dropout
        self.ood_temperature = ood_temperature
        self.class_names = list(class_names) if class_names is not None else None
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.strict_loading = False
        self.skipped_batches = 0
        self._names_set = False
        self._text = None
        self._store = EvalStore()

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if not self._names_set:
            names = self.class_names
            if names is None:
                names = getattr(self._datamodule(), "class_names", None)
            if not names:
                raise ValueError("GalLoPModule needs class names: pass class_names=... or use a datamodule with them")
            self.class_names = list(names)
            self.net.set_class_names(self.class_names)
            self._names_set = True

    def _datamodule(self):
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    @property
    def logit_scale(self) -> float:
        return self.net.logit_scale

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        params = self.trainable_parameters()
        if not params or self.optimizer_factory is None:
            return None  # zero-shot CLIP: nothing to train
        opt = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=opt), "interval": "epoch"},
        }

    # ------------------------------------------------------------------ train
    def on_train_start(self) -> None:
        require_sharded_training(self.trainer.world_size, self.trainer.train_dataloader)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        images, labels = batch["image"], batch["label"]
        if labels.ndim != 1:
            raise ValueError(f"few-shot labels must be int64 [B], got shape {tuple(labels.shape)}")
        g, loc = self.net(images)
        if loc is None:
            loss = F.cross_entropy(self.logit_scale * prompt_dropout(g, self.dropout), labels)
            parts = {}
        else:
            out = gallop_loss(g, loc, labels, self.logit_scale, self.topk, self.dropout)
            loss, parts = out["loss"], {"loss_global": out["loss_global"], "loss_local": out["loss_local"]}
        if not loss_is_finite(
            self, loss, {k: v.detach() for k, v in parts.items()}, batch_idx, self.hparams.nan_policy
        ):
            return None
        bs = len(labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        super().on_save_checkpoint(checkpoint)  # records the module class (common.models.checkpoint_identity)

    # ------------------------------------------------------------------ eval
    def _splits(self, stage: str) -> list[EvalSplit]:
        """The datamodule's ``test_splits`` / ``val_splits`` (one per loader), or the one-loader default."""
        default = DEFAULT_TEST_SPLITS if stage == "test" else DEFAULT_VAL_SPLITS
        return list(getattr(self._datamodule(), f"{stage}_splits", default))

    def _class_subset(self, dataloader_idx: int):
        dm = self._datamodule()
        if dm is None or not hasattr(dm, "test_datasets"):
            return None
        return getattr(dm.test_datasets()[dataloader_idx], "class_subset", None)

    def _start_eval(self) -> None:
        self._store = EvalStore()
        with torch.no_grad():
            self._text = self.net.text_features()

    def _end_eval(self) -> None:
        self._store = EvalStore()
        self._text = None

    def _eval_batch(self, batch: dict, split: EvalSplit, class_subset: Sequence[int] | None = None) -> None:
        g, loc = self.net(batch["image"], self._text)
        if "index" in batch:
            self._store.add(split, "index", torch.as_tensor(batch["index"], device=g.device).long().reshape(-1))
        elif self._world_size() > 1:
            raise ValueError(
                f"GalLoP evaluation under DDP needs batch['index'] (the dataset index of each item, to drop the "
                f"items DistributedSampler repeats and restore dataset order); the '{split.name}' dataset gives keys "
                f"{sorted(batch)}. Return {{'image', 'label', 'index'}} items (as common.data datasets do) or "
                f"evaluate on one device."
            )
        values = batch_values(
            g,
            loc,
            batch["label"],
            split,
            logit_scale=self.logit_scale,
            topk=self.topk,
            ood_temperature=self.ood_temperature,
            predict_with_local=getattr(self.net, "predict_with_local", True),
            class_subset=class_subset,
        )
        for k, v in values.items():
            self._store.add(split, k, v)

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_batch(batch, self._splits("val")[0])

    def on_validation_epoch_end(self) -> None:
        ref = id_split(self._store)
        correct = self._store.gather(ref, "correct") if ref is not None else None
        if correct is not None:
            self.log("val/acc", 100.0 * correct.mean(), prog_bar=True, sync_dist=False)
        self._end_eval()

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self._splits("test")[dataloader_idx]
        self._eval_batch(batch, split, self._class_subset(dataloader_idx) if split.kind == "domain" else None)
        if split.kind == "id" and batch_idx == 0 and self.hparams.heatmap_images > 0:
            log_heatmaps(self, batch["image"][: self.hparams.heatmap_images], self._text, self.topk)

    def compute_test_metrics(self) -> dict[str, float]:
        """Metrics from what the test (or validation) steps stored; names in :mod:`gallop.eval_metrics`."""
        return test_metrics(self._store)

    def on_test_epoch_end(self) -> None:
        metrics = self.compute_test_metrics()
        for k, v in metrics.items():
            self.log(k, v, add_dataloader_idx=False)
        self.last_test_metrics = metrics
        self._end_eval()
