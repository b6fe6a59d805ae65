import math

import numpy as np
import pyro
import pytest
import torch

from pyrodyn.data import synthetic
from pyrodyn.inference import build_guide, fit
from pyrodyn.inference import svi as fit_module
from pyrodyn.models import LatentODEModel


@pytest.fixture(scope="module")
def data():
    return synthetic.lorenz(n_trials=24, n_bins=12, n_neurons=8, seed=0).with_split(
        valid=0.25, test=0.0, seed=0).with_heldout_neurons(2)


def build(guide="normal", seed=0, **model_options):
    pyro.set_rng_seed(seed)
    model = LatentODEModel(8, 2, **model_options)
    return model, build_guide(guide, model)


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


OPTIONS = dict(steps=12, batch_size=6, eval_every=4, kl_warmup=5, coordinated_dropout=0.2,
               progress=False)


@pytest.mark.parametrize("guide", ["normal", "per_trial_normal"])
def test_same_seed_same_loss_history(data, guide):
    runs = []
    valid = None if guide.startswith("per_trial") else data.select("valid")
    for _ in range(2):
        model, g = build(guide)
        runs.append(fit(model, g, data.select("train"), valid=valid, seed=3, **OPTIONS))
    assert runs[0].losses == runs[1].losses
    assert [v["loss"] for v in runs[0].valid] == [v["loss"] for v in runs[1].valid]
    model, g = build(guide)
    other = fit(model, g, data.select("train"), seed=4, **OPTIONS)
    assert other.losses != runs[0].losses


