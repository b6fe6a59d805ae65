"""Fit a model to the flip-flop system and look inside it: fixed points of the learned field.

The flip-flop has 2^n stable states switched by input pulses. After fitting, the learned vector
field (with inputs off) is searched for fixed points from posterior latent states; they are
mapped into the truth's coordinates with the affine map from inferred to true latents and
matched against the true fixed points.

    .venv/bin/python examples/fixed_points.py
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pyrodyn.analysis import find_fixed_points, fit_affine, match_fixed_points
from pyrodyn.config import RunConfig, build_run
from pyrodyn.data import synthetic
from pyrodyn.inference import fit, posterior


def main(steps: int = 800, n_trials: int = 400, n_bits: int = 2, seed: int = 0):
    data = synthetic.flip_flop(n_trials=n_trials, n_bins=100, n_neurons=30, n_bits=n_bits,
                               seed=seed).with_split(valid=0.15, test=0.15, seed=seed)
    train = data.select("train")
    config = dataclasses.replace(RunConfig(), latent_dim=n_bits, steps=steps, seed=seed,
                                 curriculum=[10, steps // 2], kl_warmup=steps // 2)
    model, guide = build_run(config, train)
    fit(model, guide, train, valid=data.select("valid"), progress=False,
        options=config.fit_options())

    inferred = posterior(model, guide, train, num_samples=5).mean("latents")
    starts = inferred.reshape(-1, n_bits)
    starts = starts[np.random.default_rng(seed).choice(len(starts), 1000)]
    found = find_fixed_points(model.field, starts, tolerance=1e-5, merge_distance=0.05)
    true_points, true_stability = train.truth.fixed_points, train.truth.stability
    affine = fit_affine(inferred, train.truth.latents)
    scale = train.truth.latents.std()
    match = match_fixed_points(true_points, true_stability, found.points, found.stability,
                               affine=affine, tolerance=0.25 * scale)
    print(f"learned field: {len(found.points)} fixed points "
          f"({', '.join(sorted(set(found.stability))) or 'none'})")
    print(f"matched {match.n_matched} of {match.n_true} true fixed points; location error "
          f"{match.location_error:.3f} (latent scale {scale:.2f}); stability agreement "
          f"{match.stability_agreement:.2f}")
    return found, match


if __name__ == "__main__":
    main()
