"""Posterior calibration on held-out Lorenz trials: how often the truth lies in the intervals.

Fits the recipe (RunConfig defaults, with ``--set`` overrides) on the benchmark-(a) data, then
draws the posterior of the test trials and counts the entries whose truth lies inside the
equal-tailed 50% and 90% intervals (``pyrodyn.analysis.coverage``): the true rates against the
rate draws, and the true latents against the latent draws mapped into the truth's coordinates by
the affine map fit on the training trials' posterior means. Also prints the accuracy figures of
the same fit, with forward prediction (``fp_bps``: the last 20 bins of each test trial predicted
from the 80 before them). Where the recipe puts a Laplace posterior on the readout
(``parameter_prior``, by default on one-area models), the rates' coverage given the fitted
weights is printed beside it (``*_fitted_weights``). Run from the repository root:

    .venv/bin/python bench/calibration.py
    .venv/bin/python bench/calibration.py --set diffusion=0.3
    .venv/bin/python bench/calibration.py --neurons 8 --set diffusion=0.3
    .venv/bin/python bench/calibration.py --set noise_tau=5
    .venv/bin/python bench/calibration.py --set noise_df=4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pyrodyn.analysis import apply_affine, coverage, fit_affine
from pyrodyn.config import RunConfig, attach_parameter_posterior, build_run
from pyrodyn.data import synthetic
from pyrodyn.inference import evaluate, fit, posterior, posterior_means


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="lorenz", choices=sorted(synthetic.GENERATORS))
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--neurons", type=int, default=30)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds of fitting")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--heldout", type=int, default=0,
                        help="neurons held out from the encoder (co-bps)")
    parser.add_argument("--forward-bins", type=int, default=20,
                        help="bins predicted from the ones before them (fp-bps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = synthetic.GENERATORS[args.system](n_trials=args.trials, n_bins=100,
                                             n_neurons=args.neurons, seed=args.seed)
    data = data.with_split(valid=0.15, test=0.15, seed=args.seed)
    if args.heldout:
        data = data.with_heldout_neurons(args.heldout, seed=args.seed)
    train, valid, test = data.select("train"), data.select("valid"), data.select("test")
    config = RunConfig.from_sources(overrides=args.set, time_budget=args.budget, seed=args.seed)
    model, guide = build_run(config, train)
    start = time.perf_counter()
    result = fit(model, guide, train, valid=valid, progress=False,
                 options=config.fit_options())
    wall = time.perf_counter() - start
    start = time.perf_counter()
    attach_parameter_posterior(config, model, guide, train)
    laplace_seconds = time.perf_counter() - start
    refine = config.refine_steps
    scores = evaluate(model, guide, train, test, refine_steps=refine,
                      forward_bins=args.forward_bins)
    train_means = posterior_means(model, guide, train, refine_steps=refine)[0]
    post = posterior(model, guide, test, num_samples=args.num_samples, refine_steps=refine)
    levels = (0.5, 0.9)
    rates = coverage(post.draws["rates"], test.truth.rates, levels)
    # latent_coverage's alignment, done once here because the width needs it too
    aligned = apply_affine(post.draws["latents"], fit_affine(train_means, train.truth.latents))
    latents = coverage(aligned, test.truth.latents, levels)
    width = np.diff(np.quantile(aligned, [0.05, 0.95], axis=0), axis=0).mean()
    row = dict(system=args.system, neurons=args.neurons, overrides=args.set, steps=result.steps,
               latent_interval_width_90=float(width),
               fit_seconds=round(wall, 1), laplace_seconds=round(laplace_seconds, 1),
               **{f"rates_coverage_{int(100 * k)}": v for k, v in rates.items()},
               **{f"latents_coverage_{int(100 * k)}": v for k, v in latents.items()},
               bps_ratio=scores["bits_per_spike"] / scores["true_bits_per_spike"],
               fp_bps_ratio=scores["fp_bps"] / scores["true_fp_bps"], **scores)
    if model.parameter_posterior is not None:  # what the weights' posterior adds
        fitted = posterior(model, guide, test, num_samples=args.num_samples, refine_steps=refine,
                           parameter_draws=False)
        row.update({f"rates_coverage_{int(100 * k)}_fitted_weights": v
                    for k, v in coverage(fitted.draws["rates"], test.truth.rates, levels).items()})
    if args.heldout:  # the true rates' co-bps is the ceiling of the model's
        row["co_bps_ratio"] = scores["co_bps"] / scores["true_co_bps"]
    diffusion = getattr(model, "diffusion", None)
    if diffusion is not None:
        row["diffusion"] = diffusion.sigma().tolist()
        if diffusion.log_tau is not None:
            row["noise_tau"] = diffusion.log_tau.exp().tolist()
        if diffusion.df() is not None:
            row["noise_df"] = diffusion.df().tolist()
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
