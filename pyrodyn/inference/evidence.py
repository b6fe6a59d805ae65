"""Held-out evidence: how well a fitted model predicts trials it was not fitted on, with
standard errors, the basis of every automatic choice (``pyrodyn.select``).

Two figures, each per trial so that two models can be compared trial by trial:

- ``log_marginal``: an importance-weighted estimate of log p(trial) (Burda et al. 2016), the
  guide's posterior (refined, if asked) as the proposal and the model's global sites at their
  posterior centre: ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``. Its mean is a lower bound of
  log p(x) that tightens as K grows and is exact when the proposal is the exact posterior; the
  Monte Carlo standard error of each trial's estimate is given (delta method). Every observed
  entry is scored, held-out neurons included, while the guide sees only what the encoder may.
  Where the model carries a ``parameter_posterior`` (``pyrodyn.inference.laplace``), particle k
  also runs on its own draw of the weights, so the figure is log p(trial | training trials)
  with the weights' uncertainty integrated out, not log p(trial | fitted weights).
- ``co_bps``: bits per spike of the posterior-mean rates on held-out neurons, which the encoder
  never sees (only when the data have held-out neurons).

Standard errors over trials say how much a figure would move on other trials of the same kind;
``Evidence.compare`` gives the standard error of the difference between two models on the same
trials (paired, as ArviZ's ``compare`` does), which is what "better by more than its standard
error" needs.

Example (with a fitted ``model`` and ``guide``)::

    evidence = heldout_evidence(model, guide, data.select("train"), data.select("test"))
    evidence.summary()["log_marginal"], evidence.summary()["log_marginal_se"]
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .._isolation import isolated_rng, own_param_store
from ..analysis.metrics import mean_rates, poisson_log_likelihood
from ..data.spikes import SpikeData
from ..models import sites
from ..models.likelihoods import Likelihood, PoissonLikelihood
from ..models.paths import shared_drift
from .guides import per_trial_trials
from .refine import _site_moments, refine
from .traces import draw_parameters, model_args, model_device, replay

__all__ = ["Evidence", "heldout_evidence", "importance_log_marginal", "per_trial_bits"]


@dataclass
class Evidence:
    """Per-trial held-out evidence of one model on one set of trials.

    Attributes:
        log_marginal: (trial,) importance-weighted log p(trial) in nats.
        log_marginal_mc_se: (trial,) Monte Carlo standard error of each trial's estimate.
        null_log_likelihood: (trial,) log-likelihood under each neuron's training mean rate,
            on the same entries (Poisson data only, else None).
        spike_counts: (trial,) spikes in the scored entries.
        co_bits, co_spikes: (trial,) held-out-neuron log-likelihood gain over the null in bits,
            and spikes; None without held-out neurons.
    """

    log_marginal: np.ndarray
    log_marginal_mc_se: np.ndarray
    spike_counts: np.ndarray
    null_log_likelihood: np.ndarray | None = None
    co_bits: np.ndarray | None = None
    co_spikes: np.ndarray | None = None

    @property
    def n_trials(self) -> int:
        return self.log_marginal.shape[0]

    def summary(self) -> dict[str, float]:
        """Mean log p per trial with its standard error over trials and its Monte Carlo error;
        the same gain over the null model in bits per spike; co-bps with its standard error."""
        n = self.n_trials
        out = {"log_marginal": float(self.log_marginal.mean()),
               "log_marginal_se": _se(self.log_marginal),
               "log_marginal_mc_se": float(np.sqrt((self.log_marginal_mc_se ** 2).sum()) / n),
               "n_trials": n}
        if self.null_log_likelihood is not None:
            gain = (self.log_marginal - self.null_log_likelihood) / np.log(2)
            out["evidence_bps"], out["evidence_bps_se"] = _ratio(gain, self.spike_counts)
        if self.co_bits is not None:
            out["co_bps"], out["co_bps_se"] = _ratio(self.co_bits, self.co_spikes)
        return out

    def compare(self, other: Evidence) -> tuple[float, float]:
        """(mean per-trial log p of ``self`` minus ``other``, its paired standard error):
        positive means ``self`` predicts these trials better."""
        if other.n_trials != self.n_trials:
            raise ValueError(f"other: evidence on {other.n_trials} trials, not "
                             f"{self.n_trials}; compare models on the same trials")
        diff = self.log_marginal - other.log_marginal
        return float(diff.mean()), _se(diff)

    def to_elpd_data(self, trial_ids=None, *, num_particles: int | None = None):
        """ArviZ ``ELPDData`` of these held-out trials, pointwise, so ``az.compare`` and
        ``az.plot_compare`` rank pyrodyn runs (scored on the same trials) by held-out evidence.

        ArviZ knows only "loo" and "waic": the figures carry the "loo" labels, but they are
        no PSIS estimate. ``elpd_loo`` is the sum over trials of each held-out trial's
        importance-weighted log p (these trials were never fitted on, so nothing needs to be
        left out), ``se`` its standard error over trials, ``p_loo`` is not defined (nan).

        Weights: ArviZ's default, stacking, exponentiates each pointwise value, and whole
        trials' log densities (hundreds to thousands of nats) underflow; use
        ``method="BB-pseudo-BMA"`` (as ``pyrodyn compare`` does).

        Example (with two runs' evidence on the same test trials)::

            az.compare({"3-d": ev3.to_elpd_data(), "2-d": ev2.to_elpd_data()},
                       method="BB-pseudo-BMA")
        """
        import xarray as xr
        from arviz.stats.stats_utils import ELPDData

        n = self.n_trials
        ids = np.arange(n) if trial_ids is None else np.asarray(trial_ids)
        pointwise = xr.DataArray(self.log_marginal, dims=["trial"], coords={"trial": ids},
                                 name="loo_i")
        return ELPDData(
            data=[float(self.log_marginal.sum()), float(np.sqrt(n) * self.log_marginal.std()),
                  float("nan"), num_particles or 0, n, False, pointwise, "log", 0.7],
            index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning",
                   "loo_i", "scale", "good_k"])


def _se(values: np.ndarray) -> float:
    """Standard error of the mean over trials."""
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """sum(a) / sum(b) and its delta-method standard error over trials (a ratio of sums, as
    bits per spike is)."""
    total = denominator.sum()
    if total == 0:
        return float("nan"), float("nan")
    ratio = numerator.sum() / total
    n = numerator.size
    residual = numerator - ratio * denominator
    se = np.sqrt((residual ** 2).sum() * n / max(n - 1, 1)) / total
    return float(ratio), float(se)


def per_trial_bits(rates: np.ndarray, spikes: np.ndarray, null_rates: np.ndarray, *,
                   mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per trial: the Poisson log-likelihood gain of ``rates`` over ``null_rates`` in bits and
    the spike count, over the (masked) entries; their ratio of sums is bits per spike."""
    gains, counts = np.empty(spikes.shape[0]), np.empty(spikes.shape[0])
    null = np.broadcast_to(null_rates, spikes.shape[1:])
    for i in range(spikes.shape[0]):
        m = None if mask is None else mask[i]
        gains[i] = (poisson_log_likelihood(rates[i], spikes[i], mask=m)
                    - poisson_log_likelihood(null, spikes[i], mask=m)) / np.log(2)
        counts[i] = spikes[i].sum() if m is None else spikes[i][m].sum()
    return gains, counts


def _in_trial_plate(site) -> bool:
    return any(frame.name == sites.TRIAL_PLATE for frame in site["cond_indep_stack"])


def _trial_log_prob(trace, *, observed: bool) -> torch.Tensor:
    """Sum over a trace's per-trial sample sites of their (unscaled) log densities, per trial;
    the guide's observed sites (conditioned global sites) are left out with ``observed=False``."""
    total = 0.0
    for site in trace.nodes.values():
        if (site["type"] != "sample" or site_is_subsample(site) or not _in_trial_plate(site)
                or (site["is_observed"] and not observed) or isinstance(site["fn"], dist.Unit)):
            continue  # pyro.factor terms (e.g. a readout's shape prior) are no data
        total = total + site["log_prob"]
    return total


def _global_centres(guide, kwargs) -> dict[str, torch.Tensor]:
    trace = poutine.trace(guide).get_trace(**kwargs)
    return {name: _site_moments(site["fn"])[0] for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not site_is_subsample(site) and not _in_trial_plate(site)}


def importance_log_marginal(model, guide, kwargs, *, num_particles: int = 64
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(trial,) importance-weighted log p(x) for one batch's model arguments, and the Monte
    Carlo standard error of each, with ``num_particles`` draws of ``guide`` as proposals.

    Global sites stay at the guide's posterior centre (the same for every particle)."""
    estimate, mc_se, _ = _importance(model, guide, kwargs, num_particles)
    return estimate, mc_se


@torch.no_grad()
def _importance(model, guide, kwargs, num_particles, weights=None):
    """``importance_log_marginal``'s figures and the proposal's mean rates (trial, time,
    neuron): the particles are posterior draws, so co-bps needs no draws of its own.
    ``weights``: one draw of the model's weights per particle, or None for the fitted ones."""
    if num_particles < 2:
        raise ValueError(f"num_particles: must be >= 2, got {num_particles}")
    kwargs = dict(kwargs, kl_scale=1.0)
    fixed = _global_centres(guide, kwargs)
    log_weights, rates = [], 0.0
    for k in range(num_particles):
        # With a draw of the weights the model runs under other weights than the guide's
        # chain, so only the fitted weights may share the chain's drift.
        with shared_drift() if weights is None else nullcontext():
            guide_trace, model_trace = replay(model, guide, kwargs, fixed=fixed,
                                              parameter_draw=None if weights is None
                                              else weights[k])
            guide_trace.compute_log_prob()
            model_trace.compute_log_prob()
        log_weights.append(_trial_log_prob(model_trace, observed=True)
                           - _trial_log_prob(guide_trace, observed=False))
        rates = rates + model_trace.nodes[sites.RATES]["value"] / num_particles
    log_w = torch.stack(log_weights).double()                 # (particle, trial)
    estimate = torch.logsumexp(log_w, 0) - np.log(num_particles)
    # delta method: var(log mean w) ~ var(w) / (K mean(w)^2), with w scaled by its maximum
    w = torch.exp(log_w - log_w.max(0).values)
    mc_se = w.std(0) / (w.mean(0) * np.sqrt(num_particles))
    return estimate, mc_se, rates


def heldout_evidence(model, guide, train: SpikeData, test: SpikeData, *,
                     num_particles: int = 64, refine_steps: int = 0, batch_size: int = 256,
                     device: str | torch.device | None = None, seed: int | None = 0,
                     parameter_draws: bool = True) -> Evidence:
    """Held-out evidence of a fitted model on the trials of ``test`` (see the module
    docstring). ``train`` gives the null model's mean rates; ``refine_steps`` refines each
    trial's proposal first (``pyrodyn.inference.refine``), as the recipe's scores do. The
    co-bps rates are the proposal's mean over the ``num_particles`` draws.
    ``parameter_draws=False`` keeps the fitted weights where the model has a parameter posterior.

    Raises:
        ValueError: a per-trial guide (it knows only its own trials), or bad counts.
    """
    if isinstance(guide, torch.nn.Module) and per_trial_trials(guide) is not None:
        raise ValueError("guide: a per-trial guide describes only the trials it was fitted "
                         "on; held-out evidence needs an amortized guide")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    device = model_device(model, device)
    # the same weight draws for every batch: trials share the weights
    weights = draw_parameters(model, num_particles, seed) if parameter_draws else None
    estimates, errors, batch_rates = [], [], []
    model.eval()
    guide.eval()
    with isolated_rng(seed, device), own_param_store(guide):
        for start in range(0, test.n_trials, batch_size):
            index = np.arange(start, min(start + batch_size, test.n_trials))
            kwargs = model_args(test.to_batch(index, device=device), test.n_trials)
            proposal = refine(model, guide, kwargs, steps=refine_steps) if refine_steps \
                else guide
            estimate, mc_se, rates = _importance(model, proposal, kwargs, num_particles,
                                                 weights)
            estimates.append(estimate.cpu().numpy())
            errors.append(mc_se.cpu().numpy())
            batch_rates.append(rates.cpu().numpy())
    observed = test.observed_mask(include_heldout=True)
    null_rates = mean_rates(train.spikes, mask=train.observed_mask(include_heldout=True))
    spikes = test.spikes.astype(np.float64)
    counts = (spikes * observed).sum(axis=(1, 2))
    null_ll = None
    if _is_poisson(model):
        null_ll = np.array([poisson_log_likelihood(null_rates, spikes[i], mask=observed[i])
                            for i in range(test.n_trials)])
    evidence = Evidence(np.concatenate(estimates), np.concatenate(errors), counts, null_ll)
    if test.heldout_neurons.size:
        held = test.heldout_neurons
        rates = np.concatenate(batch_rates)
        evidence.co_bits, evidence.co_spikes = per_trial_bits(
            rates[..., held], spikes[..., held], null_rates[held], mask=observed[..., held])
    return evidence


def _is_poisson(model) -> bool:
    """Whether every observation model is Poisson (the null model's likelihood)."""
    likelihoods = [m for m in model.modules() if isinstance(m, Likelihood)]
    return bool(likelihoods) and all(isinstance(m, PoissonLikelihood) for m in likelihoods)
