"""A custom model variant written as a new Pyro program from pyrodyn's parts.

Here: a low-rank RNN vector field, a heavy-tailed (Laplace) prior on the initial state, an
affine readout and a negative-binomial likelihood for over-dispersed counts. Any pyrodyn guide
works with it, because it takes the same arguments and samples the same latent site ("z0") in
the same "trial" plate.

    .venv/bin/python examples/custom_model.py
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyrodyn.data import synthetic
from pyrodyn.inference import AmortizedNormalGuide, evaluate, fit
from pyrodyn.models import (
    AffineReadout,
    LowRankRNNField,
    NegativeBinomialLikelihood,
    ODESolver,
    sites,
)


class LaplaceLowRankModel(PyroModule):
    """z0 ~ Laplace; dz/dt = -z + M N^T tanh(z); log r = W z + b; spikes ~ NegBinomial."""

    def __init__(self, n_neurons: int, latent_dim: int = 3, rank: int = 2) -> None:
        super().__init__()
        self.n_neurons, self.latent_dim = n_neurons, latent_dim
        self.field = LowRankRNNField(latent_dim, rank=rank)
        self.readout = AffineReadout(latent_dim, n_neurons)
        self.likelihood = NegativeBinomialLikelihood(n_neurons)
        self.solver = ODESolver("rk4", step_size=0.1)

    def forward(self, spikes=None, *, mask=None, encoder_mask=None, inputs=None,
                trial_index=None, num_trials=None, kl_scale=1.0, n_bins=None):
        n_bins = spikes.shape[1]
        with pyro.plate(sites.TRIAL_PLATE, num_trials or spikes.shape[0],
                        subsample=trial_index, dim=-1):
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
