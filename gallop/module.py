"""The GalLoP LightningModule (also runs CoOp and zero-shot CLIP: the ``net`` decides).

Training (spec heat_gallop.md §4): ``L = CE(s * g_kept, y) + mean_m CE(s * topk_reduce(l)_m, y)`` with the frozen CLIP logit
scale ``s`` (``gallop.global_local_loss.gallop_loss``); CoOp: ``CE(s * g, y)``. Only the prompts and ``local_proj`` train.

Test (``trainer.test``), on the datamodule's loaders ``[id, ood/*, domain/*]`` (``common.data.fewshot``):
- ``test/acc``: top-1 of ``softmax(s (g_hat + l_hat) / 2)`` (global only for CoOp), plus ``test/acc_global`` and
  ``test/acc_local`` when there are local cosines;
- OOD: for each set and score (``mcm``, ``l_mcm``, ``gl_mcm``; T = ``ood_temperature``) every metric of
  ``common.metrics.ood.ood_metrics``, as ``test/ood/<set>/<score>/<metric>``, and their mean over sets as
  ``test/ood/avg/<score>/<metric>``. Three FPR95 conventions are logged (spec heat_gallop.md §9.1):
  ``fpr95_closest`` is **GalLoP's published FPR95** (the Hendrycks/MCM ``fpr_and_fdr_at_recall`` routine: ID positive,
  FPR at the ID recall closest to 0.95; what the GalLoP OOD table reports); ``fpr95`` is HEAT's percentile version (ID
  positive, ``mean(ood < percentile(id, 95))``); ``fpr95_ood_positive`` is OpenOOD v1.5's (OOD positive). The first
  two agree up to the choice of operating point, the third differs for asymmetric score distributions;
- domain generalisation: ``test/dg/<set>/acc`` (a set with ``class_subset`` is scored on those classes only) and
  ``test/dg/avg_acc``.

Checkpoints hold only the trainable tensors (``strict_loading = False``). Heatmaps of the first
``heatmap_images`` ID test images are logged to wandb when a wandb logger is active.

Under DDP (``trainer.world_size > 1``):

- training needs batches sharded across ranks: :meth:`on_train_start` refuses a train loader without a distributed
  sampler (every rank would train on the same batches, N copies of a one-device run) and names the fix,
  ``trainer.use_distributed_sampler=true``. With it the loss is a per-sample mean over equal local batches, so DDP's
  gradient average is the gradient on the global batch;
- evaluation stores each item's dataset ``index`` with its scores; :meth:`_gather` gathers scores and indices from
  every rank (sizes may differ) and keeps one copy of each index in dataset order. This drops the items that
  ``DistributedSampler`` repeats to pad uneven shards (they would otherwise count twice in accuracy and FPR), and the
  copies made when every rank evaluates the whole unsharded set; the metrics equal those of one process.
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
from torch.utils.data import DistributedSampler

from common.models.distributed import gather_by_index
from gallop.global_local_loss import gallop_loss, prompt_dropout, topk_reduce
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
    def on_train_start(self) -> None:
        world = self.trainer.world_size
        loader = self.trainer.train_dataloader
        if world > 1 and not _is_sharded(loader):
            sampler = type(getattr(loader, "sampler", None)).__name__
            raise RuntimeError(
                f"GalLoP under DDP (world_size={world}) needs its training batches sharded across ranks, but the train "
                f"dataloader uses a {sampler} with no DistributedSampler: every rank would train on the same batches. "
                f"Set trainer.use_distributed_sampler=true (the trainer configs default it to false for the retrieval "
                f"batch samplers), or train on one device (trainer=gpu, devices=1)."
            )

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
        # {dataset name: {key: [per-batch tensors]}}; a module-level factory keeps the module picklable (ddp_spawn)
        self._store: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(_key_store)

    @torch.no_grad()
    def _encode_text(self):
        return self.net.text_features()

    def _eval_batch(self, batch: dict, name: str, class_subset: Sequence[int] | None = None) -> None:
        g, loc = self.net(batch["image"], self._text)
        store = self._store[name]
        if "index" in batch:
            store["index"].append(torch.as_tensor(batch["index"], device=g.device).long().reshape(-1))
        elif self._world_size() > 1:
            raise ValueError(
                f"GalLoP evaluation under DDP needs batch['index'] (the dataset index of each item, to drop the "
                f"items DistributedSampler repeats and restore dataset order); the '{name}' dataset gives keys "
                f"{sorted(batch)}. Return {{'image', 'label', 'index'}} items (as common.data datasets do) or "
                f"evaluate on one device."
            )
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
        correct = self._gather(self._store["id"], "correct")
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

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _gather(self, store: dict[str, list[torch.Tensor]], key: str) -> torch.Tensor | None:
        """``store[key]`` of every rank, one value per dataset index, in dataset order (``[N]``); None if empty.

        Without DDP and without indices: the values as stored.
        """
        chunks = store.get(key, [])
        if not chunks:
            return None
        x = torch.cat(chunks)  # [n_local]
        if not store.get("index"):  # one process (checked in _eval_batch)
            return x
        return gather_by_index(torch.cat(store["index"]), x)[1]

    def compute_test_metrics(self) -> dict[str, float]:
        """Metrics from what the test (or validation) steps stored; see the module docstring for the names."""
        from common.metrics.ood import ood_metrics

        out: dict[str, float] = {}
        id_store = self._store.get("id", {})
        for key, name in (("correct", "acc"), ("correct_global", "acc_global"), ("correct_local", "acc_local")):
            x = self._gather(id_store, key)
            if x is not None:
                out[f"test/{name}"] = 100.0 * x.mean().item()
        per_score: dict[str, list[dict[str, float]]] = defaultdict(list)
        for name, store in self._store.items():
            if name.startswith("ood/"):
                for score in (k for k in store if k != "index"):
                    ood = self._gather(store, score)
                    idd = self._gather(id_store, score)
                    if ood is None or idd is None:
                        continue
                    m = ood_metrics(idd.cpu(), ood.cpu())
                    per_score[score].append(m)
                    for k, v in m.items():
                        out[f"test/{name}/{score}/{k}"] = float(v)
            elif name.startswith("domain/"):
                x = self._gather(store, "correct")
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


# ---------------------------------------------------------------------- DDP helpers
def _key_store() -> defaultdict[str, list[torch.Tensor]]:
    return defaultdict(list)


def _is_sharded(loader: Any) -> bool:
    """True when ``loader`` splits its items across ranks (a DistributedSampler, or a rank-aware batch sampler)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    for s in (getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
        if isinstance(s, DistributedSampler) or getattr(s, "num_replicas", 1) > 1 or getattr(s, "world_size", 1) > 1:
            return True
    return False
