"""configs/data/hgldv2.yaml and configs/data/coco_multilabel.yaml compose, build their datamodule on tiny files in
the official layouts, give a training batch from their sampler and query/gallery test loaders whose labels
evaluate."""

from __future__ import annotations

import hydra
import torch

from common.data.datasets.coco_multilabel import read_instances
from common.data.datasets.gldv2 import load_retrieval_split
from common.metrics.retrieval import evaluate_retrieval
from tests.conftest import compose_train
from tests.helpers.coco_files import make_coco
from tests.helpers.gldv2_files import make_gldv2

SMALL = ["data.batch_size=4", "data.eval_batch_size=4", "data.sampler.m=2", "data.pin_memory=false"]


def _evaluate(q_lab, g_lab, metrics):
    """Metrics of random embeddings, queries against the gallery (as the model's query/gallery test does)."""
    nq, n = len(q_lab), len(q_lab) + len(g_lab)
    emb = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.cat([q_lab, g_lab])
    kw = dict(query_idx=torch.arange(nq), gallery_idx=torch.arange(nq, n), exclude_self=False)
    return evaluate_retrieval(emb, labels, metrics=metrics, **kw)


def _loaders(dm):
    batch = next(iter(dm.train_dataloader()))
    q_loader, g_loader = dm.test_dataloader()
    q = [b for b in q_loader]
    g = [b for b in g_loader]
    return batch, torch.cat([b["label"] for b in q]), torch.cat([b["label"] for b in g])


def test_hgldv2_config(tmp_path):
    load_retrieval_split.cache_clear()
    make_gldv2(tmp_path / "data" / "gldv2")
    cfg = compose_train(
        [
            "data=hgldv2",
            f"paths.data_dir={tmp_path / 'data'}",
            "data.train_dataset.hierarchy=train_label_to_hierarchical.csv",
            "data.query_dataset.hierarchy=index_label_to_hierarchical.csv",
            *SMALL,
        ],
        tmp_path,
    )
    assert cfg.data.gallery_dataset.hierarchy == "index_label_to_hierarchical.csv"
    dm = hydra.utils.instantiate(cfg.data)
    assert [s.name for s in dm.test_splits] == ["query", "gallery"]
    assert [len(dm.query_dataset), len(dm.gallery_dataset)] == [3, 6]
    batch, q_lab, g_lab = _loaders(dm)
    assert batch["image"].shape == (4, 3, 224, 224) and batch["label"].shape == (4, 2)
    assert q_lab.shape == (3, 2) and g_lab.shape == (6, 2)
    res = _evaluate(q_lab, g_lab, ("map", "hap", "ndcg"))
    assert res["num_skipped_queries"] == 0 and 0 < res["hap"] <= 1


def test_coco_multilabel_config(tmp_path):
    read_instances.cache_clear()
    make_coco(tmp_path / "data" / "coco")
    overrides = ["data=coco_multilabel", f"paths.data_dir={tmp_path / 'data'}", *SMALL]
    overrides += ["data.train_dataset.num_queries=2", "data.train_dataset.num_train=5"]
    cfg = compose_train(overrides, tmp_path)
    assert cfg.data.gallery_dataset.num_queries == 2
    dm = hydra.utils.instantiate(cfg.data)
    assert [len(dm.query_dataset), len(dm.gallery_dataset)] == [2, 5]
    batch, q_lab, g_lab = _loaders(dm)
    assert batch["label"].dtype == torch.bool and batch["label"].shape == (4, 3)
    # every item of the batch shares a label with another one (2 items per label)
    shared = batch["label"].float() @ batch["label"].float().T
    assert ((shared - torch.diag(shared.diagonal())) > 0).any(dim=1).all()
    res = _evaluate(q_lab, g_lab, ("map", "hap", "ndcg", "asi"))
    assert 0 < res["ndcg"] <= 1 and 0 < res["hap"] <= 1
