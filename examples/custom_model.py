"""A custom model variant written as a new Pyro program from pyrodyn's parts.

Here: a low-rank RNN vector field, a heavy-tailed (Laplace) prior on the initial state, an
affine readout and a negative-binomial likelihood for over-dispersed counts. It subclasses
``SpikeModel``, which checks every call and hands ``program`` the trial plate; any pyrodyn guide
works with it, because it samples the latent site it declares (``z0_sites``) in that plate.

    .venv/bin/python examples/custom_model.py
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyrodyn.data import synthetic
from pyrodyn.inference import AmortizedNormalGuide, evaluate, fit
from pyrodyn.models import (
    AffineReadout,
    LowRankRNNField,
    NegativeBinomialLikelihood,
    ODESolver,
    SpikeModel,
    sites,
)


class LaplaceLowRankModel(SpikeModel):
    """z0 ~ Laplace; dz/dt = -z + M N^T tanh(z); log r = W z + b; spikes ~ NegBinomial."""

    def __init__(self, n_neurons: int, latent_dim: int = 3, rank: int = 2) -> None:
        super().__init__()
        self.n_neurons, self.latent_dim = n_neurons, latent_dim
        self.field = LowRankRNNField(latent_dim, rank=rank)
        self.readout = AffineReadout(latent_dim, n_neurons)
        self.likelihood = NegativeBinomialLikelihood(n_neurons)
        self.solver = ODESolver("rk4", step_size=0.1)

    @property
    def z0_sites(self):
        return {sites.Z0: self.latent_dim}

    def program(self, spikes, *, plate, mask, inputs, n_bins, kl_scale):
        with plate:
            with pyro.poutine.scale(scale=kl_scale):
                z0 = pyro.sample(sites.Z0, dist.Laplace(torch.zeros(self.latent_dim),
                                                        torch.ones(self.latent_dim)).to_event(1))
            latents = self.solver(self.field, z0, n_bins)
            pyro.deterministic(sites.LATENTS, latents, event_dim=2)
            log_rates = self.readout(latents)
            pyro.deterministic(sites.RATES, self.likelihood.mean(log_rates), event_dim=2)
            observation = self.likelihood.distribution(log_rates)
            if mask is not None:
                observation = observation.mask(mask)
            pyro.sample(sites.SPIKES, observation.to_event(2), obs=spikes)
        return latents


def main(steps: int = 300, n_trials: int = 120, seed: int = 0) -> dict[str, float]:
    data = synthetic.limit_cycle(n_trials=n_trials, n_bins=50, n_neurons=20, seed=seed)
    data = data.with_split(valid=0.2, test=0.2, seed=seed)
    pyro.set_rng_seed(seed)
    model = LaplaceLowRankModel(data.n_neurons, latent_dim=2)
    guide = AmortizedNormalGuide(model)
    fit(model, guide, data.select("train"), valid=data.select("valid"), steps=steps,
        batch_size=32, eval_every=max(steps // 4, 1), seed=seed, progress=False)
    scores = evaluate(model, guide, data.select("train"), data.select("test"))
    for name, value in scores.items():
        print(f"{name:<28} {value: .3f}")
    return scores


if __name__ == "__main__":
    main()
