"""Evaluation mixin for embedding models: collect test embeddings, gather them across DDP ranks in dataset
order, call :func:`common.metrics.retrieval.evaluate_retrieval` and log every metric.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from common.models.distributed import gather_by_index

log = logging.getLogger(__name__)


class EmbeddingEvalMixin:
    """Adds ``test_step``/``validation_step`` that embed images and an epoch end that computes retrieval metrics.

    The host LightningModule provides ``embed(images) -> [B, D]`` and the attributes ``eval_metrics``,
    ``recall_at``, ``per_level_metrics`` and optionally ``save_test_embeddings`` (writes
    ``<trainer.default_root_dir>/test_embeddings.npz`` for plots: precision-recall curves, retrieval grids). One test
    loader is a single self-excluded set; two are query then gallery (the datamodule's ``test_splits`` name them).
    """

    def _eval_reset(self) -> None:
        self._eval_buffers: dict[int, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))

    def _eval_step(self, batch: dict, dataloader_idx: int = 0) -> None:
        if not hasattr(self, "_eval_buffers"):
            self._eval_reset()
        emb = self.embed(batch["image"]).float()
        buf = self._eval_buffers[dataloader_idx]
        buf["index"].append(torch.as_tensor(batch["index"], device=emb.device))
        buf["emb"].append(emb.detach())
        buf["label"].append(torch.as_tensor(batch["label"], device=emb.device))

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        from common.metrics.retrieval import evaluate_retrieval

        buffers = getattr(self, "_eval_buffers", {})
        if not buffers:
            return {}
        parts = []
        for k in sorted(buffers):
            b = buffers[k]
            _, emb, lab = gather_by_index(torch.cat(b["index"]), torch.cat(b["emb"]), torch.cat(b["label"]))
            parts.append((emb, lab))
        self._eval_reset()
        if len(parts) == 1:
            emb, labels = parts[0]
            kw = {"exclude_self": True}
        else:  # query loader, gallery loader
            (q_emb, q_lab), (g_emb, g_lab) = parts
            emb, labels = torch.cat([q_emb, g_emb]), torch.cat([q_lab, g_lab])
            nq = len(q_emb)
            kw = {
                "query_idx": torch.arange(nq),
                "gallery_idx": torch.arange(nq, len(emb)),
                "exclude_self": False,
            }
        emb, labels = emb.cpu(), labels.cpu()
        if getattr(self, "save_test_embeddings", False) and stage == "test" and self.trainer.is_global_zero:
            # [N, D] float32 and [N] / [N, L] labels, in dataset order (query set first for query/gallery)
            path = Path(self.trainer.default_root_dir) / "test_embeddings.npz"
            np.savez_compressed(path, embeddings=emb.numpy(), labels=labels.numpy(), num_queries=len(parts[0][0]))
        results = dict(
            evaluate_retrieval(emb, labels, metrics=tuple(self.eval_metrics), recall_at=tuple(self.recall_at), **kw)
        )
        # per level: hierarchical int64 [N, L] labels only; a multi-label bool [N, C] matrix has no levels (its
        # columns are labels, and the graded metrics above already read the number of shared labels)
        if self.per_level_metrics and labels.ndim == 2 and labels.dtype != torch.bool:
            for level in range(1, labels.shape[1]):
                per = evaluate_retrieval(
                    emb, labels[:, level], metrics=("map_at_r", "map", "recall"), recall_at=(1,), **kw
                )
                results.update({f"level{level}/{k}": v for k, v in per.items()})
        self.last_eval_results = {f"{stage}/{k}": float(v) for k, v in results.items()}
        _warn_undefined(stage, self.last_eval_results, num_queries=len(parts[0][0]), num_items=len(emb))
        self.log_dict(self.last_eval_results, sync_dist=False)
        return self.last_eval_results

    # Lightning hooks
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


def _warn_undefined(stage: str, results: dict[str, float], num_queries: int, num_items: int) -> None:
    """Say so when metrics are undefined (NaN): no query had a relevant item in the gallery."""
    undefined = sorted(k for k, v in results.items() if math.isnan(v))
    if not undefined:
        return
    skipped = results.get(f"{stage}/num_skipped_queries")
    why = f"{int(skipped)} of {num_queries} queries" if skipped is not None else "the queries"
    log.warning(
        "%s: %d metrics are undefined (%s): %s have no relevant item in the gallery (%d items evaluated). The test "
        "set is too small or has one item per class.",
        stage,
        len(undefined),
        ", ".join(undefined),
        why,
        num_items,
    )
