"""HAPPIER losses on fp16/bf16 input, empty batches and zero embeddings, like the roadmap losses."""

from __future__ import annotations

import pytest
import torch

from happier.losses import CSLLoss, NormalizedSoftmaxLoss, SupHAP
from tests.helpers.degenerate import check_empty_batch, check_low_precision, check_zero_embedding_handled

D = 6
FINE = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 5])
LABELS = torch.stack([FINE, FINE // 2], dim=1)  # [B, 2]
LOSSES = {
    "SupHAP": lambda: SupHAP(),
    "SupHAP_hrank": lambda: SupHAP(with_hrank=True, include_query=False),
    "NormalizedSoftmaxLoss": lambda: NormalizedSoftmaxLoss(6, D),
    "CSLLoss": lambda: CSLLoss(6, D, margins=(0.25, 0.45)),
}


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(len(FINE), D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_low_precision_embeddings_are_computed_in_fp32(name, dtype):
    """Before: 'expected m1 and m2 to have the same dtype' (fp16 embeddings against fp32 proxies)."""
    check_low_precision(LOSSES[name](), _x(), LABELS, dtype)


@pytest.mark.parametrize("name", ["SupHAP", "NormalizedSoftmaxLoss"])
def test_memory_of_another_precision(name):
    """An fp32 batch ranking an fp16 memory (and the reverse): computed in fp32, as in fp32."""
    loss = LOSSES[name]()
    mem, mem_y = _x(1), LABELS.flip(0)
    check_low_precision(loss, _x(), LABELS, torch.float16, ref_embeddings=mem, ref_labels=mem_y)
    out = loss(_x(), LABELS, mem.half(), mem_y)
    torch.testing.assert_close(out, loss(_x(), LABELS, mem.half().float(), mem_y))


def test_autocast_runs_in_fp32():
    x = _x().bfloat16().requires_grad_(True)
    for name in sorted(LOSSES):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = LOSSES[name]()(x, LABELS)
        assert out.dtype == torch.float32, name


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_batch_is_a_zero_with_graph(name):
    """Before: 'min(): Expected reduction dim to be specified for input.numel() == 0' (proxy losses)."""
    check_empty_batch(LOSSES[name](), D, LABELS)


@pytest.mark.parametrize("scale", [0.0, 1e-20])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_embedding_gets_no_gradient_and_leaves_the_rest_unchanged(name, scale):
    """Before: gradient norms ~1e11..1e13 from one all-zero row."""
    check_zero_embedding_handled(LOSSES[name](), _x(), LABELS, rows=(1, 6), scale=scale)


def test_bad_labels_still_raise_on_an_empty_batch():
    with pytest.raises(ValueError, match="margins"):
        CSLLoss(6, D, margins=(0.25, 0.35, 0.45))(torch.randn(0, D), LABELS[:0])
    with pytest.raises(ValueError, match="hierarchy_level"):
        NormalizedSoftmaxLoss(6, D, hierarchy_level=2)(torch.randn(0, D), LABELS[:0])
