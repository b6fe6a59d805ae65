"""The ``pyrodyn`` command line.

Errors print as one line (``--traceback`` shows the full trace).

Example:
    $ pyrodyn simulate lorenz --out lorenz.npz --n-trials 200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from ._isolation import torch_threads
from .data import SpikeData, load, save
from .models import READOUTS, MultiAreaModel

__all__ = ["main", "build_parser"]


def _simulate(args: argparse.Namespace) -> None:
    from .data import synthetic

    data = synthetic.GENERATORS[args.system](
        n_trials=args.n_trials, n_bins=args.n_bins, n_neurons=args.n_neurons, dt=args.dt,
        mean_rate=args.mean_rate, gain=args.gain, embedding=args.embedding, seed=args.seed,
    )
    data = data.with_split(valid=args.valid, test=args.test, seed=args.seed)
    if args.heldout:
        data = data.with_heldout_neurons(args.heldout, seed=args.seed)
    save(data, args.out)
    print(f"wrote {args.out}: {data}")


def _load_data(args: argparse.Namespace) -> SpikeData:
    """The data file with the command line's loading options (NWB: alignment, window, areas)."""
    options = {name: getattr(args, name) for name in ("align", "area_column")
               if getattr(args, name) is not None}
    if args.window is not None:
        options["window"] = tuple(args.window)
    return load(args.data, dt=args.dt, **options)


def _add_run_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model-class", metavar="PACKAGE.MODULE:CLASS",
                         help="the user model class the run was fitted with (imported only "
                              "when named here)")
    _add_data_options(command)


def _add_search_options(command: argparse.ArgumentParser) -> None:
    """The options ``select`` and ``tune`` share: the recipe, its scoring and the data."""
    command.add_argument("--num-particles", type=int, default=32,
                         help="importance samples per validation trial")
    command.add_argument("--config", help="YAML file of RunConfig options (the recipe)")
    command.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    command.add_argument("--seed", type=int)
    _add_data_options(command)


def _add_data_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("reading the data file")
    group.add_argument("--dt", type=float, help="bin width in seconds (NWB; .npz/.h5 files "
                                                "that do not store it)")
    group.add_argument("--align", help="NWB: trials-table column to align trials to "
                                       "(default start_time)")
    group.add_argument("--window", type=float, nargs=2, metavar=("BEFORE", "AFTER"),
                       help="NWB: seconds around the aligned time")
    group.add_argument("--area-column", help="NWB: units-table column with each unit's area")


def _use_threads(config) -> None:
    """The recipe's torch thread count (``num_threads``, 1 by default) for the rest of the
    command, scoring as well as fitting; ``main`` gives the caller's count back. torch's
    default (every core) was 1.08x faster at scoring a 10-neuron run alone on 2 cores, and 6x
    slower with two such runs side by side."""
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)


def _load_run(run_dir: Path, data: SpikeData, model_class: str | None = None):
    """The config, model and guide a ``pyrodyn fit`` run wrote, ready for ``data`` (with the
    split the fit made, where the data file has none). A run of a user's model class imports
    that class only when the user names it (``model_class``): a run folder is data, and
    importing a module named in it would run that module's code."""
    from .config import MODELS, RunConfig, build_run
    from .inference import load_state

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"run_dir: {run_dir} holds no config.yaml (is it a pyrodyn fit run?)")
    config = RunConfig.from_run(config_path)
    _use_threads(config)
    if config.model not in MODELS and config.model != model_class:
        raise ValueError(f"run_dir: {run_dir} was fitted with the model class {config.model!r};"
                         f" name it to import it: --model-class {config.model}")
    data = _with_recorded_split(data, run_dir)
    train = data.select("train") if data.split is not None else data
    model, guide = build_run(config, train)
    load_state(run_dir / "model.pt", model, guide, train, device=config.device)
    from .inference import ChannelScales, ParameterPosterior, read_state

    # runs fitted before parameter uncertainty have neither; a run has at most one
    for name, kind in (("parameters.pt", ParameterPosterior),
                       ("channel_scales.pt", ChannelScales)):
        if (run_dir / name).is_file():
            model.parameter_posterior = kind.from_state_dict(read_state(run_dir / name))
    return config, model, guide, data