@pytest.mark.parametrize("guide", ["normal", "per_trial_map"])
def test_resuming_after_an_interruption_continues_the_same_run(data, guide, tmp_path,
                                                                interrupt_fit):
    train = data.select("train")
    valid = None if guide.startswith("per_trial") else data.select("valid")
    model, g = build(guide)
    whole = fit(model, g, train, valid=valid, seed=1, **OPTIONS)

    checkpoint = tmp_path / "fit.pt"
    model, g = build(guide)
    undo = interrupt_fit(7, _raise_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(model, g, train, valid=valid, seed=1, checkpoint=checkpoint, checkpoint_every=5,
            **OPTIONS)
    undo()
    assert checkpoint.exists()
    model, g = build(guide, seed=99)  # fresh objects: everything comes from the checkpoint
    resumed = fit(model, g, train, valid=valid, seed=1, checkpoint=checkpoint, **OPTIONS)
    assert resumed.losses == whole.losses
    assert [v["loss"] for v in resumed.valid] == [v["loss"] for v in whole.valid]
    assert resumed.best_step == whole.best_step


def test_readout_warmup_trains_the_flow_lift_alone_first(data):
    def couplings(model):  # everything of the flow readout after its linear lift
        return {name: p.detach().clone() for name, p in model.readout.named_parameters()
                if name.startswith("transform._transforms.") and
                not name.startswith("transform._transforms.0.")}

    train = data.select("train")
    lr = 1e-2
    # Adam moves a parameter by at most about lr per step: frozen until the last step means
    # one step's worth of change, trained from step 4 means several.
    for warmup, steps_trained in ((OPTIONS["steps"] - 1, 1), (4, 8)):
        model, g = build(readout="flow")
        lift = model.readout.transform._transforms[0]
        before, lift_before = couplings(model), lift.lower_entries.clone()
        fit(model, g, train, readout_warmup=warmup, lr=lr, **OPTIONS)
        after = couplings(model)
        assert before and not model.readout.linear_only
        moved = max(float((before[k] - after[k]).abs().max()) for k in before)
        assert (moved <= 1.05 * lr) == (steps_trained == 1), (warmup, moved)
        assert not torch.equal(lift_before, lift.lower_entries)
    # a warm-up to the last step would end the fit with untrained couplings switched on
    with pytest.raises(ValueError, match="readout_warmup.*flow_layers=0"):
        fit(model, g, train, readout_warmup=OPTIONS["steps"], **OPTIONS)


def test_a_per_trial_guide_over_a_stochastic_path_follows_the_curriculum(data):
    # The guide's per-trial path keeps every bin; the curriculum then scores only the first
    # bins instead of cutting them, so spikes past the horizon cannot change the early steps.
    train = data.select("train")
    later = train.spikes.copy()
    later[:, 9:] = 7
    changed = train.replace(spikes=later)
    runs = []
    for trials in (train, changed):
        pyro.set_rng_seed(0)
        model = LatentODEModel(8, 2, diffusion=0.1)
        runs.append(fit(model, build_guide("per_trial_normal", model), trials, seed=0,
                        steps=8, batch_size=6, curriculum=(4, 8), init_from_data=False,
                        progress=False).losses)
    assert all(map(math.isfinite, runs[0]))
    assert runs[0][:6] == runs[1][:6]      # horizons of 4-9 bins: the same bins scored
    assert runs[0][6:] != runs[1][6:]      # 10 bins and more: the changed ones count


def test_only_a_per_trial_autoguide_over_a_path_keeps_every_bin():
    from pyro.infer.autoguide import AutoNormal

    path_model, ode = LatentODEModel(8, 2, diffusion=0.1), LatentODEModel(8, 2)
    amortized = build_guide("normal", path_model)
    amortized.global_guide = AutoNormal(lambda: None)  # its own part for global sites
    assert not fit_module._shape_fixed_per_trial(path_model, amortized)   # bins are cut
    assert fit_module._shape_fixed_per_trial(path_model,
                                             build_guide("per_trial_normal", path_model))
    assert not fit_module._shape_fixed_per_trial(ode, build_guide("per_trial_normal", ode))


def test_a_flow_readout_without_coupling_layers_is_affine():
    from pyrodyn.models.readouts import FlowReadout

    readout = FlowReadout(3, 12, layers=0)
    z = torch.randn(50, 3)
    weight = torch.linalg.lstsq(torch.cat([z, torch.ones(50, 1)], 1), readout(z)).solution
    affine = torch.cat([z, torch.ones(50, 1)], 1) @ weight
    assert torch.allclose(affine, readout(z), atol=1e-4)
    assert torch.allclose(readout.inverse(readout(z)), z, atol=1e-4)


def test_time_budget_stops_and_resume_finishes(data, tmp_path):
    model, g = build()
    result = fit(model, g, data, time_budget=0.0, checkpoint=tmp_path / "c.pt", **OPTIONS)
    assert result.stop_reason == "time_budget" and result.steps == 0
    result = fit(model, g, data, checkpoint=tmp_path / "c.pt", **OPTIONS)
    assert result.steps == 12 and result.stop_reason == "steps"


def test_steps_none_plans_from_the_trials_length(data, monkeypatch):
    from pyrodyn.inference import options, planned_steps

    assert planned_steps(100) == 3000 and planned_steps(70) == 4286  # the recipe's figures
    assert planned_steps(10) == 6000 and planned_steps(1000) == 1500  # and its bounds
    assert planned_steps(100, n_areas=2) == 1500
    # many neurons make a step dearer: the plan keeps a 30-neuron fit's cost, never adds steps
    assert planned_steps(100, n_neurons=8) == planned_steps(100, n_neurons=30) == 3000
    assert planned_steps(100, n_neurons=100) == 1833 and planned_steps(100, n_neurons=400) == 1500
    assert planned_steps(50, n_areas=2, n_neurons=200) == 1833  # 100 neurons per area
    monkeypatch.setattr(options, "PLANNED_BIN_STEPS", 6 * data.n_bins)  # 6 steps, to run fast
    monkeypatch.setattr(options, "PLANNED_RANGE", (1, 100))
    model, g = build()
    result = fit(model, g, data, **{**OPTIONS, "steps": None})
    assert result.steps == 6 and result.stop_reason == "steps"
    with pytest.raises(ValueError, match="steps: must be >= 1"):
        fit(model, g, data, **{**OPTIONS, "steps": 0})


def test_budget_runs_the_schedule_on_the_clock(data, tmp_path):
    """A budgeted fit steps until the budget is spent, however many ``steps`` say, ends
    annealed (the learning rate at its final value, validated at its last step) and resumes."""
    model, g = build()
    options = dict(OPTIONS, steps=5, lr=0.01, lr_final=0.1, budget=1.5)
    result = fit(model, g, data.select("train"), valid=data.select("valid"),
                 checkpoint=tmp_path / "c.pt", **options)
    assert result.stop_reason == "budget" and result.elapsed >= 1.5
    assert result.steps > 5  # far more steps than the schedule's resolution
    assert result.valid[-1]["step"] == result.steps
    state = fit_module.read_state(tmp_path / "c.pt")
    final_lr = state["optimizer"]["param_groups"][0]["lr"]
    assert final_lr == pytest.approx(0.01 * 0.1, rel=1e-6)  # the last schedule step, 4 of 5
    more = fit(model, g, data.select("train"), valid=data.select("valid"),
               checkpoint=tmp_path / "c.pt", **dict(options, budget=2.5))
    assert more.steps > result.steps and more.losses[:result.steps] == result.losses
    with pytest.raises(ValueError, match="budget=None"):
        fit(model, g, data, scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1),
            **options)


