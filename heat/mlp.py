"""The residual energy network ``E_theta`` of HEAT (heatood's ``HybridEnergyModel.__init__``).

Formula and parameter counts: docs/methods/heat.md#formulas.

- CIFAR (``reduce_width=False``): ``Linear(d, h) -> LReLU(0.2) -> [Linear(h, h) -> LReLU(0.2)] x n -> Linear(h, 1)``.
  The released code builds the hidden block by list multiplication, so its ``n`` hidden layers are **one** module
  (tied weights): ``tie_hidden=True`` reproduces that (1,575,937 parameters for d = 512, h = 1024, n = 4);
  ``tie_hidden=False`` gives ``n`` independent layers (4,724,737), the ablation.
- ImageNet (``reduce_width=True``): ``Linear(d, h) -> LReLU``, then ``n`` shrinking blocks; block ``i`` with
  ``w = h / 2^i`` is ``[Linear(w, w), LReLU, Linear(w, w), LReLU, Linear(w, w/2), LReLU]``; then ``Linear(h/2^n, 1)``
  (5,597,633 parameters for d = 2048, n = 6; 5,584,641 for n = 4).
"""

from __future__ import annotations

from torch import Tensor, nn


class EnergyMLP(nn.Module):
    """Scalar energy ``E_theta(z)``: ``[N, d] -> [N]``."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 1024,
        n_hidden: int = 4,
        tie_hidden: bool = True,
        reduce_width: bool = False,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        act = lambda: nn.LeakyReLU(negative_slope)
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden), act()]
        if reduce_width:
            if hidden % (2**n_hidden):
                raise ValueError(f"reduce_width needs hidden ({hidden}) divisible by 2^n_hidden ({2**n_hidden})")
            w = hidden
            for _ in range(n_hidden):
                layers += [nn.Linear(w, w), act(), nn.Linear(w, w), act(), nn.Linear(w, w // 2), act()]
                w //= 2
            layers.append(nn.Linear(w, 1))
        else:
            if tie_hidden:
                shared = nn.Linear(hidden, hidden)  # one module used n times: the released code's list-multiplication
                layers += [shared, act()] * n_hidden
            else:
                for _ in range(n_hidden):
                    layers += [nn.Linear(hidden, hidden), act()]
            layers.append(nn.Linear(hidden, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


def num_parameters(module: nn.Module) -> int:
    """Number of distinct parameters (shared modules counted once, as ``module.parameters()`` does)."""
    return sum(p.numel() for p in module.parameters())
