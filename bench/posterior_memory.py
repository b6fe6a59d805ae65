"""Peak memory of ``pyrodyn posterior``'s streaming writer against the in-memory posterior, at
growing trial counts (100 bins x 100 neurons x 100 draws by default): the streamed peak stays
flat, the in-memory one grows with the trials. Each measurement runs in its own process.
``--cli`` measures the command itself on a data file of counts (uint8) and a small fitted run.

    .venv/bin/python bench/posterior_memory.py --trials 250 1000
    .venv/bin/python bench/posterior_memory.py --cli --trials 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def measure(kind: str, trials: int, bins: int, neurons: int, draws: int) -> dict:
    import torch

    from pyrodyn.data import synthetic
    from pyrodyn.inference import AmortizedNormalGuide, posterior, write_posterior
    from pyrodyn.models import LatentODEModel

    torch.set_num_threads(1)
    data = synthetic.lorenz(n_trials=trials, n_bins=bins, n_neurons=neurons, seed=0)
    model = LatentODEModel(neurons, 3)
    guide = AmortizedNormalGuide(model)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        if kind == "streamed":
            write_posterior(f"{folder}/p.nc", model, guide, data, num_samples=draws)
        else:
            posterior(model, guide, data, num_samples=draws).to_inference_data().to_netcdf(
                f"{folder}/p.nc")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "trials": trials, "peak_mb": round(peak), "before_mb": round(before),
            "seconds": round(time.perf_counter() - start, 1)}


def measure_cli(trials: int, bins: int, neurons: int, draws: int) -> dict:
    """``pyrodyn posterior`` on ``trials`` test trials of a run fitted on 40 others."""
    import numpy as np

    from pyrodyn.data import SpikeData, save, synthetic

    folder = tempfile.mkdtemp(prefix="posterior_memory_")
    small = synthetic.lorenz(n_trials=40, n_bins=bins, n_neurons=neurons, seed=0)
    save(small.with_split(valid=0.2, test=0.2, seed=0), f"{folder}/small.npz")
    cli = [sys.executable, "-m", "pyrodyn.cli"]
    subprocess.run([*cli, "fit", f"{folder}/small.npz", "--out", f"{folder}/run", "--quiet",
                    "--set", "steps=2", "refine_steps=0"], check=True, capture_output=True)
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.2, (trials + 10, bins, neurons)).astype(np.uint8)
    split = np.array(["train"] * 10 + ["test"] * trials)
    save(SpikeData(counts, dt=0.01, split=split), f"{folder}/big.npz")
    del counts
    start = time.perf_counter()
    subprocess.run([*cli, "posterior", f"{folder}/run", f"{folder}/big.npz", "--out",
                    f"{folder}/big.nc", "--num-samples", str(draws), "--refine-steps", "0"],
                   check=True, capture_output=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    import os
    import shutil

    size = os.path.getsize(f"{folder}/big.nc") / 2**30
    shutil.rmtree(folder)
    return {"kind": "cli", "trials": trials, "peak_mb": round(peak), "file_gb": round(size, 1),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--in-memory-up-to", type=int, default=250,
                        help="largest trial count to also measure in memory")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # kind trials, in a child
    parser.add_argument("--cli", action="store_true", help="measure `pyrodyn posterior`")
    args = parser.parse_args(argv)
    if args.cli:
        rows = [measure_cli(t, args.bins, args.neurons, args.draws) for t in args.trials]
        for row in rows:
            print(row, flush=True)
        return rows
    if args.one:
        row = measure(args.one[0], int(args.one[1]), args.bins, args.neurons, args.draws)
        print(json.dumps(row))
        return [row]
    rows = []
    for trials in args.trials:
        kinds = ["streamed"] + (["in_memory"] if trials <= args.in_memory_up_to else [])
        for kind in kinds:
            out = subprocess.run([sys.executable, __file__, "--one", kind, str(trials),
                                  "--bins", str(args.bins), "--neurons", str(args.neurons),
                                  "--draws", str(args.draws)], capture_output=True, text=True,
                                 check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
