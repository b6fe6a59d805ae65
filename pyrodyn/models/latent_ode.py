"""``LatentODEModel``: a latent neural-ODE prior, a readout and a likelihood, as one Pyro program.

One trial::

    z0          ~ Normal(mu0, sigma0)                 site "z0"      event (latent,)
    u (opt.)    ~ AR1Prior(tau, scale)                site "inputs"  event (time, input)
    z(t)        = ODESolve(f, z0, bins, [u_ext, u])    deterministic "latents" (time, latent)
    log r(t)    = readout(z(t))                        deterministic "rates"   (time, neuron)
    spikes[t,n] ~ likelihood(log r)                    site "spikes"  event (time, neuron)

all inside ``pyro.plate("trial", num_trials, subsample=trial_index)``, so a minibatch ELBO is
scaled to the whole data set. ``mask`` (trial, time, neuron) marks the entries that are scored;
held-out neurons, missing data and coordinated dropout all go through it.

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
from pyro.nn import PyroModule

from . import sites
from .dynamics import VectorField, build_field
from .likelihoods import Likelihood, build_likelihood
from .priors import AR1Prior, InitialStatePrior
from .readouts import Readout, build_readout
from .solver import ODESolver

__all__ = ["LatentODEModel", "trial_plate_size", "check_call"]


def trial_plate_size(batch: int | None, trial_index: torch.Tensor | None,
                     num_trials: int | None) -> int:
    """The trial plate's full size, checking that a minibatch says which trials it holds."""
    if trial_index is not None:
        if batch is not None and len(trial_index) != batch:
            raise ValueError(
                f"trial_index: {len(trial_index)} indices for a batch of {batch} trials")
        return num_trials or len(trial_index)
    if batch is None:
        if num_trials is None:
            raise ValueError("num_trials: needed when neither spikes nor trial_index is given")
        return num_trials
    if num_trials is not None and num_trials != batch:
        raise ValueError(
            f"trial_index: a batch of {batch} of {num_trials} trials needs the trials' indices")
    return batch


def check_call(spikes: torch.Tensor | None, inputs: torch.Tensor | None, n_bins: int | None,
               n_neurons: int, external_input_dim: int) -> tuple[int | None, int]:
    """Validates what a model call receives; returns (batch size or None, bins)."""
    if spikes is not None:
        if spikes.dim() != 3 or spikes.shape[-1] != n_neurons:
            raise ValueError(
                f"spikes: expected (trial, time, {n_neurons}) for this model, got "
                f"{tuple(spikes.shape)}")
        batch, n_bins = spikes.shape[0], spikes.shape[1]
    else:
        batch = None
    if external_input_dim:
        if inputs is None:
            raise ValueError(
                f"inputs: the model takes {external_input_dim} external input channels "
                "but none were given")
        if inputs.shape[-1] != external_input_dim or (
                n_bins is not None and inputs.shape[-2] != n_bins):
            raise ValueError(
                f"inputs: expected (trial, {n_bins}, {external_input_dim}), got "
                f"{tuple(inputs.shape)}")
        batch = inputs.shape[0] if batch is None else batch
        n_bins = inputs.shape[-2] if n_bins is None else n_bins
    if n_bins is None:
        raise ValueError("n_bins: needed when no spikes are given")
    return batch, n_bins


