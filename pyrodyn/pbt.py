"""Population-based training on Ray Tune (the ``pyrodyn[ray]`` extra): the AutoLFADS idea.

A population of fits of the same architecture runs side by side, one CPU each. Every fit has
the same planned budget (``FitOptions.budget``: the schedule runs on the clock) cut into
``generations``; at the end of each generation every member reports its validation score (the
fit's own validation record: co-bps with held-out neurons, else minus the validation loss).
Ray's ``PopulationBasedTraining`` then lets the worst quarter copy the weights, optimizer and
clock of a member of the best quarter and go on with that member's options perturbed (learning
rate x0.8 or x1.2, a neighbouring batch size or weight decay). So good options are found while
fitting, not by refitting from scratch. The first member starts from the recipe. At the end
every member is scored as ``pyrodyn tune`` scores its trials: ``heldout_evidence`` on the
validation trials (with the recipe's refinement), with a standard error.

Results: ``OUT/pbt-1/`` (Ray's experiment folder: every member's checkpoints and
``pbt_global.txt``, the log of every copy), ``OUT/members.csv``, ``OUT/tune.png`` and
``OUT/best.yaml`` (the best member's options at its end). A rerun of the same command after an
interruption starts ``OUT/pbt-2/`` with every member going on from its last checkpoint there.
Weights move between members as pyrodyn checkpoints (tensors only, read with
``weights_only=True``, and the member's options as YAML); nothing pickled is read back.

Example::

    from pyrodyn.pbt import population_tune
    members = population_tune(data, "pbt_out", budget=1200, population=4, cpus=2)
    members[0]                       # the best: {"member": ..., "co_bps": ..., "se": ..., ...}

``pyrodyn tune DATA --out DIR --budget 1200 --backend ray --population 4 --cpus 2`` does the same
from the shell; on a cluster, start Ray there first (``ray start``) and the run joins it.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig, build_run
from .data.spikes import SpikeData
from .tuning import _with, objective_name

__all__ = ["population_tune", "MUTATIONS"]

logger = logging.getLogger("pyrodyn")

# What a member may change mid-fit: options that do not change the architecture, so weights
# copied from another member still fit (hidden sizes and the diffusion's start cannot).
MUTATIONS: dict[str, Any] = {"lr": (3e-3, 3e-2), "batch_size": [32, 64, 128, 256],
                             "weight_decay": [1e-6, 1e-5, 1e-4]}
STATE, OPTIONS = "state.pt", "options.yaml"  # the files of a member's checkpoint
RESUME = "resume_from"  # a member's start: a checkpoint folder of an interrupted experiment


def population_tune(data: SpikeData, out: str | Path, *, budget: float, population: int = 4,
                    generations: int = 4, cpus: int | None = None,
                    config: RunConfig | None = None, num_particles: int = 32
                    ) -> list[dict[str, Any]]:
    """Population-based training of ``config``'s recipe on ``data``; returns one row per
    member, best first (``member``, the score and its ``se``, ``steps``, ``seconds`` and the
    member's options at its end).

    Args:
        data: trials with a train and a valid split.
        out: folder of the experiment and its results.
        budget: seconds of fitting for the whole population, shared equally by its members.
        population: members (>= 2).
        generations: reports per member; the population exploits and explores after each.
        cpus: CPUs of the local Ray started here (default: all); ignored when Ray already runs.
        config: the recipe (default ``RunConfig()``).
        num_particles: importance samples per validation trial for the closing score.

    Raises:
        ValueError: no ray, no validation trials, or a bad budget, population or generations.
    """
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ValueError("tune: the ray backend needs ray[tune] (pip install "
                         "'pyrodyn[ray]')") from None
    config = config or RunConfig()
    if not (isinstance(budget, (int, float)) and budget > 0):
        raise ValueError(f"budget: seconds of fitting must be > 0, got {budget!r}")
    for name, value in (("population", population), ("generations", generations)):
        if not (isinstance(value, int) and value >= (2 if name == "population" else 1)):
            raise ValueError(f"{name}: must be a whole number >= "
                             f"{2 if name == 'population' else 1}, got {value!r}")
    if data.split is None or not (data.split == "valid").any():
        raise ValueError("data: tuning scores on validation trials; the data have none")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    score_name = objective_name(data)
    member_budget = budget / population
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        trainable = tune.with_resources(tune.with_parameters(
            _member, data=data, config=config, member_budget=member_budget,
            generations=generations, score_name=score_name, num_particles=num_particles),
            {"cpu": 1})
        grid = _tuner(tune, trainable, out, config, population).fit()
    finally:
        if started:  # leave no cluster behind that this call started
            ray.shutdown()
    rows = sorted((_row(result, score_name) for result in grid),
                  key=lambda row: -math.inf if math.isnan(row[score_name]) else row[score_name],
                  reverse=True)
    _write_results(rows, out, config, score_name, member_budget)
    return rows


def _tuner(tune, trainable, out: Path, config: RunConfig, population: int):
    """A Tuner for the next experiment ``out/pbt-N``: its members start from the recipe and
    random options, or, after an interruption, from the last checkpoints of ``out/pbt-(N-1)``.
    (Ray's own ``Tuner.restore`` unpickles its state; pyrodyn resumes from its own files.)"""
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    low, high = MUTATIONS["lr"]
    mutations = {"lr": tune.loguniform(min(low, config.lr), max(high, config.lr)),
                 "batch_size": _with_recipe(MUTATIONS["batch_size"], config.batch_size),
                 "weight_decay": _with_recipe(MUTATIONS["weight_decay"], config.weight_decay)}
    space = {"lr": mutations["lr"], "batch_size": tune.choice(mutations["batch_size"]),
             "weight_decay": tune.choice(mutations["weight_decay"]), RESUME: ""}
    starts = _last_checkpoints(_experiments(out)[-1]) if _experiments(out) else []
    if starts:
        logger.info("tune: resuming %d members from %s", len(starts), starts[0].parents[1])
        points = [{**yaml.safe_load((start / OPTIONS).read_text()), RESUME: str(start)}
                  for start in starts]
    else:
        points = [{name: getattr(config, name) for name in MUTATIONS} | {RESUME: ""}]
    # A member reports once per generation: a perturbation interval of one generation is one
    # exploit/explore round per report, the whole population in step (synch). Members resumed
    # from different generations are not in step; waiting for them to be hangs Ray's PBT.
    scheduler = PopulationBasedTraining(
        time_attr="generation", perturbation_interval=1, hyperparam_mutations=mutations,
        quantile_fraction=0.25 if population >= 4 else 0.5, resample_probability=0.25,
        synch=not starts, metric="score", mode="max")
    return tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(num_samples=len(starts) or population, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(
                                        points_to_evaluate=points, random_state=config.seed),
                                    reuse_actors=False),
        run_config=tune.RunConfig(name=f"pbt-{len(_experiments(out)) + 1}",
                                  storage_path=str(out), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
                                  failure_config=tune.FailureConfig(max_failures=1)))


def _experiments(out: Path) -> list[Path]:
    """The experiments ``out/pbt-1``, ``out/pbt-2``, ... in order."""
    found = [path for path in out.glob("pbt-*") if path.name[4:].isdigit()]
    return sorted(found, key=lambda path: int(path.name[4:]))


def _last_checkpoints(experiment: Path) -> list[Path]:
    """Every member's latest complete checkpoint folder in ``experiment``."""
    starts = []
    for member in sorted(experiment.glob("_member_*")):
        done = [c for c in member.glob("checkpoint_*") if (c / STATE).exists()
                and (c / OPTIONS).exists()]
        if done:
            starts.append(max(done, key=lambda c: c.name))
    return starts


def _with_recipe(values: list, recipe_value) -> list:
    return sorted({*values, recipe_value})


def _member(params: dict[str, Any], *, data: SpikeData, config: RunConfig, member_budget: float,
            generations: int, score_name: str, num_particles: int) -> None:
    """One member, run by Ray: fits generation by generation, reporting each one with its
    checkpoint, then its closing held-out score."""
    from ray import tune

    from .inference import fit, heldout_evidence
    from .inference.state import read_state

    params = {name: value.item() if hasattr(value, "item") else value  # numpy -> YAML-able
              for name, value in params.items()}
    resume = params.pop(RESUME)
    train, valid = data.select("train"), data.select("valid")
    options = _with(config, {**params, "budget": member_budget, "progress_every": None})
    model, guide = build_run(options, train)
    work = Path(tempfile.mkdtemp(prefix="pyrodyn-pbt-"))
    state = work / STATE
    try:
        start = tune.get_checkpoint()
        if start is not None:  # our own latest, or (after an exploit) a better member's
            with start.as_directory() as folder:
                _start_from(Path(folder), state, params)
        elif resume:  # this member's last checkpoint before an interruption
            _start_from(Path(resume), state, params)
        length, reported = member_budget / generations, 0
        while True:
            elapsed = read_state(state)["result"]["elapsed"] if state.exists() else 0.0
            generation = min(int(elapsed / length + 1e-9) + 1, generations)
            last = generation == generations
            # the fit's schedule runs over the whole member budget; a generation stops it early
            result = fit(model, guide, train, valid=valid, checkpoint=state, progress=False,
                         options=options.fit_options().replace(
                             time_budget=None if last else generation * length))
            if last:
                break
            record = result.valid[-1] if result.valid else {"loss": math.nan}
            _report(tune, {"score": record["co_bps"] if score_name == "co_bps"
                           else -record["loss"], "generation": generation}, state, params)
            reported = generation
        evidence = heldout_evidence(model, guide, train, valid, num_particles=num_particles,
                                    refine_steps=options.refine_steps, device=options.device,
                                    seed=options.seed).summary()
        # at the generation reported last: a closing score starts no round of exploits
        _report(tune, {"score": evidence[score_name], "se": evidence[f"{score_name}_se"],
                       "generation": reported, "closing": True, "steps": result.steps,
                       "seconds": result.elapsed}, state, params)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(tune, metrics: dict[str, Any], state: Path, params: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(state, Path(folder) / STATE)
        (Path(folder) / OPTIONS).write_text(yaml.safe_dump(dict(params)))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _start_from(folder: Path, state: Path, params: dict[str, Any]) -> None:
    """Copies the checkpoint in ``folder`` to ``state``, to go on with ``params``' rate."""
    shutil.copyfile(folder / STATE, state)
    donor = yaml.safe_load((folder / OPTIONS).read_text())
    _rescale_lr(state, params["lr"] / donor["lr"])


def _rescale_lr(path: Path, factor: float) -> None:
    """A copied member's state goes on with this member's learning rate: the optimizer's
    base rates (and current ones) times ``factor``."""
    from .inference.state import read_state, write_state

    if factor == 1.0:
        return
    state = read_state(path)
    for group in state["optimizer"]["param_groups"]:
        group["lr"] *= factor
    scheduler = state["scheduler"]
    scheduler["base_lrs"] = [rate * factor for rate in scheduler["base_lrs"]]
    if "_last_lr" in scheduler:
        scheduler["_last_lr"] = [rate * factor for rate in scheduler["_last_lr"]]
    write_state(path, state)


def _row(result, score_name: str) -> dict[str, Any]:
    metrics = result.metrics or {}
    closing = bool(metrics.get("closing"))
    return {"member": metrics.get("trial_id", "?"),
            score_name: metrics["score"] if closing else math.nan,
            "se": metrics.get("se", math.nan), "steps": metrics.get("steps"),
            "seconds": metrics.get("seconds"),
            "error": "" if result.error is None else str(result.error).splitlines()[0],
            **{name: result.config[name] for name in MUTATIONS}}


def _write_results(rows: list[dict[str, Any]], out: Path, config: RunConfig, score_name: str,
                   member_budget: float) -> None:
    from . import plots, runs

    with open(out / "members.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    scored = [row for row in rows if not math.isnan(row[score_name])]
    if not scored:
        raise ValueError(f"tune: no member finished (see {out / 'members.csv'})")
    best = _with(config, {**{name: scored[0][name] for name in MUTATIONS},
                          "budget": member_budget})
    runs.write_text(out / "best.yaml", yaml.safe_dump(best.to_dict(), sort_keys=False))
    runs.save_figure(plots.plot_tuning(list(range(1, len(scored) + 1)),
                                       [row[score_name] for row in scored],
                                       [row["se"] for row in scored], score_name),
                     out / "tune.png", dpi=120)
