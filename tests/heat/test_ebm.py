import math

import pytest
import torch
from scipy.stats import spearmanr

from heat.contrastive_divergence import contrastive_divergence_loss
from heat.mlp import EnergyMLP, num_parameters
from heat.scorers.combine import Combine, compose
from heat.scorers.gaussian import GMM
from heat.scorers.logits import EnergyLogits, MaxLogit
from heat.sgld import HybridEnergy, Proposal, polynomial_schedule, project, sgld
from tests.heat.helpers import make_features


@pytest.mark.parametrize(
    "kw,expected",
    [
        (dict(in_dim=512, tie_hidden=True), 1_575_937),
        (dict(in_dim=512, tie_hidden=False), 4_724_737),
        (dict(in_dim=2048, n_hidden=6, reduce_width=True), 5_597_633),
        (dict(in_dim=2048, n_hidden=4, reduce_width=True), 5_584_641),
    ],
)
def test_mlp_parameter_counts(kw, expected):
    assert num_parameters(EnergyMLP(hidden=1024, **kw)) == expected


def test_tied_hidden_layers_share_one_module():
    m = EnergyMLP(in_dim=4, hidden=8, n_hidden=3, tie_hidden=True)
    linears = [x for x in m.net if isinstance(x, torch.nn.Linear)]
    assert len(linears) == 5 and linears[1] is linears[2] is linears[3]
    assert m(torch.randn(7, 4)).shape == (7,)


def test_polynomial_schedule_endpoints_and_shape():
    assert polynomial_schedule(1e-4, 0, 40) == pytest.approx(1e-4)
    assert polynomial_schedule(1e-4, 40, 40) == pytest.approx(1e-5)
    mid = polynomial_schedule(1.0, 20, 40)
    assert mid == pytest.approx(0.9 * 0.25 + 0.1)
    assert polynomial_schedule(2.0, 3, 4, end=0.5, power=1.0) == pytest.approx(1.5 * 0.25 + 0.5)


class _Quadratic(torch.nn.Module):
    """Prior energy 0.5 |z - c|^2 (analytic gradient z - c)."""

    pooling, normalize = "avg", False

    def __init__(self, c):
        super().__init__()
        self.c = c

    def energy(self, z, y=None, prepared=False):
        return 0.5 * (z - self.c).pow(2).sum(-1)


class _Zero(torch.nn.Module):
    def forward(self, z):
        return torch.zeros(len(z), dtype=z.dtype) + 0.0 * z.sum(-1)


def test_sgld_one_step_matches_formula_without_noise():
    c = torch.tensor([1.0, 2.0])
    h = HybridEnergy(_Quadratic(c), _Zero(), temperature_prior=2.0)
    z0 = torch.tensor([[3.0, 3.0], [0.5, 0.0]])
    z1 = sgld(h, z0, steps=1, step_size=0.1, noise=0.0, relu=True)
    expected = torch.relu(z0 - 0.1 * (z0 - c) / 2.0)
    torch.testing.assert_close(z1, expected)
    # ReLU projection and L2 projection
    assert (project(torch.tensor([[-1.0, 2.0]]), relu=True) >= 0).all()
    torch.testing.assert_close(project(torch.tensor([[3.0, 4.0]]), normalize=True).norm(), torch.tensor(1.0))


def test_sgld_steps_use_decaying_schedule_and_freeze_params():
    c = torch.zeros(2)
    mlp = EnergyMLP(2, hidden=8, n_hidden=1)
    h = HybridEnergy(_Quadratic(c), mlp)
    z = sgld(h, torch.full((4, 2), 5.0), steps=5, step_size=0.5, noise=0.0, relu=False)
    assert all(p.grad is None for p in mlp.parameters())
    assert h.training  # mode restored
    assert z.norm() < torch.full((4, 2), 5.0).norm()


def test_cd_loss_value_and_gradient_only_theta():
    torch.manual_seed(0)
    train = make_features(n=64, d=4, c=2)
    prior = GMM(reg=1e-4).fit(train)
    mlp = EnergyMLP(4, hidden=16, n_hidden=2).double()
    real = torch.randn(8, 4, dtype=torch.float64)
    neg = torch.randn(16, 4, dtype=torch.float64)
    loss, logs = contrastive_divergence_loss(mlp, real, neg, l2=0.5, eps_data=0.0)
    er, en = mlp(real), mlp(neg)
    expected = er.mean() - en.mean() + 0.5 * (er.pow(2).mean() + en.pow(2).mean())
    torch.testing.assert_close(loss, expected)
    # gradient vs an independent autograd of the formula
    g = torch.autograd.grad(loss, list(mlp.parameters()))
    g2 = torch.autograd.grad(expected, list(mlp.parameters()))
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b)
    # the loss does not depend on the prior: same value with another prior in the hybrid energy
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2, betas=(0.0, 0.999))
    w0 = [p.clone() for p in mlp.parameters()]
    loss2, _ = contrastive_divergence_loss(mlp, real, neg, l2=0.5, eps_data=0.0)
    loss2.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(w0, mlp.parameters()))
    for k, v in prior.state_dict().items():
        assert torch.equal(v, before[k])
    # gradcheck in float64 w.r.t. the inputs of the loss
    small = EnergyMLP(3, hidden=4, n_hidden=1).double()
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    n = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: contrastive_divergence_loss(small, a, b, l2=0.3, eps_data=0.0)[0], (x, n)
    )


def test_proposals():
    train = make_features(n=90, d=4, c=3)
    gmm = GMM(reg=1e-4).fit(train)
    g = torch.Generator().manual_seed(0)
    z, y = Proposal("random_normal")(gmm, 5, 4, generator=g)
    assert z.shape == (5, 4) and y is None
    lab = torch.tensor([2, 2, 1, 0, 2])
    z, y = Proposal("base_dist", from_batch_labels=True)(gmm, 5, 4, labels=lab, generator=g)
    assert torch.equal(y, lab) and z.shape == (5, 4)
    z, y = Proposal("base_dist_temp")(gmm, 6, 4, generator=g)
    assert z.shape == (6, 4) and torch.isfinite(z).all()
    with pytest.raises(ValueError, match="needs a prior"):
        Proposal("base_dist")(EnergyLogits().fit(train), 3, 4)


def test_combine_modes_and_beta_to_zero_ranks_like_sum():
    train, test = make_features(n=300, seed=1), make_features(n=200, seed=2, shift=0.7)
    parts = [EnergyLogits().fit(train), GMM(reg=1e-4).fit(train), MaxLogit()]
    comb = Combine(parts, beta=0.0, stats_batch_size=None).fit(train)
    raw = torch.stack([p.score(train) for p in parts], -1)
    zt = (torch.stack([p.score(test) for p in parts], -1) - raw.mean(0)) / raw.std(0)
    torch.testing.assert_close(comb.score(test), zt.sum(-1))
    torch.testing.assert_close(compose(zt, math.inf), zt.amax(-1))
    torch.testing.assert_close(compose(zt, -math.inf), zt.amin(-1))
    torch.testing.assert_close(compose(zt, 2.0), torch.logsumexp(2.0 * zt, -1) / 2.0)
    small = compose(zt.double(), 1e-6)
    rho = spearmanr(small.numpy(), zt.sum(-1).numpy()).correlation
    assert rho > 0.99999
    assert spearmanr(compose(zt, 50.0).numpy(), zt.sum(-1).numpy()).correlation < 0.999
    # parity default: statistics from one batch of 256
    one = Combine(parts, stats_batch_size=256).fit(train)
    assert not torch.allclose(one.means, comb.means)
