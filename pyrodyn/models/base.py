"""``SpikeModel``: the contract every pyrodyn model states, and the base class to write one.

A pyrodyn model is a Pyro program over a minibatch of trials. Guides, ``fit``, ``posterior``,
``refine``, ``evaluate`` and the command line rely on this contract and nothing else:

- ``forward(spikes=None, *, mask, encoder_mask, inputs, trial_index, num_trials, kl_scale,
  n_bins)``: the arguments every model and guide take (``pyrodyn.inference.model_args`` builds
  them for a batch). ``forward`` checks them and calls ``program`` inside nothing: the subclass
  opens the trial plate it is handed, so global sites can live outside it.
- ``z0_sites`` / ``input_sites`` / ``path_sites``: the per-trial latent sites and their sizes
  (what an encoder guide must sample; a model with a stochastic path also gives ``transition``
  and ``noise_scale``, see ``pyrodyn.models.paths``); ``observed_sites``: observation site ->
  the columns of ``spikes`` it scores; ``global_sites``: latent sites outside the trial plate
  (found by tracing the model).
- deterministic sites "latents" (trial, time, latent) and "rates" (trial, time, neuron); the
  latents in the coordinates ``reported_basis`` names (default: the model's own).
- ``simulate(n_trials, n_bins)`` draws trials from the prior.

Example (a variant: one gain shared by all trials scales every rate)::

    class GainModel(LatentODEModel):
        def program(self, spikes, *, plate, mask, inputs, n_bins, kl_scale):
            gain = pyro.sample("gain", dist.LogNormal(0.0, 0.5))
            with plate:
                ...  # as LatentODEModel.program, with rates * gain
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from pyro.nn.module import _PyroModuleMeta
from pyro.poutine.util import site_is_subsample

from .._isolation import isolated_rng, own_param_store
from . import sites

__all__ = ["SpikeModel", "check_call", "trial_plate_size", "record", "in_model_coordinates",
           "ReportedField", "reported_field"]


def record(name: str, value: torch.Tensor, event_dim: int) -> None:
    """A deterministic site holding ``value`` without its autograd graph: tools that read
    traces outside ``torch.no_grad()`` (``az.from_pyro`` after NUTS) can turn it into numpy,
    and nothing in an objective differentiates through a deterministic site."""
    pyro.deterministic(name, value.detach(), event_dim=event_dim)


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


class _ModelMeta(_PyroModuleMeta, abc.ABCMeta):
    """PyroModule's metaclass with abstract methods."""


