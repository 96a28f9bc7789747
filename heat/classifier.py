"""The HEAT demo's classifier: a cross-entropy LightningModule, and a tiny timm-style CNN for CPU demos.

``ImageClassifier`` trains any backbone that maps images to logits with cross-entropy (AdamW, cosine schedule); its
``train/acc``, ``val/acc`` and ``test/acc`` are torchmetrics ``MulticlassAccuracy`` objects, so under DDP the epoch value is the
accuracy over every rank's items (synchronised by torchmetrics), not rank 0's.
``SmallCNN`` exposes timm's interface (``forward_features`` -> ``[N, C, H, W]`` map, ``forward_head(map,
pre_logits=False)``, ``get_classifier``), so feature extractors written for timm models work on it unchanged.
For 28x28 inputs its last map is ``width*4 x 7 x 7``.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from common.models.checkpoint_identity import CheckpointIdentityMixin


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four 3x3 conv-BN-ReLU layers (strides 1, 2, 2, 1), global average pooling, a linear head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(in_chans, width, 1),
            _conv_bn(width, 2 * width, 2),
            _conv_bn(2 * width, 4 * width, 2),
            _conv_bn(4 * width, 4 * width, 1),
        )
        self.num_features = 4 * width
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        z = x.mean((2, 3))
        return z if pre_logits else self.fc(z)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class ImageClassifier(CheckpointIdentityMixin, L.LightningModule):
    """Cross-entropy training of ``backbone`` (images -> logits) on batches ``{"image", "label"}`` or tuples.

    Args:
        backbone: e.g. ``SmallCNN`` or ``timm.create_model("resnet10t", in_chans=1, num_classes=...)``.
        lr, weight_decay: AdamW; the learning rate follows a one-cycle schedule (15% warm-up, cosine decay) over all
            training steps.
        label_smoothing: of the cross-entropy.
        num_classes: for the accuracy metrics; default the backbone's (``get_classifier().out_features``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
    ):
        super().__init__()
        if num_classes is None:
            head = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
            num_classes = getattr(head, "out_features", None)
        if num_classes is None:
            raise ValueError("ImageClassifier needs num_classes= for a backbone without get_classifier()")
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    @staticmethod
    def _unpack(batch) -> tuple[Tensor, Tensor]:
        if isinstance(batch, dict):
            y = batch["label"]
            return batch["image"], (y[:, 0] if y.ndim > 1 else y)
        return batch[0], batch[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = self._unpack(batch)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.train_acc(logits.detach(), y)
        self.log("train/acc", self.train_acc, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = self._unpack(batch)
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), batch_size=len(y))
        self.val_acc(logits, y)
        self.log("val/acc", self.val_acc, prog_bar=True, batch_size=len(y))

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = self._unpack(batch)
        self.test_acc(self(x), y)
        self.log("test/acc", self.test_acc, batch_size=len(y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=max(int(total), 1), pct_start=0.15
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
