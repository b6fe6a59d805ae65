"""Where the time of ``channel_scale_laplace`` goes, and how much its field directions depend on
the draws they are found from.

For a ``pyrodyn fit --model multi-area`` run, runs the three parts of the channels' scale
posterior as ``pyrodyn fit`` does (256 training trials, 16 refined path draws each) and prints
each part's seconds and every channel's scale sd:

1. the path draws (``posterior``);
2. the least favourable field directions, from ``FIELD_DRAWS`` draws (the default), or from
   each range of draws in ``--direction-draws`` (e.g. ``0:2 2:4 0:16``);
3. the scales' covariance by Louis' identity over every draw.

Run from the repository root:

    .venv/bin/python bench/channel_scales.py RUN DATA [--direction-draws 0:2 2:4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pyrodyn.cli import _load_run
from pyrodyn.data import load
from pyrodyn.inference import laplace
from pyrodyn.inference.posterior import posterior
from pyrodyn.models import sites
from pyrodyn.models.base import in_model_coordinates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--direction-draws", nargs="+", default=[f"0:{laplace.FIELD_DRAWS}"],
                        help="ranges of the 16 draws to find the field directions from")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, model, guide, data = _load_run(Path(args.run), load(args.data))
    train = data.select("train")
    trials = laplace._some_trials(guide, train.n_trials, 256, seed=0)
    subset = train.select(trials)
    inputs = None if subset.inputs is None else torch.as_tensor(subset.inputs)
    start = time.perf_counter()
    post = posterior(model, guide, subset, num_samples=16, seed=0,
                     refine_steps=config.refine_steps, parameter_draws=False,
                     names=(sites.LATENTS,))
    print(f"path draws: {time.perf_counter() - start:.1f} s")
    latents = in_model_coordinates(model, torch.as_tensor(post.draws[sites.LATENTS]))
    names, scale = list(model.field.channels), train.n_trials / trials.size
    print("channels:", " ".join(names))
    for draws in args.direction_draws:
        first, last = (int(x) for x in draws.split(":"))
        start = time.perf_counter()
        directions = laplace._least_favourable_directions(model, names, latents[first:last],
                                                          inputs, scale, 1.0)
        found = time.perf_counter() - start
        start = time.perf_counter()
        covariance = laplace._scale_covariance(model, names, latents, inputs, scale, 1.0,
                                               directions)
        taken = time.perf_counter() - start
        sd = np.sqrt(np.diag(covariance.double().cpu().numpy()))
        print(f"directions from draws {draws}: {found:.1f} s; Louis' step {taken:.1f} s; "
              f"scale sds {np.array2string(sd, precision=5)}")


if __name__ == "__main__":
    main()
