"""Uncertainty about the parameters users read off: a Laplace posterior over a fitted model's
communication channels and readout gains.

``fit`` point-estimates every weight, so a posterior without this covers each trial's path
given those weights and nothing else. ``parameter_laplace`` adds, after the fit, a Gaussian
over perturbations of the weights the results are read from, centred on the fit:

- **Channels** (multi-area models with a stochastic path). Each channel ``c = W features(z)``
  (low-rank: ``W = U V^T``, perturbed as a full matrix; MLP: its output weights) gets a
  perturbation ``dW``. The curvature is the Gauss-Newton matrix of the path's transition
  density, ``J^T J`` over every transition of the guide's path draws on the training trials
  (J: the derivative of the standardised transition noise), taken jointly with every weight of
  every area's own field, plus a ``Normal(0, 1 / prior_precision)`` prior on each weight. The
  channels' covariance is the channel block of its inverse: the fields are integrated out, so
  where an area's own dynamics can stand in for a channel (phase-locked areas) the channel's
  interval widens instead of staying at the fitted split.
- **Readout gains** (every readout). Each neuron's log-rate gets an affine perturbation
  ``dW_n z + db_n``, plus, where the readout has a shape of its own per neuron (the plane
  readout's monotone link: ``Readout.shape_features``), a linearised perturbation of that
  shape's parameters, with the Fisher information of its likelihood at the guide's latents.
  A saturation the fit placed with few spikes then stays as uncertain as those spikes leave
  it (README (g), "A saturating embedding").

``channel_scale_laplace`` is narrower in what it covers and right about how much: a Gaussian over
each channel's scale (its output times ``a``) whose information is the observed one, the paths'
curvature less what their own uncertainty takes away (Louis' identity), with the areas' own
fields integrated out along the directions in which they can stand in for a channel. As a
model's ``parameter_posterior`` it scales each posterior draw's channels, and ``pyrodyn fit``
puts it into every multi-area run (channel_scales.pt) and so into every strength interval.

The Laplace prior that shrinks channel gains in the fit is not part of the curvature (it has
none to speak of at zero); the Gaussian prior stands in for it. The guide's latents are held
at the fit (each parameter draw is independent of the path draw given the data). The fields
are never drawn (``channel_scale_laplace`` integrates them out of the scales; in
``parameter_laplace``, ``marginal``) and the diffusion stays a point estimate.

``posterior`` applies one parameter draw per posterior draw (``apply_parameter_draw``, in
``pyrodyn.inference.traces``), so the uncertainty reaches "comm.A<-B", "rates" and
"log_likelihood" (and, for deterministic ODE models, "latents"). ``pyrodyn fit`` computes it
for one-area models (the recipe's ``parameter_prior: auto``, ``attach_parameter_posterior``)
and writes parameters.pt to the run folder: without it the rates' intervals run too narrow
where the fitted link is off (README (g), "A saturating embedding"). Multi-area models get
``channel_scale_laplace`` instead: measured on their fits, this posterior barely widens true
channels, widens absent ones past issue 15's bound and makes the rates' intervals too wide,
because the path and the weights are drawn independently.

Example (with a fitted ``model`` and ``guide``)::

    model.parameter_posterior = parameter_laplace(model, guide, data.select("train"))
    post = posterior(model, guide, data.select("test"))   # draws carry it
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap

from ..models import sites
from ..models.base import in_model_coordinates
from ..models.paths import MarkovPath, innovation_scales, previous_states, unit_fisher
from ..models.readouts import Readout
from .traces import apply_parameter_draw

__all__ = ["ParameterPosterior", "parameter_laplace", "ChannelScales", "channel_scale_laplace",
           "has_channel_scales"]

# Path draws per trial that the fields' stand-in directions are found from: they only set the
# directions along which the scales' information is then taken (by Louis' identity, every draw).
# On bidirectional_pair's (d) fit, 1, 2, 4 and 8 draws gave sds within 0.0001 of each other;
# on the seed-2 chain's, all 16 gave the true channels' sds within 0.6% of these 2 draws', and
# other pairs of draws up to 14% wider (README (d), "The channel scales in 60% of the time").
FIELD_DRAWS = 2


@dataclass
class ParameterPosterior:
    """Zero-mean Gaussians over perturbations of a model's channel and readout weights.

    Attributes:
        channels: channel module path (e.g. "field.channels.B<-A") -> its perturbation's shape
            (target_dim, features), in the order of ``channel_scale_tril``'s rows.
        channel_scale_tril: (P, P) Cholesky factor of the channels' joint covariance (None:
            no channels).
        readouts: readout module path (e.g. "readouts.A") -> (neuron, F, F) Cholesky
            factors, one per neuron, over (gain row, baseline, then the readout's
            ``shape_features``): F = latent + 1 + the number of those.
        prior_precision: the Gaussian prior's precision per weight.
    """

    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    channel_scale_tril: torch.Tensor | None = None
    readouts: dict[str, torch.Tensor] = field(default_factory=dict)
    prior_precision: float = 1.0

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One draw: module path -> perturbation (channels (target, features); readouts
        (neuron, F), gain columns, the baseline, then the shape's: ``readout_perturbation``)."""
        draw = {}
        if self.channels:
            tril = self.channel_scale_tril
            flat = tril @ torch.randn(tril.shape[0], generator=generator, dtype=tril.dtype)
            sizes = [math.prod(shape) for shape in self.channels.values()]
            for (path, shape), part in zip(self.channels.items(), flat.split(sizes)):
                draw[path] = part.reshape(shape)
        for path, tril in self.readouts.items():
            noise = torch.randn(tril.shape[:-1], generator=generator, dtype=tril.dtype)
            draw[path] = (tril @ noise.unsqueeze(-1)).squeeze(-1)
        return draw

    def state_dict(self) -> dict:
        """Tensors, strings and numbers only: ``torch.load(weights_only=True)`` reads it."""
        return {"channels": {k: list(v) for k, v in self.channels.items()},
                "channel_scale_tril": self.channel_scale_tril, "readouts": dict(self.readouts),
                "prior_precision": self.prior_precision}

    @classmethod
    def from_state_dict(cls, state: dict) -> ParameterPosterior:
        try:
            return cls({k: tuple(v) for k, v in state["channels"].items()},
                       state["channel_scale_tril"], dict(state["readouts"]),
                       float(state["prior_precision"]))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"parameter posterior: not a saved ParameterPosterior ({error})") \
                from None


