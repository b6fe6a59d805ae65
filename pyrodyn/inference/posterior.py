"""The posterior of a fitted model for any trials: latent draws, rates, posterior-predictive
spikes and per-trial log-likelihoods.

Each draw runs the guide on the observed spikes, then replays the model on that draw. Posterior-
predictive spikes are sampled from the replayed likelihood, so the model is never conditioned on
the spikes it predicts while the guide still sees them. Trials go through in batches, so
thousands of trials fit in memory; amortized guides need no refitting for new trials. Global
sites (``model.global_sites``) are drawn once per draw and shared by every batch of trials.
Where the model carries a ``parameter_posterior`` (``pyrodyn.inference.laplace``), each draw
also runs the model with one draw of its channel and readout weights.

The same draws through Pyro's own ``Predictive`` (the model must not be conditioned on the
spikes it predicts, while the guide sees them)::

    Predictive(poutine.uncondition(model), guide=guide, num_samples=100)(**model_args(batch, n))

Example (with a fitted ``model`` and ``guide``)::

    post = posterior(model, guide, data.select("test"), num_samples=50)
    post.draws["latents"].shape  # (sample, trial, time, latent)
    idata = post.to_inference_data()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoContinuous

from .._isolation import get_torch_rng, isolated_rng, own_param_store, set_torch_rng
from .._version import __version__
from ..data.spikes import SpikeData
from ..models import sites
from ..models.base import SpikeModel
from .export import to_inference_data
from .guides import per_trial_trials
from .refine import refine
from .traces import draw_parameters, model_args, model_device, replay

__all__ = ["Posterior", "posterior", "iter_posterior", "posterior_means", "MEAN_SAMPLES"]


@dataclass
class Posterior:
    """Draws of a fitted model's posterior for the trials of ``data``.

    Attributes:
        draws: name -> (sample, trial, ...) arrays: "z0", "latents", "rates", any "inputs"
            and communication sites, "spikes" (posterior predictive) and "log_likelihood"
            (sample, trial, time, neuron): log p(each count | draw), held-out neurons
            included (entries the data mark missing are scored at their placeholder).
        data: the trials they describe.
        attrs: what produced them (model, guide, ELBO, pyrodyn version).
        global_sites: names of the draws without a trial axis (sample, ...).
    """

    draws: dict[str, np.ndarray]
    data: SpikeData
    attrs: dict[str, Any] = field(default_factory=dict)
    global_sites: tuple[str, ...] = ()

    def mean(self, name: str) -> np.ndarray:
        return self.draws[name].mean(axis=0)

    def interval(self, name: str, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed ``level`` interval of a site, per entry."""
        return tuple(np.quantile(self.draws[name], [(1 - level) / 2, (1 + level) / 2], axis=0))

    def to_inference_data(self, **options):
        """ArviZ InferenceData (see ``pyrodyn.inference.to_inference_data``)."""
        return to_inference_data(self, **options)


PREDICTIVE = (sites.SPIKES, "log_likelihood")  # drawn per draw by ``_predict``


def _deterministic_names(trace) -> list[str]:
    """Latent and deterministic sites worth keeping: z0, inputs, latents, rates, comm.*."""
    keep = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name == sites.SPIKES or name.startswith(sites.SPIKES):
            continue
        if name == sites.PATH:  # "latents" holds the whole path, its initial state first
            continue
        if site["infer"].get("is_auxiliary") or name == sites.TRIAL_PLATE:
            continue
        if site["is_observed"] and not site["infer"].get("_deterministic"):
            continue
        keep.append(name)
    return keep


