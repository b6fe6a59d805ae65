"""MultiAreaModel: the model/guide contract for 2 and 3 areas, and its communication terms."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO

from pyrodyn.data import SpikeData
from pyrodyn.inference import build_guide, load_state, save_state
from pyrodyn.models import CoupledField, LowRankChannel, MLPField, MultiAreaModel, sites

B, T = 4, 8
AREAS = {
    "two": {"A": [0, 2, 4], "B": [1, 3, 5, 6]},  # interleaved: rates must come back in order
    "three": {"A": [0, 1], "B": [2, 3, 4], "C": [5, 6]},
}
N = 7
OPTIONS = {
    "low-rank": dict(),
    "mlp-channels-inputs-negbin": dict(communication="mlp", inferred_input_dim=1,
                                       external_input_dim=1, likelihood="negative_binomial",
                                       readout="affine"),
}
GUIDES = ["normal", "flow", "map", "per_trial_normal", "per_trial_map"]


@pytest.fixture(autouse=True)
def validation():
    pyro.enable_validation(True)
    yield


def make(areas, options, guide_name, seed=0):
    pyro.set_rng_seed(seed)
    model = MultiAreaModel(AREAS[areas], 2, **OPTIONS[options])
    guide = build_guide(guide_name, model)
    g = torch.Generator().manual_seed(1)
    spikes = torch.poisson(torch.full((B, T, N), 1.5), generator=g)
    mask = torch.ones(B, T, N, dtype=torch.bool)
    mask[:, :, 1] = False
    inputs = torch.randn(B, T, 1, generator=g) if model.external_input_dim else None
    kwargs = dict(spikes=spikes, mask=mask, inputs=inputs,
                  trial_index=torch.tensor([0, 3, 5, 6]), num_trials=10)
    return model, guide, kwargs


@pytest.mark.parametrize("guide_name", GUIDES)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("areas", AREAS)
def test_contract(areas, options, guide_name, check_contract):
    model, guide, kwargs = make(areas, options, guide_name)
    elbos = [Trace_ELBO()] + ([TraceMeanField_ELBO()] if guide_name.endswith("normal") else [])
    latent, trace = check_contract(model, guide, kwargs, elbos)
    names = list(AREAS[areas])
    expected = {f"z0.{a}" for a in names}
    if model.inferred_input_dim:
        expected |= {f"inputs.{a}" for a in names}
    assert latent == expected
    assert {n for n in trace.nodes if n.startswith("spikes.")} == {f"spikes.{a}" for a in names}
    channels = {n for n in trace.nodes if n.startswith("comm.")}
    assert channels == {f"comm.{t}<-{s}" for t in names for s in names if t != s}
    assert trace.nodes["comm.B<-A"]["value"].shape == (B, T, 2)
    assert trace.nodes[sites.LATENTS]["value"].shape == (B, T, 2 * len(names))
    assert trace.nodes[sites.RATES]["value"].shape == (B, T, N)


@pytest.mark.parametrize("guide_name", ["normal", "per_trial_map"])
@pytest.mark.parametrize("areas", AREAS)
def test_predictive_shapes(areas, guide_name):
    model, guide, kwargs = make(areas, "low-rank", guide_name)
    guide(**kwargs)
    names = ["z0.A", "latents.B", "comm.A<-B", sites.LATENTS, sites.RATES, "spikes.B"]
    draws = Predictive(model, guide=guide, num_samples=3, return_sites=names)(**kwargs)
    size_b = len(AREAS[areas]["B"])
    assert draws["z0.A"].shape == (3, B, 2)
    assert draws["latents.B"].shape == draws["comm.A<-B"].shape == (3, B, T, 2)
    assert draws[sites.LATENTS].shape == (3, B, T, 2 * len(AREAS[areas]))
    assert draws[sites.RATES].shape == (3, B, T, N)
    assert draws["spikes.B"].shape == (3, B, T, size_b)


@pytest.mark.parametrize("guide_name", ["flow", "per_trial_normal"])
@pytest.mark.parametrize("areas", AREAS)
def test_save_and_reload_give_identical_outputs(tmp_path, areas, guide_name):
    model, guide, kwargs = make(areas, "low-rank", guide_name)
    guide(**kwargs)
    with torch.no_grad():
        for p in list(model.parameters()) + list(guide.parameters()):
            p.add_(0.05)
    save_state(tmp_path / "state.pt", model, guide)
    other_model, other_guide, _ = make(areas, "low-rank", guide_name, seed=1)
    load_state(tmp_path / "state.pt", other_model, other_guide, SpikeData(np.ones((10, T, N))))
    outputs = []
    for m, g in ((model, guide), (other_model, other_guide)):
        m.eval()
        g.eval()
        pyro.set_rng_seed(7)
        guide_trace = poutine.trace(g).get_trace(**kwargs)
        trace = poutine.trace(poutine.replay(m, trace=guide_trace)).get_trace(**kwargs)
        outputs.append(torch.cat([trace.nodes[n]["value"].flatten()
                                  for n in (sites.RATES, "comm.B<-A")]))
    assert torch.equal(outputs[0], outputs[1])


def test_rates_follow_the_data_neuron_order():
    model, guide, kwargs = make("two", "low-rank", "normal")
    trace = poutine.trace(model).get_trace(**kwargs)
    rates = trace.nodes[sites.RATES]["value"]
    for area, neurons in AREAS["two"].items():
        own = model.likelihoods[area].mean(model.readouts[area](trace.nodes[f"latents.{area}"]
                                                                ["value"]))
        assert torch.allclose(rates[..., neurons], own)
    assert model.simulate(n_trials=3, n_bins=T)[sites.SPIKES].shape == (3, T, N)


def test_absent_channel_means_no_influence_and_one_solve():
    field = CoupledField({"A": MLPField(2), "B": MLPField(2)},
                         {("B", "A"): LowRankChannel(2, 2, init_scale=1.0)})
    z = torch.randn(5, 4)
    kicked_b = z.clone()
    kicked_b[:, 2:] += 1.0
    kicked_a = z.clone()
    kicked_a[:, :2] += 1.0
    # B does not drive A: A's velocity ignores B entirely; A drives B.
    assert torch.equal(field(z)[:, :2], field(kicked_b)[:, :2])
    assert (field(z)[:, 2:] - field(kicked_a)[:, 2:]).abs().max() > 1e-3
    signal = field.communication(z)["B<-A"]
    assert torch.allclose(field(z)[:, 2:] - field.fields["B"](z[:, 2:]), signal)
    model = MultiAreaModel(AREAS["two"], 2)
    calls = []
    original = model.solver

    class Counting:
        step_size = original.step_size

        def __call__(self, *args, **kwargs):
            calls.append(args[0])
            return original(*args, **kwargs)

    model.solver = Counting()
    model.simulate(n_trials=2, n_bins=5)
    assert len(calls) == 1 and calls[0] is model.field


def test_coupling_prior_shrinks_channels():
    model = MultiAreaModel(AREAS["two"], 2, coupling_prior=5.0)
    log_prior = model.coupling_log_prior()
    gains = sum(c.gain() for c in model.field.channels.values())
    assert torch.allclose(log_prior, -5.0 * gains)
    log_prior.backward()  # the gradient pulls every channel's gain toward zero
    channel = model.field.channels["B<-A"]
    step = channel.target + 0.01 * channel.target.grad  # ascent on the log prior
    assert torch.linalg.matrix_norm(step @ channel.source.T) < channel.gain()


@pytest.mark.parametrize("areas, options, message", [
    ({"A": [0, 1]}, {}, "needs >= 2 areas"),
    ({"A": [0, 1], "B": [1, 2]}, {}, "exactly once"),
    ({"A": [0, 1], "B": [3]}, {}, "exactly once"),
    ({"A": [0, 1], "B": []}, {}, "no neurons"),
    ({"A": [0], "B": [1]}, {"channels": ["B->A"]}, "target<-source"),
    ({"A": [0], "B": [1]}, {"channels": ["B<-C"]}, "target<-source"),
    ({"A": [0], "B": [1]}, {"latent_dim": {"A": 2}}, "no entry for area"),
    ({"A": [0], "B": [1]}, {"coupling_prior": -1.0}, "coupling_prior"),
    ({"A": [0], "B": [1]}, {"communication": "cubic"}, "unknown channel"),
])
def test_bad_arguments_say_what(areas, options, message):
    with pytest.raises(ValueError, match=message):
        MultiAreaModel(areas, **options)


def test_from_data_reads_area_labels_and_wrong_spikes_are_refused():
    data = SpikeData(np.ones((3, 5, 5)), neuron_area=["V1", "V1", "PFC", "V1", "PFC"])
    model = MultiAreaModel.from_data(data, 2)
    assert sorted(model.areas) == ["PFC", "V1"]
    assert model.area_neurons["PFC"].tolist() == [2, 4]
    with pytest.raises(ValueError, match="PlaneReadout: needs n_neurons >= latent_dim"):
        MultiAreaModel.from_data(data, 3)
    with pytest.raises(ValueError, match="no area labels"):
        MultiAreaModel.from_data(SpikeData(np.ones((3, 5, 4))))
    from pyrodyn.config import RunConfig  # the config's readout options reach every area
    linked = MultiAreaModel.from_config(
        RunConfig(model="multi_area", latent_dim=2, readout_link="monotone"), data)
    assert all(r.link is not None for r in linked.readouts.values())
    with pytest.raises(ValueError, match="spikes: expected"):
        model(torch.ones(3, 5, 4))


def test_refinement_covers_every_area():
    """Per-area site names hold dots ("z0.A"): posterior refinement must handle them."""
    from pyrodyn.inference.refine import refine

    model, guide, kwargs = make("two", next(iter(OPTIONS)), "normal")
    local = refine(model, guide, kwargs, steps=3)
    assert set(local.locs) == {f"z0.{a}" for a in AREAS["two"]}
    trace = poutine.trace(local).get_trace(**kwargs)
    assert trace.nodes["z0.A"]["value"].shape == (B, 2)


def test_fit_plans_half_the_steps_for_two_areas(monkeypatch):
    """``steps=None``: a two-area step costs about two single-area steps (``planned_steps``)."""
    from pyrodyn.inference import fit, options

    monkeypatch.setattr(options, "PLANNED_BIN_STEPS", 12 * T)  # 12 steps for one area
    monkeypatch.setattr(options, "PLANNED_RANGE", (1, 100))
    spikes = np.random.default_rng(0).poisson(1.5, (B, T, N))
    data = SpikeData(spikes, neuron_area=["A", "B", "A", "B", "A", "B", "B"])
    model = MultiAreaModel.from_data(data, 2)
    result = fit(model, build_guide("normal", model), data, steps=None, batch_size=B,
                 progress=False)
    assert result.steps == 6
