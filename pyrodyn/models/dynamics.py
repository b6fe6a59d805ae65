"""Latent dynamics: continuous vector fields ``f(z, u) -> dz/dt`` and a discrete GRU baseline.

Fields are plain ``nn.Module``s over any leading batch shape, so they can be solved, analysed for
fixed points, or reused in a user's own Pyro program. ``u`` is the input at the current bin
(external and inferred inputs concatenated) or None.

Example:
    >>> import torch
    >>> field = MLPField(3, hidden=64)
    >>> field(torch.zeros(5, 3)).shape
    torch.Size([5, 3])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VectorField", "MLPField", "LinearField", "LowRankRNNField", "GRUTransition",
           "FIELDS", "build_field"]


class VectorField(nn.Module):
    """Base class of continuous dynamics: ``forward(z, u=None) -> dz/dt`` on (..., latent)."""

    discrete = False

    def __init__(self, latent_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim: must be >= 1, got {latent_dim}")
        if input_dim < 0:
            raise ValueError(f"input_dim: must be >= 0, got {input_dim}")
        self.latent_dim, self.input_dim = latent_dim, input_dim

    def _with_input(self, z: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        if self.input_dim == 0:
            return z
        if u is None:
            u = z.new_zeros(z.shape[:-1] + (self.input_dim,))
        return torch.cat([z, u.expand(z.shape[:-1] + u.shape[-1:])], dim=-1)


class MLPField(VectorField):
    """``dz/dt = MLP([z, u])``: one or more hidden layers (default one of 128, tanh).

    The last layer starts small so that initial dynamics are slow and training starts stable.
    """

    def __init__(self, latent_dim: int, input_dim: int = 0, *, hidden: int = 128,
                 layers: int = 1, activation: type[nn.Module] = nn.Tanh,
                 init_scale: float = 0.1) -> None:
        super().__init__(latent_dim, input_dim)
        sizes = [latent_dim + input_dim] + [hidden] * layers
        modules: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            modules += [nn.Linear(a, b), activation()]
        last = nn.Linear(sizes[-1], latent_dim)
        with torch.no_grad():
            last.weight.mul_(init_scale)
            last.bias.zero_()
        self.net = nn.Sequential(*modules, last)

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self._with_input(z, u))


class LinearField(VectorField):
    """``dz/dt = A z + B u + b``, starting at weak decay ``A = -0.1 I``."""

    def __init__(self, latent_dim: int, input_dim: int = 0) -> None:
        super().__init__(latent_dim, input_dim)
        self.linear = nn.Linear(latent_dim + input_dim, latent_dim)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[:, :latent_dim] = -0.1 * torch.eye(latent_dim)
            self.linear.bias.zero_()

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self._with_input(z, u))


class LowRankRNNField(VectorField):
    """Rate RNN with low-rank connectivity: ``dz/dt = -z + M N^T tanh(z) + B u + b``."""

    def __init__(self, latent_dim: int, input_dim: int = 0, *, rank: int = 2) -> None:
        super().__init__(latent_dim, input_dim)
        if not 1 <= rank <= latent_dim:
            raise ValueError(f"rank: must be in [1, {latent_dim}], got {rank}")
        self.left = nn.Parameter(torch.randn(latent_dim, rank) / latent_dim ** 0.5)
        self.right = nn.Parameter(torch.randn(latent_dim, rank) / latent_dim ** 0.5)
        self.input_weight = nn.Linear(input_dim, latent_dim) if input_dim else None
        self.bias = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        dz = -z + (torch.tanh(z) @ self.right) @ self.left.T + self.bias
        if self.input_weight is not None and u is not None:
            dz = dz + self.input_weight(u)
        return dz


class GRUTransition(VectorField):
    """Discrete baseline ``z[t+1] = GRUCell(u[t], z[t])``; not an ODE.

    Kept to compare against: discrete RNN generators are what invent superfluous dynamics.
    """

    discrete = True

    def __init__(self, latent_dim: int, input_dim: int = 0) -> None:
        super().__init__(latent_dim, input_dim)
        self.cell = nn.GRUCell(max(input_dim, 1), latent_dim)

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """The next state (not a derivative)."""
        batch = z.shape[:-1]
        if u is None or self.input_dim == 0:
            u = z.new_zeros(batch + (max(self.input_dim, 1),))
        u = u.expand(batch + u.shape[-1:])
        return self.cell(u.reshape(-1, u.shape[-1]), z.reshape(-1, z.shape[-1])).reshape(z.shape)


FIELDS: dict[str, type[VectorField]] = {
    "mlp": MLPField, "linear": LinearField, "low_rank": LowRankRNNField, "gru": GRUTransition,
}


def build_field(name: str, latent_dim: int, input_dim: int = 0, **options) -> VectorField:
    """Builds a vector field by name: "mlp" (default), "linear", "low_rank", "gru"."""
    if name not in FIELDS:
        raise ValueError(f"field: unknown dynamics {name!r} (known: {', '.join(FIELDS)})")
    return FIELDS[name](latent_dim, input_dim, **options)
