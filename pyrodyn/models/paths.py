"""Stochastic latent paths on the bin grid: ``z[k+1] = step(z[k], u[k]) + r[k]``.

A model with a diffusion (``LatentODEModel(..., diffusion=0.1)``) draws each trial's path after
its initial state: ``step`` is one bin of the model's fixed-step ODE solver (the drift), ``r[k]``
the path's noise. White unless a correlation is given (the recipe gives one: ``RunConfig``'s
``noise_tau``), ``r[k] = s * eps[k]`` with ``s`` the per-dimension noise
scale per bin (``sigma * sqrt(step_size)``, Euler-Maruyama on the bin grid). With a correlation
``rho`` (``noise_tau``: ``rho = exp(-1 / tau)`` per bin) the noise is an AR(1) process,
``r[k] = rho * r[k-1] + s * eps[k]``, started from its stationary law (scale
``s / sqrt(1 - rho**2)``) or from a given previous noise: a forcing that is smooth in time, as
the error of a smooth fitted drift is. The deterministic ODE is the ``s -> 0`` limit, white noise
``rho = 0``. With degrees of freedom ``nu`` (``RunConfig``'s ``noise_df``) each innovation
``s * eps[k]`` is Student-t instead of Gaussian (``nu -> inf``): rare large kicks, such as the
pulses of an input the model does not see, cost little, while the rest of the path stays tight.
(Correlated noise then starts from a t of the stationary scale, not its exact stationary law.)

- ``MarkovPath``: that prior over the path ``z[1:]`` given ``z[0]``, event (time - 1, latent).
  Its density is scored in parallel over bins, one drift evaluation for the whole path.
- ``GuidedPath``: the guide's family over the same path, a Gauss-Markov chain that runs the
  model's own drift plus a correction ``s * (K[k] z[k] + m[k] + L[k] eta)`` whose gains, offsets
  and noise factors come from an encoder of the whole trial (smoothing, not filtering). For
  linear dynamics with Gaussian observations the exact posterior is of this form.
- ``shared_drift``: a context in which the prior's density of the guide's own draw reuses the
  drift the chain evaluated, so a training step evaluates the drift once.

Example:
    >>> import torch
    >>> drift = lambda z, u: 0.9 * z
    >>> prior = MarkovPath(torch.zeros(4, 2), drift, torch.full((2,), 0.1), n_steps=9)
    >>> path = prior.sample()
    >>> path.shape, prior.log_prob(path).shape
    (torch.Size([4, 9, 2]), torch.Size([4]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import pyro
import torch
from pyro.distributions import TorchDistribution, constraints

from . import sites

__all__ = ["MarkovPath", "GuidedPath", "Diffusion", "previous_states", "innovation_scales",
           "path_head_size", "guided_path", "LatentPathModel", "stochastic_path_diffusion",
           "shared_drift", "unit_log_density", "unit_fisher"]

Drift = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class _GuideDraw(NamedTuple):
    """A ``GuidedPath``'s draw and the drift its chain evaluated on it, bin by bin."""

    path: torch.Tensor
    start: torch.Tensor
    drift: Drift
    inputs: torch.Tensor | None
    drifts: torch.Tensor


_GUIDE_DRAWS: ContextVar[dict[int, _GuideDraw] | None] = ContextVar("pyrodyn_guide_draws",
                                                                    default=None)


@contextmanager
def shared_drift() -> Iterator[None]:
    """Within it, a ``MarkovPath`` that scores a ``GuidedPath``'s own draw (or centre) takes
    the drift the guide's chain evaluated on it instead of evaluating it again (the same
    numbers, and the same gradients: the drift of each bin is a function of the same state
    tensor).

    Only where model and guide run with the same weights, as in a training or refinement
    step: a model run under other weights than the chain's (``replay`` with a parameter draw)
    must evaluate its own drift.

    Example:
        >>> with shared_drift():
        ...     pass  # loss = elbo.differentiable_loss(model, guide, ...)
    """
    token = _GUIDE_DRAWS.set({})
    try:
        yield
    finally:
        _GUIDE_DRAWS.reset(token)


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and torch.equal(a, b))


