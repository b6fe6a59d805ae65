"""Automated hyperparameter search on held-out evidence (Optuna, the ``pyrodyn[tune]`` extra).

``tune`` runs an Optuna study over the recipe's options. Every trial fits on the training
trials with an equal share of the time budget (``FitOptions.budget``: each fit's schedule runs
on the clock, so every trial ends annealed) and is scored on the validation trials by
``heldout_evidence``: co-bps (bits per spike of the neurons the encoder never sees) when the
data hold neurons out, else the importance-weighted log p per trial. The first trial is the
recipe itself (when the space's parameters are named after the options they set, as the
default's are), so the study's best is never a config that lost to it on the same score. Trials
that fall behind the median of earlier ones at the same fraction of their budget are pruned.

The study lives in ``OUT/study.db`` (SQLite): a rerun of the same command after a crash or a
kill continues it (a trial cut off mid-fit is marked failed and its parameters run again).
It ends with ``trials.csv``, ``tune.png`` and ``best.yaml``, the best trial's config (its
budget included), which ``pyrodyn fit --config OUT/best.yaml`` reruns. One tuning process
per folder.

Example::

    from pyrodyn.tuning import tune
    study = tune(data, "tune_out", budget=1200, n_trials=8)
    study.best_trial.params

``pyrodyn tune DATA --out DIR --budget 1200 --trials 8`` does the same from the shell.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import RunConfig, build_run
from .data.spikes import SpikeData

__all__ = ["tune", "search_space", "objective_name"]

logger = logging.getLogger("pyrodyn")

Space = Callable[[Any, RunConfig], dict[str, Any]]
MARKS = (0.25, 0.5, 0.75)  # fractions of a trial's budget where it reports to the pruner


def search_space(trial, config: RunConfig) -> dict[str, Any]:
    """The default space: the options that decide speed and fit, each range widened to hold
    the recipe's own value (so the recipe itself is a point of it)."""

    def choice(name: str, values: list) -> Any:
        return trial.suggest_categorical(name, sorted({*values, getattr(config, name)}))

    def log_range(name: str, low: float, high: float) -> float:
        value = getattr(config, name)
        return trial.suggest_float(name, min(low, value), max(high, value), log=True)

    space = {"lr": log_range("lr", 3e-3, 3e-2),
             "batch_size": choice("batch_size", [32, 64, 128, 256]),
             "hidden": choice("hidden", [64, 128, 256]),
             "encoder_hidden": choice("encoder_hidden", [32, 64, 128])}
    if config.diffusion is not None:
        space["diffusion"] = log_range("diffusion", 0.03, 0.3)
    if config.path_noise_tau is not None:  # where a learned tau starts, or a fixed one
        space["noise_tau"] = log_range("noise_tau", 1.0, 10.0)
    return space


def objective_name(data: SpikeData) -> str:
    """"co_bps" when the data hold neurons out of the encoder, else "log_marginal"."""
    return "co_bps" if data.heldout_neurons.size else "log_marginal"


def tune(data: SpikeData, out: str | Path, *, budget: float, n_trials: int | None = None,
         config: RunConfig | None = None, space: Space = search_space,
         num_particles: int = 32):
    """Searches ``space`` for the config with the best held-out score on ``data``'s
    validation trials; returns the Optuna study (``study.best_trial``).

    Args:
        data: trials with a train and a valid split.
        out: folder of the study (``study.db``) and its results.
        budget: seconds of fitting for the whole study, shared equally by ``n_trials``.
        n_trials: trials in all (default: one per two minutes of budget, at least 3); a
            resumed study runs only the ones left.
        config: the recipe the space varies (default ``RunConfig()``).
        space: ``(optuna trial, config) -> {option: value}``.
        num_particles: importance samples per validation trial for the score.

    Raises:
        ValueError: no optuna, no validation trials, a bad budget or count, or a space
            naming an unknown option.
    """
    optuna = _optuna()
    quiet = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # pyrodyn logs each trial itself
    try:
        return _tune(optuna, data, Path(out), budget=budget, n_trials=n_trials,
                     config=config or RunConfig(), space=space, num_particles=num_particles)
    finally:  # Optuna's logging as the caller had it
        optuna.logging.set_verbosity(quiet)