def _with_recorded_split(data: SpikeData, run_dir: Path) -> SpikeData:
    path = run_dir / "split.json"
    if not path.is_file():
        return data
    labels = json.loads(path.read_text())["split"]
    if len(labels) != data.n_trials:
        raise ValueError(f"{path}: records a split of {len(labels)} trials, the data has "
                         f"{data.n_trials}")
    return data.replace(split=np.asarray(labels))


def _split_of(data: SpikeData, split: str) -> SpikeData:
    return data if data.split is None and split == "train" else data.select(split)


def _fit_run(data: SpikeData, config, run_dir: Path, *, quiet: bool = False,
             overwrite: bool = False, replace_other: bool = False):
    """Fits on the train split (validating on the valid split) and writes the run directory
    (``pyrodyn.runs``): run.json, config.yaml, checkpoint.pt (resumable), model.pt,
    losses.json, metrics.json. Nothing is written before the options and data are checked."""
    from . import __version__, runs
    from .config import build_run
    from .inference import distributed, evaluate, fit, posterior_means, save_state

    main_process = distributed.is_main()  # under torchrun only rank 0 writes and scores
    made_split = data.split is None or not np.isin(data.split, ["valid", "test"]).any()
    data = _with_split(data, config.seed)  # score on trials the fit never saw, and say so
    train = data.select("train")
    amortized = not config.guide.startswith("per_trial")
    splits = [name for name in ("valid", "test") if (data.split == name).any()]
    valid = data.select("valid") if "valid" in splits and amortized else None
    model, guide = build_run(config, train)  # checks the model options against the data
    config = config.resolved(model)  # the rates "auto" gave this version, pinned in the folder
    record = {"pyrodyn_version": __version__, "data": data.fingerprint(),
              "config": config.to_dict()}
    if main_process:
        runs.claim(run_dir, record, overwrite=overwrite, replace_other=replace_other)
        run_dir.mkdir(parents=True, exist_ok=True)
        # run.json first: a kill between the two writes leaves a folder the rerun resumes
        runs.write_json(run_dir / "run.json", record)
        runs.write_text(run_dir / "config.yaml",
                        yaml.safe_dump(config.to_dict(), sort_keys=False))
        if made_split:
            runs.write_json(run_dir / "split.json", {"split": data.split.tolist()})
            print(f"data: the file has no valid or test trials; made a split (70/15/15, seed "
                  f"{config.seed}), recorded in {run_dir / 'split.json'}")
    result = fit(model, guide, train, valid=valid, checkpoint=run_dir / "checkpoint.pt",
                 progress=False if quiet else None, options=config.fit_options())
    if not main_process:
        return None
    save_state(run_dir / "model.pt", model, guide)
    _write_parameter_posterior(model, guide, train, run_dir, config)
    runs.write_json(run_dir / "losses.json", {
        "losses": result.losses, "valid": result.valid, "best_step": result.best_step,
        "elapsed": result.elapsed, "stop_reason": result.stop_reason})
    scored = splits if amortized else ["train"]
    options = dict(refine_steps=config.refine_steps)
    if train.truth is not None and train.truth.latents is not None:
        # every split's state-R2 map is fit on the training trials: derive their latents once
        options["train_latents"] = posterior_means(model, guide, train, **options)[0]
    metrics = {name: evaluate(model, guide, train, data.select(name), **options)
               for name in scored}
    runs.write_json(run_dir / "metrics.json", metrics)
    if isinstance(model, MultiAreaModel):
        _write_communication(model, guide, train, data.select(scored[-1]), run_dir,
                             refine_steps=config.refine_steps)
    print(f"fitted {result.steps} steps in {result.elapsed:.0f} s ({result.stop_reason}); "
          f"wrote {run_dir}")
    _print_table(metrics)
    return model, guide, result, metrics, options.get("train_latents"), data


def _write_parameter_posterior(model, guide, train, run_dir: Path, config) -> None:
    """The recipe's Laplace posterior over readout and channel weights, where it has one:
    parameters.pt, and the model carries it into every posterior draw from here on."""
    from .config import attach_parameter_posterior
    from .inference import write_state

    start = time.perf_counter()
    if attach_parameter_posterior(config, model, guide, train) is None:
        return
    write_state(run_dir / "parameters.pt", model.parameter_posterior.state_dict())
    what = ", ".join(["readout weights"] * bool(model.parameter_posterior.readouts)
                     + ["channels"] * bool(model.parameter_posterior.channels))
    print(f"parameter uncertainty: Laplace posterior over the {what} in "
          f"{time.perf_counter() - start:.0f} s; wrote {run_dir / 'parameters.pt'}")


