"""Stochastic latent paths: the prior and guide chains, and a diffusion model end to end."""

import math

import numpy as np
import pytest
import torch

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
from pyrodyn.models.paths import GuidedPath, MarkovPath, guided_path, path_head_size


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


def test_diffusion_options_are_checked():
    with pytest.raises(ValueError, match="inferred inputs"):
        LatentODEModel(5, 2, diffusion=0.1, inferred_input_dim=1)
    with pytest.raises(ValueError, match="fixed-step"):
        LatentODEModel(5, 2, diffusion=0.1, solver=ODESolver("dopri5"))
    with pytest.raises(ValueError, match="diffusion"):
        RunConfig(diffusion=-1.0)
    with pytest.raises(ValueError, match="diffusion"):
        LatentODEModel(5, 2, diffusion=0.0)


def test_a_diffusion_model_fits_draws_refines_and_scores():
    data = synthetic.lorenz(n_trials=24, n_bins=20, n_neurons=12, seed=0)
    data = data.with_split(valid=0.25, test=0.25, seed=0)
    train, test = data.select("train"), data.select("test")
    model = LatentODEModel(12, 3, diffusion=0.3)
    guide = AmortizedNormalGuide(model)
    assert model.path_sites == {sites.PATH: 3}
    fit(model, guide, train, steps=20, batch_size=8, progress=False, curriculum=None)
    sigma_moved = not torch.allclose(model.diffusion.sigma(), torch.full((3,), 0.3))
    assert sigma_moved  # the diffusion is learned
    post = posterior(model, guide, test, num_samples=4, refine_steps=3)
    assert post.draws["latents"].shape == (4, test.n_trials, 20, 3)
    assert sites.PATH not in post.draws  # "latents" holds it, bin 0 first
    kwargs = model_args(test.to_batch(), test.n_trials)
    local = refine(model, guide, kwargs, steps=3)
    guide_trace, model_trace = replay(model, local, kwargs)
    z = model_trace.nodes[sites.LATENTS]["value"]
    assert torch.allclose(z[:, 1:], guide_trace.nodes[sites.PATH]["value"])
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
