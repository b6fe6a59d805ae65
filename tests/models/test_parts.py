import pytest
import torch

from pyrodyn.models import (
    AR1Prior,
    FlowReadout,
    LatentODEModel,
    MonotoneLink,
    ODESolver,
    PlaneReadout,
    ResidualFlowReadout,
    build_field,
    build_likelihood,
    build_readout,
)
from pyrodyn.models.dynamics import LinearField


def test_flow_readout_inverse_recovers_latents_to_1e5():
    torch.manual_seed(0)
    readout = FlowReadout(3, 30, layers=3)
    with torch.no_grad():  # move away from the near-identity start so the test means something
        for p in readout.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z = 2.0 * torch.randn(16, 40, 3)
    log_rates = readout(z)
    assert log_rates.shape == (16, 40, 30)
    assert (readout.inverse(log_rates) - z).abs().max() < 1e-5


def test_residual_flow_readout_inverse_recovers_latents_to_1e5():
    torch.manual_seed(0)
    readout = ResidualFlowReadout(3, 30, steps=6)
    z = 2.0 * torch.randn(16, 40, 3)
    log_rates = readout(z)
    assert log_rates.shape == (16, 40, 30)
    assert not torch.allclose(log_rates[..., :3] - readout.bias[:3], z, atol=1e-2)  # not identity
    assert (readout.inverse(log_rates) - z).abs().max() < 1e-5


def test_residual_flow_readout_warns_when_a_step_is_not_contractive():
    torch.manual_seed(0)
    readout = ResidualFlowReadout(2, 5, steps=1, scale=50.0)
    with pytest.warns(UserWarning, match="did not converge"):
        readout.inverse(readout(torch.randn(4, 2)), max_iter=20)


def test_plane_readout_bends_rates_off_its_plane_and_never_its_coordinates():
    torch.manual_seed(0)
    readout = PlaneReadout(3, 30)
    z = 2.0 * torch.randn(16, 40, 3)
    start = readout(z)
    assert torch.allclose(start, z @ readout.weight.T + readout.bias, atol=1e-6)  # starts affine
    assert torch.allclose(readout.log_penalty(z, start), torch.zeros(16), atol=1e-6)
    with torch.no_grad():
        for p in readout.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    log_rates = readout(z)
    bend = log_rates - (z @ readout.weight.T + readout.bias)
    assert bend.abs().max() > 0.1                                 # nonlinear now
    assert (bend @ readout.weight).abs().max() < 1e-4             # but off the plane only
    assert (readout.inverse(log_rates) - z).abs().max() < 1e-4    # coordinates unchanged
    penalty = readout.log_penalty(z, log_rates)
    assert penalty.shape == (16,) and (penalty < 0).all()
    expected = -0.5 * readout.bend_precision * bend.pow(2).sum((-2, -1))
    assert torch.allclose(penalty, expected, rtol=1e-4)


def test_monotone_link_is_increasing_zero_at_zero_and_inverted_exactly():
    torch.manual_seed(0)
    link = MonotoneLink(6)
    with torch.no_grad():
        for p in link.parameters():
            p.add_(torch.randn_like(p))
        link.raw_slope.fill_(-6.0)                   # a slope of 0.003: nearly saturating
    u = torch.linspace(-8.0, 8.0, 401).unsqueeze(-1).expand(401, 6)
    y = link(u)
    assert (y.diff(dim=0) > 0).all()                 # strictly increasing, every neuron
    assert torch.allclose(link(torch.zeros(1, 6)), torch.zeros(1, 6), atol=1e-6)
    assert (link.inverse(y) - u).abs().max() < 1e-3


def test_plane_readout_with_a_monotone_link_keeps_its_coordinates():
    torch.manual_seed(0)
    readout = PlaneReadout(3, 30, link="monotone")
    z = 2.0 * torch.randn(16, 40, 3)
    assert (readout(z) - (z @ readout.weight.T + readout.bias)).abs().max() < 0.1  # ~affine
    with torch.no_grad():
        for p in readout.parameters():
            p.add_(0.3 * torch.randn_like(p))
    log_rates = readout(z)
    assert (readout.inverse(log_rates) - z).abs().max() < 1e-3
    # the bend prior measures the bend in log-rates, after the link: what the plane's own
    # linear-nonlinear neurons leave (zero when the bend is)
    plane_only = readout.link(z @ readout.weight.T) + readout.bias
    expected = -0.5 * readout.bend_precision * (log_rates - plane_only).pow(2).sum((-2, -1))
    assert torch.allclose(readout.log_penalty(z, log_rates), expected)
    assert (expected < 0).all()
    with torch.no_grad():
        readout.net[-1].weight.zero_()
        readout.net[-1].bias.zero_()
    assert torch.allclose(readout.log_penalty(z, readout(z)), torch.zeros(16), atol=1e-6)
    with pytest.raises(ValueError, match="link must be one of identity, monotone"):
        PlaneReadout(3, 30, link="tanh")


@pytest.mark.parametrize("readout", [FlowReadout, ResidualFlowReadout, PlaneReadout])
def test_injective_readouts_need_at_least_as_many_neurons_as_latents(readout):
    with pytest.raises(ValueError, match="needs n_neurons >= latent_dim"):
        readout(5, 3)


def test_rk4_on_the_bin_grid_matches_the_exact_solution_of_a_linear_ode():
    field = LinearField(2)
    with torch.no_grad():
        field.linear.weight.copy_(torch.tensor([[0.0, -1.0], [1.0, 0.0]]))  # rotation
    z0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    field = field.double()
    states = ODESolver("rk4", step_size=0.05)(field, z0, 40)
    t = torch.arange(40, dtype=torch.float64) * 0.05
    exact = torch.stack([torch.cos(t), torch.sin(t)], -1)
    assert (states[0] - exact).abs().max() < 1e-6
    adaptive = ODESolver("dopri5", step_size=0.05, rtol=1e-9, atol=1e-10)(field, z0, 40)
    assert (adaptive[0] - exact).abs().max() < 1e-7


