"""Benchmarks (a) and (b): accuracy and wall time on Lorenz data with known ground truth.

(a) log-linear embedding: bits per spike against the true rates', rate R2, state R2 both ways
(affine and nonlinear), held-out evidence (log p per test trial).
(b) nonlinear embedding: the injective flow readout against the affine readout, same seed/budget.

Every figure is scored on held-out test trials; the affine maps of state R2 are fit on the
training trials. Run from the repository root:

    .venv/bin/python bench/lorenz_accuracy.py --embedding linear --readouts flow
    .venv/bin/python bench/lorenz_accuracy.py --embedding nonlinear --readouts flow affine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from pyrodyn.config import RunConfig, build_run
from pyrodyn.data import synthetic
from pyrodyn.inference import evaluate, fit, heldout_evidence

# The recipe every run uses: pyrodyn's RunConfig defaults (ODIN-like curriculum over the
# horizon, MLP field with one hidden layer of 128, midpoint steps on the bin grid).
CONFIG = RunConfig()


def run(*, embedding: str, readout: str, guide: str, steps: int, budget: float, seed: int,
        n_trials: int, n_neurons: int, n_bins: int = 100, latent_dim: int = 3,
        base: RunConfig = CONFIG) -> dict:
    data = synthetic.lorenz(n_trials=n_trials, n_bins=n_bins, n_neurons=n_neurons,
                            embedding=embedding, seed=seed).with_split(valid=0.15, test=0.15,
                                                                       seed=seed)
    train, valid, test = data.select("train"), data.select("valid"), data.select("test")
    config = dataclasses.replace(base, readout=readout, guide=guide, latent_dim=latent_dim,
                                 seed=seed)
    model, posterior = build_run(config, train)
    start = time.perf_counter()
    result = fit(model, posterior, train, valid=valid, options=config.fit_options(),
                 steps=steps, time_budget=budget, seed=seed, progress=False)
    wall = time.perf_counter() - start
    scores = evaluate(model, posterior, train, test, refine_steps=config.refine_steps)
    # held-out evidence (what pyrodyn select compares): log p per test trial, its SE
    evidence = heldout_evidence(model, posterior, train, test, num_particles=32,
                                refine_steps=config.refine_steps).summary()
    scores.update(log_marginal=evidence["log_marginal"],
                  log_marginal_se=evidence["log_marginal_se"])
    return dict(embedding=embedding, readout=readout, guide=guide, seed=seed,
                steps=result.steps, best_step=result.best_step, fit_seconds=round(wall, 1),
                bps_ratio=scores["bits_per_spike"] / scores["true_bits_per_spike"],
                **scores)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedding", choices=synthetic.EMBEDDINGS, default="linear")
    parser.add_argument("--readouts", nargs="+", default=["flow"])
    parser.add_argument("--guide", default="normal")
    parser.add_argument("--steps", type=int, default=CONFIG.steps)
    parser.add_argument("--budget", type=float, default=570.0,
                        help="seconds of fitting (the acceptance allows 600)")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--neurons", type=int, default=30)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one RunConfig option of the recipe (repeatable)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for readout in args.readouts:
        row = run(embedding=args.embedding, readout=readout, guide=args.guide, steps=args.steps,
                  budget=args.budget, seed=args.seed, n_trials=args.trials,
                  n_neurons=args.neurons, n_bins=args.bins,
                  base=RunConfig.from_sources(overrides=args.set))
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