class SpikeModel(PyroModule, metaclass=_ModelMeta):
    """Base class of pyrodyn models: the call checks, the trial plate, the site contract.

    Subclasses set ``n_neurons``, ``latent_dim`` and ``external_input_dim`` in ``__init__``
    and implement ``program`` and ``z0_sites``.
    """

    n_neurons: int
    latent_dim: int
    external_input_dim: int = 0
    # a ``pyrodyn.inference.laplace.ParameterPosterior`` once computed: posterior draws use it
    parameter_posterior = None

    @abc.abstractmethod
    def program(self, spikes: torch.Tensor | None, *, plate: pyro.plate,
                mask: torch.Tensor | None, inputs: torch.Tensor | None, n_bins: int,
                kl_scale: float) -> torch.Tensor:
        """The generative program for one checked call; returns the latent trajectories.

        ``plate`` is the trial plate of this call (enter it with ``with plate:``); global
        sites go outside it. ``kl_scale`` weighs the per-trial latent sites (KL warm-up).
        """

    @property
    @abc.abstractmethod
    def z0_sites(self) -> dict[str, int]:
        """Initial-state sites and their dimensions (what a guide must sample per trial)."""

    @property
    def input_sites(self) -> dict[str, int]:
        """Inferred-input sites and their channels, event (time, channel); none by default."""
        return {}

    @property
    def path_sites(self) -> dict[str, int]:
        """Stochastic-path sites and their dimensions, event (time - 1, latent), drawn after
        the initial state; none for a deterministic ODE."""
        return {}

    @property
    def observed_sites(self) -> dict[str, Any]:
        """Observation sites and the neurons (columns of ``spikes``) each one scores."""
        return {sites.SPIKES: slice(None)}

    def reported_basis(self) -> torch.Tensor | None:
        """The map M (latent, latent) from the coordinates the model computes in to those of
        its recorded "latents" site, ``z_reported = M z``; None (default): its own."""
        return None

    def to_reported(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (..., latent) in the model's coordinates, in the reported ones."""
        basis = self.reported_basis()
        return latents if basis is None else latents @ basis.to(latents).T

    @property
    def global_sites(self) -> dict[str, torch.Size]:
        """Latent sites outside the trial plate (e.g. a gain shared by all trials) and their
        shapes, read off one prior draw of the model (cached)."""
        cached = self.__dict__.get("_global_sites")
        if cached is None:
            with torch.no_grad(), isolated_rng(None), own_param_store(self):
                inputs = (None if not self.external_input_dim else
                          torch.zeros(1, 2, self.external_input_dim, device=self._device()))
                # Blocked: an ELBO or trace around the caller never sees this prior draw.
                trace = poutine.block(poutine.trace(self).get_trace)(
                    None, num_trials=1, n_bins=2, inputs=inputs)
            cached = {
                name: site["value"].shape for name, site in trace.nodes.items()
                if site["type"] == "sample" and not site["is_observed"]
                and not site_is_subsample(site)
                and all(f.name != sites.TRIAL_PLATE for f in site["cond_indep_stack"])}
            self.__dict__["_global_sites"] = cached
        return dict(cached)

    def _device(self) -> torch.device:
        tensor = next(iter(self.parameters()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    @classmethod
    def from_config(cls, config, data) -> SpikeModel:
        """The model a ``pyrodyn.config.RunConfig`` describes, sized for ``data`` (a
        ``SpikeData``): how ``pyrodyn fit --set model=package.module:Class`` builds it."""
        raise ValueError(f"model: {cls.__name__} needs a from_config(config, data) classmethod "
                         "to be built from a run config")

    def init_bias(self, mean_counts: torch.Tensor) -> None:
        """Starts the readout(s) at the neurons' mean counts per bin (the null model);
        nothing by default."""

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
        size = trial_plate_size(batch, trial_index, num_trials)
        plate = pyro.plate(sites.TRIAL_PLATE, size, subsample=trial_index, dim=-1)
        return self.program(spikes, plate=plate, mask=mask, inputs=inputs, n_bins=n_bins,
                            kl_scale=kl_scale)

    @torch.no_grad()
    def simulate(self, n_trials: int, n_bins: int, *,
                 inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Draws trials from the prior: every latent and deterministic site, and "spikes"
        (trial, time, neuron) with every neuron in the data's column order."""
        trace = poutine.trace(self).get_trace(None, inputs=inputs, num_trials=n_trials,
                                              n_bins=n_bins)
        observed = self.observed_sites
        out = {name: site["value"] for name, site in trace.nodes.items()
               if site["type"] == "sample" and not site_is_subsample(site)
               and name not in observed
               and (not site["is_observed"] or site["infer"].get("_deterministic"))}
        first = trace.nodes[next(iter(observed))]["value"]
        spikes = first.new_zeros(first.shape[:-1] + (self.n_neurons,))
        for name, neurons in observed.items():
            spikes[..., neurons] = trace.nodes[name]["value"]
        out[sites.SPIKES] = spikes
        return out


def in_model_coordinates(model: SpikeModel, latents):
    """Reported latents (..., latent; numpy or torch) of ``model`` (its "latents" site) in the
    coordinates its field and readout compute in (``SpikeModel.reported_basis``)."""
    basis = model.reported_basis()
    if basis is None:
        return latents
    inverse = torch.linalg.inv(basis.double()).T
    if isinstance(latents, torch.Tensor):
        return latents @ inverse.to(latents)
    return np.asarray(latents, np.float64) @ inverse.cpu().numpy()


class ReportedField(torch.nn.Module):
    """A model's field (or discrete transition) in its reported coordinates:
    ``f'(z') = M f(M^-1 z')``. Fixed points and their stability do not change, only where they
    are written."""

    def __init__(self, field: torch.nn.Module, basis: torch.Tensor) -> None:
        super().__init__()
        self.field, self.discrete = field, field.discrete
        self.latent_dim, self.input_dim = field.latent_dim, field.input_dim
        basis = basis.detach().double()
        self.register_buffer("basis", basis.clone())
        self.register_buffer("inverse", torch.linalg.inv(basis))

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        inner = self.field(z @ self.inverse.to(z).T, u)
        return inner @ self.basis.to(inner).T


def reported_field(model: SpikeModel) -> torch.nn.Module:
    """``model.field`` in the coordinates of the model's "latents" site.

    Example (fixed points where the posterior latents are)::

        fixed_point_scores(reported_field(model), train_latents, train.truth)
    """
    basis = model.reported_basis()
    return model.field if basis is None else ReportedField(model.field, basis)
