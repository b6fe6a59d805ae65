"""What the Laplace posterior over channels and readout gains changes, on fitted runs.

For each ``pyrodyn fit`` run folder (with its data file), the test trials' posterior is drawn
twice from the same fit: with the fitted weights in every draw, and with one Laplace draw of
the channel and readout weights per draw (``pyrodyn.inference.laplace``, recomputed here so
runs fitted before it exist work too). Printed per run: the Laplace's cost, each channel's
strength with its 90% interval beside the true strength (0: absent), and the coverage of the
rates' and latents' 50% and 90% intervals. Run from the root:

    .venv/bin/python bench/parameter_uncertainty.py RUN_DIR DATA [RUN_DIR DATA ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pyrodyn import load
from pyrodyn.analysis import communication_summary, reliability, true_communication_strengths
from pyrodyn.cli import _load_run
from pyrodyn.inference import parameter_laplace, posterior, posterior_means
from pyrodyn.models import MultiAreaModel


def measure(run_dir: Path, data_path: Path, *, num_samples: int, prior_precision: float
            ) -> dict:
    config, model, guide, data = _load_run(run_dir, load(data_path))
    train, test = data.select("train"), data.select("test")
    start = time.perf_counter()
    laplace = parameter_laplace(model, guide, train, prior_precision=prior_precision,
                                seed=config.seed)
    row = {"run": str(run_dir), "laplace_seconds": round(time.perf_counter() - start, 1)}
    train_latents = posterior_means(model, guide, train, parameter_draws=False,
                                    refine_steps=config.refine_steps)[0]
    truth = test.truth
    for name, use in (("point", None), ("laplace", laplace)):
        model.parameter_posterior = use
        post = posterior(model, guide, test, num_samples=num_samples,
                         refine_steps=config.refine_steps)
        curves = reliability((post.draws["rates"], truth.rates),
                             (post.draws["latents"], truth.latents, train_latents,
                              train.truth.latents), (0.5, 0.9))
        row[name] = {"coverage": {k: {str(level): round(v, 3) for level, v in c.items()}
                                  for k, c in curves.items()}}
        if isinstance(model, MultiAreaModel):
            true = true_communication_strengths(test, model.areas)
            row[name]["channels"] = {
                k: {"strength": round(c.strength, 4),
                    "interval": [round(x, 4) for x in c.interval], "true": round(true[k], 4),
                    "identified": c.identified}
                for k, c in communication_summary(post).items()}
    return row


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="RUN_DIR DATA, repeated")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--prior-precision", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give RUN_DIR DATA pairs")
    torch.set_num_threads(args.threads)
    rows = []
    for run_dir, data_path in zip(args.pairs[::2], args.pairs[1::2]):
        rows.append(measure(Path(run_dir), Path(data_path), num_samples=args.num_samples,
                            prior_precision=args.prior_precision))
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
