"""What path noise does a fit learn? Fits the recipe on one synthetic system for a planned
budget and prints the learned diffusion sigma, correlation time tau and, with Student-t noise,
the degrees of freedom per latent dimension. Run from the repository root:

    .venv/bin/python bench/learned_noise.py ring_attractor 2 --set noise_df=4
    .venv/bin/python bench/learned_noise.py lorenz 3 --set noise_df=4

Same data as ``bench/select_dims.py`` (300 trials x 100 bins x 30 neurons, seed 0, 70/15/15
split), fit on the training trials for ``--budget`` seconds (120: one fit of select_dims').
"""

from __future__ import annotations

import argparse
import json

import torch

from pyrodyn.config import RunConfig, build_run
from pyrodyn.data import synthetic
from pyrodyn.inference import fit


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=sorted(synthetic.GENERATORS))
    parser.add_argument("latent_dim", type=int)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = synthetic.GENERATORS[args.system](n_trials=300, n_bins=100, n_neurons=30, seed=0)
    train = data.with_split(valid=0.15, test=0.15, seed=0).select("train")
    config = RunConfig.from_sources(overrides=[f"latent_dim={args.latent_dim}", *args.set],
                                    budget=args.budget)
    model, guide = build_run(config, train)
    fit(model, guide, train, progress=False, options=config.fit_options())
    noise = model.diffusion
    if noise is None:
        raise SystemExit("learned_noise: the config has no stochastic path (diffusion=null)")
    row = dict(system=args.system, latent_dim=args.latent_dim, sigma=noise.sigma().tolist(),
               tau=None if noise.log_tau is None else noise.log_tau.exp().tolist(),
               df=None if noise.df() is None else noise.df().tolist())
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
