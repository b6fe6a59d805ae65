import arviz as az
import numpy as np
import pyro
import pytest

from pyrodyn.data import synthetic
from pyrodyn.inference import (
    build_guide,
    evaluate,
    fit,
    iter_posterior,
    posterior,
    posterior_means,
    to_inference_data,
)
from pyrodyn.models import LatentODEModel


@pytest.fixture(scope="module")
def fitted():
    data = synthetic.lorenz(n_trials=40, n_bins=25, n_neurons=12, seed=0).with_split(
        valid=0.2, test=0.2, seed=0)
    pyro.set_rng_seed(0)
    model = LatentODEModel(12, 3)
    guide = build_guide("normal", model)
    fit(model, guide, data.select("train"), steps=150, batch_size=24, curriculum=(10, 50),
        progress=False)
    return data, model, guide


@pytest.fixture(scope="module")
def post(fitted):
    data, model, guide = fitted
    return posterior(model, guide, data.select("test"), num_samples=40)


def test_draw_shapes_and_batching(fitted, post):
    data, model, guide = fitted
    test = data.select("test")
    assert post.draws["z0"].shape == (40, 8, 3)
    assert post.draws["latents"].shape == (40, 8, 25, 3)
    assert post.draws["rates"].shape == (40, 8, 25, 12)
    assert post.draws["spikes"].shape == (40, 8, 25, 12)
    assert post.draws["log_likelihood"].shape == (40, 8, 25, 12)
    small_batches = posterior(model, guide, test, num_samples=40, batch_size=3)
    # Two independent sets of 40 draws: equal up to Monte Carlo error.
    a, b = small_batches.mean("rates"), post.mean("rates")
    assert np.abs(a - b).mean() < 0.1 * b.mean()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_posterior_means_average_batch_by_batch_the_same_draws(fitted):
    data, model, guide = fitted
    test = data.select("test")
    latents, rates = posterior_means(model, guide, test, num_samples=7, batch_size=3)
    whole = posterior(model, guide, test, num_samples=7, batch_size=3)
    assert latents.shape == (8, 25, 3) and rates.shape == (8, 25, 12)
    np.testing.assert_allclose(latents, whole.mean("latents"), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rates, whole.mean("rates"), rtol=1e-6, atol=1e-7)


def test_draws_of_named_sites_only_are_the_same_draws(fitted, post):
    # posterior_means draws no predictive counts; the latents must not change for it
    data, model, guide = fitted
    parts = list(iter_posterior(model, guide, data.select("test"), num_samples=40,
                                names=("latents",)))
    assert set(parts[0].draws) == {"latents"}
    latents = np.concatenate([part.draws["latents"] for part in parts], axis=1)
    np.testing.assert_allclose(latents, post.draws["latents"], rtol=1e-6, atol=1e-7)
    counts = next(iter_posterior(model, guide, data.select("test"), num_samples=3,
                                 names=("spikes",)))
    assert set(counts.draws) == {"spikes"}  # only what was named, not its log-likelihood
    assert counts.draws["spikes"].dtype == data.spikes.dtype
    with pytest.raises(ValueError, match=r"no site\(s\) \['latent'\]"):
        next(iter_posterior(model, guide, data.select("test"), num_samples=2, names=("latent",)))


def test_posterior_predictive_is_not_the_observed_data(fitted, post):
    data, *_ = fitted
    test = data.select("test")
    predicted = post.draws["spikes"]
    assert predicted.dtype == test.spikes.dtype  # counts stay counts
    assert (predicted != test.spikes[None]).any(axis=(1, 2, 3)).all()
    # Their mean tracks the fitted rates (law of large numbers over 40 draws x entries).
    gap = predicted.mean(0) - post.mean("rates")
    assert abs(gap.mean()) < 0.02
    assert np.corrcoef(predicted.mean(0).ravel(), post.mean("rates").ravel())[0, 1] > 0.6


