"""Every roadmap loss on a zero (or near-zero) embedding, and NSM on an empty batch (common.losses.numerics)."""

from __future__ import annotations

import pytest
import torch

from roadmap import losses as R
from tests.helpers.degenerate import check_empty_batch, check_zero_embedding_handled

D = 6
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
SMOOTH_LOSSES = {
    "SupAP": R.SupAP,
    "SmoothAP": R.SmoothAP,
    "CalibrationLoss": R.CalibrationLoss,
    "FastAP": R.FastAP,
    "BlackBoxAP": R.BlackBoxAP,
    "SoftBinAP": R.SoftBinAP,
    "TripletLoss": lambda: R.TripletLoss(mining="all"),
    "MultiSimilarityLoss": R.MultiSimilarityLoss,
    "SupRecall": R.SupRecall,
    "SupNDCG": R.SupNDCG,
    "NormalizedSoftmaxLoss": lambda: R.NormalizedSoftmaxLoss(4, D),
}


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(len(LABELS), D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scale", [0.0, 1e-20])
@pytest.mark.parametrize("name", sorted(SMOOTH_LOSSES))
def test_zero_embedding_gets_no_gradient_and_leaves_the_rest_unchanged(name, scale):
    """Before: one all-zero row gave SupAP a gradient norm ~4e11 and ROADMAP (SupAP + calibration) an inf gradient (F.normalize's 1e-12)."""
    torch.manual_seed(0)
    loss = SMOOTH_LOSSES[name]()
    check_zero_embedding_handled(loss, _x(), LABELS, rows=(0, 4), scale=scale)


@pytest.mark.parametrize("name", ["SupAP", "CalibrationLoss", "SupRecall", "FastAP"])
def test_zero_embedding_against_a_memory(name):
    """A zero row in the batch while ranking a memory (which holds a zero row too): finite, no gradient to it."""
    torch.manual_seed(0)
    loss = SMOOTH_LOSSES[name]()
    mem, mem_y = _x(1), LABELS.flip(0)
    mem[3] = 0.0
    grad = check_zero_embedding_handled(lambda e, y: loss(e, y, mem, mem_y), _x(), LABELS, rows=(2,))
    assert grad.abs().sum() > 0


def test_nsm_empty_batch_is_a_zero_with_graph():
    """Before: 'min(): Expected reduction dim to be specified for input.numel() == 0'."""
    check_empty_batch(R.NormalizedSoftmaxLoss(4, D), D, LABELS)


@pytest.mark.parametrize("name", sorted(SMOOTH_LOSSES))
def test_every_loss_accepts_an_empty_batch(name):
    check_empty_batch(SMOOTH_LOSSES[name](), D, LABELS)
