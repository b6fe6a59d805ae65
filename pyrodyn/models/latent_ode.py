"""``LatentODEModel``: a latent neural-ODE prior, a readout and a likelihood, as one Pyro program.

One trial::

    z0          ~ Normal(mu0, sigma0)                 site "z0"      event (latent,)
    u (opt.)    ~ AR1Prior(tau, scale)                site "inputs"  event (time, input)
    z(t)        = ODESolve(f, z0, bins, [u_ext, u])    deterministic "latents" (time, latent)
      or, with a diffusion sigma (a latent SDE on the bin grid):
    z(t+1)      ~ Normal(step(z(t)), sigma sqrt(dt))    site "path"    event (time - 1, latent)
    log r(t)    = readout(z(t))                        deterministic "rates"   (time, neuron)
    spikes[t,n] ~ likelihood(log r)                    site "spikes"  event (time, neuron)

all inside ``pyro.plate("trial", num_trials, subsample=trial_index)``, so a minibatch ELBO is
scaled to the whole data set. ``mask`` (trial, time, neuron) marks the entries that are scored;
held-out neurons, missing data and coordinated dropout all go through it.

The "latents" site holds z in the readout's orthonormalized coordinates (``reported_basis``;
GPFA's convention), not in the arbitrary ones the fit computes in; the field and the readout
stay in their own (``models.base.in_model_coordinates`` maps back).

Example:
    >>> import torch
    >>> model = LatentODEModel(n_neurons=20, latent_dim=3)
    >>> draws = model.simulate(n_trials=4, n_bins=30)
    >>> draws["spikes"].shape, draws["latents"].shape
    (torch.Size([4, 30, 20]), torch.Size([4, 30, 3]))
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from . import sites
from .base import SpikeModel, record
from .dynamics import VectorField, build_field
from .likelihoods import Likelihood, build_likelihood
from .paths import LatentPathModel, stochastic_path_diffusion
from .priors import AR1Prior, InitialStatePrior
from .readouts import Readout, build_readout
from .solver import ODESolver

__all__ = ["LatentODEModel"]


class LatentODEModel(LatentPathModel, SpikeModel):
    """Latent neural-ODE model of spike counts.

    Args:
        n_neurons: neurons in the data.
        latent_dim: dimension D of the latent state.
        field: "mlp" (default), "linear", "low_rank", "gru" (discrete baseline) or a
            ``VectorField`` taking ``external_input_dim + inferred_input_dim`` inputs.
        readout: "plane" (default: affine coordinates, rates bent off the plane; the recipe
            adds a monotone link per neuron, ``PlaneReadout(D, N, link="monotone")``), "flow"
            (injective normalizing flow), "affine", "residual_flow", "mlp" or a ``Readout``.
        likelihood: "poisson" (default), "negative_binomial", "gaussian" or a ``Likelihood``.
        external_input_dim: channels of known inputs passed as ``inputs=``.
        inferred_input_dim: channels of inputs inferred per trial (LFADS controller inputs)
            with an AR(1) prior of time constant ``input_tau`` bins and scale ``input_scale``.
        prior_scale: initial standard deviation of the z0 prior.
        learn_prior: learn the z0 prior's mean and scale (else fixed at 0 and ``prior_scale``).
        solver: an ``ODESolver`` (default: midpoint rule, one step per bin of 0.1 time units;
            1.6x the throughput of RK4 in ``bench/throughput.py``).
        diffusion: initial diffusion sigma of a stochastic latent path (learned per
            dimension; ``pyrodyn.models.paths``), or None (default) for a deterministic ODE.
            The path's noise is the room the posterior has for the fitted dynamics' error.
        noise_tau: correlation time (bins, per dimension) of the path's noise, an AR(1)
            process; None (default) for white noise.
        learn_noise_tau: learn ``noise_tau`` from its given value (default), else fixed.
        noise_df: Student-t degrees of freedom of the path's innovations, learned from this
            start; None (default) for Gaussian innovations.
        diffusion_prior: rate of an exponential prior on each dimension's sigma, which
            shrinks noise the data do not need (0, default: none; README (g)).
    """

    def __init__(
        self,
        n_neurons: int,
        latent_dim: int = 3,
        *,
        field: str | VectorField = "mlp",
        readout: str | Readout = "plane",
        likelihood: str | Likelihood = "poisson",
        external_input_dim: int = 0,
        inferred_input_dim: int = 0,
        input_tau: float = 10.0,
        input_scale: float = 0.1,
        prior_scale: float = 1.0,
        learn_prior: bool = True,
        solver: ODESolver | None = None,
        diffusion: float | None = None,
        noise_tau: float | None = None,
        learn_noise_tau: bool = True,
        noise_df: float | None = None,
        diffusion_prior: float = 0.0,
    ) -> None:
        super().__init__()
        if n_neurons < 1 or latent_dim < 1:
            raise ValueError(
                f"LatentODEModel: n_neurons and latent_dim must be >= 1, got {n_neurons}, "
                f"{latent_dim}")
        self.n_neurons, self.latent_dim = n_neurons, latent_dim
        self.external_input_dim, self.inferred_input_dim = external_input_dim, inferred_input_dim
        self.input_tau, self.input_scale = input_tau, input_scale
        n_field_inputs = external_input_dim + inferred_input_dim
        self.field = (build_field(field, latent_dim, n_field_inputs) if isinstance(field, str)
                      else field)
        if self.field.input_dim != n_field_inputs or self.field.latent_dim != latent_dim:
            raise ValueError(
                f"field: expects latent_dim={latent_dim} and {n_field_inputs} inputs, got "
                f"{self.field.latent_dim} and {self.field.input_dim}")
        self.readout = (build_readout(readout, latent_dim, n_neurons)
                        if isinstance(readout, str) else readout)
        self.likelihood = (build_likelihood(likelihood, n_neurons)
                           if isinstance(likelihood, str) else likelihood)
        self.solver = solver or ODESolver("midpoint", step_size=0.1)
        self.z0_prior = InitialStatePrior(latent_dim, scale=prior_scale, learn=learn_prior)
        self.diffusion = stochastic_path_diffusion(diffusion, latent_dim, self.solver,
                                                   inferred_input_dim, self.field,
                                                   tau=noise_tau, learn_tau=learn_noise_tau,
                                                   df=noise_df, prior_rate=diffusion_prior)

    @classmethod
    def from_config(cls, config, data) -> LatentODEModel:
        """From a ``RunConfig``'s options (dynamics, readout, likelihood, inputs, solver)."""
        external = 0 if data.inputs is None else data.inputs.shape[-1]
        options = {"hidden": config.hidden} if config.dynamics == "mlp" else {}
        return cls(
            data.n_neurons, config.latent_dim,
            field=build_field(config.dynamics, config.latent_dim,
                              external + config.inferred_input_dim, **options),
            readout=build_readout(config.readout, config.latent_dim, data.n_neurons,
                                  **config.readout_options()),
            likelihood=config.likelihood, external_input_dim=external,
            inferred_input_dim=config.inferred_input_dim, input_scale=config.input_scale,
            solver=ODESolver(config.solver, step_size=config.step_size),
            diffusion=config.diffusion, noise_tau=config.path_noise_tau,
            learn_noise_tau=config.learn_noise_tau, noise_df=config.path_noise_df,
            diffusion_prior=config.diffusion_prior_rate())

    # ---------------------------------------------------------------- pieces
    def solve(self, z0: torch.Tensor, n_bins: int,
              inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Latent trajectories (..., trial, time, latent) from z0 (..., trial, latent)."""
        return self.solver(self.field, z0, n_bins, inputs)

    def _field_inputs(self, external, inferred):
        if external is None:
            return inferred
        if inferred is None:
            return external
        shape = torch.broadcast_shapes(external.shape[:-1], inferred.shape[:-1])
        return torch.cat([external.expand(shape + external.shape[-1:]),
                          inferred.expand(shape + inferred.shape[-1:])], dim=-1)

    @property
    def z0_sites(self) -> dict[str, int]:
        return {sites.Z0: self.latent_dim}

    @property
    def input_sites(self) -> dict[str, int]:
        return {sites.INPUTS: self.inferred_input_dim} if self.inferred_input_dim else {}

    def init_bias(self, mean_counts: torch.Tensor) -> None:
        self.readout.init_bias(mean_counts)

    def reported_basis(self) -> torch.Tensor | None:
        """The readout's orthonormalized coordinates where it has loadings (the plane and
        affine readouts: ``readouts.orthonormal_basis``); else the model's own."""
        return self.readout.reported_basis()

    # ----------------------------------------------------------------- model
    def program(self, spikes, *, plate, mask, inputs, n_bins, kl_scale):
        """One minibatch's program (see the module docstring); ``forward`` checks the call."""
        self.diffusion_prior_factor()
        with plate:
            with poutine.scale(scale=kl_scale):
                z0 = pyro.sample(sites.Z0, self.z0_prior())
                inferred = None
                if self.inferred_input_dim:
                    inferred = pyro.sample(sites.INPUTS, AR1Prior(
                        n_bins, self.inferred_input_dim, tau=self.input_tau,
                        scale=self.input_scale, device=z0.device))
                latents = self.trajectory(z0, n_bins, self._field_inputs(inputs, inferred))
            record(sites.LATENTS, self.to_reported(latents), event_dim=2)
            output = self.readout(latents)
            penalty = self.readout.log_penalty(latents, output)
            if penalty is not None:  # a prior on the readout's shape, per trial
                pyro.factor(sites.READOUT_PENALTY, penalty)
            record(sites.RATES, self.likelihood.mean(output), event_dim=2)
            likelihood = self.likelihood.distribution(output)
            if mask is not None:
                likelihood = likelihood.mask(mask)
            pyro.sample(sites.SPIKES, likelihood.to_event(2), obs=spikes)
        return latents

    def extra_repr(self) -> str:
        return (f"n_neurons={self.n_neurons}, latent_dim={self.latent_dim}, "
                f"inferred_input_dim={self.inferred_input_dim}, "
                f"external_input_dim={self.external_input_dim}, solver={self.solver}, "
                f"stochastic={self.diffusion is not None}")