def test_early_stopping_restores_the_best_state(data):
    model, g = build()
    result = fit(model, g, data.select("train"), valid=data.select("valid"), steps=40,
                 batch_size=6, eval_every=1, patience=2, lr=0.05, progress=False)
    assert result.stop_reason == "early_stopping"
    assert result.steps < 40
    losses = [v["loss"] for v in result.valid]
    assert result.best_valid_loss == min(losses)
    assert all(torch.equal(result.best_state["model"][k], v)
               for k, v in model.state_dict().items())


def test_fit_learns(data):
    model, g = build()
    result = fit(model, g, data.select("train"), valid=data.select("valid"), steps=60,
                 batch_size=9, eval_every=20, progress=False)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])
    assert result.valid[-1]["loss"] < result.valid[0]["loss"]
    assert result.valid[-1]["bits_per_spike"] > 0.1
    assert math.isfinite(result.elapsed) and result.elapsed > 0


def test_bad_options_and_data(data):
    model, g = build()
    with pytest.raises(ValueError, match="valid: a per-trial"):
        fit(model, build_guide("per_trial_normal", model), data, valid=data)
    with pytest.raises(ValueError, match="coordinated_dropout"):
        fit(model, g, data, coordinated_dropout=1.0)
    with pytest.raises(ValueError, match="elbo: unknown ELBO 'renyi'"):
        fit(model, g, data, elbo="renyi", steps=1)
    other = synthetic.lorenz(n_trials=4, n_bins=12, n_neurons=5)
    with pytest.raises(ValueError, match="train: has 5 neurons but the model was built for 8"):
        fit(model, g, other)


def test_a_state_that_is_never_finite_stops_with_one_line_and_is_not_saved(data, tmp_path):
    model, g = build()
    with torch.no_grad():
        model.readout.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="the loss became nan at step 0, again after 3 "
                                                 "restarts") as error:
        fit(model, g, data, steps=3, checkpoint=tmp_path / "nan.pt", init_from_data=False,
            progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "nan.pt").exists()  # never a non-finite state on disk


def test_a_nan_rolls_back_to_the_last_finite_state_with_a_lower_rate(data, tmp_path,
                                                                    monkeypatch):
    train = data.select("train")
    original = fit_module._Run.loss
    hits = []

    def nan_once_at_step_6(self, step):
        loss = original(self, step)
        if step == 6 and not hits:
            hits.append(step)
            return loss * float("nan")
        return loss

    monkeypatch.setattr(fit_module._Run, "loss", nan_once_at_step_6)
    model, g = build()
    result = fit(model, g, train, checkpoint=tmp_path / "c.pt", checkpoint_every=4,
                 **dict(OPTIONS, coordinated_dropout=0.0))
    assert hits == [6] and len(result.losses) == OPTIONS["steps"]
    assert all(math.isfinite(x) for x in result.losses)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["nan_retries"] == 1
    assert state["scheduler"]["base_lrs"][0] == pytest.approx(0.01 * 0.5)


