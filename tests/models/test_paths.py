"""Stochastic latent paths: the prior and guide chains, and a diffusion model end to end."""

import math

import numpy as np
import pytest
import torch
from pyro import poutine

from pyrodyn.config import RunConfig
from pyrodyn.data import synthetic
from pyrodyn.inference import (
    AmortizedNormalGuide,
    fit,
    heldout_evidence,
    model_args,
    posterior,
    replay,
)
from pyrodyn.inference.refine import refine
from pyrodyn.models import LatentODEModel, MultiAreaModel, ODESolver, sites
from pyrodyn.models.base import in_model_coordinates
from pyrodyn.models.paths import (
    GuidedPath,
    MarkovPath,
    guided_path,
    path_head_size,
    shared_drift,
    unit_fisher,
    unit_log_density,
)


def _drift(z, u):
    return 0.9 * z + 0.1


def test_markov_path_density_is_the_product_of_its_transitions():
    torch.manual_seed(0)
    start, scale = torch.randn(3, 2), torch.tensor([0.1, 0.3])
    prior = MarkovPath(start, _drift, scale, n_steps=5)
    path = prior.sample()
    previous = torch.cat([start.unsqueeze(1), path[:, :-1]], 1)
    expected = torch.distributions.Normal(_drift(previous, None), scale).log_prob(path).sum((1, 2))
    assert torch.allclose(prior.log_prob(path), expected, atol=1e-5)


def test_student_t_path_density_and_draws_are_those_of_t_innovations():
    torch.manual_seed(0)
    start, scale, df = torch.randn(3, 2), torch.tensor([0.1, 0.3]), torch.tensor([2.5, 6.0])
    prior = MarkovPath(start, _drift, scale, n_steps=5, df=df)
    path = prior.sample()
    previous = torch.cat([start.unsqueeze(1), path[:, :-1]], 1)
    expected = torch.distributions.StudentT(df, _drift(previous, None), scale).log_prob(path)
    assert torch.allclose(prior.log_prob(path), expected.sum((1, 2)), atol=1e-4)
    # draws: the innovations' 99% quantile is the t's (scipy's: 7.2 for df 2.5, 3.7 for 6),
    # which the 5% tolerance tells from the Gaussian's 2.58
    still = MarkovPath(torch.zeros(200000, 2), lambda z, u: z, scale, 1, df=df).sample()
    from scipy import stats

    for d in range(2):
        quantile = torch.quantile(still[:, 0, d].abs() / scale[d], 0.99).item()
        assert quantile == pytest.approx(stats.t.ppf(0.995, df[d].item()), rel=0.05)


def test_student_t_fisher_weight_is_the_location_fisher_information():
    """``unit_fisher`` (the Laplace's Gauss-Newton weight) is E[(d/dx log p(x))^2]."""
    torch.manual_seed(0)
    for df in (1.5, 4.0, 30.0):
        x = torch.distributions.StudentT(torch.tensor(df)).sample((400000,)).requires_grad_()
        (score,) = torch.autograd.grad(unit_log_density(x, torch.tensor(df)).sum(), x)
        assert (score ** 2).mean().item() == pytest.approx(unit_fisher(torch.tensor(df)).item(),
                                                           rel=0.03)
    assert unit_fisher(None) == 1.0


def _ar1_gaussian(scale, rho, n, last=None):
    """The exact law of an AR(1) noise path (n steps, one dimension), from its stationary law
    or, given ``last``, from that previous noise: its mean and covariance."""
    k = torch.arange(n)
    lag = (k[:, None] - k[None, :]).abs()
    if last is None:
        return torch.zeros(n), scale ** 2 / (1 - rho ** 2) * rho ** lag
    both = torch.minimum(k[:, None], k[None, :])  # innovations shared by steps i and j
    covariance = scale ** 2 * rho ** lag * (1 - rho ** (2 * (both + 1))) / (1 - rho ** 2)
    return last[..., None] * rho ** (k + 1), covariance


