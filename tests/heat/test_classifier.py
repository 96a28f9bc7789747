"""The demo classifier's accuracy (torchmetrics MulticlassAccuracy): the epoch value is the accuracy over all items."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from heat.classifier import ImageClassifier, SmallCNN


def test_val_acc_is_the_accuracy_over_every_item():
    torch.manual_seed(0)
    net = SmallCNN(num_classes=4, width=4)
    x, y = torch.randn(23, 1, 28, 28), torch.arange(23) % 4
    module = ImageClassifier(net)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    res = trainer.validate(module, DataLoader(TensorDataset(x, y), batch_size=5), verbose=False)[0]  # 5,5,5,5,3
    with torch.no_grad():
        expected = (net.eval()(x).argmax(-1) == y).float().mean().item()
    assert res["val/acc"] == pytest.approx(expected, abs=1e-6)


def test_num_classes_comes_from_the_head_or_is_required():
    assert ImageClassifier(SmallCNN(num_classes=7)).val_acc.num_classes == 7
    with pytest.raises(ValueError, match="num_classes"):
        ImageClassifier(torch.nn.Linear(3, 2))
