"""Accuracy guards: real fits on data with known ground truth, at fixed seeds (slow)."""

import dataclasses

import numpy as np
import pytest

from pyrodyn.analysis import apply_affine, coverage, fit_affine
from pyrodyn.config import RunConfig, attach_parameter_posterior, build_run
from pyrodyn.data import synthetic
from pyrodyn.inference import evaluate, fit, posterior

pytestmark = pytest.mark.slow

# Measured at this seed on the 2-core machine with the recipe's posterior refinement. Flow
# readout (2026-11-24): bps ratio 0.970, rate R2 0.878, state R2 0.850 (true->inferred) and
# 0.873 (inferred->true). Plane readout, the default since 2026-12-02 (on a machine busy with
# two other fits): 0.904, 0.834, 0.927 and 0.931. The guards leave margin for a slower or
# busier machine, where the time budget cuts the fit short; the state R2 guard holds the
# plane readout's straighter latents.
THRESHOLDS = dict(bps_ratio=0.85, rate_r2=0.75, state_r2=0.85)


def fit_recipe(data, *, steps, budget, **changes):
    config = dataclasses.replace(RunConfig(), steps=steps, time_budget=budget, **changes)
    train = data.select("train")
    model, guide = build_run(config, train)
    fit(model, guide, train, valid=data.select("valid"), progress=False,
        options=config.fit_options())
    attach_parameter_posterior(config, model, guide, train)  # the recipe's, as `pyrodyn fit`
    return model, guide


def test_lorenz_recovery_does_not_regress():
    """A smaller benchmark (a): thresholds the current code clears with margin."""
    data = synthetic.lorenz(n_trials=600, n_bins=60, n_neurons=30, seed=1).with_split(
        valid=0.15, test=0.15, seed=1)
    model, guide = fit_recipe(data, steps=500, budget=100, curriculum=[10, 250],
                              kl_warmup=250)
    scores = evaluate(model, guide, data.select("train"), data.select("test"),
                      refine_steps=RunConfig().refine_steps)
    print(scores)
    assert scores["bits_per_spike"] > THRESHOLDS["bps_ratio"] * scores["true_bits_per_spike"]
    assert scores["rate_r2"] > THRESHOLDS["rate_r2"]
    assert scores["state_r2_true_to_inferred"] > THRESHOLDS["state_r2"]
    assert scores["state_r2_inferred_to_true"] > THRESHOLDS["state_r2"]
    # calibrated by default: the central intervals hold the true rates about as often as they
    # claim (`make demo`: 57% and 91%; this short fit 40% and 75%, 500 steps, with every
    # default of 2026-12-07, ninth session; the deterministic ODE held 9% and 21% on benchmark (a))
    test = data.select("test")
    post = posterior(model, guide, test, num_samples=50, refine_steps=RunConfig().refine_steps)
    inside = coverage(post.draws["rates"], test.truth.rates, [0.5, 0.9])
    print(inside)
    assert 0.3 < inside[0.5] < 0.7 and 0.6 < inside[0.9] < 0.98



def interval_width(n_neurons: int) -> float:
    data = synthetic.limit_cycle(n_trials=200, n_bins=40, n_neurons=n_neurons, seed=2)
    data = data.with_split(valid=0.15, test=0.15, seed=2)
    model, guide = fit_recipe(data, steps=150, budget=40, latent_dim=2, curriculum=[10, 75],
                              kl_warmup=75)
    train, test = data.select("train"), data.select("test")
    # Widths in the truth's coordinates, so that the two models are comparable.
    affine = fit_affine(posterior(model, guide, train, num_samples=10).mean("latents"),
                        train.truth.latents)
    draws = apply_affine(posterior(model, guide, test, num_samples=50).draws["latents"], affine)
    lower, upper = np.quantile(draws, [0.05, 0.95], axis=0)
    return float(np.mean(upper - lower))


def test_more_neurons_give_narrower_posterior_intervals():
    few, many = interval_width(8), interval_width(64)
    print(f"mean 90% interval width: 8 neurons {few:.3f}, 64 neurons {many:.3f}")
    assert many < 0.8 * few


def test_multi_area_finds_who_drives_whom():
    """A smaller version of bench/multi_area.py's two-area case: A drives B, B does not drive A.
    The fitted channel B<-A must be far stronger than the absent A<-B, and with the channels'
    scale uncertainty its interval must hold the true strength."""
    from pyrodyn.analysis import communication_summary, true_communication_strengths
    from pyrodyn.inference import channel_scale_laplace

    data = synthetic.two_area(n_trials=200, n_bins=60, n_neurons=15, seed=1).with_split(
        valid=0.15, test=0.15, seed=1)
    model, guide = fit_recipe(data, steps=400, budget=120, model="multi_area", latent_dim=2,
                              hidden=64, curriculum=[10, 200], kl_warmup=200)
    test = data.select("test")
    post = posterior(model, guide, test, num_samples=30)
    summary = communication_summary(post)
    print({name: (c.strength, c.interval) for name, c in summary.items()})
    assert summary["B<-A"].interval[0] > 5 * summary["A<-B"].interval[1]
    model.parameter_posterior = channel_scale_laplace(model, guide, data.select("train"),
                                                      num_draws=8)
    wide = communication_summary(posterior(model, guide, test, num_samples=30))
    truth = true_communication_strengths(test)["B<-A"]
    print(truth, {name: (c.strength, c.interval) for name, c in wide.items()})
    assert wide["B<-A"].interval[0] <= truth <= wide["B<-A"].interval[1]
    assert wide["A<-B"].interval[1] < 0.1 * truth
