"""HEAT against the released code's definitions (MarcLafon/heatood at 2b68ccd), each recomputed here in numpy.

1. the paper's prior rows GMM / GMM-std: the released SSD scorer, min_c (z - mu_c)^T Sigma^-1 (z - mu_c) with the
   pooled within-class covariance (np.cov(bias=True) + 1e-12 I) of L2-normalised avg / std features;
2. the paper's "Average": the mean of the per-set values over every OOD set (FPR95 = share of OOD scores below the
   95th percentile of the ID scores; AUROC with OOD positive);
3. the CIFAR normalisation of the released transforms;
4. the CD loss on E_theta / T, and one SGLD step whose prior gradient is the mixture's gradient in R^D.
"""

from __future__ import annotations

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

import common.config.resolvers  # noqa: F401
from heat.evaluate import AVERAGE, evaluate_scorers
from heat.mlp import EnergyMLP
from heat.module import HEATModule
from heat.scorers.gaussian import GMM
from heat.scorers.logits import MSP, Energy
from heat.sgld import HybridEnergy, sgld
from tests.heat.helpers import make_features

CONFIG_DIR = str((__import__("pathlib").Path(__file__).parents[2] / "configs").resolve())


def _compose(name: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train.yaml", overrides=[f"experiment=heat/{name}"])


def _np_fit(z: np.ndarray, y: np.ndarray, reg: float = 1e-12):
    """Class means, shared covariance (np.cov, bias=True, + reg I) and weights of L2-normalised ``z``."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    classes = np.unique(y)
    means = np.stack([z[y == c].mean(0) for c in classes])
    centred = np.concatenate([z[y == c] - means[i] for i, c in enumerate(classes)])
    cov = np.cov(centred.T, bias=True) + reg * np.eye(z.shape[1])
    weights = np.array([(y == c).mean() for c in classes])
    return means, cov, weights


def _np_min_maha(z: np.ndarray, means: np.ndarray, cov: np.ndarray) -> np.ndarray:
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    prec = np.linalg.inv(cov)
    d = z[:, None, :] - means[None]  # [N, C, D]
    return np.einsum("ncd,de,nce->nc", d, prec, d).min(1)


# ------------------------------------------------------------------ 1. prior rows
@pytest.mark.parametrize("ds", ["cifar10", "cifar100", "imagenet"])
def test_paper_prior_rows_are_the_released_ssd_scorer(ds):
    priors = _compose(f"{ds}_eval").heat_eval.priors
    train, test = make_features(n=240, d=6, c=3, seed=1), make_features(n=30, d=6, c=3, seed=2, shift=0.5)
    y = train.labels.numpy()
    for row, pool in (("GMM", "avg"), ("GMM-std", "std")):
        s = hydra.utils.instantiate(priors[row]).fit(train)
        means, cov, _ = _np_fit(train.pooled(pool).double().numpy(), y)
        expected = _np_min_maha(test.pooled(pool).double().numpy(), means, cov)
        np.testing.assert_allclose(s.score(test).double().numpy(), expected, rtol=1e-5, atol=1e-6)
    # the mixture energies stay available as separately named rows
    for row, pool in (("GMM-energy", "avg"), ("GMM-std-energy", "std")):
        s = hydra.utils.instantiate(priors[row]).fit(train)
        means, cov, w = _np_fit(train.pooled(pool).double().numpy(), y)
        z = test.pooled(pool).double().numpy()
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        d = z[:, None, :] - means[None]
        maha = np.einsum("ncd,de,nce->nc", d, np.linalg.inv(cov), d)
        logn = -0.5 * (maha + np.linalg.slogdet(cov)[1] + z.shape[1] * np.log(2 * np.pi))
        expected = -logsumexp(logn + np.log(w), axis=1)
        np.testing.assert_allclose(s.score(test).double().numpy(), expected, rtol=1e-5, atol=1e-5)
    el = hydra.utils.instantiate(priors["EL"]).fit(train)
    np.testing.assert_allclose(
        el.score(test).numpy(), -logsumexp(test.logits.double().numpy(), axis=1), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------ 2. average over all OOD sets
def _np_fpr95(sid: np.ndarray, sood: np.ndarray) -> float:
    return float(np.sum(sood < np.percentile(sid, 95)) / len(sood))


def test_average_column_is_the_mean_over_every_ood_set():
    test = make_features(n=60, seed=2)
    ood = {f"set{i}": make_features(n=25 + 5 * i, seed=3 + i, shift=0.4 * i - 0.6) for i in range(6)}
    scorers = {"MSP": MSP(), "Energy": Energy()}
    res = evaluate_scorers(scorers, test, ood, {AVERAGE: list(ood), "near": ["set0"]})
    for name, scorer in scorers.items():
        # the scores are the input; the per-set metrics and their mean are recomputed here
        def fn(f, scorer=scorer):
            return scorer.score(f).double()

        sid = fn(test).numpy()
        fpr = [_np_fpr95(sid, fn(f).numpy()) for f in ood.values()]
        auc = [
            roc_auc_score(np.r_[np.zeros(len(sid)), np.ones(len(f))], np.r_[sid, fn(f).numpy()]) for f in ood.values()
        ]
        assert res[name][AVERAGE]["fpr95"] == pytest.approx(np.mean(fpr), abs=1e-12)
        assert res[name][AVERAGE]["auroc"] == pytest.approx(np.mean(auc), abs=1e-12)
        assert res[name]["near"]["auroc"] == pytest.approx(auc[0], abs=1e-12)


@pytest.mark.parametrize(("ds", "n_sets"), [("cifar10", 6), ("cifar100", 6), ("imagenet", 4)])
def test_eval_configs_average_every_ood_set(ds, n_sets):
    """The ``average`` group of ``heat.evaluate.run`` is ``data.ood_names``: all 6 CIFAR / 4 ImageNet sets."""
    cfg = _compose(f"{ds}_eval")
    assert len(cfg.data.ood_names) == n_sets
    assert set(cfg.heat_eval.near) | set(cfg.heat_eval.far) == set(cfg.data.ood_names)


# ------------------------------------------------------------------ 3. normalisation
RELEASED_NORMALISATION = {  # heatood config/transform/cifar{10,100}.yaml (and every dataset entry of config/dataset)
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "cifar100": ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
}


@pytest.mark.parametrize("row", ["cifar10_gmm", "cifar10_el", "cifar100_gmm", "cifar100_gmm_std", "cifar100_el"])
def test_cifar_normalisation_is_the_released_one(row):
    ds = row.split("_")[0]
    mean, std = RELEASED_NORMALISATION[ds]
    cfg = _compose(row)
    assert list(cfg.extract.transform.mean) == mean and list(cfg.extract.transform.std) == std
    img = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    out = hydra.utils.instantiate(cfg.extract.transform)(Image.fromarray(img)).numpy()
    expected = (img.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ 4. CD loss with T, SGLD prior gradient
def _np_mlp(mlp: EnergyMLP, x: np.ndarray) -> np.ndarray:
    """The residual network by hand: Linear, LeakyReLU(0.2) after every layer but the last."""
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    h = x
    for i, lin in enumerate(linears):
        h = h @ lin.weight.detach().double().numpy().T + lin.bias.detach().double().numpy()
        if i < len(linears) - 1:
            h = np.where(h > 0, h, 0.2 * h)
    return h[:, 0]


def test_cd_loss_divides_the_residual_energy_by_t():
    from heat.contrastive_divergence import contrastive_divergence_loss

    torch.manual_seed(0)
    mlp = EnergyMLP(4, hidden=8, n_hidden=1, tie_hidden=False).double()
    real, neg = torch.randn(6, 4, dtype=torch.float64), torch.randn(12, 4, dtype=torch.float64)
    t, lam = 2.5, 0.3
    loss, logs = contrastive_divergence_loss(mlp, real, neg, l2=lam, eps_data=0.0, temperature=t)
    er, en = _np_mlp(mlp, real.numpy()) / t, _np_mlp(mlp, neg.numpy()) / t
    expected = er.mean() - en.mean() + lam * ((er**2).mean() + (en**2).mean())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-10)
    assert float(logs["e_real"]) == pytest.approx(er.mean(), rel=1e-10)
    # d loss / d (output bias) = (1/T) [1 - 1 + lam (2 mean(e_real) + 2 mean(e_neg))]
    loss.backward()
    out_bias = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)][-1].bias
    assert float(out_bias.grad) == pytest.approx(lam * 2 * (er.mean() + en.mean()) / t, rel=1e-8)


def test_module_trains_on_the_loss_with_t(monkeypatch):
    """HEATModule passes its ``temperature`` to the loss (the released code's ``energy_nn = mlp(z) / T``)."""
    import heat.module as hm

    seen, original = {}, hm.contrastive_divergence_loss

    def spy(*args, **kw):
        seen.update(kw)
        return original(*args, **kw)

    monkeypatch.setattr(hm, "contrastive_divergence_loss", spy)
    train = make_features(n=40, d=4, c=2)
    from heat.scorers.logits import EnergyLogits

    module = HEATModule(EnergyLogits().fit(train), EnergyMLP(4, hidden=8, n_hidden=1), temperature=3.0, sgld_steps=1)
    module.log = lambda *a, **k: None
    module.training_step({"z": train.avg[:8], "y": train.labels[:8]}, 0)
    assert seen["temperature"] == 3.0


class _ZeroMLP(torch.nn.Module):
    def forward(self, z):
        return 0.0 * z.sum(-1)


@pytest.mark.parametrize("mode", ["euclidean", "tangent"])
def test_sgld_prior_gradient_matches_the_mixture_gradient(mode):
    """One noise-free SGLD step on the GMM prior. Released code ("euclidean"): the mixture's gradient in R^D at the
    unit-norm sample, ``sum_c r_c Sigma^-1 (z - mu_c)`` (r = responsibilities); "tangent": ``(I - z z^T)`` times it."""
    train = make_features(n=300, d=5, c=3, seed=4)
    reg, t_prior, eta = 1e-3, 2.0, 0.02
    prior = GMM(reg=reg).fit(train)
    h = HybridEnergy(prior, _ZeroMLP(), temperature_prior=t_prior, prior_gradient=mode)
    z0 = torch.relu(make_features(n=7, d=5, c=3, seed=5, shift=0.3).avg.double())
    z0 = z0 / z0.norm(dim=1, keepdim=True)
    z1 = sgld(h, z0, steps=1, step_size=eta, noise=0.0, relu=True, normalize=True).numpy()

    means, cov, w = _np_fit(train.avg.double().numpy(), train.labels.numpy(), reg=reg)
    prec = np.linalg.inv(cov)
    z = z0.numpy()
    d = z[:, None, :] - means[None]  # [N, C, D]
    logits = -0.5 * np.einsum("ncd,de,nce->nc", d, prec, d) + np.log(w)
    r = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    grad = np.einsum("nc,ncd->nd", r, d @ prec) / t_prior
    if mode == "tangent":
        grad = grad - (grad * z).sum(1, keepdims=True) * z
    step = np.maximum(z - eta * grad, 0.0)
    expected = step / np.linalg.norm(step, axis=1, keepdims=True)
    np.testing.assert_allclose(z1, expected, rtol=1e-6, atol=1e-8)
    # the two modes differ (the radial part of the gradient changes the step before the re-normalisation)
    other = HybridEnergy(prior, _ZeroMLP(), t_prior, prior_gradient="tangent" if mode == "euclidean" else "euclidean")
    z1_other = sgld(other, z0, steps=1, step_size=eta, noise=0.0, relu=True, normalize=True).numpy()
    assert np.abs(z1_other - z1).max() > 1e-4


def test_paper_rows_use_the_released_sgld_gradient_and_reject_unknown_modes():
    for row in ("cifar10_gmm", "cifar100_gmm_std", "imagenet_gmm", "cifar10_el"):
        assert _compose(row).model.sgld_prior_gradient == "euclidean"
    with pytest.raises(ValueError, match="prior_gradient must be one of"):
        HybridEnergy(GMM(), _ZeroMLP(), prior_gradient="sphere")