def test_correlated_noise_density_is_the_exact_ar1_gaussian():
    """With no drift the path is the noise itself: its density, from the stationary law or
    from a given previous noise, is the AR(1) Gaussian's, and its draws have that law."""
    torch.manual_seed(0)
    scale, rho = torch.tensor([0.3, 0.2]), torch.tensor([0.8, 0.5])

    def still(z, u):
        return torch.zeros_like(z)

    for last in (None, torch.randn(3, 2)):
        prior = MarkovPath(torch.zeros(3, 2), still, scale, 6, correlation=rho, last_noise=last)
        path = prior.sample()
        expected = 0.0
        for d in range(2):
            mean, cov = _ar1_gaussian(scale[d], rho[d], 6, None if last is None else last[:, d])
            expected = expected + torch.distributions.MultivariateNormal(mean, cov).log_prob(
                path[..., d])
        assert torch.allclose(prior.log_prob(path), expected, atol=1e-4)
    draws = MarkovPath(torch.zeros(20000, 2), still, scale, 4, correlation=rho).sample()
    torch.testing.assert_close(draws.std(0), (scale / torch.sqrt(1 - rho ** 2)).expand(4, 2),
                               atol=0.01, rtol=0.0)
    lag_one = (draws[:, 1] * draws[:, 0]).mean(0) / draws[:, 0].var(0)
    torch.testing.assert_close(lag_one, rho, atol=0.02, rtol=0.0)


def test_a_guided_path_with_correlated_noise_at_rest_is_its_prior():
    torch.manual_seed(0)
    d, start, scale, rho = 2, torch.randn(4, 2), torch.tensor([0.2, 0.3]), torch.tensor([0.9, 0.4])
    params = torch.zeros(4, 6, path_head_size(d))
    params[..., [d * d + d, d * d + d + 2]] = math.log(math.expm1(1.0))
    rest = guided_path(params, start, _drift, scale, correlation=rho)
    path = rest.sample()
    prior = MarkovPath(start, _drift, scale, 6, correlation=rho)
    assert torch.allclose(rest.log_prob(path), prior.log_prob(path), atol=5e-3)
    assert torch.equal(rest.rebase(start).correlation, rho)  # refinement keeps the noise's law
    white = MarkovPath(start, _drift, scale, 6)
    assert not torch.allclose(prior.log_prob(path), white.log_prob(path), atol=0.1)


def test_guided_path_at_rest_is_the_prior_and_its_density_matches_its_draws():
    torch.manual_seed(0)
    d, start, scale = 2, torch.randn(4, 2), torch.tensor([0.2, 0.2])
    params = torch.zeros(4, 6, path_head_size(d))
    params[..., [d * d + d, d * d + d + 2]] = math.log(math.expm1(1.0))  # unit noise factors
    rest = guided_path(params, start, _drift, scale)
    path = rest.sample()
    assert torch.allclose(rest.log_prob(path), MarkovPath(start, _drift, scale, 6).log_prob(path),
                          atol=5e-3)  # the noise factors carry a 1e-4 floor
    params = torch.randn(4, 6, path_head_size(d)) * 0.3
    q = guided_path(params, start, _drift, scale)
    draws = torch.stack([q.sample() for _ in range(4000)])
    # a Gaussian chain: its mean is the noiseless rollout when the drift is affine
    assert torch.allclose(draws.mean(0), q.centre(), atol=0.03)
    shifted = q.rebase(start + 1.0, offset=0.5)
    assert isinstance(shifted, GuidedPath) and shifted.start_sites == q.start_sites
    assert not torch.allclose(shifted.centre(), q.centre())