class LatentODEModel(PyroModule):
    """Latent neural-ODE model of spike counts.

    Args:
        n_neurons: neurons in the data.
        latent_dim: dimension D of the latent state.
        field: "mlp" (default), "linear", "low_rank", "gru" (discrete baseline) or a
            ``VectorField`` taking ``external_input_dim + inferred_input_dim`` inputs.
        readout: "flow" (injective, default), "affine", "mlp" or a ``Readout``.
        likelihood: "poisson" (default), "negative_binomial", "gaussian" or a ``Likelihood``.
        external_input_dim: channels of known inputs passed as ``inputs=``.
        inferred_input_dim: channels of inputs inferred per trial (LFADS controller inputs)
            with an AR(1) prior of time constant ``input_tau`` bins and scale ``input_scale``.
        prior_scale: initial standard deviation of the z0 prior.
        learn_prior: learn the z0 prior's mean and scale (else fixed at 0 and ``prior_scale``).
        solver: an ``ODESolver`` (default: midpoint rule, one step per bin of 0.1 time units;
            1.6x the throughput of RK4 in ``bench/throughput.py``).
    """

    def __init__(
        self,
        n_neurons: int,
        latent_dim: int = 3,
        *,
        field: str | VectorField = "mlp",
        readout: str | Readout = "flow",
        likelihood: str | Likelihood = "poisson",
        external_input_dim: int = 0,
        inferred_input_dim: int = 0,
        input_tau: float = 10.0,
        input_scale: float = 0.1,
        prior_scale: float = 1.0,
        learn_prior: bool = True,
        solver: ODESolver | None = None,
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

    # ---------------------------------------------------------------- pieces
    def solve(self, z0: torch.Tensor, n_bins: int,
              inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Latent trajectories (..., trial, time, latent) from z0 (..., trial, latent)."""
        return self.solver(self.field, z0, n_bins, inputs)

    def log_rates(self, latents: torch.Tensor) -> torch.Tensor:
        return self.readout(latents)

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
        """Initial-state sites and their dimensions (what a guide must sample)."""
        return {sites.Z0: self.latent_dim}

    @property
    def input_sites(self) -> dict[str, int]:
        """Inferred-input sites and their channels (what a guide must sample)."""
        return {sites.INPUTS: self.inferred_input_dim} if self.inferred_input_dim else {}

    @property
    def observed_sites(self) -> dict[str, slice]:
        """Observation sites and the neurons (columns of ``spikes``) each one scores."""
        return {sites.SPIKES: slice(None)}

    # ----------------------------------------------------------------- model
    def forward(
        self,
        spikes: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
        trial_index: torch.Tensor | None = None,
        num_trials: int | None = None,
        kl_scale: float = 1.0,
        n_bins: int | None = None,
    ) -> torch.Tensor:
        """The generative program; returns the latent trajectories.

        Args:
            spikes: observed counts (trial, time, neuron) of this minibatch, or None to draw.
            mask: True where an entry is scored (default: all).
            encoder_mask: what the guide's encoder may see (unused by the model).
            inputs: external inputs (trial, time, input).
            trial_index: indices of this minibatch's trials among ``num_trials``.
            num_trials: size of the whole data set (scales the minibatch ELBO).
            kl_scale: weight of the latent sites' log-densities (KL warm-up).
            n_bins: number of bins when ``spikes`` is None.
        """
        batch, n_bins = check_call(spikes, inputs, n_bins, self.n_neurons,
                                   self.external_input_dim)
        num_trials = trial_plate_size(batch, trial_index, num_trials)
        with pyro.plate(sites.TRIAL_PLATE, num_trials, subsample=trial_index, dim=-1):
            with poutine.scale(scale=kl_scale):
                z0 = pyro.sample(sites.Z0, self.z0_prior())
                inferred = None
                if self.inferred_input_dim:
                    inferred = pyro.sample(sites.INPUTS, AR1Prior(
                        n_bins, self.inferred_input_dim, tau=self.input_tau,
                        scale=self.input_scale, device=z0.device))
            latents = self.solve(z0, n_bins, self._field_inputs(inputs, inferred))
            pyro.deterministic(sites.LATENTS, latents, event_dim=2)
            output = self.log_rates(latents)
            pyro.deterministic(sites.RATES, self.likelihood.mean(output), event_dim=2)
            likelihood = self.likelihood.distribution(output)
            if mask is not None:
                likelihood = likelihood.mask(mask)
            pyro.sample(sites.SPIKES, likelihood.to_event(2), obs=spikes)
        return latents

    @torch.no_grad()
    def simulate(self, n_trials: int, n_bins: int, *,
                 inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Draws trials from the prior: {"z0", "latents", "rates", "spikes"[, "inputs"]}."""
        trace = poutine.trace(self).get_trace(None, inputs=inputs, num_trials=n_trials,
                                              n_bins=n_bins)
        names = [sites.Z0, sites.INPUTS, sites.LATENTS, sites.RATES, sites.SPIKES]
        return {name: trace.nodes[name]["value"] for name in names if name in trace.nodes}

    def extra_repr(self) -> str:
        return (f"n_neurons={self.n_neurons}, latent_dim={self.latent_dim}, "
                f"inferred_input_dim={self.inferred_input_dim}, "
                f"external_input_dim={self.external_input_dim}, solver={self.solver}")
