"""A plain Pyro SVI loop from a script, with a pyrodyn model and guide.

The loop uses Pyro's ELBO as a module (``Trace_ELBO()(model, guide)``) with a torch optimizer:
Pyro's recommended interface for ``nn.Module`` models, under Pyro's ``module_local_params``
setting (which the script turns on for itself; pyrodyn works in both modes and sets neither).
Minibatches go through the trial plate's subsampling. ``examples/custom_variant.py`` shows the
classic loop, ``SVI(model, guide, pyro.optim.Adam(...), Trace_ELBO())``, in Pyro's default mode.

    .venv/bin/python examples/pyro_svi_loop.py
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer import Trace_ELBO

from pyrodyn.data import synthetic
from pyrodyn.inference import AmortizedNormalGuide, model_args, posterior
from pyrodyn.models import LatentODEModel


def main(steps: int = 200, n_trials: int = 100, batch_size: int = 25, seed: int = 0) -> list:
    # Modules must be built inside the mode they are used in.
    with pyro.settings.context(module_local_params=True):
        return _loop(steps, n_trials, batch_size, seed)


def _loop(steps: int, n_trials: int, batch_size: int, seed: int) -> list:
    pyro.set_rng_seed(seed)
    data = synthetic.ring_attractor(n_trials=n_trials, n_bins=40, n_neurons=20, seed=seed)
    model = LatentODEModel(data.n_neurons, latent_dim=2, external_input_dim=2)
    guide = AmortizedNormalGuide(model)
    loss_fn = Trace_ELBO()(model, guide)
    loss_fn(**model_args(data.to_batch(range(2)), data.n_trials))  # create all parameters
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=5e-3)
    losses = []
    for step in range(steps):
        batch = next(data.batches(batch_size, seed=step))
        loss = loss_fn(**model_args(batch, data.n_trials)) / data.n_trials
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % max(steps // 5, 1) == 0:
            print(f"step {step:4d}  loss per trial {loss.item():.2f}")
    draws = posterior(model, guide, data, num_samples=20)
    print("posterior latents:", draws.draws["latents"].shape)
    return losses


if __name__ == "__main__":
    main()