def parameter_laplace(model, guide, data, *, num_draws: int = 4, prior_precision: float = 1.0,
                      max_trials: int = 512, marginal: bool = True, seed: int = 0
                      ) -> ParameterPosterior:
    """The Laplace posterior over ``model``'s channels and readout gains (module docstring).

    Args:
        data: the trials the model was fitted on.
        num_draws: guide draws of each trial's latents the curvature is averaged over.
        prior_precision: precision of the Gaussian prior on every weight (> 0).
        marginal: integrate every area's field weights out of the channels' posterior
            (False: the channels' posterior given the fitted fields).
        max_trials: at most this many trials, chosen at random, with the curvature scaled up
            to all of ``data``'s (bounds the cost on large data sets; per-trial guides use
            every trial).

    Raises:
        ValueError: a model with neither channels nor pyrodyn readouts, or bad arguments.
    """
    from .posterior import posterior

    if not prior_precision > 0 or num_draws < 1 or max_trials < 1:
        raise ValueError(f"parameter_laplace: needs prior_precision > 0, num_draws >= 1 and "
                         f"max_trials >= 1, got {prior_precision}, {num_draws}, {max_trials}")
    readouts = list(_readouts(model))
    has_channels = hasattr(getattr(model, "field", None), "channels") and \
        bool(len(model.field.channels))
    if not readouts and not has_channels:
        raise ValueError(f"model: {type(model).__name__} has no pyrodyn readout or channels "
                         "to put a Laplace posterior on")
    trials = _some_trials(guide, data.n_trials, max_trials, seed)
    scale = data.n_trials / trials.size
    subset = data.select(trials)
    post = posterior(model, guide, subset, num_samples=num_draws, seed=seed,
                     parameter_draws=False)
    device = next(model.parameters()).device
    result = ParameterPosterior(prior_precision=float(prior_precision))
    mask = None if subset.mask is None else torch.as_tensor(subset.mask, device=device)
    spikes = torch.as_tensor(subset.spikes, device=device)
    for path, readout, likelihood, neurons, key in readouts:
        latents = in_model_coordinates(model, torch.as_tensor(post.draws[key], device=device))
        result.readouts[path] = _readout_scale_tril(
            readout, likelihood, latents, spikes[..., neurons],
            None if mask is None else mask[..., neurons], scale, prior_precision)
    if has_channels and getattr(model, "diffusion", None) is not None:
        inputs = None if subset.inputs is None else torch.as_tensor(subset.inputs, device=device)
        result.channels, result.channel_scale_tril = _channel_scale_tril(
            model, in_model_coordinates(model, torch.as_tensor(post.draws[sites.LATENTS],
                                                               device=device)), inputs, scale,
            prior_precision, marginal=marginal)
    return result