def previous_states(start: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """The state before each bin of ``path``: ``[start, path[:-1]]`` (..., time - 1, latent)."""
    shape = torch.broadcast_shapes(start.shape[:-1], path.shape[:-2])
    start = start.expand(shape + start.shape[-1:]).unsqueeze(-2)
    return torch.cat([start, path.expand(shape + path.shape[-2:])[..., :-1, :]], dim=-2)


def _input(inputs: torch.Tensor | None, k: int) -> torch.Tensor | None:
    return None if inputs is None else inputs[..., k, :]


def innovation_scales(noise_scale: torch.Tensor, correlation: torch.Tensor | None, n_steps: int,
                      *, stationary_start: bool = True) -> torch.Tensor:
    """The scale of each step's innovation (n_steps, latent): ``noise_scale``, except for the
    first step of correlated noise that starts afresh, which has the stationary scale."""
    scales = noise_scale.expand(n_steps, noise_scale.shape[-1])
    if correlation is None or not stationary_start or not n_steps:
        return scales
    first = noise_scale / torch.sqrt(1 - correlation ** 2)
    return torch.cat([first.unsqueeze(0), scales[1:]])


class _Path(TorchDistribution):
    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, start: torch.Tensor, drift: Drift, noise_scale: torch.Tensor,
                 n_steps: int, inputs: torch.Tensor | None = None, *,
                 correlation: torch.Tensor | None = None,
                 last_noise: torch.Tensor | None = None,
                 df: torch.Tensor | None = None) -> None:
        self.start, self.drift, self.noise_scale = start, drift, noise_scale
        self.n_steps, self.inputs = n_steps, inputs
        self.correlation, self.last_noise, self.df = correlation, last_noise, df
        super().__init__(start.shape[:-1], torch.Size((n_steps, start.shape[-1])),
                         validate_args=False)

    def _scales(self) -> torch.Tensor:
        return innovation_scales(self.noise_scale, self.correlation, self.n_steps,
                                 stationary_start=self.last_noise is None)

    def _previous_noise(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(()) if self.last_noise is None else self.last_noise

    def _next_noise(self, noise: torch.Tensor, innovation: torch.Tensor) -> torch.Tensor:
        return innovation if self.correlation is None else self.correlation * noise + innovation

    def _drift_along(self, value: torch.Tensor) -> torch.Tensor:
        """The drift from the state before each bin of ``value``: evaluated in parallel over
        bins, or, within ``shared_drift``, the guide's own where ``value`` is its draw."""
        draws = _GUIDE_DRAWS.get()
        draw = None if draws is None else draws.get(id(value))
        if (draw is not None and draw.path is value and draw.drift == self.drift
                and _same(draw.start, self.start) and _same(draw.inputs, self.inputs)):
            return draw.drifts
        return self.drift(previous_states(self.start, value), self.inputs)

    def _residual(self, value: torch.Tensor) -> torch.Tensor:
        """The innovation each transition of ``value`` needed, in units of its scale."""
        noise = value - self._drift_along(value)
        if self.correlation is not None:
            before = previous_states(self._previous_noise(noise).expand(
                noise.shape[:-2] + noise.shape[-1:]), noise)
            noise = noise - self.correlation * before
        return noise / self._scales()

    def _log_jacobian(self) -> torch.Tensor:
        return torch.log(self._scales()).sum()


class MarkovPath(_Path):
    """``z[k+1] = drift(z[k], u[k]) + r[k]`` from ``start`` (..., latent), the noise ``r`` white
    with scale ``noise_scale`` or, with a ``correlation`` (latent,), AR(1) from its stationary law
    or from ``last_noise`` (..., latent), the noise of the transition into ``start``;
    ``inputs`` (..., n_steps, input) the drift's per-bin inputs or None; ``df`` (latent,) the
    innovations' Student-t degrees of freedom, None for Gaussian innovations."""

    def _unit_noise(self, like: torch.Tensor) -> torch.Tensor:
        if self.df is None:
            return torch.randn_like(like)
        return _unit_t(self.df).rsample(like.shape[:-1])

    def rsample(self, sample_shape=()):
        z = self.start.expand(torch.Size(sample_shape) + self.start.shape)
        noise, scales, steps = self._previous_noise(z), self._scales(), []
        for k in range(self.n_steps):
            noise = self._next_noise(noise, scales[k] * self._unit_noise(z))
            z = self.drift(z, _input(self.inputs, k)) + noise
            steps.append(z)
        return torch.stack(steps, dim=-2)

    def log_prob(self, value):
        noise = self._residual(value)
        return unit_log_density(noise, self.df).sum((-1, -2)) - self._log_jacobian()

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        last = self.last_noise
        return MarkovPath(self.start.expand(shape + self.start.shape[-1:]), self.drift,
                          self.noise_scale, self.n_steps, self.inputs,
                          correlation=self.correlation,
                          last_noise=None if last is None else last.expand(shape + last.shape[-1:]),
                          df=self.df)


def _unit_t(df: torch.Tensor) -> torch.distributions.StudentT:
    """Student-t innovations of unit scale (checked where ``Diffusion`` makes ``df``)."""
    return torch.distributions.StudentT(df, validate_args=False)


def unit_log_density(noise: torch.Tensor, df: torch.Tensor | None) -> torch.Tensor:
    """The log density of innovations in units of their scale, elementwise: standard normal, or
    Student-t with ``df`` degrees of freedom (one per dimension, the last axis)."""
    if df is None:
        return -0.5 * noise ** 2 - 0.5 * math.log(2 * math.pi)
    return _unit_t(df).log_prob(noise)


def unit_fisher(df: torch.Tensor | None) -> torch.Tensor | float:
    """The Fisher information of a unit-scale innovation's location: 1 for Gaussian noise,
    ``(df + 1) / (df + 3)`` for Student-t (a Gauss-Newton weight: ``laplace``)."""
    return 1.0 if df is None else (df + 1) / (df + 3)


class GuidedPath(_Path):
    """``z[k+1] = drift(z[k], u[k]) + r[k]``, ``r[k] = rho r[k-1] + s[k] * (gains[k] z[k] +
    offsets[k] + scale_tril[k] eta)``: the prior's noise (``MarkovPath``; ``rho`` 0 for white
    noise) with each innovation corrected.

    Args:
        start: (..., latent) the state at bin 0.
        gains: (..., n_steps, latent, latent); offsets: (..., n_steps, latent);
        scale_tril: (..., n_steps, latent, latent) lower-triangular noise factors.
        start_sites: the sites whose values, concatenated, are ``start`` (for refinement).
        correlation: the prior noise's AR(1) coefficient per dimension, None for white noise.
    """

    def __init__(self, start, drift, noise_scale, gains, offsets, scale_tril, inputs=None, *,
                 start_sites: tuple[str, ...] = (),
                 correlation: torch.Tensor | None = None) -> None:
        self.gains, self.offsets, self.scale_tril = gains, offsets, scale_tril
        self.start_sites = tuple(start_sites)
        super().__init__(start, drift, noise_scale, offsets.shape[-2], inputs,
                         correlation=correlation)

    def rebase(self, start: torch.Tensor, offset: torch.Tensor | float = 0.0) -> GuidedPath:
        """The same chain from another start, its offsets shifted by ``offset``."""
        return GuidedPath(start, self.drift, self.noise_scale, self.gains,
                          self.offsets + offset, self.scale_tril, self.inputs,
                          start_sites=self.start_sites, correlation=self.correlation)

    def _roll(self, eta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The chain's path from the unit noises ``eta`` (None: all zero) and the drift it
        evaluated at each bin."""
        scales = self._scales()
        # Everything but the drift and the gains' term is known before the chain runs: one
        # batched operation instead of one per bin.
        forcing = self.offsets
        if eta is not None:
            forcing = forcing + (self.scale_tril @ eta.unsqueeze(-1)).squeeze(-1)
        forcing = scales * forcing
        # One view per bin from unbind: indexing bin k instead would make the backward pass
        # fill a whole-path gradient for every bin.
        gains = (scales.unsqueeze(-1) * self.gains).unbind(-3)
        forcing = forcing.unbind(-2)
        z = self.start
        noise, steps, drifts = self._previous_noise(z), [], []
        for k in range(self.n_steps):
            innovation = (gains[k] @ z.unsqueeze(-1)).squeeze(-1) + forcing[k]
            noise = self._next_noise(noise, innovation)
            drift = self.drift(z, _input(self.inputs, k))
            z = drift + noise
            steps.append(z)
            drifts.append(drift)
        return torch.stack(steps, dim=-2), torch.stack(drifts, dim=-2)

    def rsample(self, sample_shape=()):
        if tuple(sample_shape):
            return torch.stack([self.rsample() for _ in range(math.prod(sample_shape))]) \
                .reshape(torch.Size(sample_shape) + self.batch_shape + self.event_shape)
        eta = torch.randn(self.batch_shape + self.event_shape, device=self.offsets.device,
                          dtype=self.offsets.dtype)
        path = self._share(*self._roll(eta))
        self._draw = (path, eta)
        return path

    def centre(self) -> torch.Tensor:
        """The path with every noise at zero (the chain's centre, for refinement)."""
        return self._share(*self._roll(None))

    def _share(self, path: torch.Tensor, drifts: torch.Tensor) -> torch.Tensor:
        """``path``, its drift kept for a prior that scores it within ``shared_drift``."""
        draws = _GUIDE_DRAWS.get()
        if draws is not None:
            draws[id(path)] = _GuideDraw(path, self.start, self.drift, self.inputs, drifts)
        return path

    def log_prob(self, value):
        draw = getattr(self, "_draw", None)
        if draw is not None and draw[0] is value:
            # Its own draw: the path is an invertible map of ``eta`` whose Jacobian is block
            # triangular, so log q is the noises' density less the log-determinant, the same
            # function of the parameters as the density below, without a second drift pass.
            white = draw[1]
        else:
            previous = previous_states(self.start, value)
            mean = (self.gains @ previous.unsqueeze(-1)).squeeze(-1) + self.offsets
            gap = (self._residual(value) - mean).unsqueeze(-1)
            white = torch.linalg.solve_triangular(self.scale_tril, gap, upper=False).squeeze(-1)
        log_det = torch.diagonal(self.scale_tril, dim1=-2, dim2=-1).log().sum((-1, -2))
        return (-0.5 * white ** 2 - 0.5 * math.log(2 * math.pi)).sum((-1, -2)) - log_det \
            - self._log_jacobian()

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        if shape == self.batch_shape:
            return self
        raise ValueError(f"GuidedPath: cannot expand a batch of {tuple(self.batch_shape)} "
                         f"trials to {tuple(shape)}")


def path_head_size(latent_dim: int) -> int:
    """Encoder outputs per bin a ``GuidedPath`` needs: gains, offsets, noise factors."""
    return latent_dim * latent_dim + latent_dim + latent_dim * (latent_dim + 1) // 2


def guided_path(params: torch.Tensor, start: torch.Tensor, drift: Drift,
                noise_scale: torch.Tensor, inputs: torch.Tensor | None = None, *,
                start_sites: tuple[str, ...] = (),
                correlation: torch.Tensor | None = None) -> GuidedPath:
    """A ``GuidedPath`` from an encoder's (..., n_steps, ``path_head_size(D)``) outputs: the
    noise factors' diagonals through a softplus (1 where the raw output is 0.5413, i.e. the
    prior's noise when gains and offsets are zero)."""
    d = start.shape[-1]
    gains, offsets, raw = params.split([d * d, d, d * (d + 1) // 2], dim=-1)
    rows, cols = torch.tril_indices(d, d, device=params.device)
    tril = params.new_zeros(params.shape[:-1] + (d, d))
    tril[..., rows, cols] = raw
    diagonal = torch.nn.functional.softplus(torch.diagonal(tril, dim1=-2, dim2=-1)) + 1e-4
    tril = torch.tril(tril, diagonal=-1) + torch.diag_embed(diagonal)
    return GuidedPath(start, drift, noise_scale, gains.unflatten(-1, (d, d)), offsets, tril,
                      inputs, start_sites=start_sites, correlation=correlation)


class Diffusion(torch.nn.Module):
    """A learned per-dimension diffusion ``sigma`` (state units per sqrt(time unit)), the
    noise scale per bin it gives, ``sigma * sqrt(step_size)``, and, where ``tau`` (bins) is
    given, the noise's per-dimension correlation time (white noise where it is None): learned
    from ``tau``, or fixed at it (``learn_tau=False``). Where ``df`` is given, the innovations
    are Student-t with per-dimension degrees of freedom learned from ``df`` (Gaussian where
    it is None).

    Why learned by default: fixed, smooth noise can stand in for the dynamics where few
    neurons constrain them (8 neurons: rate R2 0.84 against 0.89); learned, tau falls to under
    a bin and the latents over-cover a little more (README (g)).

    Example:
        >>> Diffusion(3, init=0.1, step_size=0.1, tau=5.0).correlation().shape
        torch.Size([3])
        >>> Diffusion(3, init=0.1, step_size=0.1, df=4.0).df()
        tensor([4., 4., 4.], grad_fn=<ExpBackward0>)
    """

    def __init__(self, latent_dim: int, *, init: float, step_size: float,
                 tau: float | None = None, learn_tau: bool = True,
                 df: float | None = None, prior_rate: float = 0.0) -> None:
        super().__init__()
        if not init > 0:
            raise ValueError(f"diffusion: must be > 0 (None for a deterministic ODE), got {init}")
        if tau is not None and not tau > 0:
            raise ValueError(f"noise_tau: must be > 0 bins (None for white noise), got {tau}")
        if df is not None and not df > 0:
            raise ValueError(f"noise_df: must be > 0 (None for Gaussian noise), got {df}")
        if not prior_rate >= 0:
            raise ValueError(f"diffusion_prior: must be >= 0 (0 for none), got {prior_rate}")
        self.prior_rate = float(prior_rate)
        self.log_sigma = torch.nn.Parameter(torch.full((latent_dim,), math.log(init)))
        log_tau = None if tau is None else torch.full((latent_dim,), math.log(tau))
        if learn_tau and log_tau is not None:
            self.log_tau = torch.nn.Parameter(log_tau)
        else:  # a buffer: the same state-dict key either way, so runs reload both ways
            self.register_buffer("log_tau", log_tau)
        self.step_size = float(step_size)
        self.log_df = (None if df is None  # after the others: optimizer states keep their order
                       else torch.nn.Parameter(torch.full((latent_dim,), math.log(df))))

    def correlation(self) -> torch.Tensor | None:
        """The noise's AR(1) coefficient per bin, ``exp(-1 / tau)``; None for white noise."""
        return None if self.log_tau is None else torch.exp(-torch.exp(-self.log_tau))

    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def df(self) -> torch.Tensor | None:
        """The innovations' Student-t degrees of freedom per dimension; None for Gaussian."""
        return None if self.log_df is None else self.log_df.exp()

    def noise_scale(self) -> torch.Tensor:
        return self.sigma() * math.sqrt(self.step_size)

    def log_prior(self) -> torch.Tensor:
        """``-prior_rate * sum(sigma)``: an exponential prior on each sigma (up to a constant),
        the penalised-complexity prior towards the deterministic ODE (Simpson et al. 2017)."""
        return -self.prior_rate * self.sigma().sum()


class LatentPathModel:
    """The latent trajectory of a model with a ``field``, a ``solver`` and a ``diffusion``
    (a ``Diffusion``, or None for a deterministic ODE): mixed into ``LatentODEModel`` and
    ``MultiAreaModel``, which then share the path sites, the drift and the trajectory."""

    @property
    def path_sites(self) -> dict[str, int]:
        return {sites.PATH: self.latent_dim} if self.diffusion is not None else {}

    def transition(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """The drift of one bin: the state a bin after ``z`` without noise."""
        return self.solver.step(self.field, z, u)

    def noise_scale(self) -> torch.Tensor:
        """The path's noise (innovation) standard deviation per bin and dimension."""
        return self.diffusion.noise_scale()

    def noise_correlation(self) -> torch.Tensor | None:
        """The path noise's AR(1) coefficient per bin and dimension; None for white noise."""
        return self.diffusion.correlation()

    def noise_df(self) -> torch.Tensor | None:
        """The path innovations' Student-t degrees of freedom; None for Gaussian ones."""
        return self.diffusion.df()

    def diffusion_prior_factor(self) -> None:
        """The diffusion's prior as a factor of the program, once per step outside the trial
        plate; no site where there is none (a deterministic ODE, or a rate of 0)."""
        if self.diffusion is not None and self.diffusion.prior_rate:
            pyro.factor("diffusion_prior", self.diffusion.log_prior())

    def trajectory(self, z0: torch.Tensor, n_bins: int,
                   inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (..., n_bins, latent) from ``z0``: the ODE solve, or the site "path" (a
        ``MarkovPath``) sampled after it; call it inside the trial plate."""
        if self.diffusion is None:
            return self.solver(self.field, z0, n_bins, inputs)
        path = pyro.sample(sites.PATH, MarkovPath(
            z0, self.transition, self.noise_scale(), n_bins - 1,
            None if inputs is None else inputs[..., :-1, :],
            correlation=self.noise_correlation(), df=self.noise_df()))
        return torch.cat([z0.expand(path.shape[:-2] + z0.shape[-1:]).unsqueeze(-2), path], -2)


def stochastic_path_diffusion(init: float | None, latent_dim: int, solver, inferred_input_dim: int,
                              field, tau: float | None = None, learn_tau: bool = True,
                              df: float | None = None, prior_rate: float = 0.0
                              ) -> Diffusion | None:
    """A model's ``Diffusion`` (None for a deterministic ODE), checked against what a
    stochastic path cannot combine with."""
    if init is None:
        if tau is not None:
            raise ValueError("noise_tau: correlated path noise needs a stochastic path "
                             "(a diffusion), not a deterministic ODE")
        if df is not None:
            raise ValueError("noise_df: Student-t path noise needs a stochastic path "
                             "(a diffusion), not a deterministic ODE")
        if prior_rate:
            raise ValueError("diffusion_prior: a prior on the path's noise needs a stochastic "
                             "path (a diffusion), not a deterministic ODE")
        return None
    if inferred_input_dim:
        raise ValueError("diffusion: a stochastic path and inferred inputs are two kinds of "
                         "per-trial forcing; use one (inferred inputs need --set "
                         "diffusion=null)")
    if field.discrete:
        raise ValueError("diffusion: a stochastic path needs a continuous field, not the "
                         "discrete GRU transition (--set diffusion=null)")
    probe = None if not field.input_dim else torch.zeros(1, field.input_dim)
    solver.step(field, torch.zeros(1, latent_dim), probe)  # adaptive solvers: a clear error
    return Diffusion(latent_dim, init=init, step_size=solver.step_size, tau=tau,
                     learn_tau=learn_tau, df=df, prior_rate=prior_rate)
