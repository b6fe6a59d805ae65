"""Priors over latent sites that Pyro lacks in the needed shape.

Example:
    >>> prior = AR1Prior(n_bins=50, n_inputs=2, tau=10.0, scale=0.1)
    >>> prior.sample((4,)).shape
    torch.Size([4, 50, 2])
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn
from torch.nn.functional import softplus

__all__ = ["AR1Prior", "InitialStatePrior"]


class AR1Prior(TorchDistribution):
    """Stationary AR(1) process per input channel, event shape (time, input): LFADS's prior on
    inferred inputs. ``u[0] ~ N(0, s^2)``, ``u[t] = a u[t-1] + s sqrt(1 - a^2) eps`` with
    ``a = exp(-1 / tau)`` (``tau`` in bins).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, n_bins: int, n_inputs: int, *, tau: float = 10.0, scale: float = 0.1,
                 batch_shape: tuple[int, ...] = (), device=None, validate_args=None):
        if tau <= 0 or scale <= 0:
            raise ValueError(f"AR1Prior: tau and scale must be > 0, got {tau}, {scale}")
        self.n_bins, self.n_inputs, self.tau, self.scale = n_bins, n_inputs, tau, scale
        self.alpha = math.exp(-1.0 / tau)
        self.device = device
        super().__init__(torch.Size(batch_shape), torch.Size((n_bins, n_inputs)),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return AR1Prior(self.n_bins, self.n_inputs, tau=self.tau, scale=self.scale,
                        batch_shape=batch_shape, device=self.device)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, device=self.device)
        innovation = self.scale * math.sqrt(1 - self.alpha ** 2)
        steps = [self.scale * noise[..., 0, :]]
        for t in range(1, self.n_bins):
            steps.append(self.alpha * steps[-1] + innovation * noise[..., t, :])
        return torch.stack(steps, dim=-2)

    def log_prob(self, value):
        innovation = self.scale * math.sqrt(1 - self.alpha ** 2)
        first = _normal_log_prob(value[..., 0, :], self.scale)
        rest = _normal_log_prob(value[..., 1:, :] - self.alpha * value[..., :-1, :], innovation)
        return first.sum(-1) + rest.sum((-1, -2))


def _normal_log_prob(x: torch.Tensor, scale: float) -> torch.Tensor:
    return -0.5 * (x / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)


class InitialStatePrior(nn.Module):
    """``z0 ~ Normal(loc, scale)`` per latent dimension, learned (empirical Bayes) or fixed.

    Plain ``nn.Parameter``s, not Pyro params: a model is one self-contained object, and two
    models in one process never share values through Pyro's global parameter store.
    """

    def __init__(self, latent_dim: int, *, scale: float = 1.0, learn: bool = True) -> None:
        super().__init__()
        loc = torch.zeros(latent_dim)
        raw_scale = torch.log(torch.expm1(torch.full((latent_dim,), float(scale))))
        if learn:
            self.loc, self.raw_scale = nn.Parameter(loc), nn.Parameter(raw_scale)
        else:
            self.register_buffer("loc", loc)
            self.register_buffer("raw_scale", raw_scale)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, softplus(self.raw_scale) + 1e-5).to_event(1)
