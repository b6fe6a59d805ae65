"""The Laplace posterior over channels and readout gains: its curvature, its draws, its file."""

import numpy as np
import pytest
import torch

from pyrodyn._isolation import isolated_rng
from pyrodyn.analysis import communication_summary
from pyrodyn.data import synthetic
from pyrodyn.inference import (
    ParameterPosterior,
    apply_parameter_draw,
    build_guide,
    fit,
    forward_rates,
    heldout_evidence,
    parameter_laplace,
    posterior,
    read_state,
    write_state,
)
from pyrodyn.inference.laplace import (
    ChannelScales,
    _channel_scale_tril,
    _field_weights,
    _least_favourable_directions,
    _readout_scale_tril,
    _scale_covariance,
    _scale_score_and_curvature,
    _transition_gram,
    channel_scale_laplace,
)
from pyrodyn.inference.traces import readout_perturbation
from pyrodyn.models import LatentODEModel, MultiAreaModel
from pyrodyn.models.likelihoods import PoissonLikelihood
from pyrodyn.models.paths import MarkovPath
from pyrodyn.models.readouts import AffineReadout, PlaneReadout


def test_readout_curvature_is_the_poisson_fisher_information():
    g = torch.Generator().manual_seed(0)
    readout = AffineReadout(2, 3)
    latents = torch.randn(2, 5, 7, 2, generator=g)  # (draw, trial, time, latent)
    spikes = torch.poisson(torch.full((5, 7, 3), 2.0), generator=g)
    tril = _readout_scale_tril(readout, PoissonLikelihood(), latents, spikes, None, 3.0, 0.5)
    x = torch.cat([latents, torch.ones_like(latents[..., :1])], -1)
    with torch.no_grad():
        rates = readout(latents).exp()
    for n in range(3):
        fisher = 3.0 * torch.einsum("dkt,dkti,dktj->ij", rates[..., n], x, x) / 2
        expected = torch.linalg.inv(fisher + 0.5 * torch.eye(3))
        torch.testing.assert_close(tril[n] @ tril[n].T, expected, rtol=1e-4, atol=1e-6)


def test_a_monotone_link_gets_a_posterior_over_its_shape():
    """The plane readout's link adds its parameters' derivatives to the features: the Fisher
    information is over (gain, baseline, link shape), and a draw moves the log-rates as
    changing the link's parameters by it would, to first order."""
    g = torch.Generator().manual_seed(0)
    readout = PlaneReadout(2, 3, link="monotone")
    with torch.no_grad():
        for parameter in readout.link.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=g))
    latents = torch.randn(2, 5, 7, 2, generator=g)
    spikes = torch.poisson(torch.full((5, 7, 3), 2.0), generator=g)
    tril = _readout_scale_tril(readout, PoissonLikelihood(), latents, spikes, None, 3.0, 0.5)
    assert tril.shape == (3, 10, 10)  # 2 gains, the baseline, a, c_1, c_2, s_1, s_2, t_1, t_2
    with torch.no_grad():
        rates = readout(latents).exp()
        shape = readout.shape_features(latents)
    x = torch.cat([latents, torch.ones_like(latents[..., :1])], -1)
    for n in range(3):
        xn = torch.cat([x, shape[..., n, :]], -1).double()  # nearly collinear: in double
        fisher = 3.0 * torch.einsum("dkt,dkti,dktj->ij", rates[..., n].double(), xn, xn) / 2
        expected = torch.linalg.inv(fisher + 0.5 * torch.eye(10, dtype=torch.float64))
        covariance = tril[n].double() @ tril[n].double().T
        torch.testing.assert_close(covariance, expected, rtol=1e-3, atol=1e-5)

    delta = 1e-5 * torch.randn(3, 10, generator=g, dtype=torch.float64)
    readout, z = readout.double(), latents[0].double()
    with torch.no_grad():
        change = readout_perturbation(readout, z, delta)
        before = readout(z)
        link = readout.link
        slope, amplitude, sharpness = link._parts()
        link.raw_slope.copy_(torch.log(torch.expm1(slope - 1e-3 + delta[:, 3])))
        link.raw_amplitude.copy_(torch.log(torch.expm1(amplitude + delta[:, 4:6])))
        link.raw_sharpness.copy_(torch.log(torch.expm1(sharpness + delta[:, 6:8])))
        link.shift.add_(delta[:, 8:10])
        moved = readout(z) + z @ delta[:, :2].T + delta[:, 2]
    torch.testing.assert_close(change, moved - before, rtol=1e-4, atol=1e-10)


