"""HAPPIER as configured: every `*_happier` row's weighted sum of the `sup_hap` and `cluster` terms equals the
formula of the former HAPPIERLoss wrapper, ``(1 - lam) * Sup-H-AP + lam * NSM``: the value against a loop-based
brute force of Sup-H-AP and a numpy NSM, the gradient (embeddings and proxies) against the two terms computed on their own.
Also: checkpoints written with the wrapper (``losses.main.cluster.proxies``) still load."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from common.models.retrieval_module import RetrievalModule
from happier.losses import NormalizedSoftmaxLoss, SupAPStep, SupHAP
from tests.happier import _brute
from tests.happier.test_configs import LEVELS, _dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# coco_happier is Sup-H-AP alone (no clustering on multi-label data): tests/happier/test_rows_hgldv2_coco.py
ROWS = sorted(p.stem for p in (CONFIGS / "experiment" / "happier").glob("*_happier.yaml") if p.stem != "coco_happier")
ROWS += ["demo_fmnist"]
# what each row held before the split: HAPPIERLoss(weight=lam) and its Sup-H-AP step arguments
OLD_LAM = {row: 0.5 if row == "dyml_animal_happier" else 0.1 for row in ROWS}
OLD_STEP = {row: {"start": 0.0, "offset": 1.0} if row.startswith(("inat", "hgldv2")) else {} for row in ROWS}
PAPER_STEP = {"tau": 0.01, "rho": 100.0, "delta": 0.05, "start": 0.5, "offset": 1.44, "linear_mode": "x_minus_delta"}


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


def _compose(row: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"experiment=happier/{row}"])


def _module(cfg) -> RetrievalModule:
    return RetrievalModule(
        net=_Identity(),
        losses=instantiate(cfg.model.losses),
        loss_weights=cfg.model.loss_weights,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
    ).double()


def _batch(levels: int, dim: int):
    g = torch.Generator().manual_seed(5)
    fine = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 5])
    labels = torch.stack([fine // (2**k) for k in range(levels)], dim=1)  # nested [B, L]
    return torch.randn(len(fine), dim, generator=g, dtype=torch.float64), labels


def _nsm_numpy(emb, proxies, y, temp=0.05) -> float:
    """mean_b CE(cos(e_b, W) / T, y_b) in numpy (float64)."""
    e, w = emb.numpy(), proxies.numpy()
    logits = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T / temp
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(y)), y.numpy()]))


# H-GLDv2's 81,313 proxies make its case take ~25 s (float64, gradients): slow suite
@pytest.mark.parametrize(
    "row", [pytest.param(r, marks=pytest.mark.slow) if r.startswith("hgldv2") else r for r in ROWS]
)
def test_configured_sum_equals_the_former_happier_formula(row):
    cfg = _compose(row)
    lam, step = OLD_LAM[row], {**PAPER_STEP, **OLD_STEP[row]}
    module = _module(cfg)
    assert list(module.losses) == ["sup_hap", "cluster"]
    emb, labels = _batch(LEVELS[_dataset(row)], cfg.model.net.embed_dim)
    proxies = module.losses.cluster.proxies
    x = emb.clone().requires_grad_(True)
    total, parts = module.compute_loss(x, labels)
    # value: a loop over the Sup-H-AP formula and numpy's NSM
    hap = _brute.loss_brute(emb, labels, lower=functools.partial(_brute.h_minus, **step))
    nsm = _nsm_numpy(emb, proxies.detach(), labels[:, 0])
    assert total.item() == pytest.approx((1 - lam) * hap + lam * nsm, abs=1e-10)
    assert parts["sup_hap"].item() == pytest.approx(hap, abs=1e-10)
    # gradient: the two losses on their own, summed with the old weights
    total.backward()
    y = emb.clone().requires_grad_(True)
    alone = NormalizedSoftmaxLoss(proxies.shape[0], proxies.shape[1]).double()
    alone.load_state_dict(module.losses.cluster.state_dict())
    want = (1 - lam) * SupHAP(SupAPStep(**step))(y, labels) + lam * alone(y, labels)
    want.backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(proxies.grad, alone.proxies.grad, rtol=1e-9, atol=1e-12)


def test_checkpoints_of_the_wrapper_still_load():
    """The wrapper stored the proxies as losses.<name>.cluster.proxies; they load into losses.cluster.proxies."""
    module = _module(_compose("demo_fmnist"))
    old = {k: v.clone() for k, v in module.state_dict().items()}
    old["losses.happier.cluster.proxies"] = torch.randn_like(old.pop("losses.cluster.proxies"))
    fresh = _module(_compose("demo_fmnist"))
    fresh.load_state_dict(old)  # strict
    assert torch.equal(fresh.losses.cluster.proxies, old["losses.happier.cluster.proxies"])
    # a single proxy loss saved under the old name "main" (NSM, CSL rows) loads too
    csl = RetrievalModule(net=_Identity(), losses=instantiate(_compose("sop_csl").model.losses), optimizer=None)
    state = {f"losses.main.{k.split('.', 2)[2]}": v.clone() for k, v in csl.state_dict().items()}
    csl.load_state_dict(state)
    with pytest.raises(RuntimeError, match="Unexpected"):
        csl.load_state_dict({**state, "losses.main.other": torch.zeros(1)})


def test_training_step_takes_multilabel_labels_only_for_losses_that_support_them():
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(6, 8, generator=g), "label": torch.rand(6, 4, generator=g) > 0.5}
    opt = functools.partial(torch.optim.SGD, lr=0.1)
    module = RetrievalModule(net=_Identity(), losses={"sup_hap": SupHAP()}, optimizer=opt)
    module.log = lambda *a, **k: None
    assert torch.isfinite(module.training_step(batch, 0))
    nsm = NormalizedSoftmaxLoss(num_classes=4, embedding_size=8)  # one class per item: refuses multi-label
    single = RetrievalModule(net=_Identity(), losses={"sup_hap": SupHAP(), "nsm": nsm}, optimizer=opt)
    single.log = module.log
    with pytest.raises(ValueError, match="NormalizedSoftmaxLoss takes integer class ids"):
        single.training_step(batch, 0)
