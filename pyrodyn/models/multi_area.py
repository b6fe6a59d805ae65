"""``MultiAreaModel``: one latent ODE per area, coupled only through explicit communication.

One trial, for areas A, B, ...::

    z0.A        ~ Normal(mu0_A, sigma0_A)               site "z0.A"        event (latent_A,)
    inputs.A    ~ AR1Prior (optional)                   site "inputs.A"    event (time, input)
    dz_A/dt     = f_A(z_A, u_A) + sum_B c_{A<-B}(t)     one ODE solve over all areas
    c_{A<-B}(t) = g_AB(z_B(t))                          deterministic "comm.A<-B" (time, latent_A)
    log r_A     = readout_A(z_A)                        deterministic "latents.A" (time, latent_A)
    spikes_A    ~ likelihood_A(log r_A)                 site "spikes.A"    event (time, neuron_A)

plus the deterministic sites every pyrodyn model has, "latents" (all areas' states concatenated
in area order) and "rates" (every neuron, in the data's neuron order), so fitting, posterior,
evaluation and ArviZ export treat it like any model. The model takes the whole (trial, time,
neuron) spike tensor and routes each area's neurons to its own readout.

The coupling prior is a Laplace prior on each channel's gain, ``log p = -coupling_prior * |g|``,
added once per step (not per trial): like a group lasso it pulls unused channels to zero, so
absent channels shrink while real ones, which the data pay for, stay. Channel weights are
point estimates, like every network weight of a pyrodyn model.

Example:
    >>> model = MultiAreaModel({"A": range(0, 10), "B": range(10, 25)}, latent_dim=2)
    >>> draws = model.simulate(n_trials=3, n_bins=20)
    >>> draws["spikes"].shape, draws["comm.B<-A"].shape
    (torch.Size([3, 20, 25]), torch.Size([3, 20, 2]))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from torch import nn

from . import sites
from .base import SpikeModel, record
from .communication import CoupledField, build_channel, channel_name
from .dynamics import VectorField, build_field
from .likelihoods import build_likelihood
from .paths import LatentPathModel, stochastic_path_diffusion
from .priors import AR1Prior, InitialStatePrior
from .readouts import build_readout
from .solver import ODESolver

__all__ = ["MultiAreaModel", "COMM", "area_site"]

COMM = "comm"  # communication sites are "comm.A<-B"


def area_site(base: str, area: str) -> str:
    """The per-area name of a site: ``area_site("z0", "A") == "z0.A"``."""
    return f"{base}.{area}"


def _per_area(value, areas: list[str], name: str) -> dict:
    if isinstance(value, Mapping):
        missing = [a for a in areas if a not in value]
        if missing:
            raise ValueError(f"{name}: no entry for area(s) {missing}")
        return {a: value[a] for a in areas}
    return {a: value for a in areas}


class MultiAreaModel(LatentPathModel, SpikeModel):
    """Latent ODEs per area with explicit low-rank (or MLP) communication between them.

    Args:
        areas: area name -> indices of its neurons among the spike tensor's columns (every
            neuron in exactly one area). ``MultiAreaModel.from_data`` reads them from a
            ``SpikeData``'s area labels.
        latent_dim: latent dimension per area (an int or area -> int).
        field: each area's own dynamics ("mlp", "linear", "low_rank") or area -> VectorField.
        hidden: hidden units of the "mlp" fields.
        readout: "plane" (default), "flow", "affine" or "mlp", for every area.
        readout_options: keywords of that readout (``build_readout``), e.g.
            ``{"link": "monotone"}``.
        likelihood: "poisson" (default), "negative_binomial" or "gaussian" (or area -> name).
        channels: the channels to model as "target<-source" names (default: every ordered
            pair, so the data decide which are absent).
        communication: "low_rank" (default) or "mlp"; ``rank`` for low-rank channels.
        coupling_prior: rate of the Laplace prior on each channel's gain (0: no shrinkage).
        external_input_dim: known input channels, seen by every area.
        inferred_input_dim: inferred input channels per area (sites "inputs.A").
        prior_scale, learn_prior, input_tau, input_scale, solver, diffusion, noise_tau,
            learn_noise_tau, noise_df, diffusion_prior: as in ``LatentODEModel`` (a diffusion
            makes one stochastic path over all areas' states).
    """

    def __init__(
        self,
        areas: Mapping[str, Iterable[int]],
        latent_dim: int | Mapping[str, int] = 2,
        *,
        field: str | Mapping[str, VectorField] = "mlp",
        hidden: int = 64,
        readout: str = "plane",
        readout_options: Mapping[str, Any] | None = None,
        likelihood: str | Mapping[str, str] = "poisson",
        channels: Sequence[str] | None = None,
        communication: str = "low_rank",
        rank: int = 1,
        coupling_prior: float = 10.0,
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
        self.areas = [str(a) for a in areas]
        if len(self.areas) < 2:
            raise ValueError(f"areas: a multi-area model needs >= 2 areas, got {self.areas}")
        self.area_neurons = {str(a): np.asarray(list(areas[a]), dtype=np.int64) for a in areas}
        self.n_neurons = self._check_neurons()
        dims = _per_area(latent_dim, self.areas, "latent_dim")
        if any(d < 1 for d in dims.values()):
            raise ValueError(f"latent_dim: must be >= 1 per area, got {dims}")
        self.latent_dims = dims
        self.latent_dim = sum(dims.values())
        self.external_input_dim, self.inferred_input_dim = external_input_dim, inferred_input_dim
        self.input_tau, self.input_scale = input_tau, input_scale
        self.coupling_prior = float(coupling_prior)
        if self.coupling_prior < 0:
            raise ValueError(f"coupling_prior: must be >= 0, got {coupling_prior}")

        field_inputs = external_input_dim + inferred_input_dim
        if isinstance(field, str):
            options = {"hidden": hidden} if field == "mlp" else {}
            fields = {a: build_field(field, dims[a], field_inputs, **options) for a in self.areas}
        else:
            fields = _per_area(field, self.areas, "field")
        pairs = self._channel_pairs(channels)
        built = {(t, s): build_channel(communication, dims[s], dims[t],
                                       **({"rank": min(rank, dims[s], dims[t])}
                                          if communication == "low_rank" else {}))
                 for t, s in pairs}
        self.field = CoupledField(fields, built, shared_input_dim=external_input_dim)
        self.readouts = nn.ModuleDict()
        for area in self.areas:
            try:
                self.readouts[area] = build_readout(readout, dims[area], self.area_size(area),
                                                    **(readout_options or {}))
            except ValueError as error:
                raise ValueError(f"area {area!r}: {error}") from None
        likelihoods = _per_area(likelihood, self.areas, "likelihood")
        self.likelihoods = nn.ModuleDict({a: build_likelihood(likelihoods[a], self.area_size(a))
                                          for a in self.areas})
        self.z0_priors = nn.ModuleDict({a: InitialStatePrior(dims[a], scale=prior_scale,
                                                             learn=learn_prior)
                                        for a in self.areas})
        self.solver = solver or ODESolver("midpoint", step_size=0.1)
        self.diffusion = stochastic_path_diffusion(diffusion, self.latent_dim, self.solver,
                                                   inferred_input_dim, self.field,
                                                   tau=noise_tau, learn_tau=learn_noise_tau,
                                                   df=noise_df, prior_rate=diffusion_prior)
        order = np.concatenate([self.area_neurons[a] for a in self.areas])
        self.register_buffer("_neuron_order", torch.as_tensor(np.argsort(order)),
                             persistent=False)

    @classmethod
    def from_data(cls, data, latent_dim: int | Mapping[str, int] = 2, **options
                  ) -> MultiAreaModel:
        """A model whose areas are the area labels of a ``SpikeData``."""
        if data.neuron_area is None:
            raise ValueError("data: has no area labels (neuron_area); a multi-area model "
                             "needs to know each neuron's area")
        areas = {a: np.flatnonzero(data.neuron_area == a) for a in data.areas}
        areas = {a: idx for a, idx in areas.items() if idx.size}
        return cls(areas, latent_dim, external_input_dim=0 if data.inputs is None
                   else data.inputs.shape[-1], **options)

    @classmethod
    def from_config(cls, config, data) -> MultiAreaModel:
        """From a ``RunConfig``'s options; ``latent_dim`` is per area."""
        return cls.from_data(
            data, config.latent_dim, field=config.dynamics, hidden=config.hidden,
            readout=config.readout, readout_options=config.readout_options(),
            likelihood=config.likelihood, communication=config.communication, rank=config.comm_rank,
            coupling_prior=config.coupling_prior, inferred_input_dim=config.inferred_input_dim,
            input_scale=config.input_scale,
            solver=ODESolver(config.solver, step_size=config.step_size),
            diffusion=config.diffusion, noise_tau=config.path_noise_tau,
            learn_noise_tau=config.learn_noise_tau, noise_df=config.path_noise_df,
            diffusion_prior=config.diffusion_prior_rate())

    def _check_neurons(self) -> int:
        every = np.concatenate(list(self.area_neurons.values()))
        if any(idx.size == 0 for idx in self.area_neurons.values()):
            empty = [a for a, idx in self.area_neurons.items() if idx.size == 0]
            raise ValueError(f"areas: area(s) {empty} have no neurons")
        n = every.size
        if np.unique(every).size != n or every.min() < 0 or every.max() != n - 1:
            raise ValueError(f"areas: the neuron indices must cover 0..{n - 1} exactly once "
                             "across areas")
        return n

    def _channel_pairs(self, channels: Sequence[str] | None) -> list[tuple[str, str]]:
        if channels is None:
            return [(t, s) for t in self.areas for s in self.areas if t != s]
        pairs = []
        for name in channels:
            target, sep, source = str(name).partition("<-")
            if not sep or target not in self.areas or source not in self.areas or \
                    target == source:
                raise ValueError(f"channels: {name!r} is not 'target<-source' for two of the "
                                 f"areas {self.areas}")
            pairs.append((target, source))
        return pairs

    def area_size(self, area: str) -> int:
        return int(self.area_neurons[area].size)

    # ------------------------------------------------------ the site contract
    @property
    def z0_sites(self) -> dict[str, int]:
        return {area_site(sites.Z0, a): self.latent_dims[a] for a in self.areas}

    @property
    def input_sites(self) -> dict[str, int]:
        if not self.inferred_input_dim:
            return {}
        return {area_site(sites.INPUTS, a): self.inferred_input_dim for a in self.areas}

    @property
    def observed_sites(self) -> dict[str, np.ndarray]:
        return {area_site(sites.SPIKES, a): self.area_neurons[a] for a in self.areas}

    @property
    def channel_names(self) -> list[str]:
        return [channel_name(t, s) for t, s in self.field.pairs]

    def init_bias(self, mean_counts: torch.Tensor) -> None:
        """Starts every area's readout at its neurons' mean counts (the null model)."""
        for area in self.areas:
            self.readouts[area].init_bias(mean_counts[self.area_neurons[area]])

    def coupling_log_prior(self) -> torch.Tensor:
        """Laplace log-density (up to a constant) of all channels' gains."""
        gains = [channel.gain() for channel in self.field.channels.values()]
        if not gains or self.coupling_prior == 0:
            return torch.zeros(())
        return -self.coupling_prior * torch.stack(gains).sum()

    # ----------------------------------------------------------------- model
    def program(self, spikes, *, plate, mask, inputs, n_bins, kl_scale):
        """One minibatch's program (see the module docstring); ``forward`` checks the call."""
        pyro.factor("coupling_prior", self.coupling_log_prior())
        self.diffusion_prior_factor()
        with plate:
            with poutine.scale(scale=kl_scale):
                z0 = [pyro.sample(area_site(sites.Z0, a), self.z0_priors[a]())
                      for a in self.areas]
                field_inputs = [] if inputs is None else [inputs]
                for name in self.input_sites:
                    field_inputs.append(pyro.sample(name, AR1Prior(
                        n_bins, self.inferred_input_dim, tau=self.input_tau,
                        scale=self.input_scale, device=z0[0].device)))
                z0 = _broadcast_cat(z0)
                u = _broadcast_cat(field_inputs) if field_inputs else None
                latents = self.trajectory(z0, n_bins, u)
            record(sites.LATENTS, latents, event_dim=2)
            for name, signal in self.field.communication(latents).items():
                record(f"{COMM}.{name}", signal, event_dim=2)
            rates = []
            for area, z in self.field.split(latents).items():
                record(area_site(sites.LATENTS, area), z, event_dim=2)
                output = self.readouts[area](z)
                penalty = self.readouts[area].log_penalty(z, output)
                if penalty is not None:  # a prior on the readout's shape, per trial
                    pyro.factor(area_site(sites.READOUT_PENALTY, area), penalty)
                rates.append(self.likelihoods[area].mean(output))
                likelihood = self.likelihoods[area].distribution(output)
                neurons = self.area_neurons[area]
                if mask is not None:
                    likelihood = likelihood.mask(mask[..., neurons])
                pyro.sample(area_site(sites.SPIKES, area), likelihood.to_event(2),
                            obs=None if spikes is None else spikes[..., neurons])
            record(sites.RATES, torch.cat(rates, -1)[..., self._neuron_order], event_dim=2)
        return latents

    def extra_repr(self) -> str:
        return (f"areas={ {a: self.area_size(a) for a in self.areas} }, "
                f"latent_dims={self.latent_dims}, channels={self.channel_names}, "
                f"coupling_prior={self.coupling_prior}, solver={self.solver}")


def _broadcast_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenates along the last dim after broadcasting the leading (particle, trial) dims."""
    shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(shape + p.shape[-1:]) for p in parts], dim=-1)