def test_a_link_collinear_with_the_gains_still_gets_a_posterior():
    """At its start the link's slope derivative is exactly a mix of the gain features (no
    bend yet). With many well-pinned spikes the information matrix then needs double
    precision: summed in float32 it comes out indefinite and the Cholesky factor fails."""
    g = torch.Generator().manual_seed(0)
    readout = PlaneReadout(3, 4, link="monotone")
    with torch.no_grad():
        readout.bias.fill_(3.0)  # about 20 spikes per bin
    latents = torch.randn(2, 256, 100, 3, generator=g)
    spikes = torch.poisson(readout(latents[0]).exp().detach(), generator=g)
    tril = _readout_scale_tril(readout, PoissonLikelihood(), latents, spikes, None, 2.0, 1.0)
    assert torch.isfinite(tril).all() and (tril.diagonal(dim1=-2, dim2=-1) > 0).all()


def _two_area(copy_source: bool):
    """Latents of two 1-d areas; B's state is a copy of A's when ``copy_source``."""
    model = MultiAreaModel({"A": [0, 1], "B": [2, 3]}, 1, field="linear", diffusion=0.1)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1, 40, 30, 1, generator=g).cumsum(-2) * 0.1
    b = a.clone() if copy_source else torch.randn(1, 40, 30, 1, generator=g).cumsum(-2) * 0.1
    return model, torch.cat([a, b], -1)


def test_a_channel_the_target_field_can_stand_in_for_gets_a_wide_interval():
    sd = {}
    for copy in (False, True):
        model, latents = _two_area(copy)
        shapes, tril = _channel_scale_tril(model, latents, None, 1.0, 1.0)
        assert list(shapes) == ["field.channels.A<-B", "field.channels.B<-A"]
        sd[copy] = (tril @ tril.T).diagonal().sqrt()
    # Independent areas: ~1200 transitions pin each channel down (sd ~ noise / spread).
    assert (sd[False] < 0.1).all()
    # B a copy of A: B's own linear field explains anything the channel from A does, so
    # the channel is left with (nearly) its prior's spread, sd 1/sqrt(2) for two twins.
    assert (sd[True] > 0.5).all()
    # Given the fitted fields (marginal=False) the twins' channel is pinned down again.
    model, latents = _two_area(True)
    _, tril = _channel_scale_tril(model, latents, None, 1.0, 1.0, marginal=False)
    assert ((tril @ tril.T).diagonal().sqrt() < 0.1).all()


@pytest.mark.parametrize("noise_tau, noise_df", [(None, None), (3.0, None), (3.0, 2.5)],
                         ids=["white", "correlated", "student-t"])
