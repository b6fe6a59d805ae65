"""Metrics that say how close a model got: bits per spike, co-bps, rate R2, state R2, fixed points.

Definitions follow the Neural Latents Benchmark (NLB) and ``shared/REFERENCES.md``:

- bits per spike = (LL_model - LL_null) / (n_spikes ln 2), Poisson log-likelihood including
  log(n!), null model = each neuron's mean rate; co-bps is the same on held-out neurons.
- rate R2: per-neuron R2 of predicted against true rates over (trials x time), averaged.
- state R2: an affine map fit on training trials, R2 on held-out trials averaged over output
  dimensions; true -> inferred penalizes invented dynamics, inferred -> true measures recovery.
- nonlinear state R2: the same with a k-nearest-neighbour regression in place of the affine
  map, so it does not depend on coordinates: a smooth bend of the inferred latents costs the
  affine score but not this one, while latents that miss or invent structure lose both.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> rates = rng.gamma(2.0, 0.5, (20, 30, 8)); spikes = rng.poisson(rates)
    >>> bits_per_spike(rates, spikes) > 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.special import gammaln

__all__ = [
    "poisson_log_likelihood",
    "mean_rates",
    "bits_per_spike",
    "co_bps",
    "r2_score",
    "rate_r2",
    "fit_affine",
    "apply_affine",
    "StateR2",
    "state_r2",
    "nonlinear_state_r2",
    "knn_held_out_prediction",
    "FixedPointMatch",
    "match_fixed_points",
]

_RATE_FLOOR = 1e-9  # NLB's guard: a zero predicted rate where a spike occurred is -inf otherwise


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names}: shapes {a.shape} and {b.shape} differ")


def poisson_log_likelihood(
    rates: np.ndarray, spikes: np.ndarray, *, mask: np.ndarray | None = None
) -> float:
    """Total Poisson log-likelihood ``sum(n log r - r - log n!)`` over (masked) entries."""
    rates, spikes = np.asarray(rates, np.float64), np.asarray(spikes, np.float64)
    rates = np.broadcast_to(rates, spikes.shape)
    terms = spikes * np.log(np.maximum(rates, _RATE_FLOOR)) - rates - gammaln(spikes + 1)
    return float(terms.sum() if mask is None else terms[np.broadcast_to(mask, spikes.shape)].sum())


def mean_rates(spikes: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Each neuron's mean count per bin over trials and time (the null model's rates)."""
    spikes = np.asarray(spikes, np.float64)
    if mask is None:
        return spikes.mean(axis=(0, 1))
    mask = np.broadcast_to(mask, spikes.shape)
    return (spikes * mask).sum(axis=(0, 1)) / np.maximum(mask.sum(axis=(0, 1)), 1)