def _some_trials(guide, n_trials: int, max_trials: int, seed: int) -> np.ndarray:
    """At most ``max_trials`` of the trials, chosen at random; all of them for a per-trial
    guide, which knows only the whole set it was fitted on."""
    from .guides import per_trial_trials

    trials = np.arange(n_trials)
    per_trial = isinstance(guide, torch.nn.Module) and per_trial_trials(guide) is not None
    if trials.size > max_trials and not per_trial:
        trials = np.sort(np.random.default_rng(seed).choice(trials, max_trials, replace=False))
    return trials


def _readouts(model):
    """(module path, readout, likelihood, neuron indices, latents site) per readout."""
    if isinstance(getattr(model, "readouts", None), torch.nn.ModuleDict):
        for area, readout in model.readouts.items():
            yield (f"readouts.{area}", readout, model.likelihoods[area],
                   torch.as_tensor(model.area_neurons[area]), f"{sites.LATENTS}.{area}")
    elif isinstance(getattr(model, "readout", None), Readout):
        yield ("readout", model.readout, model.likelihood, slice(None), sites.LATENTS)


@torch.no_grad()
def _readout_scale_tril(readout, likelihood, latents, spikes, mask, scale, precision):
    """Per neuron, the Cholesky factor of (Fisher information of (gain, baseline, shape) +
    prior)^-1; latents (draw, trial, time, latent), spikes (trial, time, neuron)."""
    information = 0.0
    for z in latents:  # one draw at a time: bounded memory
        output = readout(z)
        x = _readout_features(readout, z)
        with torch.enable_grad():  # the likelihood's curvature in each log-rate, elementwise
            eta = output.detach().requires_grad_()
            log_p = likelihood.distribution(eta).log_prob(spikes).sum()
            (slope,) = torch.autograd.grad(log_p, eta, create_graph=True)
            (curvature,) = torch.autograd.grad(slope.sum(), eta)
        weight = (-curvature).clamp_min(0)
        if mask is not None:
            weight = weight * mask
        # summed in double precision, 64 trials at a time: a link's shape parameters can be
        # nearly collinear with the gains (its slope with the gain row), and float32's rounding
        # of the sums then leaves the information matrix indefinite (`make demo`'s fit)
        for w, f in zip(weight.split(64), x.split(64)):  # a double copy of a chunk only
            f = f.double()
            information = information + torch.einsum("ktn,ktni,ktnj->nij", w.double(), f, f)
    information = information * (scale / latents.shape[0])
    eye = torch.eye(information.shape[-1], dtype=information.dtype, device=information.device)
    covariance = torch.linalg.inv(information + precision * eye)
    covariance = 0.5 * (covariance + covariance.mT)
    return torch.linalg.cholesky(covariance).to(latents.dtype).cpu()


def _readout_features(readout, z):
    """(trial, time, neuron, F): what each neuron's log-rate perturbation multiplies: ``z``,
    1, then the readout's ``shape_features`` (``readout_perturbation``'s order)."""
    shared = torch.cat([z, torch.ones_like(z[..., :1])], -1)
    shared = shared.unsqueeze(-2).expand(*z.shape[:-1], readout.n_neurons, shared.shape[-1])
    own = readout.shape_features(z)
    return shared if own is None else torch.cat([shared, own], -1)


