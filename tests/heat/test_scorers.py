import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from heat.features import Features, pool_feature_map
from heat.scorers.dice import DICE
from heat.scorers.gaussian import GMM, ClassGaussian, GMMStd, Mahalanobis, SSDPlus
from heat.scorers.logits import MSP, Energy, EnergyLogits, MaxLogit
from heat.scorers.react import ReAct
from heat.scorers.vim import ViM
from tests.heat.helpers import make_features


def _np_gauss_fit(z, y, normalize, reg):
    if normalize:
        z = z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-10)
    cs = np.unique(y)
    mus = np.stack([z[y == c].mean(0) for c in cs])
    cen = z - mus[y]
    cov = np.cov(cen.T, bias=True) + reg * np.eye(z.shape[1])
    w = np.array([(y == c).mean() for c in cs])
    return z, mus, cov, w


def test_pooling_unbiased_std_and_max():
    fmap = torch.randn(2, 3, 4, 5)
    p = pool_feature_map(fmap)
    flat = fmap.numpy().reshape(2, 3, -1)
    np.testing.assert_allclose(p["avg"].numpy(), flat.mean(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["std"].numpy(), flat.std(-1, ddof=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["max"].numpy(), flat.max(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="single spatial"):
        pool_feature_map(torch.randn(2, 3, 1, 1))


def test_features_validation():
    with pytest.raises(ValueError, match="rows"):
        Features(avg=torch.zeros(3, 2), logits=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="labels"):
        Features(avg=torch.zeros(3, 2), labels=torch.zeros(3))
    with pytest.raises(ValueError, match="no 'std'"):
        Features(avg=torch.zeros(3, 2)).pooled("std")


@pytest.mark.parametrize("cls,normalize,pool", [(GMM, True, "avg"), (GMMStd, True, "std")])
def test_gmm_energy_matches_scipy_mixture(cls, normalize, pool):
    train = make_features(n=300, d=5, c=3, seed=1)
    test = make_features(n=40, d=5, c=3, seed=2, shift=0.5)
    s = cls(reg=1e-6).fit(train)
    z, mus, cov, w = _np_gauss_fit(train.pooled(pool).double().numpy(), train.labels.numpy(), normalize, 1e-6)
    zt = test.pooled(pool).double().numpy()
    zt = zt / (np.linalg.norm(zt, axis=1, keepdims=True) + 1e-10)
    logp = np.stack([multivariate_normal(mus[c], cov).logpdf(zt) for c in range(3)], 1)
    expected = -logsumexp(logp + np.log(w), axis=1)
    np.testing.assert_allclose(s.score(test).double().numpy(), expected, rtol=1e-4, atol=1e-4)
    # class-conditional energy (use_simplified_mahalanobis)
    y = torch.tensor([0, 1, 2, 1])
    cond = s.energy(test.pooled(pool)[:4].double(), y).numpy()
    np.testing.assert_allclose(cond, -logp[np.arange(4), y.numpy()], rtol=1e-4, atol=1e-4)


def test_gmm_energy_gradient_float64():
    train = make_features(n=200, d=4, c=2, seed=3)
    s = GMM(reg=1e-4).fit(train)
    z = (train.avg[:5].double() + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: s.energy(t), (z,))


@pytest.mark.parametrize("cls,normalize", [(SSDPlus, True), (Mahalanobis, False)])
def test_ssd_is_min_squared_mahalanobis(cls, normalize):
    train = make_features(n=300, d=5, c=4, seed=4)
    test = make_features(n=30, d=5, c=4, seed=5, shift=1.0)
    s = cls(reg=1e-8).fit(train)
    _, mus, cov, _ = _np_gauss_fit(train.avg.double().numpy(), train.labels.numpy(), normalize, 1e-8)
    zt = test.avg.double().numpy()
    if normalize:
        zt = zt / (np.linalg.norm(zt, axis=1, keepdims=True) + 1e-10)
    prec = np.linalg.inv(cov)
    brute = np.array([min((x - m) @ prec @ (x - m) for m in mus) for x in zt])
    np.testing.assert_allclose(s.score(test).double().numpy(), brute, rtol=1e-4)


def test_gmm_rank_deficient_error_and_state_dict_roundtrip():
    train = make_features(n=100, d=4, c=2)
    bad = Features(avg=torch.cat([train.avg, torch.zeros(100, 1)], 1), labels=train.labels)
    with pytest.raises(ValueError, match="increase `reg`"):
        ClassGaussian(reg=0.0, normalize=False).fit(bad)
    s = GMM(reg=1e-6).fit(train)
    s2 = GMM(reg=1e-6)
    assert not s2.is_fitted
    s2.load_state_dict(s.state_dict())
    torch.testing.assert_close(s2.score(train), s.score(train))


def test_gmm_sample_moments():
    train = make_features(n=600, d=3, c=2, seed=6)
    s = ClassGaussian(normalize=False, reg=1e-6).fit(train)
    z, y = s.sample(20000, labels=torch.zeros(20000, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    assert (y == 0).all()
    np.testing.assert_allclose(z.mean(0).numpy(), s.means[0].numpy(), atol=0.05)
    cov = s.chol @ s.chol.T
    np.testing.assert_allclose(np.cov(z.numpy().T), cov.numpy(), atol=0.06)


def test_logit_scorers():
    f = make_features(n=20, seed=7)
    lg = f.logits.numpy()
    sm = np.exp(lg - logsumexp(lg, 1, keepdims=True))
    np.testing.assert_allclose(MSP().score(f).numpy(), -sm.max(1), rtol=1e-5)
    np.testing.assert_allclose(MaxLogit().score(f).numpy(), -lg.max(1), rtol=1e-6)
    np.testing.assert_allclose(Energy(2.0).score(f).numpy(), -2.0 * logsumexp(lg / 2.0, 1), rtol=1e-5)
    el = EnergyLogits().fit(f)
    np.testing.assert_allclose(el.score(f).numpy(), -logsumexp(lg, 1), rtol=1e-5, atol=1e-5)


def test_vim_against_numpy():
    train = make_features(n=300, d=8, c=3, seed=8)
    test = make_features(n=20, d=8, c=3, seed=9, shift=2.0)
    s = ViM(dim=3).fit(train)
    w, b = train.fc_weight.double().numpy(), train.fc_bias.double().numpy()
    u = -np.linalg.pinv(w) @ b
    z = train.avg.double().numpy()
    cov = (z - u).T @ (z - u) / len(z)
    ev, vec = np.linalg.eigh(cov)
    ns = vec[:, np.argsort(ev)[::-1][3:]]
    alpha = (z @ w.T + b).max(1).mean() / np.linalg.norm((z - u) @ ns, axis=1).mean()
    zt = test.avg.double().numpy()
    exp = alpha * np.linalg.norm((zt - u) @ ns, axis=1) - logsumexp(zt @ w.T + b, 1)
    np.testing.assert_allclose(s.score(test).double().numpy(), exp, rtol=1e-4)
    with pytest.raises(ValueError, match="principal dim"):
        ViM(dim=8).fit(train)


def test_dice_and_react_against_numpy():
    train = make_features(n=100, d=6, c=3, seed=10)
    test = make_features(n=10, d=6, c=3, seed=11)
    w, b = train.fc_weight.numpy(), train.fc_bias.numpy()
    contrib = w * train.avg.numpy().mean(0)
    mask = contrib > np.percentile(contrib, 70)
    exp = -logsumexp(test.avg.numpy() @ (w * mask).T + b, 1)
    np.testing.assert_allclose(DICE(p=70).fit(train).score(test).numpy(), exp, rtol=1e-5, atol=1e-5)
    c = np.percentile(train.avg.numpy().ravel(), 90)
    exp = -logsumexp(np.minimum(test.avg.numpy(), c) @ w.T + b, 1)
    np.testing.assert_allclose(ReAct(percentile=90).fit(train).score(test).numpy(), exp, rtol=1e-5, atol=1e-5)
    assert not math.isclose(float(ReAct(percentile=10).fit(train).score(test)[0]), float(exp[0]))


def test_knn_kth_squared_distance_brute_force():
    from heat.scorers.knn import KNN

    train = make_features(n=120, d=5, seed=12)
    test = make_features(n=15, d=5, seed=13, shift=1.0)
    s = KNN(k=7).fit(train)
    a = train.avg.double() / train.avg.double().norm(dim=1, keepdim=True)
    q = test.avg.double() / test.avg.double().norm(dim=1, keepdim=True)
    d2 = torch.cdist(q, a).pow(2).sort(dim=1).values[:, 6]
    np.testing.assert_allclose(s.score(test).double().numpy(), d2.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least k"):
        KNN(k=500).fit(train)


def test_odin_perturbation_and_score_by_hand():
    from heat.scorers.odin import ODIN

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    t, eps = 10.0, 0.01
    s = ODIN(model, temperature=t, eps=eps).score_images(x)
    # by hand: gradient of -log softmax_yhat(f(x)/T) for a linear model: W^T (p - onehot) / T
    w = model[1].weight
    logits = model(x) / t
    p = torch.softmax(logits, -1)
    onehot = torch.nn.functional.one_hot(logits.argmax(-1), 4).double()
    grad = ((p - onehot) @ w / t / len(x)).view_as(x)  # mean cross-entropy over the batch
    x_p = x - eps * grad.sign()
    expected = -torch.softmax(model(x_p) / t, -1).amax(-1)
    torch.testing.assert_close(s, expected.detach())
    with pytest.raises(TypeError, match="score_loader"):
        ODIN(model).score(make_features())
    loader = [{"image": x[:3]}, {"image": x[3:]}]
    torch.testing.assert_close(ODIN(model, temperature=t, eps=eps).score_loader(loader), s)


def test_gmm_refit_and_inplace_load_invalidate_cached_whitening():
    a, b = make_features(n=120, d=4, c=2, seed=20), make_features(n=120, d=4, c=2, seed=21, shift=2.0)
    s = GMM(reg=1e-6).fit(a)
    first = s.score(b)
    s.fit(b)
    fresh = GMM(reg=1e-6).fit(b)
    torch.testing.assert_close(s.score(a), fresh.score(a))
    s.load_state_dict(GMM(reg=1e-6).fit(a).state_dict())
    torch.testing.assert_close(s.score(b), first)


def test_gmm_max_fit_samples_uses_a_seeded_subset():
    train = make_features(n=400, d=4, c=2, seed=30)
    sub = GMM(reg=1e-6, max_fit_samples=100, seed=3).fit(train)
    idx = torch.randperm(400, generator=torch.Generator().manual_seed(3))[:100].sort().values
    ref = GMM(reg=1e-6).fit(train.subset(idx))
    torch.testing.assert_close(sub.means, ref.means)
    assert not torch.allclose(GMM(reg=1e-6).fit(train).means, ref.means)
