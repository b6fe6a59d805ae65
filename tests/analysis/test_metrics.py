import math

import numpy as np
import pytest
from scipy.stats import poisson

from pyrodyn.analysis import (
    apply_affine,
    bits_per_spike,
    co_bps,
    fit_affine,
    match_fixed_points,
    mean_rates,
    nonlinear_state_r2,
    poisson_log_likelihood,
    r2_score,
    rate_r2,
    state_r2,
)
from pyrodyn.data import synthetic


@pytest.fixture
def poisson_data(rng):
    rates = rng.gamma(2.0, 0.4, (12, 20, 7))
    return rates, rng.poisson(rates)


def reference_log_likelihood(rates, spikes):
    return sum(n * math.log(r) - r - math.lgamma(n + 1)
               for r, n in zip(rates.ravel().tolist(), spikes.ravel().tolist()))


def test_poisson_log_likelihood_matches_scipy_and_a_loop(poisson_data):
    rates, spikes = poisson_data
    ours = poisson_log_likelihood(rates, spikes)
    assert ours == pytest.approx(poisson.logpmf(spikes, rates).sum(), abs=1e-6)
    assert ours == pytest.approx(reference_log_likelihood(rates, spikes), abs=1e-6)


def test_bits_per_spike_matches_the_direct_formula(poisson_data, rng):
    rates, spikes = poisson_data
    predicted = rates * rng.uniform(0.7, 1.3, rates.shape)
    null = np.broadcast_to(spikes.mean(axis=(0, 1)), spikes.shape)
    expected = (reference_log_likelihood(predicted, spikes)
                - reference_log_likelihood(null, spikes)) / (spikes.sum() * math.log(2))
    assert bits_per_spike(predicted, spikes) == pytest.approx(expected, abs=1e-6)


def test_null_model_scores_zero_and_true_rates_score_more(poisson_data):
    rates, spikes = poisson_data
    null = np.broadcast_to(mean_rates(spikes), spikes.shape)
    assert bits_per_spike(null, spikes) == pytest.approx(0.0, abs=1e-12)
    assert bits_per_spike(rates, spikes) > 0.05


def test_training_null_and_masks(poisson_data):
    rates, spikes = poisson_data
    train_null = mean_rates(spikes[:8])
    score = bits_per_spike(rates[8:], spikes[8:], null_rates=train_null)
    expected = (poisson_log_likelihood(rates[8:], spikes[8:])
                - poisson_log_likelihood(np.broadcast_to(train_null, spikes[8:].shape), spikes[8:])
                ) / (spikes[8:].sum() * math.log(2))
    assert score == pytest.approx(expected, abs=1e-9)
    mask = np.zeros(spikes.shape, bool)
    mask[..., :3] = True
    assert bits_per_spike(rates, spikes, mask=mask) == pytest.approx(
        bits_per_spike(rates[..., :3], spikes[..., :3]), abs=1e-9)


def test_co_bps_is_bits_per_spike_on_heldout_neurons(poisson_data):
    rates, spikes = poisson_data
    assert co_bps(rates, spikes, [1, 4]) == pytest.approx(
        bits_per_spike(rates[..., [1, 4]], spikes[..., [1, 4]]), abs=1e-12)
    with pytest.raises(ValueError, match="heldout_neurons: empty"):
        co_bps(rates, spikes, [])


def test_bits_per_spike_rejects_bad_input(poisson_data):
    rates, spikes = poisson_data
    with pytest.raises(ValueError, match="rates, spikes: shapes"):
        bits_per_spike(rates[:2], spikes)
    with pytest.raises(ValueError, match="no spikes"):
        bits_per_spike(rates, np.zeros_like(spikes))


def test_r2_matches_a_direct_computation(rng):
    target = rng.normal(size=(50, 4))
    predicted = target + rng.normal(scale=0.5, size=target.shape)
    for j in range(4):
        ss_res = sum((t - p) ** 2 for t, p in zip(target[:, j], predicted[:, j]))
        mean = sum(target[:, j]) / 50
        ss_tot = sum((t - mean) ** 2 for t in target[:, j])
        assert r2_score(predicted, target)[j] == pytest.approx(1 - ss_res / ss_tot, abs=1e-9)


def test_rate_r2_perfect_and_per_neuron_average(poisson_data, rng):
    rates, _ = poisson_data
    assert rate_r2(rates, rates) == 1.0
    noisy = rates + rng.normal(scale=0.2, size=rates.shape)
    per_neuron = [r2_score(noisy[..., n].reshape(-1, 1), rates[..., n].reshape(-1, 1))[0]
                  for n in range(rates.shape[-1])]
    assert rate_r2(noisy, rates) == pytest.approx(np.mean(per_neuron), abs=1e-12)