def _tune(optuna, data, out, *, budget, n_trials, config, space, num_particles):
    from .inference import fit, heldout_evidence

    if not (isinstance(budget, (int, float)) and budget > 0):
        raise ValueError(f"budget: seconds of fitting must be > 0, got {budget!r}")
    n_trials = max(3, round(budget / 120)) if n_trials is None else n_trials
    if not (isinstance(n_trials, int) and n_trials >= 1):
        raise ValueError(f"trials: must be a whole number >= 1, got {n_trials!r}")
    if data.split is None or not (data.split == "valid").any():
        raise ValueError("data: tuning scores on validation trials; the data have none")
    train, valid = data.select("train"), data.select("valid")
    score_name, per_trial = objective_name(data), budget / n_trials
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name="pyrodyn", storage=f"sqlite:///{out / 'study.db'}", load_if_exists=True,
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    _retry_cut_off_trials(study, optuna)
    recipe = _recipe_point(space, config, optuna)
    if not study.trials and recipe is not None:  # the recipe first: the baseline to beat
        study.enqueue_trial(recipe)

    def objective(trial) -> float:
        changes = space(trial, config)
        trial_config = _with(config, {**changes, "budget": per_trial, "progress_every": None})
        trial.set_user_attr("config", changes)
        model, guide = build_run(trial_config, train)
        reported = 0  # marks passed

        def report(record: dict[str, float]) -> None:
            nonlocal reported
            value = record["co_bps"] if score_name == "co_bps" else -record["loss"]
            while reported < len(MARKS) and record["seconds"] >= MARKS[reported] * per_trial:
                trial.report(value, reported)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"behind the median at {MARKS[reported]:.0%} of "
                                             "its budget")
                reported += 1

        result = fit(model, guide, train, valid=valid, options=trial_config.fit_options(),
                     progress=False, on_validation=report)
        evidence = heldout_evidence(model, guide, train, valid, num_particles=num_particles,
                                    refine_steps=trial_config.refine_steps,
                                    device=trial_config.device, seed=trial_config.seed)
        summary = evidence.summary()
        trial.set_user_attr("se", summary[f"{score_name}_se"])
        # per validation trial, for differences paired with the recipe's (trials.csv)
        co = score_name == "co_bps"  # bits / held-out spikes, or mean log p: a ratio of sums
        pointwise = evidence.co_bits if co else evidence.log_marginal
        weights = evidence.co_spikes if co else np.ones_like(pointwise)
        trial.set_user_attr("pointwise", [float(v) for v in pointwise])
        trial.set_user_attr("weights", [float(v) for v in weights])
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("seconds", result.elapsed)
        logger.info("tune: trial %d: %s %.4f ± %.4f (%s)", trial.number, score_name,
                    summary[score_name], summary[f"{score_name}_se"], changes)
        return summary[score_name]

    left = n_trials - sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.trials)
    if left > 0:
        study.optimize(objective, n_trials=left, catch=(FloatingPointError,))
    _write_results(study, out, config, score_name, per_trial)
    return study


def _with(config: RunConfig, changes: dict[str, Any]) -> RunConfig:
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ValueError(f"space: unknown option(s) {', '.join(unknown)}")
    return dataclasses.replace(config, **changes)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ValueError("tune: needs optuna (pip install 'pyrodyn[tune]')") from None
    return optuna


def _recipe_point(space: Space, config: RunConfig, optuna) -> dict[str, Any] | None:
    """The recipe's own values of the options ``space`` varies, or None when its parameters
    are not named after options."""
    try:
        return space(optuna.trial.FixedTrial(config.to_dict()), config)
    except ValueError:
        return None


def _retry_cut_off_trials(study, optuna) -> None:
    """A trial left RUNNING by a killed process failed; its parameters run again."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params)
        logger.info("tune: trial %d was cut off; running its parameters again", trial.number)


def _paired(trial, recipe) -> tuple[float, float]:
    """``trial``'s score minus the recipe's on the same validation trials, and the standard
    error of that difference, paired over trials (nan where either has none)."""
    from .inference.evidence import _ratio

    if recipe is None or "pointwise" not in trial.user_attrs:
        return math.nan, math.nan
    diff = np.subtract(trial.user_attrs["pointwise"], recipe.user_attrs["pointwise"])
    return _ratio(diff, np.asarray(trial.user_attrs["weights"]))


def _write_results(study, out: Path, config: RunConfig, score_name: str,
                   per_trial: float) -> None:
    from . import plots, runs

    recipe = next((t for t in study.trials if t.number == 0 and t.state.name == "COMPLETE"),
                  None)
    rows = [{"trial": t.number, "state": t.state.name, score_name: t.value,
             "se": t.user_attrs.get("se"),
             **dict(zip(("diff_to_recipe", "diff_se"), _paired(t, recipe))),
             "steps": t.user_attrs.get("steps"), "seconds": t.user_attrs.get("seconds"),
             **t.params} for t in study.trials]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise ValueError("tune: no trial completed (see the log for why)")
    best = _with(config, {**study.best_trial.user_attrs["config"], "budget": per_trial})
    runs.write_text(out / "best.yaml", yaml.safe_dump(best.to_dict(), sort_keys=False))
    shown = [row for row in rows if row["state"] == "COMPLETE"]
    paired = recipe is not None
    runs.save_figure(plots.plot_tuning(
        [row["trial"] for row in shown],
        [row["diff_to_recipe" if paired else score_name] for row in shown],
        [row["diff_se" if paired else "se"] for row in shown],
        f"{score_name} - recipe's" if paired else score_name), out / "tune.png", dpi=120)
