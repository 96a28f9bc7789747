"""GalLoP top-k reduction, prompt dropout, loss (value and gradient) and MCM / L-MCM / GL-MCM, against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gallop.global_local_loss import gallop_loss, keep_number, prompt_dropout, topk_reduce
from gallop.scores import gl_mcm_score, local_mcm_score, mcm_score, ood_scores, predict_proba


def _r(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _topk_brute(loc, ks):
    b, p, k, m = loc.shape
    out = torch.zeros(b, k, m, dtype=loc.dtype)
    for i in range(b):
        for c in range(k):
            for j in range(m):
                vals = sorted(loc[i, :, c, j].tolist(), reverse=True)[: min(ks[j], p)]
                out[i, c, j] = sum(vals) / len(vals)
    return out


def test_topk_reduce_matches_brute_force_per_prompt_k():
    loc = _r(3, 25, 4, 4)
    ks = [5, 10, 15, 20]
    torch.testing.assert_close(topk_reduce(loc, ks), _topk_brute(loc, ks))
    # the selection is class-specific: different classes pick different patches
    assert not torch.allclose(topk_reduce(loc, [1])[:, 0], loc[:, :, 0].amax(1).mean() * torch.ones(3, 4))


def test_topk_reduce_shared_k_and_k_above_p_and_errors():
    loc = _r(2, 6, 3, 2, seed=1)
    torch.testing.assert_close(topk_reduce(loc, [3]), _topk_brute(loc, [3, 3]))
    torch.testing.assert_close(topk_reduce(loc, [50, 50]), loc.mean(1))
    with pytest.raises(ValueError, match="one per prompt"):
        topk_reduce(loc, [1, 2, 3])
    with pytest.raises(ValueError, match=r"\[B, P, K, M\]"):
        topk_reduce(loc[0], [1])


@pytest.mark.parametrize("m,p,keep", [(4, 0.75, 1), (4, 0.0, 4), (4, 0.5, 2), (1, 0.75, 1), (8, 0.75, 2), (4, 1.0, 1)])
def test_keep_number(m, p, keep):
    assert keep_number(m, p) == keep


def test_prompt_dropout_keeps_drawn_prompts():
    g = _r(5, 3, 4, seed=2)
    out = prompt_dropout(g, 0.5, torch.Generator().manual_seed(7))
    idx = torch.randint(0, 4, (5, 2), generator=torch.Generator().manual_seed(7))
    ref = torch.stack([g[b][:, idx[b]].mean(-1) for b in range(5)])
    torch.testing.assert_close(out, ref)
    one = prompt_dropout(g, 0.75, torch.Generator().manual_seed(1))  # one prompt per image
    assert all(any(torch.allclose(one[b], g[b, :, j]) for j in range(4)) for b in range(5))


def test_prompt_dropout_at_zero_draws_m_prompts_with_replacement_like_the_original():
    """The original draws ``keep = M - int(0 * M) = M`` indices with ``torch.randint`` (with replacement) even at
    p = 0: every image's output is the mean over a multiset of M prompts, and not always the mean of all M."""
    m, n_img = 3, 40
    g = _r(n_img, 2, m, seed=4)
    out = prompt_dropout(g, 0.0, torch.Generator().manual_seed(0))
    multisets = list(itertools.combinations_with_replacement(range(m), m))  # 10 multisets of 3 prompts
    used = []
    for b in range(n_img):
        match = [ms for ms in multisets if torch.allclose(out[b], g[b][:, list(ms)].mean(-1))]
        assert match, f"image {b}: not the mean over a multiset of {m} prompts"
        used.append(match[0])
    assert any(ms != (0, 1, 2) for ms in used)  # some image did not see every prompt once
    assert (0, 1, 2) in used  # and (probability 2/9 per image) some did


def _ce(logits, y):
    return float(
        sum(-(logits[i, y[i]].item() - math.log(sum(math.exp(v) for v in logits[i].tolist()))) for i in range(len(y)))
        / len(y)
    )


def test_gallop_loss_value_matches_formula():
    g, loc, y, s = _r(4, 3, 4, seed=3), _r(4, 30, 3, 4, seed=4), torch.tensor([0, 2, 1, 2]), 100.0
    out = gallop_loss(g, loc, y, s, dropout=0.75, generator=torch.Generator().manual_seed(5))
    idx = torch.randint(0, 4, (4, 1), generator=torch.Generator().manual_seed(5))
    gk = torch.stack([g[b, :, idx[b, 0]] for b in range(4)])
    r = _topk_brute(loc, [5, 10, 15, 20])
    ref_g = _ce(s * gk, y)
    ref_l = sum(_ce(s * r[..., m], y) for m in range(4)) / 4
    assert out["loss_global"].item() == pytest.approx(ref_g, rel=1e-4)
    assert out["loss_local"].item() == pytest.approx(ref_l, rel=1e-4)
    assert out["loss"].item() == pytest.approx(ref_g + ref_l, rel=1e-4)


def test_gallop_loss_gradcheck_float64():
    g = _r(3, 4, 2, seed=6, dtype=torch.float64).requires_grad_()
    loc = _r(3, 7, 4, 2, seed=7, dtype=torch.float64).requires_grad_()
    y = torch.tensor([1, 3, 0])

    def f(g, loc):
        return gallop_loss(g, loc, y, 3.0, ks=[2, 3], dropout=0.5, generator=torch.Generator().manual_seed(0))["loss"]

    assert torch.autograd.gradcheck(f, (g, loc))


def test_gallop_loss_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        gallop_loss(_r(2, 3, 1), _r(2, 4, 3, 1), torch.zeros(2, 1, dtype=torch.long), 1.0, ks=[1])


def test_predict_proba_is_softmax_of_mean_global_plus_local():
    g, loc, s = _r(2, 3, 4, seed=8), _r(2, 30, 3, 4, seed=9), 100.0
    ref = torch.softmax(s * (g.mean(-1) + _topk_brute(loc, [5, 10, 15, 20]).mean(-1)) / 2, -1)
    torch.testing.assert_close(predict_proba(g, loc, s), ref)
    torch.testing.assert_close(predict_proba(g, None, s), torch.softmax(s * g.mean(-1), -1))


def test_mcm_hand_worked():
    g = torch.tensor([[[0.3], [0.1]]])  # one image, two classes, one prompt
    e = math.exp(0.3) / (math.exp(0.3) + math.exp(0.1))
    assert mcm_score(g).item() == pytest.approx(-e)
    assert mcm_score(g, temperature=0.1).item() == pytest.approx(-1 / (1 + math.exp(-2.0)))


def test_local_and_gl_mcm_brute_force_over_all_patches():
    g, loc = _r(3, 5, 2, seed=10), _r(3, 9, 5, 2, seed=11)
    lbar = loc.mean(-1)
    ref_l = torch.tensor([-max(torch.softmax(lbar[b, p], 0).max().item() for p in range(9)) for b in range(3)])
    torch.testing.assert_close(local_mcm_score(loc), ref_l)
    torch.testing.assert_close(gl_mcm_score(g, loc), mcm_score(g) + ref_l)
    s = ood_scores(g, loc)
    assert set(s) == {"mcm", "l_mcm", "gl_mcm"} and set(ood_scores(g, None)) == {"mcm"}
    # higher = more OOD: a peaked (confident) image scores lower than a flat one
    peaked = torch.tensor([[[5.0], [0.0]]])
    flat = torch.tensor([[[0.0], [0.0]]])
    assert mcm_score(peaked) < mcm_score(flat)
