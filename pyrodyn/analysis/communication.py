"""Who drives whom: the strength and time course of every inter-area channel, with intervals.

Whether a channel's direction is **identified** at all: a channel ``A<-B`` adds ``c(z_B)`` to A's
velocity; where B's state is, on the data, a function of A's own state, the same term can be
written as part of A's own dynamics, and the data cannot say whether B drives A. This is what
happens when two areas are phase-locked on one orbit. ``source_from_target_r2`` is how well A's
posterior-mean state predicts the best-predicted direction of B's (a held-out nearest-neighbour
regression across trials): where one direction of B is a function of A's state, the channel's
weights along it trade with A's own field. Above ``IDENTIFIED_BELOW`` the channel is reported
as not identified, whatever its strength.

A channel's **strength** is the RMS size of its signal c_{A<-B} measured in A's whitened
coordinates, times the time one bin spans: ``bin_time * sqrt(mean over trials and bins of
c' S^-1 c)``, with S the covariance of A's latent state over trials and bins. It reads "how
far, in A's own standard deviations, B pushes A per bin". It does not change under any
invertible affine map of A's latent space that keeps every direction's variance above 1% of the
largest (fitted latents are only defined up to such maps, and a map stretches the signal and
the state alike), so fitted and true strengths are comparable. Directions with less variance
than that (``NEGLIGIBLE_VARIANCE``, e.g. a fitted area's unused dimension) are not counted: A
hardly moves along them, and a signal there would be divided by the path noise's floor. It is
computed per posterior draw, so every strength has a posterior interval; the time course is the
same per bin (over trials) with a band. The units (S) are the draws' mean covariance, one for
the whole posterior, so that the interval is the channel's and not that of the units. Where
the model carries a posterior over its channels (``parameter_posterior``:
``channel_scale_laplace``, as ``pyrodyn fit`` sets, or ``parameter_laplace``), each draw's
channels run with their own weights: the interval then covers how far the data pin the
channels, not only the paths given the fitted weights.

Example (with the posterior ``post`` of a fitted ``MultiAreaModel``)::

    summary = communication_summary(post)
    summary["B<-A"].strength, summary["B<-A"].interval
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models import sites
from ..models.multi_area import COMM, area_site
from .metrics import knn_held_out_prediction

__all__ = ["ChannelSummary", "channel_strengths", "communication_summary", "communication_sites",
           "source_from_target_r2", "true_communication_strengths", "IDENTIFIED_BELOW",
           "INTERVAL_SAMPLES"]

COMM_PREFIX = f"{COMM}."
IDENTIFIED_BELOW = 0.9  # source-from-target R2 above which a direction is not identified
# Draws for a strength interval: its 5% and 95% quantiles from 50 draws lay 0.27-0.38 of the
# strength's posterior sd from those of 1000 draws, from 200 draws 0.06-0.13 (README (d)).
INTERVAL_SAMPLES = 200


def communication_sites(model) -> tuple[str, ...]:
    """The sites ``communication_summary`` reads of a ``MultiAreaModel``'s posterior (every
    channel's signal and every area's latents), for ``posterior(..., names=...)``."""
    return (tuple(f"{COMM_PREFIX}{name}" for name in model.channel_names)
            + tuple(area_site(sites.LATENTS, area) for area in model.areas))


@dataclass
class ChannelSummary:
    """One channel ``target<-source``.

    Attributes:
        strength: posterior median strength (see the module docstring).
        interval: (lower, upper) equal-tailed interval of the strength at ``level``.
        draws: the strength of every posterior draw (sample,).
        time_course: (3, time) median, lower and upper of the per-bin strength.
        source_from_target_r2: how well the target's state predicts the best-predicted
            direction of the source's (nan when too few trials to tell).
        identified: False where a direction of the source's state is a function of the
            target's on these data, so the channel could be part of the target's own
            dynamics.
    """

    name: str
    target: str
    source: str
    strength: float
    interval: tuple[float, float]
    level: float
    draws: np.ndarray
    time_course: np.ndarray
    source_from_target_r2: float = float("nan")
    identified: bool = True


# Directions along which the target's state varies less than this share of its largest
# variance are not counted: there A hardly moves (a fitted area's unused dimension, its spread
# set by the path noise), and whitening would divide a signal there by that noise floor.
NEGLIGIBLE_VARIANCE = 0.01


def _whitened_power(signal: np.ndarray, target_latents: np.ndarray) -> np.ndarray:
    """c' S^+ c per (..., trial, time) entry: S the covariance of the target's latents over
    trials and bins, averaged over the leading (draw) indices, S^+ its pseudo-inverse without
    the negligible directions. One S for all draws: per draw, a direction whose variance sits
    near ``NEGLIGIBLE_VARIANCE`` would be counted in some draws and not in others, and the
    draws where it is (its signal divided by its tiny variance) would make a spurious tail."""
    centred = target_latents - target_latents.mean(axis=(-3, -2), keepdims=True)
    flat = centred.reshape(-1, centred.shape[-3] * centred.shape[-2], centred.shape[-1])
    cov = np.einsum("sni,snj->ij", flat, flat) / (flat.shape[0] * flat.shape[1])
    precision = np.linalg.pinv(cov, rcond=NEGLIGIBLE_VARIANCE, hermitian=True)
    return np.einsum("...tbi,ij,...tbj->...tb", signal, precision, signal)


def channel_strengths(signal: np.ndarray, target_latents: np.ndarray, *, bin_time: float = 1.0,
                      per_bin: bool = False) -> np.ndarray:
    """Strength of one channel from (..., trial, time, dim) arrays of its signal and its
    target's latents: scalars per leading index, or (..., time) with ``per_bin``. The leading
    indices are draws of one posterior: all are whitened by their mean covariance."""
    power = _whitened_power(np.asarray(signal, float), np.asarray(target_latents, float))
    return bin_time * np.sqrt(power.mean(axis=-2 if per_bin else (-2, -1)))


def communication_summary(posterior, *, level: float = 0.9, bin_time: float | None = None
                          ) -> dict[str, ChannelSummary]:
    """Every channel of a multi-area posterior with its strength interval and time course.

    Args:
        posterior: a ``Posterior`` (or its ``draws`` dict) with "comm.A<-B" and "latents.A".
        level: interval level.
        bin_time: model time units per bin (default: the posterior's ``step_size`` attr, else 1).
    """
    draws = getattr(posterior, "draws", posterior)
    if bin_time is None:
        bin_time = float(getattr(posterior, "attrs", {}).get("step_size", 1.0))
    tails = [(1 - level) / 2, (1 + level) / 2]
    out = {}
    for name in draws:
        if not name.startswith(COMM_PREFIX):
            continue
        channel = name[len(COMM_PREFIX):]
        target, _, source = channel.partition("<-")
        key = area_site(sites.LATENTS, target)
        if key not in draws:
            raise ValueError(f"posterior: has {name} but not {key}, its target's latents")
        strengths = channel_strengths(draws[name], draws[key], bin_time=bin_time)
        course = channel_strengths(draws[name], draws[key], bin_time=bin_time, per_bin=True)
        lower, upper = np.quantile(strengths, tails)
        r2 = source_from_target_r2(draws[key].mean(0),
                                   draws[area_site(sites.LATENTS, source)].mean(0))
        out[channel] = ChannelSummary(
            name=channel, target=target, source=source, strength=float(np.median(strengths)),
            interval=(float(lower), float(upper)), level=level, draws=strengths,
            time_course=np.stack([np.median(course, 0), *np.quantile(course, tails, axis=0)]),
            source_from_target_r2=r2, identified=not r2 > IDENTIFIED_BELOW)
    if not out:
        raise ValueError("posterior: no communication sites ('comm.A<-B'); is it the "
                         "posterior of a multi-area model?")
    return out


def source_from_target_r2(target: np.ndarray, source: np.ndarray) -> float:
    """R2 of the direction of the source area's state (trial, time, dim) that the target's
    state predicts best, through a nearest-neighbour regression fit on 70% of the trials and
    scored on the rest (nan with fewer than 10 trials). Directions under
    ``NEGLIGIBLE_VARIANCE`` of the source's largest are left out.

    One direction is enough: a channel's weights can change along it while the target's own
    field takes the difference, so the channel's strength is not pinned. (When two areas lock
    on one orbit, the 1-d str state predicts ctx's phase along one direction only: its
    average R2 over ctx's dimensions was 0.64-0.71, the best direction's 0.97-0.99.)"""
    n = target.shape[0]
    if n < 10:
        return float("nan")
    cut = int(0.7 * n)
    predicted, actual = knn_held_out_prediction(target, source, np.arange(cut),
                                                np.arange(cut, n))
    variance, axes = np.linalg.eigh(np.atleast_2d(np.cov(actual, rowvar=False)))
    kept = variance > NEGLIGIBLE_VARIANCE * variance.max()
    whiten = axes[:, kept] / np.sqrt(variance[kept])
    error = np.atleast_2d(np.cov(actual - predicted, rowvar=False))
    # the least unexplained share over unit-variance directions: the smallest eigenvalue
    return float(1.0 - np.linalg.eigvalsh(whiten.T @ error @ whiten).min())


def true_communication_strengths(data, areas: list[str] | None = None) -> dict[str, float]:
    """The strength of every ordered pair of areas in synthetic ground truth (0 where there is
    no channel), in the same units as ``communication_summary``."""
    truth = data.truth
    if truth is None or truth.latents is None or truth.latent_area is None:
        raise ValueError("data: needs ground truth with per-area latents (latent_area)")
    areas = areas or list(dict.fromkeys(truth.latent_area.tolist()))
    bin_time = float((truth.system_params or {}).get("time_step", 1.0))
    out = {}
    for target in areas:
        latents = truth.latents[..., truth.latent_area == target]
        for source in areas:
            if source == target:
                continue
            name = f"{target}<-{source}"
            signal = truth.communication.get(name)
            out[name] = 0.0 if signal is None else float(
                channel_strengths(signal, latents, bin_time=bin_time))
    return out
