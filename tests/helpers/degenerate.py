"""Checks shared by the loss tests for degenerate inputs: zero embeddings, fp16/bf16, empty batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_zero_embedding_handled(loss_fn, x: torch.Tensor, labels: torch.Tensor, rows=(0,), scale: float = 0.0):
    """Rows ``rows`` of ``x`` scaled by ``scale`` (0: all-zero; 1e-20: near zero) must be handled as the losses'
    docstrings say: no gradient to them, a finite gradient elsewhere, and the same value and gradient on the other
    rows as the loss of the batch where those rows are constant zeros and the others are normalised by F.normalize.
    Returns the gradient (for further checks)."""
    rows = list(rows)
    others = [i for i in range(len(x)) if i not in rows]
    x = x.detach().clone()
    x[rows] *= scale
    x.requires_grad_(True)
    value = loss_fn(x, labels)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert torch.equal(grad[rows], torch.zeros_like(grad[rows]))
    # reference: the degenerate rows as constant zero vectors, the others through torch's own normalisation
    ref_x = x.detach().clone().requires_grad_(True)
    z = torch.zeros_like(ref_x)
    z[others] = F.normalize(ref_x[others], dim=1)
    ref = loss_fn(z, labels)
    (ref_grad,) = torch.autograd.grad(ref, ref_x)
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad[others], ref_grad[others], rtol=1e-4, atol=1e-6)
    assert grad.norm() <= 10 * max(ref_grad.norm().item(), 1.0)  # bounded: nothing like the 1e11..inf of 1/eps
    return grad


def check_low_precision(loss_fn, x: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype, **kw):
    """fp16/bf16 embeddings: an fp32 loss equal to the fp32 loss of the rounded inputs, a gradient in ``dtype``."""
    low = x.detach().to(dtype).requires_grad_(True)
    out = loss_fn(low, labels, **kw)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    ref = loss_fn(
        low.detach().float(), labels, **{k: (v.float() if k == "ref_embeddings" else v) for k, v in kw.items()}
    )
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    out.backward()
    assert low.grad is not None and low.grad.dtype == dtype and torch.isfinite(low.grad).all()


def check_empty_batch(loss_fn, dim: int, labels: torch.Tensor):
    """An empty batch gives a zero with a graph (backward runs, gradients are zero), like the roadmap losses."""
    x = torch.randn(0, dim, requires_grad=True)
    out = loss_fn(x, labels[:0])
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    params = [p for p in getattr(loss_fn, "parameters", lambda: [])() if p.grad is not None]
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)
