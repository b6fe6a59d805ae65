"""Guides: interchangeable variational families over a model's latent sites.

Every guide takes exactly the model's arguments and samples the model's latent sites ("z0" and,
when the model infers inputs, "inputs") in the same "trial" plate, so any guide works with any
pyrodyn model and any ELBO. The amortized guides encode the spikes a trial shows them
(``encoder_mask``, else ``mask``: held-out neurons and coordinated-dropout entries are hidden)
with a bidirectional GRU and give the posterior for new trials without refitting.

- ``AmortizedNormalGuide``: q(z0 | x) Normal (and q(inputs | x) Normal per bin).
  A model with a stochastic path gets, in every amortized guide, a Gauss-Markov chain over the
  path that runs the model's drift plus a correction read off the whole trial
  (``pyrodyn.models.paths.GuidedPath``).
- ``AmortizedFlowGuide``: q(z0 | x) a Normal pushed through conditional autoregressive flows.
- ``MAPGuide``: a point estimate of z0 from the encoder: the model becomes a deterministic
  autoencoder, as in ODIN.
- ``per_trial_normal_guide`` / ``per_trial_map_guide``: non-amortized per-trial parameters
  through Pyro's ``AutoNormal`` / ``AutoDelta`` with subsampling.

A model's global sites (outside the trial plate, ``model.global_sites``) get a mean-field
Normal (``AutoNormal``; a point estimate in ``MAPGuide``) inside the amortized guides; pass
``include_global=False`` to leave them to another part of an ``AutoGuideList``. The amortized
guides are AutoGuides, so they compose: build the list with ``create_plates=trial_plate`` so
every part draws the model's minibatch::

    guide = AutoGuideList(model, create_plates=trial_plate)
    guide.append(AmortizedNormalGuide(model, include_global=False))
    guide.append(AutoDelta(poutine.block(model, expose=["gain"])))

Example:
    >>> from pyrodyn.models import LatentODEModel
    >>> model = LatentODEModel(n_neurons=20, latent_dim=3)
    >>> guide = AmortizedNormalGuide(model)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro import poutine
from pyro.infer.autoguide import (
    AutoCallable,
    AutoDelta,
    AutoGuide,
    AutoGuideList,
    AutoNormal,
    init_to_median,
)
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.nn.functional import softplus

from ..models import sites
from ..models.base import SpikeModel, trial_plate_size
from ..models.paths import guided_path, path_head_size

__all__ = [
    "SpikeEncoder",
    "AmortizedGuide",
    "AmortizedNormalGuide",
    "AmortizedFlowGuide",
    "MAPGuide",
    "per_trial_normal_guide",
    "per_trial_map_guide",
    "trial_plate",
    "per_trial_trials",
    "GUIDES",
    "build_guide",
]


class SpikeEncoder(nn.Module):
    """Bidirectional GRU over per-bin features: a trial summary and per-bin features.

    Returns ``(summary (trial, 2 hidden), sequence (trial, time, 2 hidden))``.
    """

    def __init__(self, n_inputs: int, hidden: int = 64, *, dropout: float = 0.05) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(n_inputs, hidden, batch_first=True, bidirectional=True)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sequence, last = self.gru(self.dropout(x))
        return torch.cat([last[0], last[1]], dim=-1), sequence


def trial_plate(spikes=None, *, trial_index=None, num_trials=None, **_):
    """The model's trial plate with this call's minibatch: ``create_plates`` for AutoGuides
    (``AutoNormal(model, create_plates=trial_plate)``), so guide and model see the same
    trials."""
    batch = None if spikes is None else spikes.shape[0]
    size = trial_plate_size(batch, trial_index, num_trials)
    return pyro.plate(sites.TRIAL_PLATE, size, subsample=trial_index, dim=-1)


class AmortizedGuide(AutoGuide):
    """Base class of the encoder guides; subclasses choose each z0 site's distribution.

    The latent sites come from the model (``model.z0_sites``, ``model.input_sites``): "z0" for
    a ``LatentODEModel``, "z0.A", "z0.B", ... for a ``MultiAreaModel``; one encoder over all
    neurons conditions them all. Global sites (``model.global_sites``) get a mean-field part.

    Args:
        model: the ``SpikeModel`` whose latent sites this guide covers.
        hidden: GRU units per direction.
        dropout: dropout on the encoder's input (ODIN uses 0.05).
        init_scale: initial posterior standard deviation.
        include_global: also cover the model's global sites (False: leave them to another
            part of an ``AutoGuideList``).
    """

    def __init__(self, model: SpikeModel, *, hidden: int = 64, dropout: float = 0.05,
                 init_scale: float = 0.1, include_global: bool = True) -> None:
        if not isinstance(model, SpikeModel):
            raise ValueError(f"model: an amortized guide needs a pyrodyn SpikeModel (it reads "
                             f"z0_sites, input_sites, n_neurons), got {type(model).__name__}")
        super().__init__(model)
        self.z0_sites = dict(model.z0_sites)
        self.input_sites = dict(model.input_sites)
        self.latent_dim = sum(self.z0_sites.values())
        self.external_input_dim = model.external_input_dim
        global_sites = list(model.global_sites) if include_global else []
        self.global_guide = (self._global_guide(poutine.block(model, expose=global_sites),
                                                init_scale) if global_sites else None)
        self.encoder = SpikeEncoder(model.n_neurons + self.external_input_dim, hidden,
                                    dropout=dropout)
        raw_scale = float(torch.log(torch.expm1(torch.tensor(init_scale))))
        self.z0_head = nn.Linear(2 * hidden, 2 * self.latent_dim)
        with torch.no_grad():
            self.z0_head.bias[self.latent_dim:] = raw_scale
        self.path_sites = dict(model.path_sites)
        if len(self.path_sites) > 1:
            raise ValueError(f"model: one stochastic path site expected, got {self.path_sites}")
        if self.path_sites:  # starts at the prior's transitions: no correction, unit noise
            d = next(iter(self.path_sites.values()))
            self.path_head = nn.Linear(2 * hidden, path_head_size(d))
            with torch.no_grad():
                self.path_head.weight.zero_()
                self.path_head.bias.zero_()
                diagonal = torch.arange(d)
                first = d * d + d + diagonal * (diagonal + 1) // 2 + diagonal  # tril row-major
                self.path_head.bias[first] = float(torch.log(torch.expm1(torch.tensor(1.0))))
        if self.input_sites:
            n_inputs = sum(self.input_sites.values())
            self.input_head = nn.Linear(2 * hidden, 2 * n_inputs)
            with torch.no_grad():
                self.input_head.weight.mul_(0.1)
                self.input_head.bias.zero_()
                self.input_head.bias[n_inputs:] = raw_scale

    def encode(self, spikes, mask, encoder_mask, inputs):
        """Runs the encoder once per call on what the guide may see."""
        visible = encoder_mask if encoder_mask is not None else mask
        x = spikes if visible is None else spikes * visible
        x = torch.sign(x) * torch.log1p(x.abs())  # log1p of counts; finite for signed data
        if self.external_input_dim and inputs is not None:
            x = torch.cat([x, inputs], dim=-1)
        return self.encoder(x)

    def _split(self, params: torch.Tensor, dims: dict[str, int]):
        """(name, loc, scale) per site from a head's output (locs first, then raw scales)."""
        loc, raw = params.split(sum(dims.values()), -1)
        sizes = list(dims.values())
        return zip(dims, loc.split(sizes, -1), (softplus(raw) + 1e-4).split(sizes, -1))

    def _create_plates(self, *args, **kwargs):
        # Alone: the model's minibatch. Inside an AutoGuideList: the list's plates, which
        # must be made by ``create_plates=trial_plate`` for the same reason.
        if self.master is None:
            self.plates = {sites.TRIAL_PLATE: trial_plate(*args, **kwargs)}
        else:
            self.plates = self.master().plates
        return self.plates

    def _check_prototype(self, part_trace) -> None:
        """Called by the global part (this guide is its master); it covers its own sites."""

    def _global_guide(self, model, init_scale: float) -> AutoGuide:
        """The part over the model's global sites."""
        return AutoNormal(model, init_loc_fn=init_to_median, init_scale=init_scale)

    def site_distribution(self, index: int, loc: torch.Tensor, scale: torch.Tensor,
                          summary: torch.Tensor) -> dist.TorchDistribution:
        """q of the ``index``-th z0 site given its encoder loc and scale."""
        raise NotImplementedError

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
    ) -> dict[str, torch.Tensor]:
        if spikes is None:
            raise ValueError("spikes: an amortized guide needs the observed spikes to encode")
        call = dict(mask=mask, encoder_mask=encoder_mask, inputs=inputs,
                    trial_index=trial_index, num_trials=num_trials, kl_scale=kl_scale,
                    n_bins=n_bins)
        plate = self._create_plates(spikes, **call)[sites.TRIAL_PLATE]
        out = {}
        if self.global_guide is not None:
            out.update(self.global_guide(spikes, **call))
        summary, sequence = self.encode(spikes, mask, encoder_mask, inputs)
        with plate:
            with poutine.scale(scale=kl_scale):
                for i, (name, loc, scale) in enumerate(
                        self._split(self.z0_head(summary), self.z0_sites)):
                    out[name] = pyro.sample(name, self.site_distribution(i, loc, scale, summary))
                if self.input_sites:
                    for name, loc, scale in self._split(self.input_head(sequence),
                                                        self.input_sites):
                        out[name] = pyro.sample(name, dist.Normal(loc, scale).to_event(2))
                for name in self.path_sites:
                    out[name] = pyro.sample(name, self._path(out, sequence, inputs))
        return out

    def _path(self, out, sequence, inputs):
        """q(path | trial): the chain from the sampled initial state; each transition reads
        the encoder at the bin it leads into (both directions: the whole trial)."""
        parts = [out[n] for n in self.z0_sites]
        shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        start = torch.cat([p.expand(shape + p.shape[-1:]) for p in parts], -1)
        model = self.model
        return guided_path(self.path_head(sequence[..., 1:, :]), start, model.transition,
                           model.noise_scale(), None if inputs is None else inputs[..., :-1, :],
                           start_sites=tuple(self.z0_sites),
                           correlation=model.noise_correlation())


