"""Solving latent dynamics over the bin grid with torchdiffeq.

Fixed-step solvers step exactly once per bin (``step_size`` time units per bin) and hold each
bin's input constant (torchdiffeq's ``perturb`` option nudges stage times off the bin edges so
that the input index is never ambiguous). Adaptive solvers and the adjoint method are options.
Discrete transitions (``field.discrete``) are iterated instead.

Example:
    >>> import torch
    >>> from pyrodyn.models.dynamics import LinearField
    >>> ODESolver()(LinearField(2), torch.ones(4, 2), n_bins=10).shape
    torch.Size([4, 10, 2])
"""

from __future__ import annotations

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from .dynamics import VectorField

__all__ = ["ODESolver", "FIXED_STEP", "ADAPTIVE"]

FIXED_STEP = ("euler", "midpoint", "rk4")
ADAPTIVE = ("dopri5", "bosh3", "adaptive_heun", "dopri8")


class _BinnedInputField(nn.Module):
    """``(t, z) -> f(z, u[bin(t)])`` for torchdiffeq."""

    def __init__(self, field: VectorField, inputs: torch.Tensor | None, step_size: float):
        super().__init__()
        self.field, self.inputs, self.step_size = field, inputs, step_size

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.inputs is None:
            return self.field(z)
        index = int(torch.clamp(torch.floor(t / self.step_size), 0, self.inputs.shape[-2] - 1))
        return self.field(z, self.inputs[..., index, :])


class ODESolver:
    """Integrates ``dz/dt = f(z, u)`` from ``z0`` and returns the state at every bin start.

    Args:
        method: a torchdiffeq method; fixed-step ("rk4" default, "midpoint", "euler") take one
            step per bin, adaptive ones ("dopri5", ...) control the error with ``rtol``/``atol``.
        step_size: time units per bin.
        adjoint: backpropagate with the adjoint method (memory O(1) in bins, slower).
    """

    def __init__(self, method: str = "rk4", *, step_size: float = 1.0, adjoint: bool = False,
                 rtol: float = 1e-4, atol: float = 1e-5) -> None:
        if method not in FIXED_STEP + ADAPTIVE:
            known = ", ".join(FIXED_STEP + ADAPTIVE)
            raise ValueError(f"method: unknown ODE solver {method!r} (known: {known})")
        if step_size <= 0:
            raise ValueError(f"step_size: must be > 0, got {step_size}")
        self.method, self.step_size, self.adjoint = method, float(step_size), adjoint
        self.rtol, self.atol = rtol, atol

    def __repr__(self) -> str:
        return f"ODESolver({self.method!r}, step_size={self.step_size}, adjoint={self.adjoint})"

    def __call__(self, field: VectorField, z0: torch.Tensor, n_bins: int,
                 inputs: torch.Tensor | None = None) -> torch.Tensor:
        """States (..., n_bins, latent); ``inputs`` is (..., n_bins, input) or None."""
        if field.discrete:
            return self._iterate(field, z0, n_bins, inputs)
        func = _BinnedInputField(field, inputs, self.step_size)
        t = torch.arange(n_bins, dtype=z0.dtype, device=z0.device) * self.step_size
        if self.method in FIXED_STEP:
            options = dict(method=self.method,
                           options=dict(step_size=self.step_size, perturb=inputs is not None))
        else:
            options = dict(method=self.method, rtol=self.rtol, atol=self.atol)
        if self.adjoint:
            params = tuple(field.parameters())
            if inputs is not None and inputs.requires_grad:
                params += (inputs,)
            states = odeint_adjoint(func, z0, t, adjoint_params=params, **options)
        else:
            states = odeint(func, z0, t, **options)
        return states.movedim(0, -2)

    def step(self, field: VectorField, z: torch.Tensor,
             u: torch.Tensor | None = None) -> torch.Tensor:
        """The state one bin after ``z`` (..., latent) with this bin's input ``u``: the same
        fixed-step rule as a solve, applied to any batch of states at once (a stochastic path's
        transitions are scored in parallel over bins)."""
        if field.discrete:
            return field(z, u)
        if self.method not in FIXED_STEP:
            raise ValueError(f"solver: stochastic latent paths need a fixed-step solver "
                             f"({', '.join(FIXED_STEP)}), got {self.method!r}")
        h = self.step_size
        k1 = field(z, u)
        if self.method == "euler":
            return z + h * k1
        if self.method == "midpoint":
            return z + h * field(z + 0.5 * h * k1, u)
        k2 = field(z + 0.5 * h * k1, u)
        k3 = field(z + 0.5 * h * k2, u)
        k4 = field(z + h * k3, u)
        return z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    @staticmethod
    def _iterate(field, z0, n_bins, inputs):
        states = [z0]
        for k in range(n_bins - 1):
            u = None if inputs is None else inputs[..., k, :]
            states.append(field(states[-1], u))
        return torch.stack(states, dim=-2)
