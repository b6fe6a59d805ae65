"""The stochastic path's posterior against the exact one: linear dynamics with Gaussian
observations, where the Kalman (Rauch-Tung-Striebel) smoother gives the true posterior.

The model's weights are fixed at the truth and only the guide is trained, so the comparison is
of inference alone: the refined guide's centre against the exact posterior mean (within 0.1 of
the exact posterior sd) and its spread against the exact sd: within 3%, since the spread is the
Laplace approximation at the centre, which is exact here (the encoder's own: within 15%).
"""

import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyrodyn._isolation import isolated_rng
from pyrodyn.inference import AmortizedNormalGuide
from pyrodyn.inference.refine import refine
from pyrodyn.models import LatentODEModel, ODESolver
from pyrodyn.models.dynamics import LinearField

D, N, T = 2, 12, 30


def _linear_gaussian_model() -> LatentODEModel:
    field = LinearField(D)
    model = LatentODEModel(N, D, field=field, readout="affine", likelihood="gaussian",
                           learn_prior=False, diffusion=0.6,
                           solver=ODESolver("midpoint", step_size=0.1))
    with torch.no_grad():  # a damped rotation, unit prior on z0, noise sd 0.7
        field.linear.weight[:] = torch.tensor([[-0.3, 1.5], [-1.5, -0.3]])
        model.likelihood.raw_scale.fill_(float(torch.log(torch.expm1(torch.tensor(0.7)))))
        model.readout.bias.fill_(5.0)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def kalman_smoother(model: LatentODEModel, y: torch.Tensor):
    """Exact posterior means and sds (time, latent) of one trial ``y`` (time, neuron)."""
    with torch.no_grad():
        c = model.transition(torch.zeros(1, D))[0].double()
        phi = (model.transition(torch.eye(D)).double() - c).T  # transition(e_i) = phi e_i + c
        q = torch.diag(model.noise_scale().double() ** 2)
        w, b = model.readout.weight.double(), model.readout.bias.double()
        sd = torch.nn.functional.softplus(model.likelihood.raw_scale).double() + 1e-4
        r = torch.diag(sd ** 2)
    y = y.double()
    m, p = torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64)
    filtered, predicted = [], []
    for k in range(T):
        if k:
            m, p = phi @ m + c, phi @ p @ phi.T + q
        predicted.append((m, p))
        gain = p @ w.T @ torch.linalg.inv(w @ p @ w.T + r)
        m, p = m + gain @ (y[k] - w @ m - b), p - gain @ w @ p
        filtered.append((m, p))
    means, covs = [filtered[-1][0]], [filtered[-1][1]]
    for k in range(T - 2, -1, -1):
        (mf, pf), (mp, pp) = filtered[k], predicted[k + 1]
        g = pf @ phi.T @ torch.linalg.inv(pp)
        means.insert(0, mf + g @ (means[0] - mp))
        covs.insert(0, pf + g @ (covs[0] - pp) @ g.T)
    return torch.stack(means), torch.stack([torch.diagonal(v) for v in covs]).sqrt()


@pytest.mark.slow
def test_refined_path_posterior_matches_the_kalman_smoother():
    model = _linear_gaussian_model()
    with isolated_rng(0):
        train = model.simulate(300, T)["spikes"]
        test = model.simulate(10, T)["spikes"]
        guide = AmortizedNormalGuide(model, hidden=32, dropout=0.0)
        optimizer = torch.optim.Adam(guide.parameters(), lr=3e-3)
        for _ in range(1000):
            index = torch.randint(0, 300, (64,))
            loss = Trace_ELBO().differentiable_loss(model, guide, train[index],
                                                    trial_index=index, num_trials=300)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        local = refine(model, guide, dict(spikes=test, num_trials=10), steps=100)
        with torch.no_grad():
            centre = local.locs
            centre = torch.cat([centre["z0"].unsqueeze(-2), centre["path"]], -2).double()
            draws = []
            for _ in range(2000):
                trace = poutine.trace(local).get_trace(test, num_trials=10)
                draws.append(torch.cat([trace.nodes["z0"]["value"].unsqueeze(-2),
                                        trace.nodes["path"]["value"]], -2))
            spread = torch.stack(draws).double().std(0)
            laplace = local.laplace["path"].rsample((20000,)).double().std(0)
            encoder = refine(model, guide, dict(spikes=test, num_trials=10), steps=100,
                             laplace=False)
            draws = [torch.cat([trace.nodes["z0"]["value"].unsqueeze(-2),
                                trace.nodes["path"]["value"]], -2)
                     for trace in (poutine.trace(encoder).get_trace(test, num_trials=10)
                                   for _ in range(2000))]
            encoder_spread = torch.stack(draws).double().std(0)
    exact = [kalman_smoother(model, test[i]) for i in range(10)]
    exact_mean = torch.stack([m for m, _ in exact])
    exact_sd = torch.stack([s for _, s in exact])
    assert ((centre - exact_mean).abs() / exact_sd).max() < 0.1
    ratio = spread / exact_sd
    # 2000 draws through the guide's trace: Monte Carlo error about 1.6% per entry
    assert ratio.min() > 0.93 and ratio.max() < 1.07, (ratio.min(), ratio.max())
    # 20000 straight from the Laplace: about 0.5%
    assert ((laplace / exact_sd - 1).abs().max()) < 0.03
    ratio = encoder_spread / exact_sd
    assert ratio.min() > 0.85 and ratio.max() < 1.15, (ratio.min(), ratio.max())
