"""The GalLoP LightningModule (also runs CoOp and zero-shot CLIP: the ``net`` decides).

Training (spec heat_gallop.md §4): ``L = CE(s * g_kept, y) + mean_m CE(s * topk_reduce(l)_m, y)`` with the frozen CLIP logit
scale ``s`` (``gallop.losses.gallop_loss``); CoOp: ``CE(s * g, y)``. Only the prompts and ``local_proj`` train.

Test (``trainer.test``), on the datamodule's loaders ``[id, ood/*, domain/*]`` (``common.data.fewshot``):
- ``test/acc``: top-1 of ``softmax(s (g_hat + l_hat) / 2)`` (global only for CoOp), plus ``test/acc_global`` and
  ``test/acc_local`` when there are local cosines;
- OOD: for each set and score (``mcm``, ``l_mcm``, ``gl_mcm``; T = ``ood_temperature``) the metrics of
  ``common.metrics.ood.ood_metrics`` (``fpr95`` ID-positive as GalLoP, ``fpr95_ood_positive``, ``auroc``, ...), as
  ``test/ood/<set>/<score>/<metric>``, and their mean over sets as ``test/ood/avg/<score>/<metric>``;
- domain generalisation: ``test/dg/<set>/acc`` (a set with ``class_subset`` is scored on those classes only) and
  ``test/dg/avg_acc``.

Checkpoints hold only the trainable tensors (``strict_loading = False``). Heatmaps of the first
``heatmap_images`` ID test images are logged to wandb when a wandb logger is active.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from gallop.losses import gallop_loss, prompt_dropout, topk_reduce
from gallop.scores import ood_scores, predict_proba

log = logging.getLogger(__name__)


class GalLoPModule(L.LightningModule):
    """Args:
    net: a :class:`gallop.model.GalLoP`, :class:`~gallop.model.CoOp` or :class:`~gallop.model.ZeroShotCLIP`.
    optimizer: ``_partial_`` optimizer over the trainable parameters (GalLoP: SGD lr 0.002, momentum 0.9, wd 1e-2).
    scheduler: ``_partial_`` epoch-wise scheduler (cosine, ``T_max`` = epochs), or None.
    topk: one top-k per local prompt (``[5, 10, 15, 20]``).
    prompt_dropout: ``p`` of global prompt dropout (0.75).
    ood_temperature: ``T`` of MCM / GL-MCM (1.0).
    class_names: class names; default ``trainer.datamodule.class_names``.
    heatmap_images: how many ID test images get a heatmap in wandb (0 = none).
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.topk = list(topk)
        self.dropout = prompt_dropout
        self.ood_temperature = ood_temperature
        self.class_names = list(class_names) if class_names is not None else None
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.strict_loading = False
        self._names_set = False
        self._text = None
        self._reset_eval()

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if not self._names_set:
            names = self.class_names
            if names is None:
                dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
                names = getattr(dm, "class_names", None)
            if not names:
                raise ValueError("GalLoPModule needs class names: pass class_names=... or use a datamodule with them")
            self.class_names = list(names)
            self.net.set_class_names(self.class_names)
            self._names_set = True

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
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
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
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step}, batch {batch_idx}")
        bs = len(labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    # ------------------------------------------------------------------ eval
    def _reset_eval(self) -> None:
        self._store: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))

    @torch.no_grad()
    def _encode_text(self):
        return self.net.text_features()

    def _eval_batch(self, batch: dict, name: str, class_subset: Sequence[int] | None = None) -> None:
        g, loc = self.net(batch["image"], self._text)
        store = self._store[name]
        if name.startswith("ood/") or name == "id":
            for k, v in ood_scores(g, loc, self.ood_temperature).items():
                store[k].append(v.float())
        if name.startswith("ood/"):
            return
        labels = batch["label"]
        labels = labels[:, 0] if labels.ndim == 2 else labels
        if class_subset is not None:
            sub = torch.as_tensor(list(class_subset), device=g.device)
            g = g[:, sub]
            loc = loc[:, :, sub] if loc is not None else None
            lut = torch.full((int(sub.max()) + 1,), -1, dtype=torch.long, device=g.device)
            lut[sub] = torch.arange(len(sub), device=g.device)
            labels = lut[labels]
        if not getattr(self.net, "predict_with_local", True):
            loc = None  # zero-shot CLIP: the standard (global) prediction; local cosines only serve GL-MCM
        store["correct"].append((predict_proba(g, loc, self.logit_scale, self.topk).argmax(-1) == labels).float())
        if loc is not None:
            store["correct_global"].append((g.mean(-1).argmax(-1) == labels).float())
            store["correct_local"].append((topk_reduce(loc, self.topk).mean(-1).argmax(-1) == labels).float())

    def on_validation_epoch_start(self) -> None:
        self._reset_eval()
        self._text = self._encode_text()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_batch(batch, "id")

    def on_validation_epoch_end(self) -> None:
        correct = self._gather(self._store["id"].get("correct", []))
        if correct is not None:
            self.log("val/acc", 100.0 * correct.mean(), prog_bar=True, sync_dist=False)
        self._reset_eval()
        self._text = None

    def _test_names(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None)
        return list(getattr(dm, "test_names", ["id"]))

    def _class_subset(self, dataloader_idx: int):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "test_datasets"):
            return None
        return getattr(dm.test_datasets()[dataloader_idx], "class_subset", None)

    def on_test_epoch_start(self) -> None:
        self._reset_eval()
        self._text = self._encode_text()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self._test_names()[dataloader_idx]
        self._eval_batch(batch, name, self._class_subset(dataloader_idx) if name.startswith("domain/") else None)
        if name == "id" and batch_idx == 0 and self.hparams.heatmap_images > 0:
            self._log_heatmaps(batch["image"][: self.hparams.heatmap_images])

    def _gather(self, chunks: list[torch.Tensor]) -> torch.Tensor | None:
        if not chunks:
            return None
        x = torch.cat(chunks)
        if self.trainer is not None and self.trainer.world_size > 1:
            x = self.all_gather(x).flatten()
        return x

    def compute_test_metrics(self) -> dict[str, float]:
        """Metrics from what the test (or validation) steps stored; see the module docstring for the names."""
        from common.metrics.ood import ood_metrics

        out: dict[str, float] = {}
        id_store = self._store.get("id", {})
        for key, name in (("correct", "acc"), ("correct_global", "acc_global"), ("correct_local", "acc_local")):
            x = self._gather(id_store.get(key, []))
            if x is not None:
                out[f"test/{name}"] = 100.0 * x.mean().item()
        per_score: dict[str, list[dict[str, float]]] = defaultdict(list)
        for name, store in self._store.items():
            if name.startswith("ood/"):
                for score in store:
                    ood = self._gather(store[score])
                    idd = self._gather(id_store.get(score, []))
                    if ood is None or idd is None:
                        continue
                    m = ood_metrics(idd.cpu(), ood.cpu())
                    per_score[score].append(m)
                    for k, v in m.items():
                        out[f"test/{name}/{score}/{k}"] = float(v)
            elif name.startswith("domain/"):
                x = self._gather(store.get("correct", []))
                if x is not None:
                    out[f"test/dg/{name[len('domain/') :]}/acc"] = 100.0 * x.mean().item()
        for score, ms in per_score.items():
            for k in ms[0]:
                out[f"test/ood/avg/{score}/{k}"] = sum(m[k] for m in ms) / len(ms)
        dg = [v for k, v in out.items() if k.startswith("test/dg/")]
        if dg:
            out["test/dg/avg_acc"] = sum(dg) / len(dg)
        return out

    def on_test_epoch_end(self) -> None:
        metrics = self.compute_test_metrics()
        for k, v in metrics.items():
            self.log(k, v, add_dataloader_idx=False)
        self.last_test_metrics = metrics
        self._reset_eval()
        self._text = None

    # ------------------------------------------------------------------ pictures
    def _log_heatmaps(self, images: torch.Tensor) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in (self.loggers or []) if isinstance(lg, WandbLogger)]
        if not loggers or not hasattr(self.net, "visual") or self.net.visual.kind != "vit":
            return
        from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        from gallop.heatmaps import local_heatmaps, plot_heatmaps, unnormalize

        try:
            maps, pred = local_heatmaps(self.net, images, self._text, self.topk)
        except ValueError:
            return
        titles = [self.class_names[int(p)] for p in pred]
        fig = plot_heatmaps(unnormalize(images, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD), maps, titles)
        import matplotlib.pyplot as plt
        import wandb

        for lg in loggers:
            lg.experiment.log({"test/heatmaps": wandb.Image(fig)})
        plt.close(fig)
