"""Held-out evidence: the importance-weighted marginal likelihood against the exact one of a
linear-Gaussian model, and the held-out scores of a fitted spike model."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrodyn.analysis.scores import score_rates
from pyrodyn.data import synthetic
from pyrodyn.inference import (
    AmortizedNormalGuide,
    Evidence,
    fit,
    heldout_evidence,
    importance_log_marginal,
    trial_plate,
)
from pyrodyn.inference.posterior import posterior_means
from pyrodyn.models import LatentODEModel

N_TRIALS, N_BINS, N_NEURONS, LATENT = 12, 15, 6, 2


@pytest.fixture(scope="module")
def linear_gaussian():
    """A linear field, an affine readout, Gaussian noise: p(y) and p(z0 | y) are Gaussian,
    known in closed form. Returns the model, observations and the exact quantities."""
    torch.manual_seed(0)
    model = LatentODEModel(N_NEURONS, LATENT, field="linear", readout="affine",
                           likelihood="gaussian", learn_prior=False, prior_scale=1.0)
    model.eval()
    with torch.no_grad():
        y = model.simulate(n_trials=N_TRIALS, n_bins=N_BINS)["spikes"]
    prior = model.z0_prior()
    mu0, prior_var = prior.mean.detach(), prior.variance.detach()

    def mean_of(z0):  # the mean of y (flattened) given z0: affine in z0
        latents = model.solve(z0[None], N_BINS)
        return model.readout(latents)[0].reshape(-1)

    with torch.no_grad():
        m0 = mean_of(mu0)
    jac = torch.autograd.functional.jacobian(mean_of, mu0).detach()   # (T*N, D)
    noise_var = (model.likelihood.distribution(torch.zeros(N_BINS, N_NEURONS)).variance
                 .reshape(-1).detach())
    cov = jac @ torch.diag(prior_var) @ jac.T + torch.diag(noise_var)
    exact = dist.MultivariateNormal(m0, covariance_matrix=cov).log_prob(y.reshape(N_TRIALS, -1))
    precision = torch.diag(1 / prior_var) + jac.T @ (jac / noise_var[:, None])
    post_cov = torch.linalg.inv(precision)
    post_mean = mu0 + (y.reshape(N_TRIALS, -1) - m0) @ (jac / noise_var[:, None]) @ post_cov
    kwargs = dict(spikes=y, mask=None, encoder_mask=None, inputs=None,
                  trial_index=torch.arange(N_TRIALS), num_trials=N_TRIALS)
    return model, kwargs, exact, post_mean, post_cov


def gaussian_proposal(loc, cov):
    def guide(spikes=None, *, trial_index=None, num_trials=None, **_):
        with trial_plate(spikes, trial_index=trial_index, num_trials=num_trials):
            pyro.sample("z0", dist.MultivariateNormal(loc, covariance_matrix=cov))
    return guide


def test_exact_posterior_as_proposal_gives_the_exact_marginal(linear_gaussian):
    model, kwargs, exact, post_mean, post_cov = linear_gaussian
    estimate, mc_se = importance_log_marginal(
        model, gaussian_proposal(post_mean, post_cov), kwargs, num_particles=8)
    # every importance weight equals p(y): no variance, no bias
    np.testing.assert_allclose(estimate.numpy(), exact.numpy(), atol=1e-3)
    assert float(mc_se.max()) < 1e-3


def test_broad_proposal_is_unbiased_within_its_monte_carlo_error(linear_gaussian):
    model, kwargs, exact, post_mean, post_cov = linear_gaussian
    broad = gaussian_proposal(post_mean, 4.0 * post_cov)      # twice the posterior sd
    torch.manual_seed(1)
    estimate, mc_se = importance_log_marginal(model, broad, kwargs, num_particles=2000)
    error = (estimate - exact).numpy()
    assert np.all(np.abs(error) < 4 * mc_se.numpy() + 5e-3), (error, mc_se)
    assert abs(error.mean()) < 0.02
    # few particles: a lower bound on average (Jensen), as the estimator's theory says
    torch.manual_seed(2)
    few = np.mean([importance_log_marginal(model, broad, kwargs, num_particles=2)[0].numpy()
                   for _ in range(20)], axis=0)
    assert (few - exact.numpy()).mean() < -0.05


def test_num_particles_must_be_two_or_more(linear_gaussian):
    model, kwargs, _, post_mean, post_cov = linear_gaussian
    with pytest.raises(ValueError, match="num_particles"):
        importance_log_marginal(model, gaussian_proposal(post_mean, post_cov), kwargs,
                                num_particles=1)


@pytest.fixture(scope="module")
def fitted_lorenz():
    data = synthetic.lorenz(n_trials=60, n_bins=30, n_neurons=12, seed=0)
    data = data.with_heldout_neurons(3, seed=0).with_split(valid=0.0, test=0.25, seed=0)
    train, test = data.select("train"), data.select("test")
    model = LatentODEModel(12, 3, readout="affine")
    guide = AmortizedNormalGuide(model)
    fit(model, guide, train, steps=150, batch_size=45, seed=0, progress_every=None,
        curriculum=None, kl_warmup=0)
    return model, guide, train, test


def test_heldout_evidence_of_a_fitted_model(fitted_lorenz):
    model, guide, train, test = fitted_lorenz
    evidence = heldout_evidence(model, guide, train, test, num_particles=16)
    summary = evidence.summary()
    assert evidence.n_trials == test.n_trials
    assert np.isfinite(evidence.log_marginal).all() and summary["log_marginal_se"] > 0
    # co-bps from the particles' mean rates agrees with evaluate's scoring of other draws
    # of the same posterior (only sampling noise apart)
    _, rates = posterior_means(model, guide, test, num_samples=64)
    null = train.spikes.mean(axis=(0, 1))
    assert summary["co_bps"] == pytest.approx(score_rates(rates, test, null_rates=null)
                                              ["co_bps"], abs=0.01)
    assert 0 < summary["co_bps_se"] < 1
    # the fitted model beats each neuron's mean rate on held-out trials
    assert summary["evidence_bps"] > 0
    # a model compared with itself: no difference
    assert evidence.compare(evidence) == (0.0, 0.0)
    # more particles: a tighter (higher) bound on average
    more = heldout_evidence(model, guide, train, test, num_particles=128).summary()
    assert more["log_marginal"] > summary["log_marginal"] - 3 * summary["log_marginal_mc_se"]


def test_heldout_evidence_refuses_a_per_trial_guide(fitted_lorenz):
    from pyrodyn.inference import model_args, per_trial_normal_guide

    model, _, train, test = fitted_lorenz
    guide = per_trial_normal_guide(model)
    guide(**model_args(train.to_batch(), train.n_trials))   # its parameters: train's trials
    with pytest.raises(ValueError, match="per-trial guide"):
        heldout_evidence(model, guide, train, test)


def test_evidence_is_elpd_data_that_arviz_compare_ranks():
    import arviz as az

    rng = np.random.default_rng(0)
    better = Evidence(rng.normal(-100, 5, 40), np.zeros(40), np.ones(40))
    worse = Evidence(better.log_marginal - 1 + rng.normal(0, 0.5, 40), np.zeros(40),
                     np.ones(40))
    table = az.compare({"better": better.to_elpd_data(), "worse": worse.to_elpd_data()})
    assert list(table.index) == ["better", "worse"]
    diff, se = better.compare(worse)
    # ArviZ's difference is the sum over trials; its SE the paired one, scaled the same way
    assert np.isclose(table.loc["worse", "elpd_diff"], 40 * diff)
    assert np.isclose(table.loc["worse", "dse"], 40 * se, rtol=0.05)