def _predict(trace, observed: dict, spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior-predictive spikes and the log-likelihood of each observed count given the
    draw, both (trial, time, neuron), gathered from the model's observation sites."""
    predicted = torch.empty_like(spikes)
    log_likelihood = torch.zeros_like(spikes, dtype=torch.get_default_dtype())
    for name, neurons in observed.items():
        likelihood = trace.nodes[name]["fn"]
        while isinstance(likelihood, (dist.Independent, dist.MaskedDistribution)):
            likelihood = likelihood.base_dist  # every count, held-out neurons included
        predicted[..., neurons] = likelihood.sample()
        log_likelihood[..., neurons] = likelihood.log_prob(spikes[..., neurons])
    return predicted, log_likelihood


def posterior(model: SpikeModel, guide, data: SpikeData, *, num_samples: int = 100,
              batch_size: int = 256, device: str | torch.device | None = None,
              include_heldout: bool = False, refine_steps: int = 0,
              seed: int | None = 0, parameter_draws: bool = True,
              names: tuple[str, ...] | None = None) -> Posterior:
    """Draws ``num_samples`` posterior samples for every trial of ``data``, in memory
    (``write_posterior`` streams them to a file instead).

    Args:
        batch_size: trials per batch (the guide, refinement and model run once per batch).
        include_heldout: let the guide see held-out neurons (default: hidden, as in fitting).
        refine_steps: move each trial's posterior centre this many steps toward its mode;
            a stochastic path then takes the Laplace spread at that mode, other sites keep
            the guide's (``pyrodyn.inference.refine``: closes the amortization gap; 0: the
            guide's posterior as is).
        seed: seeds the draws, leaving the caller's generators as they were (None: draw from
            the current random state).
        parameter_draws: where the model has a ``parameter_posterior``, give each draw its own
            draw of the channel and readout weights (False: the fitted weights in every draw).
        names: keep only these sites (default: all; see ``iter_posterior``).

    Raises:
        ValueError: bad arguments, or a per-trial guide asked about trials other than those it
            was fitted on.
    """
    batches = list(iter_posterior(model, guide, data, num_samples=num_samples,
                                  batch_size=batch_size, device=device,
                                  include_heldout=include_heldout, refine_steps=refine_steps,
                                  seed=seed, parameter_draws=parameter_draws, names=names))
    first = batches[0]
    draws = {name: (value if name in first.global_sites else
                    np.concatenate([b.draws[name] for b in batches], axis=1))
             for name, value in first.draws.items()}
    return Posterior(draws, data, first.attrs, global_sites=first.global_sites)


def iter_posterior(model: SpikeModel, guide, data: SpikeData, *, num_samples: int = 100,
                   batch_size: int = 256, device: str | torch.device | None = None,
                   include_heldout: bool = False, refine_steps: int = 0,
                   seed: int | None = 0, trials: np.ndarray | None = None,
                   parameter_draws: bool = True,
                   names: tuple[str, ...] | None = None) -> Iterator[Posterior]:
    """``posterior``'s draws one batch of trials at a time (each a ``Posterior`` of those
    trials; global sites are the same draws in every batch), so memory stays bounded.
    ``trials``: indices of the trials of ``data`` to draw for (default all), so a split of a
    large file needs no copy of its own. ``names``: keep only these sites (default: every
    latent and deterministic site, the predictive "spikes" and "log_likelihood"); without
    those two, no predictive counts are drawn: about half the time and memory at 100 neurons
    (``bench/posterior_means.py``)."""
    trials = np.arange(data.n_trials) if trials is None else np.asarray(trials)
    device = model_device(model, device)
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size: must be >= 1, got {num_samples}, "
                         f"{batch_size}")
    if not isinstance(model, SpikeModel):
        raise ValueError(f"model: posterior needs a pyrodyn SpikeModel, got "
                         f"{type(model).__name__}")
    fitted_on = per_trial_trials(guide) if isinstance(guide, torch.nn.Module) else None
    if fitted_on is not None:
        if data.n_trials != fitted_on or trials.size != data.n_trials:
            raise ValueError(
                f"data: a per-trial guide describes only the {fitted_on} trials it was fitted "
                f"on, not these {trials.size}; use an amortized guide for new trials")
        if any(isinstance(part, AutoContinuous) for part in guide.modules()):
            batch_size = data.n_trials  # one joint vector over all trials: no minibatches
    global_names = tuple(model.global_sites)
    attrs = {"model": type(model).__name__,
             "guide": getattr(guide, "__name__", type(guide).__name__),
             "pyrodyn_version": __version__, "num_samples": num_samples,
             "refine_steps": refine_steps}
    # drawn up front, the same for every batch
    weight_draws = draw_parameters(model, num_samples, seed) if parameter_draws else None
    attrs["parameter_uncertainty"] = "none" if weight_draws is None else "laplace"
    solver = getattr(model, "solver", None)
    if solver is not None:  # model time per bin: puts communication strengths per bin
        attrs["step_size"] = solver.step_size
    model.eval()
    if isinstance(guide, torch.nn.Module):  # a guide may also be a plain Pyro function
        guide.eval()
    shared: list[dict[str, torch.Tensor]] = []  # global sites of each draw, for every batch
    # The generators are held (and given back) around each batch, so a caller may pause
    # between batches without the draws depending on what it does meanwhile.
    rng_state = None
    for start in range(0, trials.size, batch_size):
        index = trials[start:start + batch_size]
        seeded = isolated_rng(seed if rng_state is None else None, device) \
            if seed is not None else contextlib.nullcontext()
        with seeded, own_param_store(guide), torch.no_grad():
            if rng_state is not None:  # one seeded stream across the batches
                set_torch_rng(rng_state)
            draws = _draw_batch(model, guide, data, index, num_samples, shared, global_names,
                                device=device, include_heldout=include_heldout,
                                refine_steps=refine_steps, weight_draws=weight_draws,
                                names=names)
            if seed is not None:
                rng_state = get_torch_rng(device)
        for name in global_names:
            draws[name] = torch.stack([draw[name] for draw in shared]).cpu().numpy()
        yield Posterior(draws, data.select(index), dict(attrs), global_sites=global_names)