def _write_communication(model, guide, train, data, run_dir: Path, *,
                         refine_steps: int) -> None:
    """Who drives whom in a multi-area fit: communication.json and communication.png, from the
    recipe's (refined) posterior, as every other score of the fit. With a stochastic path of
    Gaussian noise, the channels' scales get a posterior (``channel_scale_laplace``: how far
    the training trials pin each one), written to channel_scales.pt and carried by every
    posterior draw from here on, unless the model already carries a Laplace posterior over the
    channels' weights (``parameter_prior``)."""
    from . import plots, runs
    from .analysis.communication import (
        INTERVAL_SAMPLES,
        communication_sites,
        communication_summary,
    )
    from .inference import channel_scale_laplace, has_channel_scales, posterior, write_state

    scales = None
    if has_channel_scales(model) and getattr(model, "parameter_posterior", None) is None:
        scales = channel_scale_laplace(model, guide, train, refine_steps=refine_steps)
        model.parameter_posterior = scales
        write_state(run_dir / "channel_scales.pt", scales.state_dict())
    summary = communication_summary(posterior(model, guide, data, num_samples=INTERVAL_SAMPLES,
                                              refine_steps=refine_steps,
                                              names=communication_sites(model)))
    table = {name: {"strength": c.strength, "interval": list(c.interval), "level": c.level,
                    "identified": c.identified,
                    "source_from_target_r2": c.source_from_target_r2,
                    "scale_sd": None if scales is None else scales.sd(name)}
             for name, c in summary.items()}
    runs.write_json(run_dir / "communication.json", table)
    runs.save_figure(plots.plot_area_graph(summary), run_dir / "communication.png", dpi=120)
    for name, c in summary.items():
        print(f"channel {name}: strength {c.strength:.4f} "
              f"[{c.interval[0]:.4f}, {c.interval[1]:.4f}] ({c.level:.0%} interval)"
              + ("" if c.identified else
                 f"; NOT identified: a direction of {c.source}'s state is a function of "
                 f"{c.target}'s on these data (R2 {c.source_from_target_r2:.2f}), so "
                 f"{c.target}'s own dynamics can stand in for this channel"))
    for pair in sorted({tuple(sorted((c.source, c.target))) for c in summary.values()
                        if not c.identified}):
        print(f"which of {pair[0]} and {pair[1]} drives the other is not identified by these "
              "data: do not read a direction off the strengths above")


