"""Coverage as a user measures it: `pyrodyn posterior` files, read with ArviZ, scored by hand.

Runs ``pyrodyn posterior RUN DATA --split test`` (and ``--split train`` for the affine map) and
counts, with numpy alone, the entries whose truth lies inside the equal-tailed 50% and 90%
intervals of the draws: the true rates against the "rates" draws, the true latents against the
"latents" draws mapped by the least-squares affine map from the training trials' posterior
means to their true latents. It shares no code with ``pyrodyn evaluate``'s reliability table,
so the two check each other. DATA must hold the truth (a ``pyrodyn simulate`` file) and its
split. Run from the repository root after ``pyrodyn fit DATA --out RUN``:

    .venv/bin/python bench/cli_coverage.py RUN DATA [--num-samples 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import arviz as az
import numpy as np


def draws(idata, name: str) -> np.ndarray:
    """(sample, trial, ...) from the file's (chain, draw, trial, ...)."""
    values = idata.posterior[name].values
    return values.reshape((-1,) + values.shape[2:])


def inside(samples: np.ndarray, truth: np.ndarray, level: float) -> float:
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(((truth >= low) & (truth <= high)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--keep", help="folder for the posterior files (default: temporary)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, samples in (("test", args.num_samples), ("train", 50)):
        files[split] = folder / f"{split}.nc"
        command = [str(Path(sys.executable).with_name("pyrodyn")), "posterior", args.run,
                   args.data, "--split", split, "--num-samples", str(samples),
                   "--out", str(files[split])]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    data = np.load(args.data)
    split = data["split"].astype(str)
    test, train = az.from_netcdf(files["test"]), az.from_netcdf(files["train"])
    means = draws(train, "latents").mean(0)
    true_train = data["latents"][split == "train"]
    features = np.c_[means.reshape(-1, means.shape[-1]), np.ones(means[..., 0].size)]
    affine, *_ = np.linalg.lstsq(features, true_train.reshape(-1, true_train.shape[-1]),
                                 rcond=None)
    mapped = draws(test, "latents") @ affine[:-1] + affine[-1]
    for name, samples, truth in (("rates", draws(test, "rates"), data["rates"]),
                                 ("latents", mapped, data["latents"])):
        truth = truth[split == "test"]
        print(f"{name}: truth inside the 50% interval {inside(samples, truth, 0.5):.1%}, "
              f"the 90% interval {inside(samples, truth, 0.9):.1%}")


if __name__ == "__main__":
    main()
