"""Forward prediction: rates of bins the posterior never saw, from the bins before them.

A path posterior can follow the noise of the bins it sees, so scores on seen bins can exceed the
true rates'. The forward-prediction score (NLB's fp-bps) cannot be gamed that way: each trial's
posterior is drawn from its first ``n_bins - forward_bins`` bins only (the encoder and the
refinement see nothing later), then the model runs on by itself: the ODE continues from the
draw, a stochastic path continues with fresh noise from its prior, inferred inputs continue as
their AR(1) prior. The predicted rates are the mean over draws. Where the model carries a
``parameter_posterior`` (``pyrodyn.inference.laplace``), each draw runs on with its own weights.

Example (with a fitted ``model`` and ``guide``)::

    rates = forward_rates(model, guide, data.select("test"), forward_bins=20)
    rates.shape  # (trial, 20, neuron)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .._isolation import isolated_rng, own_param_store
from ..data.spikes import SpikeData
from ..models import sites
from ..models.base import SpikeModel
from ..models.paths import MarkovPath
from .refine import laplace_site, refine
from .traces import apply_parameter_draw, draw_parameters, model_args, model_device

__all__ = ["forward_rates"]


def forward_rates(model: SpikeModel, guide, data: SpikeData, *, forward_bins: int,
                  num_samples: int = 20, refine_steps: int = 0, batch_size: int = 256,
                  device: str | torch.device | None = None, seed: int | None = 0,
                  parameter_draws: bool = True) -> np.ndarray:
    """Posterior-predictive mean rates (trial, forward_bins, neuron) of the last
    ``forward_bins`` bins of every trial of ``data``, given only the bins before them.
    ``parameter_draws=False`` keeps the fitted weights where the model has a parameter posterior.

    Raises:
        ValueError: ``forward_bins`` not in 1..n_bins - 1, or bad counts.
    """
    if not 1 <= forward_bins < data.n_bins:
        raise ValueError(f"forward_bins: must be in 1..{data.n_bins - 1} for trials of "
                         f"{data.n_bins} bins, got {forward_bins}")
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size: must be >= 1, got {num_samples}, "
                         f"{batch_size}")
    seen = data.select_bins(0, data.n_bins - forward_bins)
    device = model_device(model, device)
    model.eval()
    guide.eval()
    weights = draw_parameters(model, num_samples, seed) if parameter_draws else None
    out = []
    with isolated_rng(seed, device), own_param_store(guide), torch.no_grad():
        for start in range(0, data.n_trials, batch_size):
            index = np.arange(start, min(start + batch_size, data.n_trials))
            kwargs = model_args(seen.to_batch(index, device=device), seen.n_trials)
            inputs = None if data.inputs is None else torch.as_tensor(
                data.inputs[index], dtype=torch.float32, device=device)
            proposal = refine(model, guide, kwargs, steps=refine_steps) if refine_steps \
                else guide
            total = 0.0
            for i in range(num_samples):
                weight = {} if weights is None else weights[i]
                values = _continued_draw(model, proposal, kwargs, inputs, forward_bins, weight)
                with apply_parameter_draw(model, weight):
                    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(
                        None, inputs=inputs, trial_index=kwargs["trial_index"],
                        num_trials=seen.n_trials, n_bins=data.n_bins)
                total = total + trace.nodes[sites.RATES]["value"][..., -forward_bins:, :]
            out.append((total / num_samples).cpu().numpy())
    return np.concatenate(out)


def _continued_draw(model, proposal, kwargs, inputs, forward_bins, weight
                    ) -> dict[str, torch.Tensor]:
    """One posterior draw on the seen bins, its time-varying sites run on over the rest (a
    path by the model's drift with the weights' draw ``weight`` added)."""
    trace = poutine.trace(proposal).get_trace(**kwargs)
    values = {name: site["value"] for name, site in trace.nodes.items()
              if site["type"] == "sample" and not site["is_observed"]
              and not site_is_subsample(site) and not site["infer"].get("is_auxiliary")}
    for name in model.input_sites:
        values[name] = _continue_ar1(values[name], forward_bins, tau=model.input_tau,
                                     scale=model.input_scale)
    for name in model.path_sites:
        path = values[name]  # bins 1 .. n_seen - 1; the chain's start is bin 0
        laplace = trace.nodes.get(laplace_site(name))  # a refined path: drawn with its start
        states = laplace["value"] if laplace is not None else torch.cat(
            [trace.nodes[name]["fn"].start.expand(path.shape[:-2] + path.shape[-1:])
             .unsqueeze(-2), path], dim=-2)
        n_seen = states.shape[-2]
        u = None if inputs is None else inputs[..., n_seen - 1:-1, :]
        with apply_parameter_draw(model, weight):
            correlation = model.noise_correlation()
            last_noise = None  # correlated noise runs on from the last seen transition's
            if correlation is not None and n_seen > 1:
                u_last = None if inputs is None else inputs[..., n_seen - 2, :]
                last_noise = states[..., -1, :] - model.transition(states[..., -2, :], u_last)
            rest = MarkovPath(states[..., -1, :], model.transition, model.noise_scale(),
                              forward_bins, u, correlation=correlation,
                              last_noise=last_noise, df=model.noise_df()).sample()
        values[name] = torch.cat([path, rest], dim=-2)
    return values


def _continue_ar1(u: torch.Tensor, steps: int, *, tau: float, scale: float) -> torch.Tensor:
    """``AR1Prior``'s continuation of inputs (..., time, input) for ``steps`` more bins."""
    alpha = math.exp(-1.0 / tau)
    innovation = scale * math.sqrt(1 - alpha ** 2)
    rest, last = [], u[..., -1, :]
    for _ in range(steps):
        last = alpha * last + innovation * torch.randn_like(last)
        rest.append(last)
    return torch.cat([u, torch.stack(rest, dim=-2)], dim=-2)
