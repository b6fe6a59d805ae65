"""Every model variant x every guide x ELBO: the contract DESIGN.md promises."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO

from pyrodyn.data import SpikeData
from pyrodyn.inference import build_guide, load_state, save_state
from pyrodyn.inference.svi import model_args
from pyrodyn.models import LatentODEModel, sites

B, T, N, D = 4, 8, 6, 2

MODELS = {
    "mlp-flow-poisson": dict(),
    "linear-affine-poisson": dict(field="linear", readout="affine"),
    "lowrank-mlp-negbin": dict(field="low_rank", readout="mlp", likelihood="negative_binomial"),
    "gru-affine-poisson": dict(field="gru", readout="affine"),
    "mlp-flow-inferred-inputs": dict(inferred_input_dim=2),
    "mlp-affine-external-inputs": dict(readout="affine", external_input_dim=1),
    "gru-flow-both-inputs": dict(field="gru", inferred_input_dim=1, external_input_dim=1),
    "mlp-affine-gaussian": dict(readout="affine", likelihood="gaussian"),
    "mlp-residual_flow-poisson": dict(readout="residual_flow"),
    "mlp-plane-poisson": dict(readout="plane"),
}
GUIDES = ["normal", "flow", "map", "per_trial_normal", "per_trial_map"]


def make(model_name, guide_name, seed=0):
    pyro.set_rng_seed(seed)
    model = LatentODEModel(N, D, **MODELS[model_name])
    guide = build_guide(guide_name, model)
    g = torch.Generator().manual_seed(1)
    spikes = torch.poisson(torch.full((B, T, N), 1.5), generator=g)
    mask = torch.ones(B, T, N, dtype=torch.bool)
    mask[:, :, 0] = False  # a held-out neuron
    inputs = torch.randn(B, T, 1, generator=g) if model.external_input_dim else None
    kwargs = dict(spikes=spikes, mask=mask, inputs=inputs, trial_index=torch.tensor([0, 3, 5, 6]),
                  num_trials=10)
    return model, guide, kwargs


def elbos(guide_name):
    yield Trace_ELBO()
    if guide_name in ("normal", "per_trial_normal"):
        yield TraceMeanField_ELBO()


@pytest.fixture(autouse=True, params=[False, True], ids=["global-params", "module-local"])
def validation(request):
    """Every contract holds under both of Pyro's parameter modes (the modules are built inside
    the mode, as Pyro requires)."""
    with pyro.validation_enabled(True), pyro.settings.context(module_local_params=request.param):
        yield


@pytest.mark.parametrize("guide_name", GUIDES)
@pytest.mark.parametrize("model_name", MODELS)
def test_elbo_sites_gradients_particles(model_name, guide_name, check_contract):
    model, guide, kwargs = make(model_name, guide_name)
    latent, model_trace = check_contract(model, guide, kwargs, elbos(guide_name))
    assert latent == {sites.Z0} | ({sites.INPUTS} if model.inferred_input_dim else set())
    assert model_trace.nodes[sites.LATENTS]["value"].shape == (B, T, D)
    assert model_trace.nodes[sites.RATES]["value"].shape == (B, T, N)


@pytest.mark.parametrize("guide_name", GUIDES)
@pytest.mark.parametrize("model_name", ["mlp-flow-poisson", "gru-flow-both-inputs"])
def test_predictive_shapes(model_name, guide_name):
    model, guide, kwargs = make(model_name, guide_name)
    guide(**kwargs)  # create lazy parameters
    names = [sites.Z0, sites.LATENTS, sites.RATES, sites.SPIKES]
    draws = Predictive(model, guide=guide, num_samples=3, return_sites=names)(**kwargs)
    assert draws[sites.Z0].shape == (3, B, D)
    assert draws[sites.LATENTS].shape == (3, B, T, D)
    assert draws[sites.RATES].shape == (3, B, T, N)
    assert draws[sites.SPIKES].shape == (3, B, T, N)


@pytest.mark.parametrize("guide_name", GUIDES)
@pytest.mark.parametrize("model_name", ["mlp-flow-poisson", "mlp-flow-inferred-inputs",
                                        "lowrank-mlp-negbin"])
def test_save_and_reload_give_identical_outputs(tmp_path, model_name, guide_name):
    model, guide, kwargs = make(model_name, guide_name, seed=0)
    guide(**kwargs)
    with torch.no_grad():  # a state different from a fresh build
        for p in list(model.parameters()) + list(guide.parameters()):
            p.add_(0.05)
    save_state(tmp_path / "state.pt", model, guide)
    other_model, other_guide, _ = make(model_name, guide_name, seed=1)
    # Any trials of the same neurons let lazily built guides create their parameters first;
    # per-trial guides need the trial count they were fitted with (10).
    like = SpikeData(torch.ones(10, T, N).numpy(),
                     inputs=None if kwargs["inputs"] is None else torch.zeros(10, T, 1).numpy())
    load_state(tmp_path / "state.pt", other_model, other_guide, like)
    model.eval()
    guide.eval()
    outputs = []
    for m, g in ((model, guide), (other_model, other_guide)):
        pyro.set_rng_seed(7)
        guide_trace = poutine.trace(g).get_trace(**kwargs)
        trace = poutine.trace(poutine.replay(m, trace=guide_trace)).get_trace(**kwargs)
        outputs.append(trace.nodes[sites.RATES]["value"])
    assert torch.equal(outputs[0], outputs[1])


def test_model_args_matches_the_model_signature():
    batch = SpikeData(torch.ones(3, 4, 5).numpy()).to_batch()
    kwargs = model_args(batch, 3, kl_scale=0.5)
    model = LatentODEModel(5, 2)
    assert math.isfinite(Trace_ELBO().loss(model, build_guide("normal", model), **kwargs))
