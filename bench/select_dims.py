"""Does ``pyrodyn select`` find the true latent dimensionality from spikes alone?

For each system: simulate (linear embedding, seed 0, 70/15/15 split), run ``select`` over a
ladder of latent dimensionalities with the given readouts and budget, print the table and
the chosen dimensionality against the true one. Run from the repository root:

    .venv/bin/python bench/select_dims.py --systems limit_cycle ring_attractor \\
        line_attractor --dims 1-4 --readouts plane --budget 600
    .venv/bin/python bench/select_dims.py --systems lorenz flip_flop --dims 1-4 \\
        --readouts plane --budget 600

The budget is shared by the ladder and ``--refits`` (default 1), each fit a planned budget
whose schedule runs on the clock (README (f)); ``--budget 0`` runs each fit's planned steps.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pyrodyn.config import RunConfig
from pyrodyn.data import synthetic
from pyrodyn.selection import parse_latent_dims, select


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["lorenz", "limit_cycle",
                                                         "ring_attractor", "line_attractor",
                                                         "flip_flop"])
    parser.add_argument("--dims", default="1-4")
    parser.add_argument("--readouts", default="affine")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds of fitting per system (the whole ladder); 0: each fit "
                             "runs its planned steps, so the same command decides the same way")
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--neurons", type=int, default=30)
    parser.add_argument("--refits", type=int, default=1,
                        help="fits of the best model with other seeds (select's tolerance)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = RunConfig.from_sources(overrides=args.set)
    rows = []
    for system in args.systems:
        data = synthetic.GENERATORS[system](n_trials=args.trials, n_bins=args.bins,
                                            n_neurons=args.neurons, seed=0)
        data = data.with_split(valid=0.15, test=0.15, seed=0)
        start = time.perf_counter()
        selection = select(data, latent_dims=parse_latent_dims(args.dims),
                           readouts=args.readouts.split(","), config=config,
                           budget=args.budget or None, refits=args.refits)
        true_dim = data.truth.latents.shape[-1]
        print(f"## {system} (true dimensionality {true_dim})\n\n{selection.markdown()}")
        row = dict(system=system, true_dim=true_dim, chosen_dim=selection.chosen.latent_dim,
                   chosen_readout=selection.chosen.readout, best=selection.best.label,
                   refit_spread=selection.refit_spread,
                   seconds=round(time.perf_counter() - start), table=selection.rows())
        print(f"{system}: chose {row['chosen_dim']} ({row['chosen_readout']}), true "
              f"{true_dim}, best {row['best']}, {row['seconds']} s\n", flush=True)
        rows.append(row)
    print(f"found the true dimensionality in {sum(r['chosen_dim'] == r['true_dim'] for r in rows)}"
          f" of {len(rows)} systems")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)
    return rows


if __name__ == "__main__":
    main()