def test_state_r2_reference_and_invented_dimensions(rng):
    data = synthetic.lorenz(n_trials=30, n_bins=40, n_neurons=5, seed=0)
    true = data.truth.latents
    train, test = np.arange(20), np.arange(20, 30)
    mixing = rng.normal(size=(3, 3))
    inferred = true @ mixing + 2.0
    both = state_r2(true, inferred, train=train, test=test)
    assert both.true_to_inferred == pytest.approx(1.0, abs=1e-9)
    assert both.inferred_to_true == pytest.approx(1.0, abs=1e-9)
    # Invented dynamics: extra inferred dimensions the truth does not explain.
    invented = np.concatenate([inferred, rng.normal(size=true.shape[:2] + (3,))], axis=-1)
    score = state_r2(true, invented, train=train, test=test)
    assert score.inferred_to_true == pytest.approx(1.0, abs=1e-3)
    assert score.true_to_inferred < 0.6
    # Reference: lstsq with a bias column on training trials, R2 on test trials.
    x, y = true[train].reshape(-1, 3), invented[train].reshape(-1, 6)
    coef = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    xt, yt = true[test].reshape(-1, 3), invented[test].reshape(-1, 6)
    pred = np.c_[xt, np.ones(len(xt))] @ coef
    reference = np.mean(1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0))
    assert score.true_to_inferred == pytest.approx(reference, abs=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        state_r2(true, inferred, train=train, test=np.arange(15, 25))


def test_nonlinear_state_r2_ignores_smooth_bends_and_coordinates(rng):
    data = synthetic.lorenz(n_trials=60, n_bins=100, n_neurons=5, seed=0)
    true = data.truth.latents
    train, test = np.arange(45), np.arange(45, 60)
    scaled = (true - true.mean((0, 1))) / true.std((0, 1))
    # a smooth invertible bend (each output strictly monotone in one input)
    bent = np.stack([np.tanh(scaled[..., 0]) + 0.3 * scaled[..., 0], scaled[..., 1] ** 3
                     + scaled[..., 1], np.exp(0.8 * scaled[..., 2])], axis=-1)
    affine = state_r2(true, bent, train=train, test=test)
    nonlinear = nonlinear_state_r2(true, bent, train=train, test=test)
    assert nonlinear.true_to_inferred > 0.97 and nonlinear.inferred_to_true > 0.97
    assert affine.true_to_inferred < nonlinear.true_to_inferred - 0.05
    # whitening: an affine change of either side's coordinates changes nothing
    mixed = bent @ rng.normal(size=(3, 3)) + 5.0
    again = nonlinear_state_r2(true, mixed, train=train, test=test)
    assert again.inferred_to_true == pytest.approx(nonlinear.inferred_to_true, abs=1e-6)
    # unrelated latents explain nothing
    noise = rng.normal(size=true.shape)
    unrelated = nonlinear_state_r2(true, noise, train=train, test=test)
    assert unrelated.true_to_inferred < 0.05 and unrelated.inferred_to_true < 0.05
    with pytest.raises(ValueError, match="overlap"):
        nonlinear_state_r2(true, bent, train=train, test=np.arange(40, 50))


def test_fixed_point_matching_after_affine_alignment(rng):
    true = np.array([[0.0, 0.0, 0.0], [8.5, 8.5, 27.0], [-8.5, -8.5, 27.0]])
    stability = ("saddle", "saddle", "saddle")
    mixing, shift = rng.normal(size=(3, 3)), rng.normal(size=3)
    # The model's coordinates: an affine image of the truth, points found in another order.
    model = (true - shift) @ np.linalg.inv(mixing)
    found = np.concatenate([model[[2, 0]], [[50.0, 50.0, 50.0]]])
    affine = (mixing, shift)
    assert np.allclose(apply_affine(model, affine), true)
    match = match_fixed_points(true, stability, found, ("saddle", "stable", "stable"),
                               affine=affine, tolerance=0.5)
    assert match.n_true == 3 and match.n_found == 3 and match.n_matched == 2
    assert sorted(match.pairs) == [(0, 1), (2, 0)]
    assert match.location_error < 1e-9
    assert match.stability_agreement == 0.5 and match.recall == pytest.approx(2 / 3)


def test_fit_affine_recovers_a_known_map(rng):
    x = rng.normal(size=(100, 3))
    weight, bias = rng.normal(size=(3, 2)), rng.normal(size=2)
    w, b = fit_affine(x, x @ weight + bias)
    assert np.allclose(w, weight) and np.allclose(b, bias)


def test_interval_coverage_counts_entries_inside():
    from pyrodyn.analysis import interval_coverage

    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4000, 3000))
    truth = rng.normal(size=3000)  # drawn from the same distribution: calibrated
    assert abs(interval_coverage(draws, truth, level=0.9) - 0.9) < 0.03
    assert interval_coverage(draws, truth + 10) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        interval_coverage(draws, truth[:5])
