"""Time of per-trial refinement with and without the path's Laplace spread
(``refine(..., laplace=True)``, the default, against ``laplace=False``), alternating in one
process, the medians of ``--repeats``. The recipe's model (``RunConfig`` defaults, as built)
on synthetic trials of 100 bins: Lorenz for one area, two_area for ``--model multi_area``
(``latent_dim`` per area). Prints one JSON line per measurement and the median ratio.

    .venv/bin/python bench/path_laplace.py
    .venv/bin/python bench/path_laplace.py --model multi_area --trials 75
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="latent_ode", choices=["latent_ode", "multi_area"])
    parser.add_argument("--trials", type=int, default=128)
    parser.add_argument("--neurons", type=int, default=30)
    parser.add_argument("--refine-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import torch

    from pyrodyn.config import RunConfig, build_run
    from pyrodyn.data import synthetic
    from pyrodyn.inference.refine import refine
    from pyrodyn.inference.traces import model_args

    torch.set_num_threads(1)
    if args.model == "multi_area":
        data = synthetic.two_area(n_trials=args.trials, n_bins=100, n_neurons=args.neurons,
                                  seed=0)
    else:
        data = synthetic.lorenz(n_trials=args.trials, n_bins=100, n_neurons=args.neurons, seed=0)
    model, guide = build_run(RunConfig(model=args.model), data)
    model.eval()
    guide.eval()
    kwargs = model_args(data.to_batch(np.arange(data.n_trials)), data.n_trials)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for laplace in (False, True):
            start = time.perf_counter()
            local = refine(model, guide, kwargs, steps=args.refine_steps, laplace=laplace)
            seconds = time.perf_counter() - start
            times[laplace].append(seconds)
            print(json.dumps(dict(laplace=laplace, seconds=round(seconds, 3),
                                  paths_with_laplace=len(local.laplace))), flush=True)
    with_laplace, without = statistics.median(times[True]), statistics.median(times[False])
    print(f"{args.model}, {args.trials} trials x 100 bins, {args.refine_steps} refinement steps: "
          f"median {with_laplace:.2f} s with the Laplace, {without:.2f} s without "
          f"({with_laplace / without:.2f}x)")


if __name__ == "__main__":
    main()