def test_inputs_are_held_constant_within_each_bin():
    field = LinearField(1, input_dim=1)
    with torch.no_grad():
        field.linear.weight.copy_(torch.tensor([[0.0, 1.0]]))  # dz/dt = u: integrates input
    inputs = torch.zeros(1, 6, 1)
    inputs[0, 2, 0] = 3.0  # a pulse during bin 2 only
    for method in ("euler", "midpoint", "rk4"):
        states = ODESolver(method, step_size=0.5)(field, torch.zeros(1, 1), 6, inputs)
        assert torch.allclose(states[0, :, 0], torch.tensor([0, 0, 0, 1.5, 1.5, 1.5])), method


def test_adjoint_gradients_match_direct_backpropagation():
    torch.manual_seed(0)
    field = build_field("mlp", 2, hidden=16).double()
    z0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    grads = []
    for adjoint in (False, True):
        solver = ODESolver("dopri5", step_size=0.1, adjoint=adjoint, rtol=1e-10, atol=1e-10)
        field.zero_grad()
        z0.grad = None
        solver(field, z0, 10).pow(2).sum().backward()
        grads.append(torch.cat([z0.grad.ravel()] + [p.grad.ravel() for p in field.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_ode_solve_gradcheck_float64():
    torch.manual_seed(0)
    field = build_field("mlp", 2, hidden=8).double()
    z0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: ODESolver("rk4", step_size=0.1)(field, z, 5), z0)


def test_ar1_prior_log_prob_matches_the_multivariate_normal():
    prior = AR1Prior(6, 2, tau=3.0, scale=0.5)
    a = torch.exp(torch.tensor(-1 / 3.0, dtype=torch.float64))
    t = torch.arange(6, dtype=torch.float64)
    cov = 0.25 * a ** (t[:, None] - t[None]).abs()
    mvn = torch.distributions.MultivariateNormal(torch.zeros(6, dtype=torch.float64), cov)
    x = prior.sample((4,)).double()
    expected = mvn.log_prob(x.transpose(-1, -2)).sum(-1)
    assert torch.allclose(prior.log_prob(x), expected, atol=1e-4)
    assert prior.sample((4000,)).var() == pytest.approx(0.25, rel=0.1)


@pytest.mark.parametrize("maker, name", [(build_field, "rnn"), (build_readout, "pca"),
                                         (build_likelihood, "bernoulli")])
def test_unknown_part_names(maker, name):
    with pytest.raises(ValueError, match=f"unknown .*'{name}'"):
        maker(name, 3, 3) if maker is not build_likelihood else maker(name, 3)


def test_model_rejects_data_of_the_wrong_shape():
    model = LatentODEModel(n_neurons=5, latent_dim=2)
    with pytest.raises(ValueError, match=r"spikes: expected \(trial, time, 5\)"):
        model(torch.zeros(2, 4, 6))
    with pytest.raises(ValueError, match="trial_index: a batch of 2 of 10 trials"):
        model(torch.zeros(2, 4, 5), num_trials=10)
    with_inputs = LatentODEModel(n_neurons=5, latent_dim=2, external_input_dim=1)
    with pytest.raises(ValueError, match="inputs: the model takes 1 external input"):
        with_inputs(torch.zeros(2, 4, 5))


def test_latents_are_reported_in_the_readouts_orthonormal_coordinates():
    from pyro import poutine

    from pyrodyn.models import sites
    from pyrodyn.models.base import in_model_coordinates, reported_field
    from pyrodyn.models.readouts import orthonormal_basis

    torch.manual_seed(0)
    model = LatentODEModel(20, 3, field="linear", readout="plane")
    with torch.no_grad():
        model.readout.weight.copy_(torch.randn(20, 3) * torch.tensor([3.0, 1.0, 0.2]))
    trace = poutine.trace(model).get_trace(None, num_trials=4, n_bins=15)
    reported = trace.nodes[sites.LATENTS]["value"]
    own = in_model_coordinates(model, reported)
    # the readout, given the states mapped back, gives the recorded rates
    rates = model.likelihood.mean(model.readout(own))
    assert torch.allclose(rates, trace.nodes[sites.RATES]["value"], rtol=1e-4, atol=1e-6)
    # in the reported coordinates the loadings are orthonormal, strongest first
    basis = model.reported_basis()
    loadings = model.readout.weight @ torch.linalg.inv(basis)
    assert torch.allclose(loadings.T @ loadings, torch.eye(3), atol=1e-5)
    assert (basis.norm(dim=1).diff() < 0).all()  # singular values, largest first
    # whatever coordinates a fit lands in (z' = A z, W' = W A^-1), the reported ones differ
    # by a rotation at most: distances between reported states are distances of log-rates
    a = torch.randn(3, 3) + 3 * torch.eye(3)
    other = orthonormal_basis(model.readout.weight @ torch.linalg.inv(a)) @ a
    rotation = other @ torch.linalg.inv(basis)
    assert torch.allclose(rotation.T @ rotation, torch.eye(3), atol=1e-4)
    # the field in reported coordinates has the fixed point where the states are reported
    field = model.field
    point = -torch.linalg.solve(field.linear.weight, field.linear.bias)
    assert field(point).abs().max() < 1e-5
    assert reported_field(model)(point @ basis.T).abs().max() < 1e-4
    # readouts without loadings report the model's own coordinates
    flow = LatentODEModel(20, 3, readout="flow")
    assert flow.reported_basis() is None and reported_field(flow) is flow.field
