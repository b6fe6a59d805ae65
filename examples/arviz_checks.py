"""Checking a posterior with ArviZ, and comparing two latent dimensionalities with LOO.

Fits the same Lorenz data with 2 and 3 latent dimensions, exports held-out posteriors as
InferenceData, then: ``az.summary``, ``az.hdi``, ``az.plot_ppc`` and ``az.compare`` (LOO over
leave-one-trial-out log-likelihoods: the true dimension should win).

    .venv/bin/python examples/arviz_checks.py
"""

from __future__ import annotations

import arviz as az
import matplotlib
import numpy as np
import pyro

from pyrodyn.data import synthetic
from pyrodyn.inference import AmortizedNormalGuide, fit, posterior
from pyrodyn.models import LatentODEModel

matplotlib.use("Agg")


def main(steps: int = 400, n_trials: int = 150, num_samples: int = 50, seed: int = 0,
         out: str | None = None):
    data = synthetic.lorenz(n_trials=n_trials, n_bins=60, n_neurons=25, seed=seed)
    data = data.with_split(valid=0.2, test=0.2, seed=seed)
    fits = {}
    for latent_dim in (2, 3):
        pyro.set_rng_seed(seed)
        model = LatentODEModel(data.n_neurons, latent_dim)
        guide = AmortizedNormalGuide(model)
        fit(model, guide, data.select("train"), valid=data.select("valid"), steps=steps,
            batch_size=32, curriculum=(10, steps // 2), seed=seed, progress=False)
        post = posterior(model, guide, data.select("test"), num_samples=num_samples)
        fits[f"{latent_dim}d"] = post.to_inference_data(elbo="Trace_ELBO")

    idata = fits["3d"]
    print(az.summary(idata, var_names=["z0"], kind="stats").head())
    hdi = az.hdi(idata, var_names=["latents"], hdi_prob=0.9)
    print("90% HDI of the latents:", dict(hdi["latents"].sizes))
    axes = az.plot_ppc(idata, num_pp_samples=min(20, num_samples))
    if out:
        np.ravel(axes)[0].figure.savefig(out)
    comparison = az.compare(fits, ic="loo")
    print(comparison[["rank", "elpd_loo", "p_loo", "elpd_diff"]])
    return comparison


if __name__ == "__main__":
    main()