class AmortizedNormalGuide(AmortizedGuide):
    """q(z0 | spikes) = Normal(loc(x), scale(x)), diagonal."""

    def site_distribution(self, index, loc, scale, summary):
        return dist.Normal(loc, scale).to_event(1)


class AmortizedFlowGuide(AmortizedGuide):
    """q(z0 | spikes): a Normal from the encoder pushed through ``flows`` conditional affine
    autoregressive transforms, each conditioned on the encoder summary (non-Gaussian,
    correlated posteriors; one stack of flows per z0 site)."""

    def __init__(self, model: nn.Module, *, flows: int = 2, flow_hidden: int = 32,
                 **options) -> None:
        super().__init__(model, **options)
        context = self.z0_head.in_features
        self.flows = nn.ModuleList([nn.ModuleList([
            T.conditional_affine_autoregressive(dim, context,
                                                hidden_dims=[flow_hidden, flow_hidden])
            for _ in range(flows)]) for dim in self.z0_sites.values()])
        for stack in self.flows:  # start at the identity so training begins at the Normal guide
            for flow in stack:
                last = flow.nn.layers[-1]
                with torch.no_grad():
                    last.weight.mul_(0.01)
                    last.bias.zero_()

    def site_distribution(self, index, loc, scale, summary):
        base = dist.Normal(loc, scale).to_event(1)
        return dist.TransformedDistribution(base,
                                            [f.condition(summary) for f in self.flows[index]])


