"""Time and peak memory of ``posterior_means`` (what ``pyrodyn fit`` and ``evaluate`` score
with), drawing only the latents and rates against drawing every site as ``posterior`` does
(predictive counts and log-likelihoods included), each measurement in its own process,
alternating, the medians of ``--repeats``. The recipe's model (``RunConfig`` defaults), as
built, on synthetic Lorenz trials; 50 draws per trial as the recipe's means.

    .venv/bin/python bench/posterior_means.py
    .venv/bin/python bench/posterior_means.py --neurons 30 --refine-steps 100
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(mode: str, trials: int, neurons: int, refine_steps: int) -> dict:
    import numpy as np
    import torch

    from pyrodyn.config import RunConfig, build_run
    from pyrodyn.data import synthetic
    from pyrodyn.inference.posterior import MEAN_SAMPLES, iter_posterior
    from pyrodyn.models import sites

    torch.set_num_threads(1)
    data = synthetic.lorenz(n_trials=trials, n_bins=100, n_neurons=neurons, seed=0)
    model, guide = build_run(RunConfig(), data)
    names = (sites.LATENTS, sites.RATES) if mode == "latents and rates" else None
    start = time.perf_counter()
    rates = [part.mean(sites.RATES) for part in iter_posterior(
        model, guide, data, num_samples=MEAN_SAMPLES, refine_steps=refine_steps, names=names)]
    seconds = time.perf_counter() - start
    return dict(mode=mode, seconds=seconds, mean_rate=float(np.concatenate(rates).mean()),
                peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=256, help="one batch of the posterior")
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--refine-steps", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.trials, args.neurons, args.refine_steps)))
        return {}
    rows: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for mode in ("every site", "latents and rates"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--trials", str(args.trials),
                 "--neurons", str(args.neurons), "--refine-steps", str(args.refine_steps)],
                check=True, capture_output=True, text=True).stdout
            rows.setdefault(mode, []).append(json.loads(out.strip().splitlines()[-1]))
    summary = {mode: {key: sorted(r[key] for r in runs)[len(runs) // 2]
                      for key in ("seconds", "peak_mb")} for mode, runs in rows.items()}
    summary["time_ratio"] = (summary["latents and rates"]["seconds"]
                             / summary["every site"]["seconds"])
    summary["same_means"] = len({r["mean_rate"] for runs in rows.values() for r in runs}) == 1
    print(json.dumps(dict(trials=args.trials, neurons=args.neurons,
                          refine_steps=args.refine_steps, **summary)))
    return summary


if __name__ == "__main__":
    main()