def test_sigterm_saves_a_checkpoint_that_resumes_the_same_run(data, tmp_path, interrupt_fit):
    import os
    import signal

    train = data.select("train")
    options = dict(OPTIONS, coordinated_dropout=0.0)
    model, g = build()
    whole = fit(model, g, train, seed=5, **options)
    undo = interrupt_fit(5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    model, g = build()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(fit_module.FitInterrupted, match="SIGTERM at step 6; checkpoint saved"):
        fit(model, g, train, seed=5, checkpoint=tmp_path / "c.pt", **options)
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
    undo()
    model, g = build(seed=99)
    resumed = fit(model, g, train, seed=5, checkpoint=tmp_path / "c.pt", **options)
    assert resumed.losses == whole.losses


def test_a_users_optimizer_and_scheduler_drive_the_fit_and_resume(data, tmp_path,
                                                                  interrupt_fit):
    train = data.select("train")
    made = {}

    def sgd(params):
        made["optimizer"] = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        return made["optimizer"]

    def halve_every_4(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)

    options = dict(OPTIONS, coordinated_dropout=0.0)
    model, g = build()
    whole = fit(model, g, train, seed=2, optimizer=sgd, scheduler=halve_every_4, **options)
    assert isinstance(made["optimizer"], torch.optim.SGD)
    assert made["optimizer"].param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 ** 3)
    assert all(math.isfinite(x) for x in whole.losses)

    checkpoint = tmp_path / "fit.pt"
    model, g = build()
    undo = interrupt_fit(6, _raise_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(model, g, train, seed=2, optimizer=sgd, scheduler=halve_every_4,
            checkpoint=checkpoint, **options)
    undo()
    model, g = build(seed=99)
    resumed = fit(model, g, train, seed=2, optimizer=sgd, scheduler=halve_every_4,
                  checkpoint=checkpoint, **options)
    assert resumed.losses == whole.losses  # optimizer and schedule state came back


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "steps: must be >= 1"),
    (dict(lr=True), "lr: must be a number"),
    (dict(time_budget=-1), "time_budget: must be >= 0"),
    (dict(kl_warmup=-1), "kl_warmup: must be >= 0"),
    (dict(num_threads=0), "num_threads: must be >= 1"),
    (dict(curriculum=5), "curriculum: expected"),
    (dict(curriculum=[10]), "curriculum: expected"),
    (dict(resume="yes"), "resume: must be true or false"),
    (dict(stepz=3), "fit: unknown option"),
])
def test_options_are_checked_before_anything_runs(data, change, message):
    model, g = build()
    with pytest.raises(ValueError, match=message):
        fit(model, g, data, progress=False, **change)


def test_tensorboard_logs_loss_and_validation(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, g = build()
    fit(model, g, data.select("train"), valid=data.select("valid"), tensorboard=str(tmp_path),
        **OPTIONS)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "lr", "valid/loss", "valid/bits_per_spike", "valid/co_bps"} <= set(tags)
    assert [e.step for e in events.Scalars("loss")] == list(range(1, OPTIONS["steps"] + 1))
    assert [e.step for e in events.Scalars("valid/loss")] == [4, 8, 12]


def test_a_training_step_evaluates_the_drift_once(data):
    """The guide's chain evaluates the drift bin by bin; the step's densities reuse it
    (``shared_drift``), so no whole-path (parallel over bins) drift call is left in a step."""
    model, guide = build(diffusion=0.1)
    whole_path = []
    model.field.register_forward_hook(
        lambda module, args, out: whole_path.append(args[0].dim() > 2))
    fit(model, guide, data.select("train"), steps=3, batch_size=6, progress=False)
    # The call that creates the guide's parameters and three steps: each runs the chain (two
    # calls per bin, the midpoint rule) and nothing else.
    assert sum(whole_path) == 0
    assert len(whole_path) == 4 * 2 * (data.n_bins - 1)