class _Field:
    """The coupled field with its own weights as arguments (what ``ODESolver.step`` needs: a
    callable with ``discrete``)."""

    discrete = False

    def __init__(self, field, weights):
        self.field, self.weights = field, weights

    def __call__(self, z, u=None):
        return functional_call(self.field, self.weights, (z, u))


@torch.no_grad()
def _channel_scale_tril(model, latents, inputs, scale, precision, *, marginal: bool = True):
    """The channels' marginal covariance factor from the transition density's Gauss-Newton
    matrix over (channel perturbations, every area's field weights); latents (draw, trial,
    time, latent), inputs (trial, time, input) or None."""
    field = model.field
    weights = _field_weights(model) if marginal else {}
    deltas = {}
    for name, channel in field.channels.items():
        n_features = channel.features(latents.new_zeros(1, channel.source_dim)).shape[-1]
        deltas[name] = latents.new_zeros(channel.target_dim, n_features)
    gram = _transition_gram(model, latents, inputs, deltas, weights) * (scale / latents.shape[0])
    gram.diagonal().add_(precision)
    k = sum(d.numel() for d in deltas.values())
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(gram))[:k, :k]
    covariance = 0.5 * (covariance + covariance.T)
    shapes = {f"field.channels.{name}": tuple(d.shape) for name, d in deltas.items()}
    return shapes, torch.linalg.cholesky(covariance).cpu()


def _field_weights(model) -> dict[str, torch.Tensor]:
    """Every area's own field weights, by their names in ``model.field``."""
    return {name: p.detach() for name, p in model.field.named_parameters()
            if name.startswith("fields.")}


@torch.no_grad()  # the Jacobians come from torch.func, which this does not switch off
def _transition_gram(model, latents, inputs, deltas, weights, *, chunk: int = 2048,
                     block: int = 256):
    """The Gauss-Newton matrix ``J^T J`` of the path's transition density, summed over every
    transition of latents (draw, trial, time, latent), in (channel perturbations ``deltas``, as
    ``apply_parameter_draw`` takes them, then the field ``weights``), in that order."""
    field, solver = model.field, model.solver
    noise, rho = model.noise_scale().detach(), model.noise_correlation()
    rho = None if rho is None else rho.detach()

    def residual(deltas, weights, z_before, z, z_next, inputs, scale, keep):
        # each transition's innovation in units of its scale (the path's density is a product
        # of these): the noise z_next - step(z), less rho times the noise before it
        u_before, u = inputs if inputs else (None, None)
        # the channels perturbed by the hooks the posterior's draws use: one definition of dW
        with apply_parameter_draw(model, {f"field.channels.{k}": d for k, d in deltas.items()}):
            drift = _Field(field, weights)
            innovation = z_next - solver.step(drift, z, u)
            if rho is not None:  # the first transition's z_before is a stand-in: keep 0
                innovation = innovation - rho * keep * (z - solver.step(drift, z_before,
                                                                         u_before))
        return innovation / scale

    n_steps, size = latents.shape[-2] - 1, latents.shape[:-2] + (latents.shape[-2] - 1,)
    # Student-t innovations: each residual's Gauss-Newton weight is its Fisher information
    df = model.noise_df()
    fisher = unit_fisher(None if df is None else df.detach())
    scales = (innovation_scales(noise, rho, n_steps) / fisher ** 0.5).expand(size + noise.shape)
    keep = (torch.arange(n_steps, device=latents.device) > 0).to(latents.dtype)
    previous, following = latents[..., :-1, :], latents[..., 1:, :]
    before = previous_states(latents[..., 0, :], previous)
    columns = [before, previous, following]
    if inputs is not None:
        u = inputs[:, :-1].expand(latents.shape[:1] + inputs[:, :-1].shape)
        columns += [previous_states(u[..., 0, :], u), u]
    columns += [scales, keep.expand(size).unsqueeze(-1)]
    flat = [c.reshape(-1, c.shape[-1]) for c in columns]
    jacobian = vmap(jacrev(residual, argnums=(0, 1)), in_dims=(None, None, 0, 0, 0, 0, 0, 0))
    n = sum(d.numel() for d in deltas.values()) + sum(w.numel() for w in weights.values())
    gram = latents.new_zeros(n, n)
    for start in range(0, flat[0].shape[0], chunk):
        part = [c[start:start + chunk] for c in flat]
        by_delta, by_weight = jacobian(deltas, weights, *part[:3], tuple(part[3:-2]),
                                       *part[-2:])
        rows = torch.cat([j.reshape(*j.shape[:2], -1)
                          for j in (*by_delta.values(), *by_weight.values())], -1)
        rows = rows.reshape(-1, n)
        for i in range(0, n, block):  # the blocks on and above the diagonal only: ~half the work
            gram[i:i + block, i:] += rows[:, i:i + block].T @ rows[:, i:]
    return gram.triu() + gram.triu(1).T


