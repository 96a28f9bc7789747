"""roadmap losses + XBM inside the shared RetrievalModule (the interface the lead's module uses)."""

from __future__ import annotations

import functools

import torch

from common.models.retrieval_module import RetrievalModule
from roadmap.losses import CalibrationLoss, NormalizedSoftmaxLoss, SupAP
from roadmap.memory import XBM


class TinyNet(torch.nn.Module):
    embed_dim = 8

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 8)

    def forward(self, x):
        return torch.nn.functional.normalize(self.fc(x), dim=1)


def test_compute_loss_with_memory_and_checkpointed_state():
    torch.manual_seed(0)
    memory = XBM(size=32, embedding_dim=8, weight=0.5, activate_after=0, unique=True)
    module = RetrievalModule(
        net=TinyNet(),
        losses={"supap": SupAP(), "calibration": CalibrationLoss(), "nsm": NormalizedSoftmaxLoss(4, 8)},
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        loss_param_groups={"nsm": {"lr": 10.0}},
        memory=memory,
    )
    x, y, idx = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.arange(8)
    z = module.embed(x)
    total, parts = module.compute_loss(z, y, idx)
    names = ("supap", "calibration", "nsm")
    assert set(parts) == {*names, *(f"{n}_memory" for n in names)}
    assert len(memory) == 8 and parts["nsm_memory"].item() == 0.0
    # with only this batch in memory, the memory terms of ROADMAP equal their in-batch values (query included; the
    # calibration's extra self-pairs have s = 1, a zero term, which the non-zero mean leaves out)
    for name in ("supap", "calibration"):
        assert abs(parts[f"{name}_memory"].item() - parts[name].item()) < 1e-5
    total.backward()
    assert module.net.fc.weight.grad is not None and torch.isfinite(module.net.fc.weight.grad).all()
    state = module.state_dict()
    assert {"memory.embeddings", "memory.labels", "memory.filled", "memory.ptr"} <= set(state)
    groups = {g["name"]: g for g in module.configure_optimizers().param_groups}
    assert groups["loss/nsm"]["lr"] == 10.0