def bits_per_spike(
    rates: np.ndarray, spikes: np.ndarray, *, null_rates: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """NLB bits per spike of predicted ``rates`` (counts/bin) for ``spikes`` (trial, time, neuron).

    Args:
        null_rates: per-neuron rates of the null model, e.g. ``mean_rates(train_spikes)``;
            default: the mean of the evaluated spikes themselves, as NLB's evaluation code does.
        mask: True where an entry counts.
    """
    rates, spikes = np.asarray(rates, np.float64), np.asarray(spikes, np.float64)
    _check_same_shape(rates, spikes, "rates, spikes")
    if null_rates is None:
        null_rates = mean_rates(spikes, mask=mask)
    null = np.broadcast_to(np.asarray(null_rates, np.float64), spikes.shape)
    n_spikes = spikes.sum() if mask is None else spikes[np.broadcast_to(mask, spikes.shape)].sum()
    if n_spikes == 0:
        raise ValueError("spikes: no spikes in the evaluated entries; bits per spike is undefined")
    gain = poisson_log_likelihood(rates, spikes, mask=mask) - poisson_log_likelihood(
        null, spikes, mask=mask)
    return float(gain / (n_spikes * np.log(2)))


def co_bps(
    rates: np.ndarray, spikes: np.ndarray, heldout_neurons: np.ndarray, *,
    null_rates: np.ndarray | None = None, mask: np.ndarray | None = None,
) -> float:
    """Bits per spike on held-out neurons only (co-smoothing).

    ``null_rates`` here has one entry per held-out neuron; ``mask`` (trial, time, neuron over
    every neuron) the entries to score, or None for all.
    """
    index = np.asarray(heldout_neurons, dtype=np.int64)
    if index.size == 0:
        raise ValueError("heldout_neurons: empty; co-bps needs held-out neurons")
    return bits_per_spike(np.asarray(rates)[..., index], np.asarray(spikes)[..., index],
                          null_rates=null_rates,
                          mask=None if mask is None else np.asarray(mask)[..., index])


def r2_score(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R2 of each column of ``target`` (samples, outputs): ``1 - SS_res / SS_tot``."""
    predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    _check_same_shape(predicted, target, "predicted, target")
    ss_res = ((target - predicted) ** 2).sum(axis=0)
    ss_tot = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    # A constant target is perfectly explained only by an exact prediction.
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    return np.where(ss_tot > 0, r2, np.where(ss_res == 0, 1.0, 0.0))


def _flatten(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x.reshape(-1, x.shape[-1])


def rate_r2(predicted: np.ndarray, true: np.ndarray) -> float:
    """Per-neuron R2 of predicted against true rates over (trials x time), averaged."""
    _check_same_shape(np.asarray(predicted), np.asarray(true), "predicted, true rates")
    return float(r2_score(_flatten(predicted), _flatten(true)).mean())


def fit_affine(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``target ~ source @ weight + bias`` over (..., dim) arrays."""
    x, y = _flatten(source), _flatten(target)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"source, target: {x.shape[0]} and {y.shape[0]} samples differ")
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution[:-1], solution[-1]


def apply_affine(source: np.ndarray, affine: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    weight, bias = affine
    return np.asarray(source, np.float64) @ weight + bias


@dataclass(frozen=True)
class StateR2:
    """State R2 both ways, scored on held-out trials."""

    true_to_inferred: float
    inferred_to_true: float


def _held_out_r2(source, target, train, test) -> float:
    affine = fit_affine(source[train], target[train])
    return float(r2_score(_flatten(apply_affine(source[test], affine)),
                          _flatten(target[test])).mean())


def _checked_states(true_latents, inferred_latents, train, test):
    true_latents = np.asarray(true_latents, np.float64)
    inferred_latents = np.asarray(inferred_latents, np.float64)
    if true_latents.shape[:2] != inferred_latents.shape[:2]:
        raise ValueError(
            f"true_latents, inferred_latents: (trial, time) shapes {true_latents.shape[:2]} and "
            f"{inferred_latents.shape[:2]} differ"
        )
    train, test = np.asarray(train), np.asarray(test)
    if np.intersect1d(train, test).size:
        raise ValueError(
            "train, test: trial sets overlap; state R2 must be scored on held-out trials")
    return true_latents, inferred_latents, train, test


def state_r2(
    true_latents: np.ndarray, inferred_latents: np.ndarray, *, train: np.ndarray,
    test: np.ndarray,
) -> StateR2:
    """State R2 in both directions with affine maps fit on ``train`` trials, scored on ``test``.

    Args:
        true_latents: (trial, time, D_true).
        inferred_latents: (trial, time, D_inferred).
        train, test: trial indices (disjoint).
    """
    true_latents, inferred_latents, train, test = _checked_states(
        true_latents, inferred_latents, train, test)
    return StateR2(
        true_to_inferred=_held_out_r2(true_latents, inferred_latents, train, test),
        inferred_to_true=_held_out_r2(inferred_latents, true_latents, train, test),
    )


def knn_held_out_prediction(source, target, train, test, neighbours: int = 10,
                            max_points: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, actual) ``target`` of the ``test`` trials, each (entry, dim), from a
    ``neighbours``-nearest-neighbour regression on ``source`` (trial, time, dim) fit on the
    ``train`` trials, in whitened source coordinates.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(20, 30, 2))
        >>> predicted, actual = knn_held_out_prediction(x, x ** 2, np.arange(15),
        ...                                             np.arange(15, 20))
        >>> predicted.shape == actual.shape == (150, 2)
        True
    """
    x_train, y_train = _flatten(source[train]), _flatten(target[train])
    if len(x_train) > max_points:  # an even thinning keeps the query time bounded
        keep = np.linspace(0, len(x_train) - 1, max_points).astype(np.int64)
        x_train, y_train = x_train[keep], y_train[keep]
    # Whitening makes the score invariant to any affine change of the source's coordinates.
    centre = x_train.mean(0)
    cov = np.atleast_2d(np.cov(x_train, rowvar=False)) + 1e-9 * np.eye(x_train.shape[1])
    whiten = np.linalg.inv(np.linalg.cholesky(cov)).T
    tree = cKDTree((x_train - centre) @ whiten)
    _, index = tree.query((_flatten(source[test]) - centre) @ whiten, k=neighbours)
    return y_train[index.reshape(len(index), -1)].mean(axis=1), _flatten(target[test])


def _knn_held_out_r2(source, target, train, test, neighbours: int) -> float:
    predicted, actual = knn_held_out_prediction(source, target, train, test, neighbours)
    return float(r2_score(predicted, actual).mean())


def nonlinear_state_r2(
    true_latents: np.ndarray, inferred_latents: np.ndarray, *, train: np.ndarray,
    test: np.ndarray, neighbours: int = 10,
) -> StateR2:
    """State R2 in both directions with a k-nearest-neighbour regression (``neighbours``
    points, whitened source coordinates) fit on ``train`` trials, scored on ``test``: how well
    either state predicts the other through any smooth map. Arguments as ``state_r2``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> true = rng.normal(size=(40, 50, 2)); bent = np.tanh(true) + true ** 3 / 10
        >>> r2 = nonlinear_state_r2(true, bent, train=np.arange(30), test=np.arange(30, 40))
        >>> r2.true_to_inferred > 0.95 and r2.inferred_to_true > 0.95
        True
    """
    true_latents, inferred_latents, train, test = _checked_states(
        true_latents, inferred_latents, train, test)
    return StateR2(
        true_to_inferred=_knn_held_out_r2(true_latents, inferred_latents, train, test,
                                          neighbours),
        inferred_to_true=_knn_held_out_r2(inferred_latents, true_latents, train, test,
                                          neighbours),
    )


@dataclass(frozen=True)
class FixedPointMatch:
    """How well found fixed points match the true ones (in true coordinates).

    Attributes:
        n_true, n_found: counts on each side.
        n_matched: true fixed points with a found one within ``tolerance``.
        location_error: mean distance of matched pairs (nan when none matched).
        stability_agreement: fraction of matched pairs whose stability labels agree.
        pairs: (true index, found index) of each match.
    """

    n_true: int
    n_found: int
    n_matched: int
    location_error: float
    stability_agreement: float
    pairs: tuple[tuple[int, int], ...]

    @property
    def recall(self) -> float:
        return self.n_matched / self.n_true if self.n_true else float("nan")


def match_fixed_points(
    true_points: np.ndarray, true_stability: tuple[str, ...] | list[str],
    found_points: np.ndarray, found_stability: tuple[str, ...] | list[str], *,
    affine: tuple[np.ndarray, np.ndarray] | None = None, tolerance: float,
) -> FixedPointMatch:
    """One-to-one matching (Hungarian, by distance) of found to true fixed points.

    Args:
        affine: maps found points (model coordinates) into true coordinates, e.g.
            ``fit_affine(inferred_latents, true_latents)``; None when both share coordinates.
        tolerance: largest distance that counts as a match (in true coordinates).
    """
    true_points = np.atleast_2d(np.asarray(true_points, np.float64))
    found = np.asarray(found_points, np.float64).reshape(-1, np.shape(found_points)[-1])
    if len(true_stability) != len(true_points) or len(found_stability) != len(found):
        raise ValueError("stability: need one label per fixed point on each side")
    if affine is not None:
        found = apply_affine(found, affine)
    if found.shape[1] != true_points.shape[1]:
        raise ValueError(
            f"found_points: dimension {found.shape[1]} differs from the true {true_points.shape[1]}"
            " (pass the affine map into true coordinates)"
        )
    pairs: list[tuple[int, int]] = []
    if len(found):
        distance = np.linalg.norm(true_points[:, None] - found[None], axis=-1)
        rows, cols = linear_sum_assignment(distance)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if distance[r, c] <= tolerance]
    errors = [np.linalg.norm(true_points[r] - found[c]) for r, c in pairs]
    agree = [true_stability[r] == found_stability[c] for r, c in pairs]
    return FixedPointMatch(
        n_true=len(true_points), n_found=len(found), n_matched=len(pairs),
        location_error=float(np.mean(errors)) if pairs else float("nan"),
        stability_agreement=float(np.mean(agree)) if pairs else float("nan"),
        pairs=tuple(pairs),
    )


def interval_coverage(draws: np.ndarray, truth: np.ndarray, *, level: float = 0.9) -> float:
    """Fraction of the entries of ``truth`` inside the equal-tailed ``level`` posterior interval
    of ``draws`` (sample, ...): about ``level`` when the posterior is calibrated.

    Example:
        >>> draws = np.random.default_rng(0).normal(size=(2000, 500))
        >>> round(interval_coverage(draws, np.zeros(500)), 1)
        1.0
    """
    draws, truth = np.asarray(draws), np.asarray(truth)
    if draws.shape[1:] != truth.shape:
        raise ValueError(f"draws, truth: shapes {draws.shape} and {truth.shape} do not match as "
                         "(sample, ...) and (...)")
    lower, upper = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(((truth >= lower) & (truth <= upper)).mean())