def _draw_batch(model, guide, data, index, num_samples, shared, global_names, *, device,
                include_heldout, refine_steps, weight_draws, names) -> dict[str, np.ndarray]:
    # the trials' own indices among ``data``: a per-trial guide finds its parameters by them
    batch = data.to_batch(index, device=device, include_heldout=include_heldout)
    kwargs = model_args(batch, data.n_trials)
    q = refine(model, guide, kwargs, steps=refine_steps) if refine_steps else guide
    draws: dict[str, list[torch.Tensor]] = {}
    predictive_seed = int(torch.randint(2 ** 31, ()))
    for i in range(num_samples):
        fixed = shared[i] if i < len(shared) else None
        guide_trace, trace = replay(model, q, kwargs, fixed=fixed, parameter_draw=None
                                    if weight_draws is None else weight_draws[i])
        if i == len(shared):
            shared.append({name: guide_trace.nodes[name]["value"] for name in global_names})
        kept = _deterministic_names(trace) + list(PREDICTIVE)
        if i == 0 and names is not None:
            unknown = set(names) - set(kept) - set(global_names)
            if unknown:
                raise ValueError(f"names: the model has no site(s) {sorted(unknown)}; its sites "
                                 f"are {kept}")
        wanted = [name for name in kept
                  if name not in global_names and (names is None or name in names)]
        values = {name: trace.nodes[name]["value"] for name in wanted if name not in PREDICTIVE}
        if any(name in PREDICTIVE for name in wanted):
            # predictive counts from a stream of their own: the latent draws are the same
            # whether or not counts are drawn (``names``)
            with isolated_rng(predictive_seed + i, device):
                predicted = dict(zip(PREDICTIVE, _predict(trace, model.observed_sites,
                                                          batch.spikes)))
            values.update({name: predicted[name] for name in wanted if name in PREDICTIVE})
        for name, value in values.items():
            draws.setdefault(name, []).append(value)
    out = {}
    for name, values in draws.items():
        out[name] = torch.stack(values).cpu().numpy()
        if name == sites.SPIKES:  # predictive counts in the observed counts' dtype
            out[name] = out[name].astype(data.spikes.dtype, copy=False)
    return out


# Draws averaged into a posterior mean. A mean of n draws carries Monte Carlo noise of 1/n of the
# posterior's variance, and that noise counts against every score of the mean: on a 10-neuron
# Lorenz fit 10 draws cost state R2 0.003 and rate R2 0.004 against 50 (README (f)).
MEAN_SAMPLES = 50


def posterior_means(model, guide, data: SpikeData, *, num_samples: int = MEAN_SAMPLES,
                    **options) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean latents (trial, time, latent) and rates (trial, time, neuron), averaged
    one batch of trials at a time (``iter_posterior``'s options), so memory does not grow
    with ``num_samples``."""
    latents, rates = [], []
    for part in iter_posterior(model, guide, data, num_samples=num_samples,
                               names=(sites.LATENTS, sites.RATES), **options):
        latents.append(part.mean(sites.LATENTS))
        rates.append(part.mean(sites.RATES))
    return np.concatenate(latents), np.concatenate(rates)
