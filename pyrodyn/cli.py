"""The ``pyrodyn`` command line.

Errors print as one line (``--traceback`` shows the full trace).

Example:
    $ pyrodyn simulate lorenz --out lorenz.npz --n-trials 200 --seed 0
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _simulate(args: argparse.Namespace) -> None:
    from .data import synthetic

    data = synthetic.GENERATORS[args.system](
        n_trials=args.n_trials, n_bins=args.n_bins, n_neurons=args.n_neurons, dt=args.dt,
        mean_rate=args.mean_rate, gain=args.gain, embedding=args.embedding, seed=args.seed,
    )
    data = data.with_split(valid=args.valid, test=args.test, seed=args.seed)
    if args.heldout:
        data = data.with_heldout_neurons(args.heldout, seed=args.seed)
    data.save(args.out)
    print(f"wrote {args.out}: {data}")


def build_parser() -> argparse.ArgumentParser:
    from .data import synthetic

    parser = argparse.ArgumentParser(prog="pyrodyn", description=__doc__.splitlines()[0])
    parser.add_argument("--traceback", action="store_true", help="show the full trace on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("simulate", help="write a synthetic data set with ground truth")
    sim.add_argument("system", choices=sorted(synthetic.GENERATORS))
    sim.add_argument("--out", required=True, help="output file (.npz or .h5)")
    sim.add_argument("--n-trials", type=int, default=200)
    sim.add_argument("--n-bins", type=int, default=100)
    sim.add_argument("--n-neurons", type=int, default=30, help="neurons (per area)")
    sim.add_argument("--dt", type=float, default=0.01, help="bin width in seconds")
    sim.add_argument("--mean-rate", type=float, default=20.0, help="mean rate in Hz")
    sim.add_argument("--gain", type=float, default=1.0, help="spread of the log-rates")
    sim.add_argument("--embedding", choices=synthetic.EMBEDDINGS, default="linear")
    sim.add_argument("--valid", type=float, default=0.2, help="fraction of validation trials")
    sim.add_argument("--test", type=float, default=0.2, help="fraction of test trials")
    sim.add_argument("--heldout", type=int, default=0, help="neurons held out for co-bps")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(run=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, KeyError) as error:
        if args.traceback:
            traceback.print_exc()
        print(f"pyrodyn {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
