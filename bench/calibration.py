"""Posterior calibration on held-out Lorenz trials: how often the truth lies in the 90% interval.

Fits the recipe (RunConfig defaults, with ``--set`` overrides) on the benchmark-(a) data, then
draws the posterior of the test trials, maps the latent draws into the truth's coordinates with
the affine map fit on the training trials' posterior means, and counts the (trial, bin, latent)
entries whose true value lies inside the equal-tailed 90% interval. Also prints the accuracy
figures of the same fit. Run from the repository root:

    .venv/bin/python bench/calibration.py
    .venv/bin/python bench/calibration.py --set inferred_input_dim=3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pyrodyn.analysis import apply_affine, fit_affine, interval_coverage
from pyrodyn.config import RunConfig, build_run
from pyrodyn.data import synthetic
from pyrodyn.inference import evaluate, fit, posterior


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds of fitting")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = synthetic.lorenz(n_trials=args.trials, n_bins=100, n_neurons=30, seed=args.seed)
    data = data.with_split(valid=0.15, test=0.15, seed=args.seed)
    train, valid, test = data.select("train"), data.select("valid"), data.select("test")
    config = RunConfig.from_sources(overrides=args.set, time_budget=args.budget, seed=args.seed)
    model, guide = build_run(config, train)
    start = time.perf_counter()
    result = fit(model, guide, train, valid=valid, progress=False,
                 options=config.fit_options())
    wall = time.perf_counter() - start
    refine = config.refine_steps
    scores = evaluate(model, guide, train, test, refine_steps=refine)
    affine = fit_affine(posterior(model, guide, train, num_samples=10, refine_steps=refine)
                        .mean("latents"), train.truth.latents)
    draws = apply_affine(posterior(model, guide, test, num_samples=args.num_samples,
                                   refine_steps=refine).draws["latents"], affine)
    row = dict(overrides=args.set, steps=result.steps, fit_seconds=round(wall, 1),
               coverage_90=interval_coverage(draws, test.truth.latents),
               mean_interval_width=float(np.mean(np.diff(
                   np.quantile(draws, [0.05, 0.95], axis=0), axis=0))),
               bps_ratio=scores["bits_per_spike"] / scores["true_bits_per_spike"], **scores)
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
