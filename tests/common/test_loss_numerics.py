"""common.losses.numerics (fp32 upcast, zero-safe L2 normalisation) and the PML adapter built on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses

from common.losses.base import LossInputs, RetrievalLoss
from common.losses.numerics import NORM_EPS, l2_normalize
from common.losses.pml_adapter import PMLLoss
from tests.helpers.degenerate import check_empty_batch, check_low_precision, check_zero_embedding_handled

LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_normalize_equals_f_normalize_above_eps_and_kills_degenerate_rows(dtype):
    torch.manual_seed(0)
    x = torch.randn(40, 9, dtype=dtype)
    x[3] = 0.0
    x[7] *= 1e-9  # below eps: no direction
    x[11] *= 1e-5  # above eps: a real (small) vector
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = l2_normalize(a, dim=1), F.normalize(b, dim=1)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    keep = torch.ones(40, dtype=torch.bool)
    keep[[3, 7]] = False
    assert torch.equal(ya[keep], yb[keep]) and torch.equal(a.grad[keep], b.grad[keep])  # bitwise F.normalize
    assert torch.equal(ya[~keep], torch.zeros_like(ya[~keep])) and torch.equal(
        a.grad[~keep], torch.zeros_like(a.grad[~keep])
    )
    assert b.grad[3].norm() > 1e11  # what F.normalize does to a zero row
    # the gradient through the normalisation is at most |upstream| / eps for every row
    assert (a.grad.norm(dim=1) <= g.norm(dim=1) / NORM_EPS).all()


def test_retrieval_loss_upcasts_and_disables_autocast():
    seen = {}

    class Probe(RetrievalLoss):
        def compute(self, inputs: LossInputs) -> torch.Tensor:
            seen.update(e=inputs.embeddings.dtype, r=inputs.ref_embeddings.dtype, mm=inputs.scores.dtype)
            return inputs.embeddings.sum()

    x = torch.randn(3, 4, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Probe()(x, torch.arange(3), torch.randn(2, 4).half(), torch.arange(2)).backward()
    assert seen == {"e": torch.float32, "r": torch.float32, "mm": torch.float32}
    assert x.grad.dtype == torch.bfloat16


def _ms():
    return PMLLoss(losses.MultiSimilarityLoss())


def _contrastive_cos():
    return PMLLoss(losses.ContrastiveLoss(pos_margin=1.0, neg_margin=0.5, distance=distances.CosineSimilarity()))


def _contrastive_l2_raw():
    return PMLLoss(losses.ContrastiveLoss(distance=distances.LpDistance(normalize_embeddings=False)))


@pytest.mark.parametrize("make", [_ms, _contrastive_cos])
def test_pml_adapter_zero_embedding(make):
    """Before: a MultiSimilarity gradient of 1.8e11 on a zero row (PML's F.normalize)."""
    x = torch.randn(len(LABELS), 5, generator=torch.Generator().manual_seed(0))
    check_zero_embedding_handled(make(), x, LABELS, rows=(0, 5))


def test_pml_adapter_keeps_unnormalised_distances_unnormalised():
    x = torch.randn(len(LABELS), 5, generator=torch.Generator().manual_seed(1)) * 3
    adapter = _contrastive_l2_raw()
    assert not adapter.normalizes and _ms().normalizes
    assert adapter(x, LABELS).item() == pytest.approx(adapter.loss(x, LABELS).item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pml_adapter_low_precision_and_mixed_memory(dtype):
    """Before: fp16 in gave a fp16 loss, and an fp32 batch against a fp16 memory crashed on the matmul."""
    x = torch.randn(len(LABELS), 5, generator=torch.Generator().manual_seed(2))
    check_low_precision(_ms(), x, LABELS, dtype)
    out = _ms()(x, LABELS, x.to(dtype), LABELS)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_pml_adapter_empty_batch():
    check_empty_batch(_ms(), 5, LABELS)


def test_retrieval_head_zero_feature_row_has_finite_bounded_gradient():
    """A network whose pooled feature is all zero for one image must not send a 1e12 gradient into the backbone."""
    from common.backbones.head import RetrievalHead

    head = RetrievalHead(8, embed_dim=None, pooling="avg", layer_norm=False, normalize=True)
    feats = torch.randn(4, 8)
    feats[2] = 0.0
    feats.requires_grad_(True)
    out = head(feats)
    assert torch.allclose(out[[0, 1, 3]], torch.nn.functional.normalize(feats[[0, 1, 3]].detach(), dim=-1))
    assert torch.equal(out[2], torch.zeros(8))
    out.sum().backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().max() < 10
    assert torch.equal(feats.grad[2], torch.zeros(8))
