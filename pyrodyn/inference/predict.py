"""Posterior means of latents and rates for any trials, from any guide.

Example:
    >>> latents, rates = posterior_means(model, guide, data.select("test"))  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import torch
from pyro import poutine

from ..data.spikes import SpikeData
from ..models import sites
from .svi import model_args

__all__ = ["posterior_means", "sample_posterior"]


@torch.no_grad()
def sample_posterior(model, guide, data: SpikeData, *, num_samples: int = 10,
                     batch_size: int = 256, device: str | torch.device = "cpu",
                     names=(sites.Z0, sites.LATENTS, sites.RATES)) -> dict[str, np.ndarray]:
    """Draws (sample, trial, ...) of the named sites: guide draws replayed through the model.

    Trials are addressed by their position in ``data``; amortized guides need no refitting.
    """
    model.eval()
    guide.eval()
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, data.n_trials, batch_size):
        batch = data.to_batch(np.arange(start, min(start + batch_size, data.n_trials)),
                              device=device)
        kwargs = model_args(batch, data.n_trials)
        draws: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        for _ in range(num_samples):
            guide_trace = poutine.trace(guide).get_trace(**kwargs)
            trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**kwargs)
            for name in names:
                draws[name].append(trace.nodes[name]["value"])
        for name in names:
            out[name].append(torch.stack(draws[name]).cpu().numpy())
    return {name: np.concatenate(parts, axis=1) for name, parts in out.items()}


def posterior_means(model, guide, data: SpikeData, *, num_samples: int = 10,
                    **options) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean latents (trial, time, latent) and rates (trial, time, neuron)."""
    draws = sample_posterior(model, guide, data, num_samples=num_samples,
                             names=(sites.LATENTS, sites.RATES), **options)
    return draws[sites.LATENTS].mean(0), draws[sites.RATES].mean(0)
