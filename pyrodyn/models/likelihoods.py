"""Observation models: map the readout's output to a distribution over each (bin, neuron).

Example:
    >>> import torch
    >>> PoissonLikelihood().distribution(torch.zeros(2, 5, 4)).mean.shape
    torch.Size([2, 5, 4])
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

__all__ = ["Likelihood", "PoissonLikelihood", "NegativeBinomialLikelihood",
           "GaussianLikelihood", "LIKELIHOODS", "build_likelihood"]


class Likelihood(nn.Module):
    """Base class: ``distribution(output)`` with batch shape = output's shape; ``mean(output)``."""

    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        """Expected observation (the "rates" site): counts per bin for count likelihoods."""
        return torch.exp(output)


class PoissonLikelihood(Likelihood):
    """``spikes ~ Poisson(exp(log_rate))`` (the default)."""

    def distribution(self, output):
        return dist.Poisson(torch.exp(output))


class NegativeBinomialLikelihood(Likelihood):
    """Over-dispersed counts with mean exp(output) and a learned dispersion per neuron."""

    def __init__(self, n_neurons: int, *, init_total_count: float = 10.0) -> None:
        super().__init__()
        raw = torch.log(torch.expm1(torch.tensor(init_total_count)))
        self.raw_total_count = nn.Parameter(raw.repeat(n_neurons))

    def distribution(self, output):
        total_count = softplus(self.raw_total_count) + 1e-4
        return dist.NegativeBinomial(total_count, logits=output - torch.log(total_count))


class GaussianLikelihood(Likelihood):
    """Continuous observations (calcium, LFP): ``x ~ Normal(output, sigma_n)``."""

    def __init__(self, n_neurons: int, *, init_scale: float = 1.0) -> None:
        super().__init__()
        raw = torch.log(torch.expm1(torch.tensor(init_scale)))
        self.raw_scale = nn.Parameter(raw.repeat(n_neurons))

    def distribution(self, output):
        return dist.Normal(output, softplus(self.raw_scale) + 1e-4)

    def mean(self, output):
        return output


LIKELIHOODS = {"poisson": PoissonLikelihood, "negative_binomial": NegativeBinomialLikelihood,
               "gaussian": GaussianLikelihood}


def build_likelihood(name: str, n_neurons: int) -> Likelihood:
    """Builds a likelihood by name: "poisson" (default), "negative_binomial", "gaussian"."""
    if name not in LIKELIHOODS:
        raise ValueError(
            f"likelihood: unknown likelihood {name!r} (known: {', '.join(LIKELIHOODS)})")
    cls = LIKELIHOODS[name]
    return cls() if cls is PoissonLikelihood else cls(n_neurons)