class MAPGuide(AmortizedGuide):
    """A point estimate z0 = encoder(spikes): a deterministic autoencoder (ODIN's training).

    The z0 prior still enters the objective as a penalty; the ELBO is a MAP objective.
    """

    def site_distribution(self, index, loc, scale, summary):
        return dist.Delta(loc).to_event(1)

    def _global_guide(self, model, init_scale: float) -> AutoGuide:
        return AutoDelta(model, init_loc_fn=init_to_median)


def per_trial_normal_guide(model: nn.Module, *, init_scale: float = 0.1) -> AutoNormal:
    """Non-amortized mean-field Normal with parameters per trial (AutoNormal, subsampling-aware).

    New trials need refitting: use an amortized guide to generalize. Over a stochastic path it
    is mean-field over every bin, which fits the path to each bin's noise: on two_area (500
    trials, ``pyrodyn fit --model multi-area --guide per_trial_normal``) the training trials'
    bits per spike were 146% of the true rates', state R2 0.60 / 0.77, the channels 10 times too
    strong. There, prefer the amortized guides, whose paths are Markov chains.
    """
    return AutoNormal(model, init_loc_fn=init_to_median, init_scale=init_scale,
                      create_plates=trial_plate)


def per_trial_map_guide(model: nn.Module) -> AutoDelta:
    """Per-trial point estimates of the latent sites (AutoDelta, subsampling-aware)."""
    return AutoDelta(model, init_loc_fn=init_to_median, create_plates=trial_plate)


def per_trial_trials(guide) -> int | None:
    """How many trials a guide's per-trial (non-amortized) parameters describe, read off its
    prototype; None when it has none (amortized guides, global-site parts) or has not run."""
    for part in guide.modules():
        if not isinstance(part, AutoGuide) or isinstance(part, (AmortizedGuide, AutoGuideList,
                                                                AutoCallable)):
            continue
        trace = part.prototype_trace
        for site in [] if trace is None else trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.name == sites.TRIAL_PLATE:
                    return frame.full_size or frame.size
    return None


GUIDES = {
    "normal": AmortizedNormalGuide,
    "flow": AmortizedFlowGuide,
    "map": MAPGuide,
    "per_trial_normal": per_trial_normal_guide,
    "per_trial_map": per_trial_map_guide,
}


def build_guide(name: str, model: nn.Module, **options) -> nn.Module:
    """Builds a guide by name: "normal" (default), "flow", "map", "per_trial_normal",
    "per_trial_map"."""
    if name not in GUIDES:
        raise ValueError(f"guide: unknown guide {name!r} (known: {', '.join(GUIDES)})")
    return GUIDES[name](model, **options)
