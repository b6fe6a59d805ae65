"""Benchmark (c): training throughput (trial-bins per second) and peak memory of one SVI step.

Reference configuration: latent-ODE model (MLP field 128, flow readout), amortized Normal
guide, Poisson likelihood, 64 trials x 100 bins x 30 neurons, RK4 on the bin grid. The
reference is timed for 1 and 2 torch threads and fixed-step against adaptive (dopri5) solving,
then bins (50-400), neurons (10-1000) and trials per batch (16-256) are varied one at a time.
Each configuration runs in a fresh process so that its peak resident memory is its own; times
are medians of repeated steps in that process. Run from the repository root:

    .venv/bin/python bench/throughput.py [--repeats 5] [--quick]
    .venv/bin/python bench/throughput.py --recipe     # today's recipe (issue 17's baseline)
    .venv/bin/python bench/throughput.py --recipe --baseline /tmp/base   # against another tree

``--recipe`` times one training step of ``fit`` itself (its minibatch, loss, backward pass,
clipping, Adam and schedule) on ``RunConfig()``'s own model and guide (stochastic path, plane
readout, midpoint) at issue 17's shape: 160 Lorenz trials of 100 bins x 30 neurons in one
batch, at the full trial length (the curriculum's last horizon), for 1 and 2 threads.
``--baseline DIR`` also times a checkout of another commit (``git worktree add DIR REV``),
interleaved with this one in the same run, one thread each, and prints the ratio of the two
medians: speed-ups are only meaningful measured side by side on this shared machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable

REFERENCE = dict(threads=1, solver="rk4", bins=100, neurons=30, trials=64)
RECIPE = dict(threads=1, solver="recipe", bins=100, neurons=30, trials=160, recipe=True)


def _median_time(step: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``step()`` after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _median_step(elbo, model, guide, optimizer, kwargs: dict, repeats: int) -> float:
    """Median seconds of one SVI step (loss, backward, Adam) after one warm-up step."""

    def step():
        loss = elbo.differentiable_loss(model, guide, **kwargs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _median_time(step, repeats)


def measure(config: dict, repeats: int) -> dict:
    import torch
    from pyro.infer import Trace_ELBO

    from pyrodyn.inference import build_guide
    from pyrodyn.models import LatentODEModel, ODESolver

    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    spikes = torch.poisson(torch.full((config["trials"], config["bins"], config["neurons"]), 0.2))
    model = LatentODEModel(config["neurons"], 3,
                           solver=ODESolver(config["solver"], step_size=0.1))
    guide = build_guide("normal", model)
    params = list(model.parameters()) + list(guide.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    elbo = Trace_ELBO()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    seconds = _median_step(elbo, model, guide, optimizer, dict(spikes=spikes), repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(config, ms_per_step=round(1000 * seconds, 1),
                trial_bins_per_s=round(config["trials"] * config["bins"] / seconds),
                peak_rss_mb=round(peak / 1024), step_growth_mb=round((peak - before) / 1024))


def measure_recipe(config: dict, repeats: int) -> dict:
    import torch

    from pyrodyn.config import RunConfig, build_run
    from pyrodyn.data import synthetic
    from pyrodyn.inference.svi import _Run

    torch.set_num_threads(config["threads"])
    data = synthetic.lorenz(n_trials=config["trials"], n_bins=config["bins"],
                            n_neurons=config["neurons"], seed=11)
    recipe = RunConfig()
    model, guide = build_run(recipe, data)
    options = recipe.fit_options().replace(batch_size=data.n_trials, curriculum=None)
    run = _Run(model, guide, data, None, options, optimizer=None, scheduler=None,
               checkpoint=None)
    steps = itertools.count()
    seconds = _median_time(lambda: run.step(next(steps)), repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(config, solver="recipe", ms_per_step=round(1000 * seconds, 1),
                trial_bins_per_s=round(config["trials"] * config["bins"] / seconds),
                peak_rss_mb=round(peak / 1024))


def _child(config, repeats, queue):
    if config.get("tree"):  # another checkout's pyrodyn, for a side-by-side baseline
        sys.path.insert(0, config["tree"])
    queue.put(measure_recipe(config, repeats) if config.get("recipe") else
              measure(config, repeats))


def run_isolated(config: dict, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(config, repeats, queue))
    process.start()
    row = queue.get()
    process.join()
    return row


def configurations(quick: bool) -> list[dict]:
    grid = [dict(REFERENCE), dict(REFERENCE, threads=2), dict(REFERENCE, solver="dopri5"),
            dict(REFERENCE, solver="midpoint")]
    bins = (50, 200) if quick else (50, 200, 400)
    neurons = (10, 300) if quick else (10, 100, 300, 1000)
    trials = (16, 256) if quick else (16, 128, 256)
    grid += [dict(REFERENCE, bins=b) for b in bins]
    grid += [dict(REFERENCE, neurons=n) for n in neurons]
    grid += [dict(REFERENCE, trials=t) for t in trials]
    return grid


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--recipe", action="store_true",
                        help="time fit's step on RunConfig()'s model and guide at issue 17's "
                             "shape")
    parser.add_argument("--baseline", metavar="DIR",
                        help="time the recipe here and in this checkout, interleaved, one "
                             "thread (implies --recipe)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --baseline: processes per tree")
    args = parser.parse_args(argv)
    rows = []
    header = f"{'tree':>8} {'threads':>7} {'solver':>8} {'bins':>5} {'neurons':>7} " \
             f"{'trials':>6} {'ms/step':>8} {'trial-bins/s':>12} {'peak MB':>8}"
    print(header)
    if args.baseline:
        grid = [dict(RECIPE, tree=tree) for _ in range(args.rounds)
                for tree in (None, args.baseline)]
    elif args.recipe:
        grid = [dict(RECIPE), dict(RECIPE, threads=2)]
    else:
        grid = configurations(args.quick)
    for config in grid:
        row = run_isolated(config, args.repeats)
        rows.append(row)
        print(f"{'baseline' if row.get('tree') else 'this':>8} {row['threads']:>7} "
              f"{row['solver']:>8} {row['bins']:>5} {row['neurons']:>7} {row['trials']:>6} "
              f"{row['ms_per_step']:>8} {row['trial_bins_per_s']:>12} {row['peak_rss_mb']:>8}",
              flush=True)
    reference = rows[0]["trial_bins_per_s"]
    if args.baseline:
        mine = statistics.median(r["ms_per_step"] for r in rows if not r.get("tree"))
        base = statistics.median(r["ms_per_step"] for r in rows if r.get("tree"))
        print(f"median ms/step: this {mine:.1f}, baseline {base:.1f}; "
              f"throughput ratio this / baseline: {base / mine:.2f}")
    elif args.recipe:
        print(f"ratio 2 threads / 1 thread: {rows[1]['trial_bins_per_s'] / reference:.2f}")
    else:
        print(f"ratio 2 threads / 1 thread: {rows[1]['trial_bins_per_s'] / reference:.2f}; "
              f"dopri5 / rk4: {rows[2]['trial_bins_per_s'] / reference:.2f}; "
              f"midpoint / rk4: {rows[3]['trial_bins_per_s'] / reference:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
