"""The Pyro idioms users try first, on pyrodyn's models and guides, and nothing global changed.

Each training idiom asserts that the loss decreases, that the parameters change and that the
guide and the model scored the same trials.
"""

import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuideList,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from pyrodyn.data import synthetic
from pyrodyn.inference import (
    AmortizedNormalGuide,
    fit,
    model_args,
    posterior,
    refine,
    replay,
    trial_plate,
)
from pyrodyn.models import LatentODEModel, sites
from pyrodyn.models.paths import shared_drift

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
from custom_variant import GainModel  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return synthetic.limit_cycle(n_trials=24, n_bins=16, n_neurons=8, seed=0).with_split(
        valid=0.0, test=0.25, seed=0)


def snapshot(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def changed(before, modules):
    after = snapshot(*modules)
    return len(before) == len(after) and any(not torch.equal(a, b) for a, b in zip(before, after))


def scored_trials(model, guide, kwargs):
    """(trials the guide drew, trials the model scored) for one call."""
    guide_trace, model_trace = replay(model, guide, kwargs)
    return guide_trace.nodes[sites.TRIAL_PLATE]["value"], model_trace.nodes[sites.TRIAL_PLATE][
        "value"]


# ---------------------------------------------------------------- nothing global changes
def global_state():
    return dict(settings=pyro.settings.get(), threads=torch.get_num_threads(),
                torch=torch.get_rng_state(), numpy=np.random.get_state()[1].copy(),
                python=random.getstate(), params=sorted(pyro.get_param_store().keys()))


def same(a, b):
    assert a["settings"] == b["settings"]
    assert a["threads"] == b["threads"]
    assert torch.equal(a["torch"], b["torch"])
    assert np.array_equal(a["numpy"], b["numpy"])
    assert a["python"] == b["python"]
    assert a["params"] == b["params"]


def test_import_changes_no_pyro_setting():
    code = ("import pyro, torch; before = (pyro.settings.get(), torch.get_num_threads()); "
            "import pyrodyn, pyrodyn.cli, pyrodyn.benchmark; "
            "assert (pyro.settings.get(), torch.get_num_threads()) == before, before")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plots_choose_no_matplotlib_backend():
    """Importing and calling ``pyrodyn.plots`` leaves matplotlib's backend unresolved, so a
    user's own backend choice afterwards still holds (pyplot itself may be imported by ArviZ;
    pyrodyn's figures do not go through it)."""
    code = ("import matplotlib; import pyrodyn.plots as p, pyrodyn.benchmark; "
            "p.plot_loss([3.0, 2.0], [{'step': 1, 'loss': 2.0}]).savefig('/dev/null', "
            "format='png'); "
            "assert matplotlib.rcParams._get_backend_or_none() is None")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ,
                                                                 "MPLBACKEND": ""})


@pytest.mark.parametrize("local", [False, True], ids=["global-params", "module-local"])
def test_fit_posterior_refine_change_nothing_global(data, local):
    with pyro.settings.context(module_local_params=local):
        torch.set_num_threads(2)
        np.random.seed(11)
        torch.manual_seed(11)
        random.seed(11)
        model = LatentODEModel(data.n_neurons, 2)  # (building weights draws, as in torch)
        guide = AmortizedNormalGuide(model)
        before = global_state()
        fit(model, guide, data.select("train"), steps=3, batch_size=6, num_threads=1,
            progress=False)
        posterior(model, guide, data.select("test"), num_samples=2, refine_steps=2)
        same(before, global_state())
    torch.set_num_threads(1)