def test_channel_curvature_is_that_of_the_path_density(noise_tau, noise_df):
    """Given the fields, the channels' Gauss-Newton matrix is J'J of the path's innovations
    (``MarkovPath``'s, white or AR(1)), differentiated through the posterior's own hooks, each
    weighted by its Fisher information (Student-t innovations: (df + 1) / (df + 3))."""
    model = MultiAreaModel({"A": [0, 1], "B": [2, 3]}, 1, field="linear", diffusion=0.1,
                           noise_tau=noise_tau, noise_df=noise_df)
    weight = 1.0 if noise_df is None else ((noise_df + 1) / (noise_df + 3)) ** 0.5
    _, latents = _two_area(False)
    shapes, tril = _channel_scale_tril(model, latents, None, 2.0, 1.0, marginal=False)

    def innovations(flat):
        draw, at = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            draw[name] = flat[at:at + size].reshape(shape)
            at += size
        with apply_parameter_draw(model, draw):
            prior = MarkovPath(latents[..., 0, :], model.transition, model.noise_scale(),
                               latents.shape[-2] - 1, correlation=model.noise_correlation())
            return (weight * prior._residual(latents[..., 1:, :])).flatten()

    with torch.no_grad():
        n = sum(int(np.prod(shape)) for shape in shapes.values())
        jacobian = torch.autograd.functional.jacobian(innovations, torch.zeros(n))
        expected = torch.linalg.inv(2.0 * jacobian.T @ jacobian + torch.eye(n))
    torch.testing.assert_close(tril @ tril.T, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("noise_tau,n_inputs", [(None, 0), (3.0, 0), (None, 1)],
                         ids=["white", "correlated", "inputs"])
def test_scale_score_and_curvature_are_those_of_the_path_density(noise_tau, n_inputs):
    """Per draw and trial, the score in each channel's scale is the derivative of
    ``MarkovPath``'s log-density with the channel's output scaled, its curvature J'J (paths
    taken 5 at a time: chunks that split the draws and end short)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MultiAreaModel({"A": [0, 1], "B": [2, 3]}, 1, field="linear", diffusion=0.1,
                               noise_tau=noise_tau, external_input_dim=n_inputs)
    with torch.no_grad():
        for channel in model.field.channels.values():
            channel.target.fill_(0.5)
        for area in model.field.fields.values():  # the inputs drive both areas
            area.linear.weight[:, 1:] = 0.7
    _, latents = _two_area(False)
    g = torch.Generator().manual_seed(3)
    latents = latents[..., :6, :12, :] + 0.05 * torch.randn(3, 6, 12, 2, generator=g)  # 3 draws
    inputs = torch.randn(6, 12, n_inputs, generator=g) if n_inputs else None
    names = list(model.field.channels)
    score, gauss_newton = _scale_score_and_curvature(model, names, latents, inputs, chunk=5)

    def log_density_and_residual(a):
        hooks = [model.field.channels[name].register_forward_hook(
            lambda module, args, out, i=i: out * a[..., i, None, None])
            for i, name in enumerate(names)]
        prior = MarkovPath(latents[..., 0, :], model.transition, model.noise_scale(),
                           latents.shape[-2] - 1, None if inputs is None else inputs[:, :-1],
                           correlation=model.noise_correlation())
        out = prior.log_prob(latents[..., 1:, :]), prior._residual(latents[..., 1:, :])
        for hook in hooks:
            hook.remove()
        return out

    a = torch.ones(3, 6, 2, requires_grad=True)
    log_p, _ = log_density_and_residual(a)
    (expected_score,) = torch.autograd.grad(log_p.sum(), a)
    torch.testing.assert_close(score, expected_score, rtol=1e-4, atol=1e-4)
    jacobian = torch.autograd.functional.jacobian(
        lambda x: log_density_and_residual(x)[1], torch.ones(3, 6, 2))
    per_entry = torch.einsum("dtkldti->dtkli", jacobian)  # each (draw, trial) its own scale
    torch.testing.assert_close(gauss_newton, torch.einsum("dtkli,dtklj->dtij", per_entry,
                                                          per_entry), rtol=1e-4, atol=1e-4)


def test_uncertain_paths_take_information_about_the_scales_away():
    """Louis' identity: identical draws give the paths' whole (complete-data) information;
    draws that disagree give less, so the scales' intervals widen."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MultiAreaModel({"A": [0, 1], "B": [2, 3]}, 1, field="linear", diffusion=0.1)
    with torch.no_grad():
        for channel in model.field.channels.values():
            channel.source.fill_(1.0)
            channel.target.fill_(0.5)
    _, latents = _two_area(False)
    names = list(model.field.channels)
    certain = latents.expand(4, *latents.shape[1:])
    _, gauss_newton = _scale_score_and_curvature(model, names, latents, None)
    expected = torch.linalg.inv(50.0 * gauss_newton[0].sum(0) + torch.eye(2))
    torch.testing.assert_close(_scale_covariance(model, names, certain, None, 50.0, 1.0),
                               expected, rtol=1e-4, atol=1e-6)
    g = torch.Generator().manual_seed(2)
    uncertain = certain + 0.05 * torch.randn(certain.shape, generator=g)
    sd = _scale_covariance(model, names, uncertain, None, 50.0, 1.0).diagonal().sqrt()
    assert (expected.diagonal().sqrt() < 0.2).all()  # the data, not the prior, decide
    assert (sd > 1.2 * expected.diagonal().sqrt()).all()


def _coupled_twins(copy_source: bool):
    """``_two_area``'s latents as 3 identical draws, with channels that carry a signal."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, latents = _two_area(copy_source)
    with torch.no_grad():
        for channel in model.field.channels.values():
            channel.source.fill_(1.0)
            channel.target.fill_(0.5)
    return model, latents.expand(3, *latents.shape[1:])


def test_integrating_the_fields_out_along_their_stand_in_directions_is_exact():
    """With certain paths, Louis' information over the scales and one least favourable field
    direction per scale gives the scales' exact marginal over every field weight."""
    model, latents = _coupled_twins(False)
    names = list(model.field.channels)
    directions = _least_favourable_directions(model, names, latents, None, 2.0, 1.0)
    assert [set(d) for d in directions] == [set(_field_weights(model))] * 2
    gram = _transition_gram(model, latents, None, {n: torch.zeros(()) for n in names},
                            _field_weights(model)) * (2.0 / latents.shape[0])
    in_blocks = _transition_gram(model, latents, None, {n: torch.zeros(()) for n in names},
                                 _field_weights(model), block=4) * (2.0 / latents.shape[0])
    torch.testing.assert_close(in_blocks, gram)  # 6 columns in blocks of 4: the same matrix
    gram.diagonal().add_(1.0)
    exact = torch.linalg.inv(gram.double())[:2, :2].float()
    marginal = _scale_covariance(model, names, latents, None, 2.0, 1.0, directions)
    torch.testing.assert_close(marginal, exact, rtol=1e-3, atol=1e-7)
    given_fields = _scale_covariance(model, names, latents, None, 2.0, 1.0)
    assert (marginal.diagonal() > given_fields.diagonal()).all()


def test_a_scale_the_target_field_can_stand_in_for_is_left_to_its_prior():
    """B a copy of A: B's own linear field does whatever the channel from A does, so with the
    fields integrated out the scale keeps (nearly) its prior's sd of 1; given the fields, or
    for independent areas, the transitions pin it down."""
    sd = {}
    for copy in (False, True):
        model, latents = _coupled_twins(copy)
        names = list(model.field.channels)
        directions = _least_favourable_directions(model, names, latents, None, 1.0, 1.0)
        sd[copy] = _scale_covariance(model, names, latents, None, 1.0, 1.0,
                                     directions).diagonal().sqrt()
        sd[copy, "given fields"] = _scale_covariance(model, names, latents, None, 1.0,
                                                     1.0).diagonal().sqrt()
    assert (sd[False] < 0.1).all() and (sd[True, "given fields"] < 0.1).all()
    assert (sd[True] > 0.5).all()


def test_a_draw_moves_the_channel_and_readout_and_leaves_the_model_as_it_was():
    model = MultiAreaModel({"A": [0, 1, 2], "B": [3, 4]}, 2, diffusion=0.1)
    z = torch.randn(5, 4)
    before = model.field.communication(z)["B<-A"]
    delta = torch.tensor([[0.3, 0.0], [0.0, -0.2]])
    readout_delta = torch.randn(3, 3)
    with apply_parameter_draw(model, {"field.channels.B<-A": delta,
                                      "readouts.A": readout_delta}):
        moved = model.field.communication(z)["B<-A"]
        rates = model.readouts["A"](z[:, :2])
    torch.testing.assert_close(moved, before + z[:, :2] @ delta.T)
    with torch.no_grad():
        plain = model.readouts["A"](z[:, :2])
    torch.testing.assert_close(rates, plain + z[:, :2] @ readout_delta[:, :2].T
                               + readout_delta[:, 2])
    torch.testing.assert_close(model.field.communication(z)["B<-A"], before)  # hooks gone
    for draw, message in (({"field": delta}, "neither a channel nor a readout"),
                          ({"readouts.C": delta}, "no module 'readouts.C'"),
                          ({"readouts.B": readout_delta}, "has 2 outputs, the draw 3")):
        with pytest.raises(ValueError, match=message):
            with apply_parameter_draw(model, draw):
                pass


@pytest.fixture(scope="module")
def fitted_pair():
    data = synthetic.two_area(n_trials=40, n_bins=30, n_neurons=8, seed=0) \
        .with_split(valid=0.0, test=0.25, seed=0)
    with isolated_rng(0):  # the initial weights too: the same fit in any test order
        model = MultiAreaModel.from_data(data, 2, hidden=16, diffusion=0.1)
        guide = build_guide("normal", model)
    train = data.select("train")
    fit(model, guide, train, steps=60, seed=0, progress=False)
    return model, guide, train, data.select("test")


def test_posterior_draws_carry_the_weights_uncertainty(fitted_pair, tmp_path):
    model, guide, train, test = fitted_pair
    laplace = parameter_laplace(model, guide, train)
    assert set(laplace.readouts) == {"readouts.A", "readouts.B"}
    assert set(laplace.channels) == {"field.channels.A<-B", "field.channels.B<-A"}
    write_state(tmp_path / "parameters.pt", laplace.state_dict())  # weights_only round trip
    loaded = ParameterPosterior.from_state_dict(read_state(tmp_path / "parameters.pt"))
    torch.testing.assert_close(loaded.channel_scale_tril, laplace.channel_scale_tril)

    point = posterior(model, guide, test, num_samples=30)
    model.parameter_posterior = loaded
    try:
        drawn = posterior(model, guide, test, num_samples=30)
        fixed = posterior(model, guide, test, num_samples=30, parameter_draws=False)
    finally:
        model.parameter_posterior = None
    assert drawn.attrs["parameter_uncertainty"] == "laplace"
    assert point.attrs["parameter_uncertainty"] == "none"
    np.testing.assert_array_equal(fixed.draws["rates"], point.draws["rates"])
    # The weights have their own generator: the first path draw is the same (later ones
    # differ, as Poisson sampling of the predictive spikes uses a rate-dependent count of
    # random numbers).
    np.testing.assert_array_equal(drawn.draws["latents"][0], point.draws["latents"][0])
    width = {name: {k: np.diff(c.interval)[0] for k, c in communication_summary(p).items()}
             for name, p in (("point", point), ("drawn", drawn))}
    assert all(width["drawn"][k] > 1.5 * width["point"][k] for k in width["point"])
    assert drawn.draws["rates"].std(0).mean() > point.draws["rates"].std(0).mean()


def test_forward_prediction_and_evidence_integrate_the_weights_out(fitted_pair):
    model, guide, train, test = fitted_pair
    laplace = parameter_laplace(model, guide, train)
    point_rates = forward_rates(model, guide, test, forward_bins=5)
    point_evidence = heldout_evidence(model, guide, train, test, num_particles=8)
    figures = {}
    for name, scale in (("laplace", 1.0), ("wide", 30.0)):
        model.parameter_posterior = ParameterPosterior(
            laplace.channels, laplace.channel_scale_tril * scale,
            {k: v * scale for k, v in laplace.readouts.items()})
        try:
            figures[name] = (forward_rates(model, guide, test, forward_bins=5),
                             heldout_evidence(model, guide, train, test, num_particles=8))
            fixed = forward_rates(model, guide, test, forward_bins=5, parameter_draws=False)
        finally:
            model.parameter_posterior = None
        np.testing.assert_array_equal(fixed, point_rates)
    rates, evidence = figures["laplace"]
    assert np.isfinite(rates).all() and not np.array_equal(rates, point_rates)
    assert np.isfinite(evidence.log_marginal).all()
    assert not np.array_equal(evidence.log_marginal, point_evidence.log_marginal)
    # weights spread 30 times wider than the data allow predict the held-out trials worse
    assert figures["wide"][1].log_marginal.mean() < point_evidence.log_marginal.mean() - 1.0


def test_a_per_trial_guide_gets_channel_scales_from_every_trial(fitted_pair):
    # such a guide knows only the whole set it was fitted on: no subset of it can be drawn
    _, _, train, _ = fitted_pair
    with isolated_rng(0):
        model = MultiAreaModel.from_data(train, 2, hidden=16, diffusion=0.1)
        guide = build_guide("per_trial_map", model)
    fit(model, guide, train, steps=2, seed=0, progress=False)
    scales = channel_scale_laplace(model, guide, train, num_draws=2, max_trials=5)
    assert scales.covariance.shape == (2, 2)
    assert np.isfinite(scales.covariance).all()


def test_single_area_models_get_readout_gains_and_bad_arguments_say_what(fitted_pair):
    data = synthetic.lorenz(n_trials=6, n_bins=10, n_neurons=5, seed=0)
    model = LatentODEModel(5, 2, diffusion=0.1)
    guide = build_guide("normal", model)
    laplace = parameter_laplace(model, guide, data, num_draws=2)
    assert list(laplace.readouts) == ["readout"] and not laplace.channels
    assert laplace.readouts["readout"].shape == (5, 3, 3)
    with pytest.raises(ValueError, match="prior_precision > 0"):
        parameter_laplace(model, guide, data, prior_precision=0)
    with pytest.raises(ValueError, match="not a saved ParameterPosterior"):
        ParameterPosterior.from_state_dict({"channels": {}})


def test_channel_scales_widen_the_strength_intervals(fitted_pair, tmp_path):
    model, guide, train, test = fitted_pair
    scales = channel_scale_laplace(model, guide, train, num_draws=4)
    assert scales.names == ["A<-B", "B<-A"] and scales.covariance.shape == (2, 2)
    assert np.all(np.linalg.eigvalsh(scales.covariance) > 0)
    path = tmp_path / "channel_scales.pt"
    write_state(path, scales.state_dict())  # read back with torch.load(weights_only=True)
    loaded = ChannelScales.from_state_dict(read_state(path))
    np.testing.assert_allclose(loaded.covariance, scales.covariance)
    assert loaded.names == scales.names

    def summary(carried):
        model.parameter_posterior = carried
        try:
            post = posterior(model, guide, test, num_samples=20)
        finally:
            model.parameter_posterior = None
        return post, communication_summary(post)

    plain_post, plain = summary(None)
    wide_post, wide = summary(loaded)
    _, still = summary(ChannelScales(scales.names, 1e-12 * np.eye(2)))
    assert wide_post.attrs["parameter_uncertainty"] == "laplace"
    # the scales change the channels' signals only: the paths, rates and fit are the guide's
    np.testing.assert_array_equal(wide_post.draws["rates"], plain_post.draws["rates"])
    for name in plain:
        assert np.allclose(still[name].interval, plain[name].interval, rtol=1e-4)
        assert wide[name].interval[1] - wide[name].interval[0] > \
            plain[name].interval[1] - plain[name].interval[0]
    with pytest.raises(ValueError, match="not saved ChannelScales"):
        ChannelScales.from_state_dict({"names": ["B<-A"]})
    ode = MultiAreaModel.from_data(train, 2, hidden=16)
    with pytest.raises(ValueError, match="stochastic path"):
        channel_scale_laplace(ode, build_guide("normal", ode), train)
    with pytest.raises(ValueError, match="num_draws >= 2"):
        channel_scale_laplace(model, guide, train, num_draws=1)