def _scores_and_gradients(score, leaves):
    value = score()
    grads = torch.autograd.grad(value.sum(), leaves, retain_graph=True, allow_unused=True)
    return value.detach(), [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


@pytest.mark.parametrize("rho", [None, torch.tensor([0.8, 0.3])], ids=["white", "correlated"])
def test_a_draws_own_densities_equal_the_densities_evaluated_afresh(rho):
    """The guide's density of its own draw (read off its noises) and, within
    ``shared_drift``, the prior's (reusing the chain's drift) equal the densities evaluated
    afresh, in value and in gradient, for a nonlinear drift."""
    torch.manual_seed(0)
    field = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    def drift(z, u):
        return z + 0.1 * field(z)

    params = (0.3 * torch.randn(5, 7, path_head_size(2))).requires_grad_()
    start = torch.randn(5, 2, requires_grad=True)
    leaves = [params, start, *field.parameters()]
    scale = torch.tensor([0.2, 0.1])

    def densities(shared):
        torch.manual_seed(1)
        with shared_drift() if shared else torch.enable_grad():
            q = guided_path(params, start, drift, scale, correlation=rho)
            path = q.rsample()
            prior = MarkovPath(start, drift, scale, 7, correlation=rho)
            return q, path, prior.log_prob(path)

    q, path, prior_shared = densities(shared=True)
    _, _, prior_fresh = densities(shared=False)
    fresh = path.clone()  # another tensor: nothing of the draw's own is reused
    for own, afresh in ((lambda: q.log_prob(path), lambda: q.log_prob(fresh)),
                        (lambda: prior_shared, lambda: prior_fresh)):
        (a, grads_a), (b, grads_b) = (_scores_and_gradients(own, leaves),
                                      _scores_and_gradients(afresh, leaves))
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-3)
        for ga, gb in zip(grads_a, grads_b):
            assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-4)


def test_shared_drift_is_reused_only_for_the_same_drift_and_start():
    torch.manual_seed(0)
    calls = []

    def drift(z, u):
        calls.append(z.shape)
        return 0.9 * z

    def other(z, u):
        return 0.5 * z

    start, scale = torch.randn(3, 2), torch.tensor([0.1, 0.2])
    params = 0.3 * torch.randn(3, 4, path_head_size(2))
    with shared_drift():
        path = guided_path(params, start, drift, scale).rsample()
        calls.clear()
        MarkovPath(start, drift, scale, 4).log_prob(path)
        assert calls == []  # the guide's chain already evaluated it
        MarkovPath(start + 1, drift, scale, 4).log_prob(path)
        assert len(calls) == 1  # another start: evaluated afresh
        reused = MarkovPath(start, drift, scale, 4).log_prob(path)
        assert not torch.allclose(MarkovPath(start, other, scale, 4).log_prob(path), reused)
        centre = guided_path(params, start, drift, scale).centre()
        calls.clear()
        MarkovPath(start, drift, scale, 4).log_prob(centre)
        assert calls == []  # refinement scores the chain's centre
    calls.clear()
    MarkovPath(start, drift, scale, 4).log_prob(path)
    assert len(calls) == 1  # outside the context nothing is shared


def test_diffusion_options_are_checked():
    with pytest.raises(ValueError, match="inferred inputs"):
        LatentODEModel(5, 2, diffusion=0.1, inferred_input_dim=1)
    with pytest.raises(ValueError, match="fixed-step"):
        LatentODEModel(5, 2, diffusion=0.1, solver=ODESolver("dopri5"))
    with pytest.raises(ValueError, match="diffusion"):
        RunConfig(diffusion=-1.0)
    with pytest.raises(ValueError, match="diffusion"):
        LatentODEModel(5, 2, diffusion=0.0)
    with pytest.raises(ValueError, match="noise_tau"):
        RunConfig(noise_tau=0.0)
    assert RunConfig(diffusion=None, noise_tau=5.0).path_noise_tau is None  # no path to correlate
    with pytest.raises(ValueError, match="noise_tau"):
        LatentODEModel(5, 2, noise_tau=5.0)
    with pytest.raises(ValueError, match="noise_df"):
        RunConfig(noise_df=-1.0)
    with pytest.raises(ValueError, match="noise_df"):
        LatentODEModel(5, 2, noise_df=4.0)  # Student-t noise of a deterministic ODE
    assert RunConfig(diffusion=None, noise_df=4.0).path_noise_df is None
    with pytest.raises(ValueError, match="diffusion_prior"):
        RunConfig(diffusion_prior=-1.0)
    with pytest.raises(ValueError, match="diffusion_prior"):
        LatentODEModel(5, 2, diffusion=0.1, diffusion_prior=-1.0)
    with pytest.raises(ValueError, match="diffusion_prior"):
        LatentODEModel(5, 2, diffusion_prior=10.0)  # no path noise to shrink