def _fit(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from .config import RunConfig

    auto = args.latent_dim == "auto"
    values = dict(model=args.model and args.model.replace("-", "_"),
                  latent_dim=None if auto else _latent_dim(args.latent_dim),
                  readout=args.readout, guide=args.guide, steps=args.steps,
                  device=args.device, seed=args.seed, budget=None if auto else args.budget)
    config = RunConfig.from_sources(args.config, args.set, **values)
    if config.steps is not None and config.budget is not None:
        print(f"pyrodyn fit: note: with a budget the fit runs on the clock for "
              f"{config.budget:g} s; {config.steps} steps only place its schedule's stages "
              f"(to stop after {config.steps} steps, or earlier at a time limit, use "
              "--set time_budget=S instead of --budget)", file=sys.stderr)
    _use_threads(config)
    if args.nproc is not None and "WORLD_SIZE" not in os.environ:  # not yet under torchrun
        return _launch(args)
    data = _load_data(args)
    if auto:  # the ladder 1-8 with the config's readout; then the chosen one as the run
        from .selection import select

        # the same seeded split _fit_run makes (and records) when the file has none
        selection = select(_with_split(data, config.seed), latent_dims=range(1, 9),
                           config=config, budget=args.budget)
        print(selection.markdown())
        print(f"--latent-dim auto: chose {selection.chosen.latent_dim} latent dimensions")
        config = selection.config
    try:
        _fit_run(data, _join_process_group(config), Path(args.out), quiet=args.quiet,
                 overwrite=args.overwrite)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _launch(args: argparse.Namespace) -> None:
    """``fit --nproc N``: the same command, without ``--nproc`` (torchrun's own parser would
    take it), as N data-parallel processes under torchrun."""
    import subprocess

    if not (isinstance(args.nproc, int) and args.nproc >= 1):
        raise ValueError(f"--nproc: must be >= 1, got {args.nproc}")
    if args.latent_dim == "auto":
        raise ValueError("--nproc: not with --latent-dim auto (select runs one fit at a time)")
    argv = [item for item in args.argv if not item.startswith("--nproc=")]
    if "--nproc" in argv:
        at = argv.index("--nproc")
        del argv[at:at + 2]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={args.nproc}", "-m", "pyrodyn.cli", *argv])
    if done.returncode:
        raise ValueError(f"--nproc: the {args.nproc} processes failed (exit code "
                         f"{done.returncode}; their messages are above)")


def _join_process_group(config):
    """Under torchrun (WORLD_SIZE > 1): joins the process group (NCCL for a CUDA device,
    one GPU per local rank; gloo on CPU) so ``fit`` is data-parallel
    (``pyrodyn.inference.distributed``); returns the config for this process."""
    import dataclasses

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return config
    cuda = config.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        config = dataclasses.replace(config, device=f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
    return config


def _latent_dim(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--latent-dim: a whole number or auto, got {text!r}") from None


def _with_split(data: SpikeData, seed: int) -> SpikeData:
    """The data's own split, or a seeded 70/15/15 one (as ``fit`` makes and records)."""
    if data.split is None or not np.isin(data.split, ["valid", "test"]).any():
        return data.with_split(valid=0.15, test=0.15, seed=seed)
    return data


def _select(args: argparse.Namespace) -> None:
    """Fits the ladder of latent dimensionalities x readouts and chooses by held-out evidence."""
    from .config import RunConfig
    from .selection import parse_latent_dims, select

    config = RunConfig.from_sources(args.config, args.set, seed=args.seed)
    _use_threads(config)
    readouts = (None if args.readouts is None  # checked by select
                else [r.strip() for r in args.readouts.split(",") if r.strip()])
    data = _with_split(_load_data(args), config.seed)
    selection = select(data, latent_dims=parse_latent_dims(args.latent_dims),
                       readouts=readouts, config=config, budget=args.budget,
                       num_particles=args.num_particles, refits=args.refits)
    selection.write(args.out)
    print(selection.markdown())
    chosen = selection.chosen
    print(f"chose {chosen.readout} readout, {chosen.latent_dim} latent dimensions (best: "
          f"{selection.best.label}); wrote {args.out}/selection.csv, selection.md, "
          "selection.png, selected.yaml (pyrodyn fit --config reruns it)")


def _tune(args: argparse.Namespace) -> None:
    from .config import RunConfig
    from .tuning import objective_name, tune

    config = RunConfig.from_sources(args.config, args.set, seed=args.seed)
    _use_threads(config)
    data = _with_split(_load_data(args), config.seed)
    if args.backend == "ray":
        from .pbt import population_tune

        members = population_tune(data, args.out, budget=args.budget,
                                  population=args.population, generations=args.generations,
                                  cpus=args.cpus, config=config,
                                  num_particles=args.num_particles)
        best, name = members[0], objective_name(data)
        print(f"tune: population of {len(members)}; best {best['member']}: {best[name]:.4f} ± "
              f"{best['se']:.4f}; wrote {args.out}/members.csv, tune.png, best.yaml "
              f"(pyrodyn fit --config reruns its final options)")
        return
    study = tune(data, args.out, budget=args.budget, n_trials=args.trials, config=config,
                 num_particles=args.num_particles)
    best = study.best_trial
    print(f"tune: {len(study.trials)} trials; best trial {best.number}: "
          f"{best.value:.4f} ± {best.user_attrs['se']:.4f} with {best.user_attrs['config']}; "
          f"wrote {args.out}/trials.csv, tune.png, best.yaml (pyrodyn fit --config reruns it)")


def _posterior(args: argparse.Namespace) -> None:
    from .inference import write_posterior

    config, model, guide, data = _load_run(Path(args.run_dir), _load_data(args),
                                           args.model_class)
    trials = (np.arange(data.n_trials) if data.split is None and args.split == "train"
              else args.split)  # indices of the split: a large file is not copied
    write_posterior(args.out, model, guide, data, trials=trials, num_samples=args.num_samples,
                    refine_steps=_refine_steps(args, config), device=config.device,
                    elbo="Trace_ELBO", guide_name=config.guide)
    n = data.n_trials if isinstance(trials, np.ndarray) else data.split_indices(trials).size
    print(f"wrote {args.out}: {args.num_samples} draws of {n} trials")


def _benchmark(args: argparse.Namespace) -> None:
    """The attractor-recovery grid: systems x embeddings x methods x seeds."""
    from .benchmark import PRESETS, markdown_table, preset_with, run_benchmark, summarize

    preset = preset_with(
        PRESETS[args.preset], systems=args.systems and tuple(args.systems),
        embeddings=args.embeddings and tuple(args.embeddings),
        methods=args.methods and tuple(args.methods),
        seeds=args.seeds and tuple(range(args.seeds)), steps=args.steps,
        time_budget=args.budget)
    start = time.perf_counter()
    rows = run_benchmark(preset, out=args.out, workers=args.workers)
    print(markdown_table(summarize(rows)))
    print(f"{len(rows)} fits in {time.perf_counter() - start:.0f} s; wrote {args.out}/"
          "results.csv, summary.md and phase_*.png")


def _demo(args: argparse.Namespace) -> None:
    """The main job on the embedded default: Lorenz through 30 Poisson neurons."""
    from . import plots
    from .analysis import apply_affine, fit_affine
    from .config import RunConfig
    from .data import synthetic
    from .inference import posterior

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = synthetic.lorenz(n_trials=args.trials, n_bins=100, n_neurons=30, seed=args.seed)
    data = data.with_split(valid=0.15, test=0.15, seed=args.seed)
    save(data, out / "lorenz.npz")
    print(f"simulated {data}")
    config = RunConfig.from_sources(args.config, args.set, steps=args.steps,
                                    time_budget=args.budget, seed=args.seed)
    _use_threads(config)
    model, guide, result, metrics, train_latents, data = _fit_run(
        data, config, out, quiet=args.quiet, replace_other=True)  # the demo's own folder
    test = metrics["test"]
    ratio = test["bits_per_spike"] / test["true_bits_per_spike"]
    print(f"bits per spike: {test['bits_per_spike']:.3f} of the true rates' "
          f"{test['true_bits_per_spike']:.3f} ({ratio:.0%})")

    train, held = data.select("train"), data.select("test")
    post = posterior(model, guide, held, num_samples=args.num_samples,
                     refine_steps=config.refine_steps)
    post.to_inference_data(elbo="Trace_ELBO", guide_name=config.guide).to_netcdf(
        out / "posterior.nc")
    affine = fit_affine(train_latents, train.truth.latents)
    aligned = apply_affine(post.draws["latents"], affine)
    figures = {
        "latents.png": plots.plot_latents(held.time, aligned, held.truth.latents),
        "rates.png": plots.plot_rates(held.time, post.mean("rates"), held.spikes,
                                      held.truth.rates),
        "loss.png": plots.plot_loss(result.losses, result.valid),
    }
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110)
    table = _calibration(model, guide, train, held, num_samples=args.num_samples,
                         refine_steps=config.refine_steps, levels=(0.5, 0.9), post=post,
                         train_latents=train_latents)
    for name, curve in table.items():
        print(f"true {name} inside the 50% posterior interval: {curve[0.5]:.0%}, the 90% "
              f"interval: {curve[0.9]:.0%}")
    print(f"wrote {', '.join(sorted(figures))}, posterior.nc, checkpoint.pt, model.pt to {out}")


def _evaluate(args: argparse.Namespace) -> None:
    from .inference import MEAN_SAMPLES, evaluate

    config, model, guide, data = _load_run(Path(args.run_dir), _load_data(args),
                                           args.model_class)
    train, split = _split_of(data, "train"), _split_of(data, args.split)
    refine_steps = _refine_steps(args, config)
    scores = {args.split: evaluate(model, guide, train, split,
                                   num_samples=MEAN_SAMPLES if args.num_samples is None
                                   else args.num_samples,
                                   refine_steps=refine_steps, forward_bins=args.forward_bins)}
    if split.truth is not None and args.coverage_samples:
        _write_reliability(model, guide, train, split, Path(args.run_dir), args.split,
                           num_samples=args.coverage_samples, refine_steps=refine_steps)
    _print_table(scores)
    print(json.dumps(scores))  # the last line: the scores for scripts


def _calibration(model, guide, train, held, *, num_samples, refine_steps, levels, post=None,
                 train_latents=None):
    """``analysis.reliability`` of the posterior of ``held`` against its ground truth."""
    from .analysis import reliability
    from .inference import posterior, posterior_means

    post = post or posterior(model, guide, held, num_samples=num_samples,
                             refine_steps=refine_steps)
    truth = held.truth
    rates = None if truth.rates is None else (post.draws["rates"], truth.rates)
    latents = None
    if truth.latents is not None and train.truth is not None:
        if train_latents is None:
            train_latents = posterior_means(model, guide, train, refine_steps=refine_steps)[0]
        latents = (post.draws["latents"], truth.latents, train_latents, train.truth.latents)
    return reliability(rates, latents, levels)


def _write_reliability(model, guide, train, held, run_dir: Path, split: str, *, num_samples,
                       refine_steps) -> None:
    """reliability_SPLIT.json and .png in the run folder: nominal against empirical coverage."""
    from . import plots, runs
    from .analysis import LEVELS

    table = _calibration(model, guide, train, held, num_samples=num_samples,
                         refine_steps=refine_steps, levels=LEVELS)
    runs.write_json(run_dir / f"reliability_{split}.json",
                    {name: {str(k): v for k, v in curve.items()} for name, curve in table.items()})
    runs.save_figure(plots.plot_reliability(table), run_dir / f"reliability_{split}.png",
                     dpi=120)
    for name, curve in table.items():
        print(f"{name}: truth inside the 50% interval {curve[0.5]:.0%}, the 90% interval "
              f"{curve[0.9]:.0%} (calibrated: 50%, 90%)")
    print(f"wrote reliability_{split}.json and .png to {run_dir}")


def _compare(args: argparse.Namespace) -> None:
    """Held-out evidence of several runs on the same trials, ranked by ArviZ."""
    import arviz as az

    from . import runs
    from .inference import heldout_evidence

    data = _load_data(args)
    names = [Path(r).name or str(r) for r in args.runs]
    if len(set(names)) != len(names):
        names = [str(r) for r in args.runs]
    evidence, trial_ids = {}, None
    for name, run_dir in zip(names, args.runs):
        config, model, guide, run_data = _load_run(Path(run_dir), data, args.model_class)
        train, held = _split_of(run_data, "train"), _split_of(run_data, args.split)
        if trial_ids is not None and not np.array_equal(held.trial_ids, trial_ids):
            raise ValueError(f"runs: {run_dir} has other {args.split} trials than {args.runs[0]};"
                             " compare runs fitted on the same split")
        trial_ids = held.trial_ids
        evidence[name] = heldout_evidence(model, guide, train, held,
                                          num_particles=args.num_particles,
                                          refine_steps=_refine_steps(args, config),
                                          device=config.device)
    elpd = {n: e.to_elpd_data(trial_ids, num_particles=args.num_particles)
            for n, e in evidence.items()}
    # stacking would exponentiate whole-trial log densities (about -1e3) and underflow
    table = az.compare(elpd, method="BB-pseudo-BMA", seed=0)
    print(table.to_string())
    best = table.index[0]
    for name in table.index[1:]:
        diff, se = evidence[best].compare(evidence[name])
        print(f"{best} over {name}: {diff:.2f} +- {se:.2f} nats per {args.split} trial "
              f"({diff / se if se > 0 else float('inf'):.1f} standard errors)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv")
    runs.save_figure(az.plot_compare(table).figure, out / "compare.png", dpi=120)
    print(f"wrote compare.csv and compare.png to {out}")


def _refine_steps(args: argparse.Namespace, config) -> int:
    return config.refine_steps if args.refine_steps is None else args.refine_steps


def _print_table(metrics: dict[str, dict[str, float]]) -> None:
    for split, scores in metrics.items():
        for name, value in scores.items():
            print(f"  {split:>5}  {name:<28} {value: .4f}")


REFINE_HELP = ("per-trial posterior refinement steps after the guide (default: the run's "
               "refine_steps; 0: the guide's posterior as is)")


def build_parser() -> argparse.ArgumentParser:
    from .data import synthetic

    parser = argparse.ArgumentParser(prog="pyrodyn", description=__doc__.splitlines()[0])
    parser.add_argument("--traceback", action="store_true", help="show the full trace on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("simulate", help="write a synthetic data set with ground truth")
    sim.add_argument("system", choices=sorted(synthetic.GENERATORS))
    sim.add_argument("--out", required=True, help="output file (.npz or .h5)")
    sim.add_argument("--n-trials", type=int, default=200)
    sim.add_argument("--n-bins", type=int, default=100)
    sim.add_argument("--n-neurons", type=int, default=30, help="neurons (per area)")
    sim.add_argument("--dt", type=float, default=0.01, help="bin width in seconds")
    sim.add_argument("--mean-rate", type=float, default=20.0, help="mean rate in Hz")
    sim.add_argument("--gain", type=float, default=1.0, help="spread of the log-rates")
    sim.add_argument("--embedding", choices=synthetic.EMBEDDINGS, default="linear")
    sim.add_argument("--valid", type=float, default=0.2, help="fraction of validation trials")
    sim.add_argument("--test", type=float, default=0.2, help="fraction of test trials")
    sim.add_argument("--heldout", type=int, default=0, help="neurons held out for co-bps")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(run=_simulate)

    fit = commands.add_parser("fit", help="fit a model to a data file (its train split)")
    fit.add_argument("data", help=".npz, .h5 (pyrodyn or lfads-torch layout) or .nwb")
    fit.add_argument("--out", required=True, help="run directory to write")
    fit.add_argument("--config", help="YAML file of RunConfig options")
    fit.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                     help="override options (--set a=1 b=2, or repeated)")
    fit.add_argument("--model", choices=["latent-ode", "multi-area"],
                     help="multi-area: one latent ODE per area of the data's area labels")
    fit.add_argument("--latent-dim", help="latent dimension (per area if multi-area), or "
                                         "auto: chosen from 1-8 by held-out evidence "
                                         "(pyrodyn select)")
    fit.add_argument("--readout", choices=list(READOUTS))
    fit.add_argument("--guide", choices=["normal", "flow", "map", "per_trial_normal",
                                         "per_trial_map"])
    fit.add_argument("--steps", type=int, help="optimizer steps (default: planned from the "
                                               "trials' length and neurons, 3000 for 100 bins "
                                               "of up to 30 neurons)")
    fit.add_argument("--device")
    fit.add_argument("--seed", type=int)
    fit.add_argument("--budget", type=float,
                     help="seconds of fitting: the schedule runs on the clock and ends "
                          "annealed at the budget (with --latent-dim auto: for the whole "
                          "ladder)")
    fit.add_argument("--nproc", type=int,
                     help="data-parallel over N processes (torchrun; gloo on CPU, NCCL on "
                          "GPU): each step's minibatch is shared, the step is the same")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.add_argument("--overwrite", action="store_true",
                     help="replace a fit of other data or options in --out (default: refuse; "
                          "the same data and options resume)")
    _add_data_options(fit)
    fit.set_defaults(run=_fit)

    sel = commands.add_parser("select", help="choose the latent dimensionality and the "
                                             "readout by held-out evidence")
    sel.add_argument("data", help=".npz, .h5 or .nwb (its valid split scores the candidates)")
    sel.add_argument("--out", required=True, help="folder for selection.csv/.md/.png and "
                                                  "selected.yaml")
    sel.add_argument("--latent-dims", default="1-8", help="e.g. 1-8 or 2,3,5 (default 1-8)")
    sel.add_argument("--readouts",
                     help="comma-separated, e.g. affine,plane,flow (default: the config's "
                          "readout, the one a plain fit uses)")
    sel.add_argument("--budget", type=float, help="seconds of fitting for the whole ladder "
                                                  "and the refits (default: the recipe for "
                                                  "each)")
    sel.add_argument("--refits", type=int, default=1,
                     help="fits of the best model with other seeds; their spread widens the "
                          "tolerance (default 1; 0: trials' spread only)")
    _add_search_options(sel)
    sel.set_defaults(run=_select)

    tun = commands.add_parser("tune", help="search the recipe's options by held-out evidence "
                                           "(Optuna or Ray PBT; resumes after an "
                                           "interruption)")
    tun.add_argument("data", help=".npz, .h5 (pyrodyn or lfads-torch layout) or .nwb")
    tun.add_argument("--out", required=True, help="folder for study.db, trials.csv, tune.png "
                                                  "and best.yaml")
    tun.add_argument("--budget", type=float, required=True,
                     help="seconds of fitting for the whole study, shared by the trials")
    tun.add_argument("--trials", type=int, help="trials in all (default: one per 2 minutes)")
    tun.add_argument("--backend", choices=("optuna", "ray"), default="optuna",
                     help="optuna: trials one after another with pruning (default); ray: "
                          "population-based training on Ray Tune (pyrodyn[ray])")
    tun.add_argument("--population", type=int, default=4, help="ray: members (default 4)")
    tun.add_argument("--generations", type=int, default=4,
                     help="ray: exploit/explore rounds per member (default 4)")
    tun.add_argument("--cpus", type=int, help="ray: CPUs of the local Ray (default: all; "
                                              "ignored on a running cluster)")
    _add_search_options(tun)
    tun.set_defaults(run=_tune)

    demo = commands.add_parser("demo", help="simulate Lorenz, fit, score against the truth, "
                                             "write InferenceData, plots and the checkpoint")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--trials", type=int, default=1000)
    demo.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    demo.add_argument("--budget", type=float, default=540.0, help="seconds of fitting")
    demo.add_argument("--num-samples", type=int, default=50)
    demo.add_argument("--config", help="YAML file of RunConfig options")
    demo.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser("benchmark", help="attractor-recovery benchmark: systems x "
                                                  "methods -> table (CSV, Markdown) and plots")
    bench.add_argument("--preset", choices=["tiny", "small", "full"], default="small")
    bench.add_argument("--out", default="benchmark_out")
    bench.add_argument("--systems", nargs="+", help="subset of the preset's systems")
    bench.add_argument("--embeddings", nargs="+", choices=["linear", "nonlinear"])
    bench.add_argument("--methods", nargs="+",
                       choices=["node_flow", "node_plane", "node_affine", "gru"])
    bench.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    bench.add_argument("--steps", type=int, help="steps per fit (default: the preset's; 1400 "
                                                 "or more keep the recipe's schedules)")
    bench.add_argument("--budget", type=float, help="seconds of fitting per cell")
    bench.add_argument("--workers", type=int, default=1, help="parallel fits (1 thread each)")
    bench.set_defaults(run=_benchmark)

    post = commands.add_parser("posterior", help="posterior draws of a split as ArviZ netCDF")
    post.add_argument("run_dir")
    post.add_argument("data")
    post.add_argument("--out", required=True, help="output .nc file")
    post.add_argument("--split", default="test", choices=["train", "valid", "test"])
    post.add_argument("--num-samples", type=int, default=100)
    post.add_argument("--refine-steps", type=int, help=REFINE_HELP)
    _add_run_options(post)
    post.set_defaults(run=_posterior)

    cmp = commands.add_parser("compare", help="rank fitted runs by held-out evidence on the "
                                              "same trials (ArviZ compare)")
    cmp.add_argument("runs", nargs="+", help="two or more run folders")
    cmp.add_argument("data", help="the data file the runs were fitted on")
    cmp.add_argument("--out", required=True, help="folder for compare.csv and compare.png")
    cmp.add_argument("--split", default="test", choices=["valid", "test"])
    cmp.add_argument("--num-particles", type=int, default=64,
                     help="importance samples per trial")
    cmp.add_argument("--refine-steps", type=int, help=REFINE_HELP)
    _add_run_options(cmp)
    cmp.set_defaults(run=_compare)

    ev = commands.add_parser("evaluate", help="score a fitted run on a split of a data file")
    ev.add_argument("run_dir")
    ev.add_argument("data")
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ev.add_argument("--num-samples", type=int,
                    help="posterior draws averaged into the scored means (default: 50)")
    ev.add_argument("--refine-steps", type=int, help=REFINE_HELP)
    ev.add_argument("--forward-bins", type=int, default=0,
                    help="also score the last K bins of each trial predicted from the bins "
                         "before them (fp_bps; 0: none)")
    ev.add_argument("--coverage-samples", type=int, default=100,
                    help="posterior draws for the reliability plot written when the data have "
                         "ground truth (0: none)")
    _add_run_options(ev)
    ev.set_defaults(run=_evaluate)
    return parser


def _log_to_stderr(quiet: bool) -> logging.Handler:
    """pyrodyn's progress lines and warnings as plain lines on stderr (batch jobs, nohup)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("pyrodyn")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = _log_to_stderr(getattr(args, "quiet", False))
    try:
        with torch_threads(None):  # commands may set the recipe's count: it is given back
            return _run(args)
    finally:
        logging.getLogger("pyrodyn").removeHandler(handler)


def _run(args: argparse.Namespace) -> int:
    try:
        args.run(args)
    except KeyboardInterrupt as error:  # SIGINT or SIGTERM: the fit saved its checkpoint
        if args.traceback:
            traceback.print_exc()
        print(f"pyrodyn {args.command}: {error or 'interrupted'}", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, FloatingPointError) as error:
        if args.traceback:
            traceback.print_exc()
        print(f"pyrodyn {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
