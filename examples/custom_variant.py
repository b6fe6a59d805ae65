"""A model variant with global random variables, fitted with Pyro's classic SVI loop and with
``fit``, then checked in ArviZ.

``GainModel`` is a ``LatentODEModel`` whose rates are scaled by one gain shared by all trials
and whose counts are zero-inflated (a dropout probability shared by all trials): two global
sites outside the trial plate. Only ``program`` changes; pyrodyn's guides cover the per-trial
initial states with the encoder and the global sites with a mean-field Normal.

    .venv/bin/python examples/custom_variant.py
"""

from __future__ import annotations

import arviz as az
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from pyrodyn.data import synthetic
from pyrodyn.inference import AmortizedNormalGuide, fit, model_args, posterior
from pyrodyn.models import LatentODEModel, record, sites


class GainModel(LatentODEModel):
    """spikes ~ ZeroInflatedPoisson(gain * exp(readout(z)), gate=dropout), gain and dropout
    shared by every trial."""

    def program(self, spikes, *, plate, mask, inputs, n_bins, kl_scale):
        gain = pyro.sample("gain", dist.LogNormal(0.0, 0.5))[..., None, None]
        dropout = pyro.sample("dropout", dist.Beta(1.0, 9.0))[..., None, None]
        with plate:
            with poutine.scale(scale=kl_scale):
                z0 = pyro.sample(sites.Z0, self.z0_prior())
            latents = self.solve(z0, n_bins, inputs)
            rates = gain * self.readout(latents).exp()
            record(sites.LATENTS, latents, event_dim=2)
            record(sites.RATES, (1 - dropout) * rates, event_dim=2)
            counts = dist.ZeroInflatedPoisson(rates, gate=dropout.expand(rates.shape))
            pyro.sample(sites.SPIKES, (counts if mask is None else counts.mask(mask)).to_event(2),
                        obs=spikes)
        return latents


def main(steps: int = 200, n_trials: int = 60, seed: int = 0) -> dict:
    data = synthetic.limit_cycle(n_trials=n_trials, n_bins=40, n_neurons=15, seed=seed)
    train = data.with_split(valid=0.0, test=0.2, seed=seed).select("train")
    pyro.clear_param_store()  # Pyro's default mode keeps parameters by name

    # 1. Pyro's classic loop: pyro.optim, parameters through Pyro's param store.
    pyro.set_rng_seed(seed)
    model = GainModel(train.n_neurons, latent_dim=2, readout="affine")
    guide = AmortizedNormalGuide(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi_losses = [svi.step(**model_args(next(train.batches(16, seed=step)), train.n_trials))
                  / train.n_trials for step in range(steps)]

    # 2. pyrodyn's fit on a fresh model and guide: minibatches, KL warm-up, checkpoints.
    model = GainModel(train.n_neurons, latent_dim=2, readout="affine")
    guide = AmortizedNormalGuide(model)
    result = fit(model, guide, train, steps=steps, batch_size=16, kl_warmup=steps // 2,
                 seed=seed, progress=False)

    # 3. ArviZ: the global sites have no trial dimension.
    idata = posterior(model, guide, train, num_samples=50).to_inference_data()
    summary = az.summary(idata, var_names=["gain", "dropout"], kind="stats")
    print(f"classic SVI loss {svi_losses[0]:.1f} -> {svi_losses[-1]:.1f}; "
          f"fit loss {result.losses[0]:.1f} -> {result.losses[-1]:.1f}")
    print(summary)
    return {"svi_losses": svi_losses, "fit_losses": result.losses, "summary": summary}


if __name__ == "__main__":
    main()