@pytest.mark.parametrize("cls, kwargs", [
    (LatentODEModel, dict(n_neurons=6, latent_dim=2)),
    (MultiAreaModel, dict(areas={"A": range(0, 3), "B": range(3, 6)}, latent_dim=1)),
], ids=["one-area", "multi-area"])
def test_the_diffusion_prior_is_one_factor_of_the_sigmas(cls, kwargs):
    spikes = torch.zeros(4, 10, 6)
    traced = {}
    for rate in (0.0, 50.0):
        model = cls(**kwargs, diffusion=0.2, diffusion_prior=rate)
        with torch.no_grad():
            model.diffusion.log_sigma.copy_(torch.log(torch.tensor([0.1, 0.3])))
        traced[rate] = poutine.trace(model).get_trace(spikes)
    assert "diffusion_prior" not in traced[0.0].nodes  # none unless asked
    site = traced[50.0].nodes["diffusion_prior"]
    assert not site["cond_indep_stack"]  # once per step, not per trial
    assert torch.allclose(site["fn"].log_factor, torch.tensor(-50.0 * 0.4))


@pytest.mark.parametrize("noise_tau, learn_noise_tau, noise_df",
                         [(None, True, None), (5.0, True, None), (5.0, False, None),
                          (5.0, True, 4.0)],
                         ids=["white", "correlated", "fixed-correlation", "student-t"])
def test_a_diffusion_model_fits_draws_refines_and_scores(noise_tau, learn_noise_tau, noise_df):
    data = synthetic.lorenz(n_trials=24, n_bins=20, n_neurons=12, seed=0)
    data = data.with_split(valid=0.25, test=0.25, seed=0)
    train, test = data.select("train"), data.select("test")
    model = LatentODEModel(12, 3, diffusion=0.3, noise_tau=noise_tau,
                           learn_noise_tau=learn_noise_tau, noise_df=noise_df)
    guide = AmortizedNormalGuide(model)
    assert model.path_sites == {sites.PATH: 3}
    fit(model, guide, train, steps=20, batch_size=8, progress=False, curriculum=None)
    sigma_moved = not torch.allclose(model.diffusion.sigma(), torch.full((3,), 0.3))
    assert sigma_moved  # the diffusion is learned
    if noise_tau is not None:  # the noise's correlation time, where asked, too
        moved = not torch.allclose(model.diffusion.log_tau.exp(), torch.full((3,), noise_tau))
        assert moved == learn_noise_tau
    if noise_df is not None:  # and the innovations' degrees of freedom
        assert not torch.allclose(model.noise_df(), torch.full((3,), noise_df))
    post = posterior(model, guide, test, num_samples=4, refine_steps=3)
    assert post.draws["latents"].shape == (4, test.n_trials, 20, 3)
    assert sites.PATH not in post.draws  # "latents" holds it, bin 0 first
    kwargs = model_args(test.to_batch(), test.n_trials)
    local = refine(model, guide, kwargs, steps=3)
    guide_trace, model_trace = replay(model, local, kwargs)
    z = in_model_coordinates(model, model_trace.nodes[sites.LATENTS]["value"])  # reported
    assert torch.allclose(z[:, 1:], guide_trace.nodes[sites.PATH]["value"], atol=1e-5)
    evidence = heldout_evidence(model, guide, train, test, num_particles=4)
    assert np.isfinite(evidence.log_marginal).all()


def test_a_multi_area_diffusion_model_runs():
    data = synthetic.lorenz(n_trials=6, n_bins=15, n_neurons=10, seed=0)
    model = MultiAreaModel({"A": range(0, 4), "B": range(4, 10)}, latent_dim=2, diffusion=0.2)
    guide = AmortizedNormalGuide(model)
    draws = model.simulate(3, 15)
    assert draws[sites.PATH].shape == (3, 14, 4)
    loss = fit(model, guide, data, steps=3, batch_size=6, progress=False, curriculum=None)
    assert math.isfinite(loss.losses[-1])