# ------------------------------------------------------------------------ training loops
def test_classic_svi_with_pyro_optim(data):
    train = data.select("train")
    pyro.set_rng_seed(0)
    model = LatentODEModel(train.n_neurons, 2)
    guide = AmortizedNormalGuide(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    kwargs = model_args(train.to_batch([1, 4, 7, 9]), train.n_trials)
    svi.step(**kwargs)  # parameters exist after a first call
    before = snapshot(model, guide)
    losses = [svi.step(**kwargs) for _ in range(30)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert changed(before, (model, guide))
    drawn, scored = scored_trials(model, guide, kwargs)
    assert torch.equal(drawn, scored) and scored.tolist() == [1, 4, 7, 9]


def test_classic_svi_shares_the_drift_of_a_stochastic_path(data):
    """A user's SVI step inside ``shared_drift`` takes the same step as outside it."""
    train = data.select("train")
    kwargs = model_args(train.to_batch([1, 4, 7, 9]), train.n_trials)
    losses = []
    for context in (contextlib.nullcontext, shared_drift):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = LatentODEModel(train.n_neurons, 2, diffusion=0.1, noise_tau=5.0)
        guide = AmortizedNormalGuide(model)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
        with context():
            losses.append([svi.step(**kwargs) for _ in range(3)])
    pyro.clear_param_store()
    assert np.allclose(losses[0], losses[1], rtol=1e-5)


def test_module_local_elbo_with_a_torch_optimizer(data):
    train = data.select("train")
    with pyro.settings.context(module_local_params=True):
        pyro.set_rng_seed(0)
        model = LatentODEModel(train.n_neurons, 2)
        guide = AmortizedNormalGuide(model)
        loss_fn = Trace_ELBO()(model, guide)
        kwargs = model_args(train.to_batch([0, 2, 5]), train.n_trials)
        loss_fn(**kwargs)
        optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.02)
        before = snapshot(model, guide)
        losses = []
        for _ in range(30):
            loss = loss_fn(**kwargs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert np.mean(losses[-5:]) < np.mean(losses[:5])
        assert changed(before, (model, guide))
        drawn, scored = scored_trials(model, guide, kwargs)
        assert torch.equal(drawn, scored)


@pytest.mark.parametrize("kind", [AutoNormal, AutoDelta])
def test_autoguides_follow_fits_minibatches(data, kind):
    train = data.select("train")
    pyro.set_rng_seed(0)
    model = LatentODEModel(train.n_neurons, 2)
    guide = kind(model)  # no create_plates: fit gives it the model's minibatch
    before = snapshot(model)
    result = fit(model, guide, train, steps=40, batch_size=6, lr=0.02, progress=False)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert changed(before, (model,)) and len(list(guide.parameters())) > 0
    kwargs = model_args(train.to_batch([3, 5]), train.n_trials)
    drawn, scored = scored_trials(model, guide, kwargs)
    assert drawn.tolist() == scored.tolist() == [3, 5]
    # the guide's values for trials 3 and 5 are the ones the model scored
    guide_trace, _ = replay(model, guide, kwargs)
    if kind is AutoDelta:  # a point mass: its value is the parameter of those trials
        assert torch.allclose(guide_trace.nodes[sites.Z0]["value"], guide.z0[[3, 5]])
    post = posterior(model, guide, train, num_samples=3, batch_size=5)
    assert post.draws[sites.Z0].shape == (3, train.n_trials, 2)


@pytest.mark.parametrize("kind", [AutoMultivariateNormal, AutoLowRankMultivariateNormal])
def test_joint_autoguides_fit_whole_batches_and_refuse_minibatches(data, kind):
    train = data.select("train")
    model = LatentODEModel(train.n_neurons, 2)
    with pytest.raises(ValueError, match="cannot follow minibatches of 6 of 18 trials"):
        fit(model, kind(model), train, steps=2, batch_size=6, progress=False)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = LatentODEModel(train.n_neurons, 2)
    guide = kind(model)
    before = snapshot(model)
    result = fit(model, guide, train, steps=40, batch_size=train.n_trials, lr=0.02,
                 progress=False)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert changed(before, (model,))
    kwargs = model_args(train.to_batch(), train.n_trials)
    drawn, scored = scored_trials(model, guide, kwargs)
    assert torch.equal(drawn, scored)
    post = posterior(model, guide, train, num_samples=3)  # the very trials it was fitted on
    assert post.draws[sites.LATENTS].shape == (3, train.n_trials, train.n_bins, 2)


def test_autoguidelist_composes_a_pyrodyn_guide_with_an_autoguide(data):
    train = data.select("train")
    pyro.set_rng_seed(0)
    model = GainModel(train.n_neurons, 2, readout="affine")
    guide = AutoGuideList(model, create_plates=trial_plate)
    guide.append(AmortizedNormalGuide(model, include_global=False))
    guide.append(AutoNormal(poutine.block(model, expose=["gain", "dropout"])))
    before = snapshot(model, guide[0])
    result = fit(model, guide, train, steps=40, batch_size=6, lr=0.02, progress=False)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert changed(before, (model, guide[0]))  # the encoder part is itself an AutoGuide
    assert guide[1].locs.gain.abs() > 0  # the AutoGuide part for the global sites trained
    kwargs = model_args(train.to_batch([2, 8]), train.n_trials)
    drawn, scored = scored_trials(model, guide, kwargs)
    assert drawn.tolist() == scored.tolist() == [2, 8]
    post = posterior(model, guide, data.select("test"), num_samples=4)
    assert post.draws["gain"].shape == (4,)


# ------------------------------------------------------------------- predictive and NUTS
def test_predictive_prior_and_posterior_draws(data):
    train = data.select("train")
    model = LatentODEModel(train.n_neurons, 2)
    guide = AmortizedNormalGuide(model)
    prior = Predictive(model, num_samples=3)(None, num_trials=5, n_bins=7)
    assert prior[sites.SPIKES].shape == (3, 5, 7, train.n_neurons)
    kwargs = model_args(train.to_batch([0, 1, 2]), train.n_trials)
    draws = Predictive(poutine.uncondition(model), guide=guide, num_samples=4)(**kwargs)
    assert draws[sites.SPIKES].shape == (4, 3, train.n_bins, train.n_neurons)
    assert not torch.equal(draws[sites.SPIKES][0], kwargs["spikes"])  # draws, not the data
    assert not torch.equal(draws[sites.SPIKES][0], draws[sites.SPIKES][1])


def test_nuts_over_the_trials_latents_of_a_fitted_model(data):
    train = data.select("train")
    model = LatentODEModel(train.n_neurons, 2, readout="affine")
    fit(model, AmortizedNormalGuide(model), train, steps=5, batch_size=6, progress=False)
    kwargs = model_args(train.to_batch([0, 1]), train.n_trials)
    mcmc = MCMC(NUTS(model, max_tree_depth=3), num_samples=6, warmup_steps=6,
                disable_progbar=True)
    mcmc.run(**kwargs)
    idata = az.from_pyro(mcmc)
    assert idata.posterior[sites.Z0].shape == (1, 6, 2, 2)


def test_nuts_over_the_global_sites_of_a_small_model(data):
    train = data.select("train")
    pyro.set_rng_seed(0)
    model = GainModel(train.n_neurons, 1, readout="affine")
    kwargs = model_args(train.to_batch([0, 1]), train.n_trials)
    z0 = torch.zeros(2, 1)
    mcmc = MCMC(NUTS(poutine.condition(model, data={sites.Z0: z0}), max_tree_depth=3),
                num_samples=8, warmup_steps=8, disable_progbar=True)
    mcmc.run(**kwargs)
    idata = az.from_pyro(mcmc)
    assert idata.posterior["gain"].shape == (1, 8)
    assert (idata.posterior["gain"] > 0).all()


# ------------------------------------------------------------ global random variables
def test_global_sites_flow_through_fit_posterior_refine_and_export(data):
    train, test = data.select("train"), data.select("test")
    pyro.set_rng_seed(0)
    model = GainModel(train.n_neurons, 2, readout="affine")
    assert set(model.global_sites) == {"gain", "dropout"}
    guide = AmortizedNormalGuide(model)
    fit(model, guide, train, valid=test, steps=10, batch_size=6, eval_every=5, progress=False)
    assert guide.global_guide.locs.gain.abs() > 0  # trained away from its start, the median
    post = posterior(model, guide, test, num_samples=5, batch_size=2, refine_steps=3)
    assert post.draws["gain"].shape == (5,) and post.global_sites == ("gain", "dropout")
    assert post.draws[sites.Z0].shape == (5, test.n_trials, 2)
    # one gain per draw for every batch of trials: the rates of each draw share it
    local = refine(model, guide, model_args(test.to_batch(), test.n_trials), steps=2)
    trace = poutine.trace(local).get_trace(**model_args(test.to_batch(), test.n_trials))
    assert trace.nodes["gain"]["value"].shape == ()
    idata = post.to_inference_data()
    assert idata.posterior["gain"].dims == ("chain", "draw")
    assert "trial" in idata.posterior[sites.Z0].dims


def test_global_sites_through_the_command_line(tmp_path, monkeypatch):
    from pyrodyn.cli import main

    monkeypatch.syspath_prepend(str(EXAMPLES))
    path = tmp_path / "d.npz"
    assert main(["simulate", "limit_cycle", "--out", str(path), "--n-trials", "20",
                 "--n-bins", "12", "--n-neurons", "6"]) == 0
    run = tmp_path / "run"
    assert main(["fit", str(path), "--out", str(run), "--steps", "3", "--latent-dim", "2",
                 "--quiet", "--set", "model=custom_variant:GainModel", "--set",
                 "readout=affine", "--set", "refine_steps=0"]) == 0
    out = tmp_path / "post.nc"
    command = ["posterior", str(run), str(path), "--out", str(out), "--num-samples", "3"]
    assert main(command) == 1  # a run folder names the class; only the user imports it
    assert main([*command, "--model-class", "custom_variant:GainModel"]) == 0
    idata = az.from_netcdf(out)
    assert idata.posterior["gain"].dims == ("chain", "draw")


def test_a_user_variant_needs_no_guide_changes():
    """A hand-written guide that covers a global site works with posterior (no AxisError)."""

    def guide(spikes=None, *, trial_index=None, num_trials=None, **_):
        pyro.sample("gain", dist.LogNormal(0.0, 0.1))
        pyro.sample("dropout", dist.Beta(1.0, 20.0))
        with trial_plate(spikes, trial_index=trial_index, num_trials=num_trials):
            pyro.sample(sites.Z0, dist.Normal(torch.zeros(len(spikes), 2), 0.1).to_event(1))

    data = synthetic.limit_cycle(n_trials=6, n_bins=10, n_neurons=5, seed=1)
    model = GainModel(5, 2, readout="affine")
    post = posterior(model, guide, data, num_samples=3, batch_size=4)
    assert post.draws["gain"].shape == (3,) and post.draws[sites.RATES].shape[1] == 6


def test_posterior_uses_parameters_trained_by_the_classic_loop():
    """pyrodyn's calls read what the user's Pyro store holds, and add nothing to it."""

    def guide(spikes=None, *, trial_index=None, num_trials=None, **_):
        loc = pyro.param("gain_loc", torch.tensor(0.0))
        pyro.sample("gain", dist.LogNormal(loc, 0.05))
        pyro.sample("dropout", dist.Beta(1.0, 20.0))
        with trial_plate(spikes, trial_index=trial_index, num_trials=num_trials):
            pyro.sample(sites.Z0, dist.Normal(torch.zeros(len(spikes), 2), 0.1).to_event(1))

    data = synthetic.limit_cycle(n_trials=6, n_bins=10, n_neurons=5, seed=1)
    model = GainModel(5, 2, readout="affine")
    with torch.no_grad():
        model.readout.bias.fill_(-3.0)  # rates far too low: the gain must grow
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    kwargs = model_args(data.to_batch(), data.n_trials)
    for _ in range(30):
        svi.step(**kwargs)
    trained = pyro.param("gain_loc").item()
    assert trained > 0.3  # moved from its start, 0
    names = sorted(pyro.get_param_store().keys())
    post = posterior(model, guide, data, num_samples=20)
    assert np.median(np.log(post.draws["gain"])) == pytest.approx(trained, abs=0.1)
    assert sorted(pyro.get_param_store().keys()) == names