@dataclass
class ChannelScales:
    """A Gaussian over each channel's scale ``a`` (its output times ``a``; 1 at the fit).

    Set as a model's ``parameter_posterior`` (``pyrodyn fit`` does), each posterior draw runs
    with its own scales, so "comm.A<-B" and every strength read off it carry them.

    Attributes:
        names: the channels ("B<-A"), in the order of ``covariance``'s rows.
        covariance: (K, K) covariance of the scales.
    """

    names: list[str]
    covariance: np.ndarray

    def sd(self, name: str) -> float:
        i = self.names.index(name)
        return float(np.sqrt(self.covariance[i, i]))

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One draw as ``apply_parameter_draw`` takes it: channel module path -> a scalar
        ``a - 1`` (the channel's output is multiplied by ``1 + (a - 1)``)."""
        tril = torch.linalg.cholesky(torch.as_tensor(self.covariance, dtype=torch.float64))
        draw = tril @ torch.randn(len(self.names), generator=generator, dtype=torch.float64)
        return {f"field.channels.{name}": d.float() for name, d in zip(self.names, draw)}

    def state_dict(self) -> dict:
        """Strings and a tensor only: ``torch.load(weights_only=True)`` reads it."""
        return {"names": list(self.names), "covariance": torch.as_tensor(self.covariance)}

    @classmethod
    def from_state_dict(cls, state: dict) -> ChannelScales:
        try:
            names, covariance = list(state["names"]), np.asarray(state["covariance"], float)
        except (KeyError, TypeError) as error:
            raise ValueError(f"channel scales: not saved ChannelScales ({error})") from None
        if covariance.shape != (len(names), len(names)):
            raise ValueError(f"channel scales: a covariance of shape {covariance.shape} for "
                             f"{len(names)} channels")
        return cls(names, covariance)


def channel_scale_laplace(model, guide, data, *, num_draws: int = 16, max_trials: int = 256,
                          prior_precision: float = 1.0, refine_steps: int = 0,
                          fields: bool = True, seed: int = 0) -> ChannelScales:
    """How far the data pin each channel's scale: the observed information of ``log p(spikes
    | a)`` at ``a = 1``, by Louis' identity over the posterior's path draws.

    The path's transition density scores a scale given the paths, but the paths are uncertain
    too, and the information the data hold about ``a`` is the paths' (complete-data) information
    less what their uncertainty takes away: ``I = sum over trials of E[-d2 log p(path | a)] -
    Var[d log p(path | a)]``, both over each trial's draws (the first by Gauss-Newton). The
    complete-data information alone (``parameter_laplace``'s curvature) is several times larger
    where the channel's signal is small beside the path noise (two_area: sd 0.0074 against
    0.0175, 5.6x the information), and its intervals then miss the
    truth (README (d), "How well do the data pin a channel's strength").

    Where the target's own field can take over part of a channel's work, the data pin the
    split between them less than they pin the channel with the field held at the fit. With
    ``fields``, each scale comes with one nuisance coordinate: the change of every area's field
    weights that best stands in for it (the least favourable direction, ``(G_ww + prior)^-1
    G_wa`` of the paths' Gauss-Newton matrix G over scales and weights, from ``FIELD_DRAWS``
    draws).
    The information is taken by Louis' identity over scales and these coordinates jointly, and
    the coordinates are integrated out. Where the paths are certain this is the exact marginal
    over all the field weights. On the (d) systems it widens the true channels' sds 1.2-2.1x.

    Args:
        data: the trials the model was fitted on (at most ``max_trials`` of them, chosen at
            random, the information scaled up to all; per-trial guides use every trial).
        num_draws: path draws per trial (>= 2: the variance needs two).
        refine_steps: per-trial refinement of the draws (``posterior``), as the fit's scores.
        prior_precision: a ``Normal(1, 1 / prior_precision)`` prior on each scale, and
            ``Normal(0, 1 / prior_precision)`` on each field weight.
        fields: integrate the areas' own fields out (False: the scales given the fitted
            fields).

    Example (with a fitted multi-area ``model`` and ``guide``)::

        model.parameter_posterior = channel_scale_laplace(model, guide, data.select("train"),
                                                          refine_steps=50)
        summary = communication_summary(posterior(model, guide, data.select("test")))
    """
    from .posterior import posterior

    if not has_channel_scales(model):
        raise ValueError("model: channel_scale_laplace needs a multi-area model with a "
                         "stochastic path of Gaussian noise (channels, a diffusion, no noise_df)")
    if num_draws < 2 or max_trials < 1 or not prior_precision > 0:
        raise ValueError(f"channel_scale_laplace: needs num_draws >= 2, max_trials >= 1 and "
                         f"prior_precision > 0, got {num_draws}, {max_trials}, "
                         f"{prior_precision}")
    trials = _some_trials(guide, data.n_trials, max_trials, seed)
    subset = data.select(trials)
    post = posterior(model, guide, subset, num_samples=num_draws, seed=seed,
                     refine_steps=refine_steps, parameter_draws=False, names=(sites.LATENTS,))
    device = next(model.parameters()).device
    latents = in_model_coordinates(model, torch.as_tensor(post.draws[sites.LATENTS],
                                                          device=device))
    inputs = None if subset.inputs is None else torch.as_tensor(subset.inputs, device=device)
    names, scale = list(model.field.channels), data.n_trials / trials.size
    directions = _least_favourable_directions(
        model, names, latents[:FIELD_DRAWS], inputs, scale, prior_precision) if fields else ()
    covariance = _scale_covariance(model, names, latents, inputs, scale, prior_precision,
                                   directions)
    return ChannelScales(names, covariance.double().cpu().numpy())


def has_channel_scales(model) -> bool:
    """Whether ``channel_scale_laplace`` applies: channels and a stochastic path of Gaussian
    noise (the identity's score is that of Gaussian innovations)."""
    channels = getattr(getattr(model, "field", None), "channels", None)
    return bool(channels) and getattr(model, "diffusion", None) is not None \
        and model.noise_df() is None


@torch.no_grad()
def _scale_covariance(model, names, latents, inputs, scale, precision, directions=()):
    """The scales' covariance from path draws (draw, trial, time, latent): Louis' identity,
    the trials' information times ``scale``, plus the prior's ``precision``; jointly with a
    coordinate along each of ``directions`` in the fields' weights (dicts of tensors, as
    ``_least_favourable_directions`` gives), which is then integrated out."""
    score, gauss_newton = _scale_score_and_curvature(model, names, latents, inputs, directions)
    centred = score - score.mean(0)
    missing = torch.einsum("dti,dtj->ij", centred, centred) / (latents.shape[0] - 1)
    information = (gauss_newton.mean(0).sum(0) - missing) * scale
    # the two terms are estimates: where their difference dips below zero, the data say nothing
    values, vectors = torch.linalg.eigh(0.5 * (information + information.T))
    information = (vectors * values.clamp_min(0)) @ vectors.T
    prior = precision * torch.eye(len(information), dtype=information.dtype,
                                  device=information.device)
    if directions:  # the weights' Normal(0, 1 / precision) prior along the directions
        flat = torch.stack([torch.cat([d.flatten() for d in v.values()]) for v in directions])
        prior[len(names):, len(names):] = precision * flat @ flat.T
    covariance = torch.linalg.inv(information + prior)[:len(names), :len(names)]
    return 0.5 * (covariance + covariance.T)


def _scale_score_and_curvature(model, names, latents, inputs, directions=(), *,
                               chunk: int = 32):
    """Per draw and trial: the score of the path's log-density in every channel's scale, then
    in a step along each of ``directions`` in the fields' weights (draw, trial, K + M), and its
    Gauss-Newton curvature (draw, trial, K + M, K + M).

    The Jacobian in all K + M coordinates comes from one forward-mode pass (``jacfwd``: the
    drift is evaluated once per ``chunk`` paths with every tangent beside it), 5-6x faster on
    the chain of (d) than a pass per coordinate."""
    field, solver = model.field, model.solver
    noise, rho = model.noise_scale().detach(), model.noise_correlation()
    rho = None if rho is None else rho.detach()
    k, weights = len(names), _field_weights(model)
    along = {name: torch.stack([d[name] for d in directions]) for name in weights} \
        if directions else {}

    def innovation(theta, paths, u):
        # the paths' innovations in units of each step's scale, under the model's own path
        # density with scales 1 + theta[:K] and the weights moved by theta[K:] along directions
        moved = {name: w + torch.tensordot(theta[k:], along[name], 1)
                 for name, w in weights.items()} if directions else weights
        hooks = [field.channels[name].register_forward_hook(
            lambda module, args, out, i=i: out * (1 + theta[i])) for i, name in
            enumerate(names)]
        try:
            drift = _Field(field, moved)
            path = MarkovPath(paths[..., 0, :], lambda z, u: solver.step(drift, z, u), noise,
                              paths.shape[-2] - 1, u, correlation=rho)
            residual = path._residual(paths[..., 1:, :])
            return residual, residual
        finally:
            for hook in hooks:
                hook.remove()

    paths = latents.reshape(-1, *latents.shape[-2:])  # (draw x trial, time, latent)
    u = None if inputs is None else \
        inputs[:, :-1].expand(latents.shape[0], *inputs[:, :-1].shape).flatten(0, 1)
    theta = latents.new_zeros(k + len(directions))
    jacobian = torch.func.jacfwd(innovation, has_aux=True)
    scores, curvatures = [], []
    for start in range(0, paths.shape[0], chunk):
        part = slice(start, start + chunk)
        jac, residual = jacobian(theta, paths[part], None if u is None else u[part])
        # log p(path | a) = -sum residual^2 / 2 + const: its score and Gauss-Newton curvature
        scores.append(-torch.einsum("pkl,pkli->pi", residual, jac))
        curvatures.append(torch.einsum("pkli,pklj->pij", jac, jac))
    shape = latents.shape[:2] + (len(theta),)
    return torch.cat(scores).reshape(shape), torch.cat(curvatures).reshape(shape + shape[-1:])


@torch.no_grad()
def _least_favourable_directions(model, names, latents, inputs, scale, precision
                                 ) -> list[dict[str, torch.Tensor]]:
    """Per channel, the change of the fields' weights that best stands in for a unit change of
    its scale: ``(G_ww + precision)^-1 G_wa``, G the paths' Gauss-Newton matrix over (scales,
    field weights), the draws' mean over latents (draw, trial, time, latent) times ``scale``."""
    weights = _field_weights(model)
    gram = _transition_gram(model, latents, inputs, {name: latents.new_zeros(()) for name in
                                                      names}, weights)
    gram = gram * (scale / latents.shape[0])
    k = len(names)
    fields = gram[k:, k:] + precision * torch.eye(len(gram) - k, dtype=gram.dtype,
                                                  device=gram.device)
    steps = torch.linalg.solve(fields, gram[k:, :k])  # (weights, K)
    directions, sizes = [], [w.numel() for w in weights.values()]
    for column in steps.T:
        directions.append({name: part.reshape(w.shape) for (name, w), part in
                           zip(weights.items(), column.split(sizes))})
    return directions