def test_inference_data_groups_dims_coords_attrs(fitted, post, tmp_path):
    data, *_ = fitted
    test = data.select("test")
    idata = to_inference_data(post, elbo="Trace_ELBO")
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "log_likelihood",
                                   "observed_data"}
    assert idata.posterior["latents"].dims == ("chain", "draw", "trial", "time", "latent")
    assert idata.posterior["rates"].dims == ("chain", "draw", "trial", "time", "neuron")
    assert idata.posterior["z0"].dims == ("chain", "draw", "trial", "latent")
    assert idata.posterior_predictive["spikes"].dims == ("chain", "draw", "trial", "time",
                                                         "neuron")
    assert idata.log_likelihood["spikes"].dims == ("chain", "draw", "trial", "time", "neuron")
    assert idata.observed_data["spikes"].dims == ("trial", "time", "neuron")
    assert list(idata.posterior.trial.values) == list(test.trial_ids)
    assert np.allclose(idata.posterior.time.values, test.time)
    assert list(idata.posterior.neuron.values) == list(test.neuron_ids)
    for group in idata.groups():
        attrs = getattr(idata, group).attrs
        assert attrs["model"] == "LatentODEModel"
        assert attrs["guide"] == "AmortizedNormalGuide"
        assert attrs["elbo"] == "Trace_ELBO"
        assert attrs["pyrodyn_version"]
    path = tmp_path / "post.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    for group in idata.groups():
        assert getattr(back, group).identical(getattr(idata, group)), group


def test_arviz_functions_run_on_it(post):
    idata = post.to_inference_data()
    summary = az.summary(idata, var_names=["z0"], kind="stats")
    assert len(summary) == 8 * 3 and {"mean", "sd"} <= set(summary.columns)
    hdi = az.hdi(idata, var_names=["latents"], hdi_prob=0.9)
    assert hdi["latents"].shape == (8, 25, 3, 2)
    loo = az.loo(idata)  # leave one count out: the trial's posterior barely moves
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == 8 * 25 * 12
    assert az.plot_loo_pit(idata, y="spikes") is not None
    axes = az.plot_ppc(idata, num_pp_samples=5)
    assert axes is not None


def test_per_trial_guides_refuse_new_trials(fitted):
    data, model, _ = fitted
    guide = build_guide("per_trial_normal", model)
    fit(model, guide, data.select("train"), steps=2, progress=False)
    with pytest.raises(ValueError, match="only the 24 trials it was fitted on, not these 8"):
        posterior(model, guide, data.select("test"), num_samples=2)


def test_evaluate_reuses_given_training_latents(fitted):
    data, model, guide = fitted
    train, test = data.select("train"), data.select("test")
    pyro.set_rng_seed(3)
    derived = evaluate(model, guide, train, test, num_samples=5)
    given = posterior_means(model, guide, train, num_samples=5)[0]
    pyro.set_rng_seed(3)
    reused = evaluate(model, guide, train, test, num_samples=5, train_latents=given)
    assert set(reused) == set(derived)
    assert reused["bits_per_spike"] == derived["bits_per_spike"]
    assert reused["state_r2_inferred_to_true"] == pytest.approx(
        derived["state_r2_inferred_to_true"], abs=0.02)  # the same map up to sampling noise
    wrong = evaluate(model, guide, train, test, num_samples=5, train_latents=0 * given)
    assert wrong["state_r2_inferred_to_true"] < reused["state_r2_inferred_to_true"]


def test_evaluate_reports_coordinate_free_scores_and_fixed_points(fitted):
    data, model, guide = fitted
    train, test = data.select("train"), data.select("test")
    scores = evaluate(model, guide, train, test, num_samples=5, fp_starts=100)
    for name in ("state_r2_nonlinear_true_to_inferred", "state_r2_nonlinear_inferred_to_true"):
        assert -1.0 < scores[name] <= 1.0
    assert scores["fp_true"] == 3.0               # Lorenz: the origin and the two foci
    assert scores["fp_found"] >= 0 and 0.0 <= scores["fp_recall"] <= 1.0
    assert "fp_found" not in evaluate(model, guide, train, test, num_samples=5, fp_starts=0)
