"""ROADMAP as configured: the retrieval module's weighted sum of the `supap` and `calibration` terms equals the
formula of the former ROADMAPLoss wrapper, ``scale * ((1 - lam) * SupAP + lam * calibration)``, computed here
independently (SupAP by the B x B x B construction of the original code, calibration by pytorch-metric-learning's
ContrastiveLoss), in value and gradient, for every loss config that combines the two."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_metric_learning.distances import DotProductSimilarity
from pytorch_metric_learning.losses import ContrastiveLoss

from common.models.retrieval_module import RetrievalModule
from common.ranking import SupAPStep, heaviside
from roadmap.losses import CalibrationLoss
from tests.roadmap.brute import brute_ap_loss, h_minus
from tests.roadmap.test_b3_equivalence import bench

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# what each config held before the split: ROADMAPLoss(lam, scale) and its SupAP step arguments
PAPER_STEP = {"tau": 0.01, "rho": 100.0, "delta": 0.05, "start": 0.5, "offset": 1.44, "linear_mode": "x_minus_delta"}
INAT = {"start": 0.0, "offset": 1.0}
OLD = {
    "roadmap": (0.5, 2.0, {}),
    "roadmap_paper": (0.5, 2.0, {"linear_mode": "x"}),
    "roadmap_inat": (0.5, 2.0, INAT),
    "roadmap_tpami": (0.1, 1.0, {}),
    "roadmap_tpami_inat": (0.1, 1.0, INAT),
}


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


def _module(loss_config: str) -> RetrievalModule:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=roadmap/demo_fmnist", f"model/loss={loss_config}"])
    return RetrievalModule(
        net=_Identity(),
        losses=instantiate(cfg.model.losses),
        loss_weights=cfg.model.loss_weights,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
    )


def _batch():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(5).repeat_interleave(4)
    labels[-2:] = torch.tensor([5, 6])  # two queries without positives
    return torch.randn(20, 16, generator=g, dtype=torch.float64), labels


def old_roadmap(emb, labels, lam, scale, step):
    ap = bench.ap_loss_b3(emb, labels, SupAPStep(**{**PAPER_STEP, **step}), heaviside)
    pml = ContrastiveLoss(pos_margin=0.9, neg_margin=0.6, distance=DotProductSimilarity())
    return scale * ((1.0 - lam) * ap + lam * pml(F.normalize(emb, dim=1), labels))


@pytest.mark.parametrize("config", sorted(OLD))
def test_configured_sum_equals_the_former_roadmap_formula(config):
    lam, scale, step = OLD[config]
    module = _module(config)
    assert list(module.losses) == ["supap", "calibration"]
    emb, labels = _batch()
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    total, parts = module.compute_loss(x1, labels)
    want = old_roadmap(x2, labels, lam, scale, step)
    assert total.item() == pytest.approx(want.item(), abs=1e-12)
    total.backward()
    want.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-12)
    # each term is logged on its own, and SupAP is also the loop-based brute force of its formula
    neg_step = functools.partial(h_minus, **{**PAPER_STEP, **step})
    assert parts["supap"].item() == pytest.approx(brute_ap_loss(emb, labels, neg_step=neg_step), abs=1e-10)


@pytest.mark.parametrize("memory", [False, True])
def test_calibration_on_shared_scores_equals_pml_contrastive(memory):
    """The calibration term reads the shared cosine matrix; PML's ContrastiveLoss (as the original subclassed) is the
    oracle: value and gradient, in-batch (self-pairs excluded) and against a memory (all pairs)."""
    emb, labels = _batch()
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    pml = ContrastiveLoss(pos_margin=0.9, neg_margin=0.6, distance=DotProductSimilarity())
    if memory:
        g = torch.Generator().manual_seed(4)
        mem, mem_labels = torch.randn(30, 16, generator=g, dtype=torch.float64), torch.randint(0, 7, (30,), generator=g)
        ours = CalibrationLoss()(x1, labels, mem, mem_labels)
        ref = pml(F.normalize(x2, dim=1), labels, ref_emb=F.normalize(mem, dim=1), ref_labels=mem_labels)
    else:
        ours, ref = CalibrationLoss()(x1, labels), pml(F.normalize(x2, dim=1), labels)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-12)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-12)


def test_one_cosine_matrix_per_step_shared_by_every_term(monkeypatch):
    """Every term of a step reads the same prepared inputs, whose cosine matrix is built once."""
    module = _module("roadmap")
    seen = []
    for loss in module.losses.values():
        compute = loss.compute
        monkeypatch.setattr(loss, "compute", lambda inputs, f=compute: seen.append(inputs) or f(inputs))
    matmuls = []
    for owner, name in ((torch.Tensor, "__matmul__"), (torch, "matmul"), (torch, "mm")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda a, b, f=real: matmuls.append(a.shape) or f(a, b))
    emb, labels = _batch()
    module.compute_loss(emb, labels)
    assert len(seen) == 2 and seen[0] is seen[1]
    assert len(matmuls) == 1  # q @ r.T, once for the two terms
