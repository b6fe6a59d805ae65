"""Fixed points and slow points of any vector field, their Jacobians and stability.

Works on a ground-truth field (numpy callable ``f(z)``), a fitted model's learned field (a
``VectorField`` module) or a discrete transition map (``discrete=True``: fixed points of
``z -> F(z)``, i.e. zeros of ``F(z) - z``, stability from |eigenvalues| against 1).

Method (Golub & Sussillo): from many starts, minimize the speed q(z) = |f(z)|^2 / 2 with
damped Gauss-Newton (Levenberg-Marquardt) steps, all starts at once in float64 with
central-difference Jacobians; keep points whose speed is below ``tolerance`` (fixed points) or
below ``slow_tolerance`` (slow points), merge duplicates, and classify each by its Jacobian's
eigenvalues.

Example:
    >>> from pyrodyn.data.systems import FlipFlop
    >>> import numpy as np
    >>> starts = np.random.default_rng(0).uniform(-1.5, 1.5, (300, 2))
    >>> found = find_fixed_points(FlipFlop(n_bits=2), starts)
    >>> len(found.points), sorted(set(found.stability))
    (9, ['saddle', 'stable', 'unstable'])
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..data.spikes import GroundTruth
from ..data.systems import classify_stability
from .metrics import apply_affine, fit_affine, match_fixed_points

__all__ = ["FixedPoints", "find_fixed_points", "as_numpy_field", "classify_discrete",
           "attractor_shape", "fixed_point_scores", "CONTINUOUS"]

# Systems whose attractor is a continuum of fixed points, and its shape.
CONTINUOUS = {"ring_attractor": "ring", "line_attractor": "line"}


@dataclass(frozen=True)
class FixedPoints:
    """Points found, with their speed |f|, Jacobian eigenvalues and stability labels."""

    points: np.ndarray          # (K, D)
    speed: np.ndarray           # (K,)
    eigenvalues: np.ndarray     # (K, D) complex
    stability: tuple[str, ...]
    is_slow: np.ndarray         # (K,) bool: a slow point, not a fixed point


def as_numpy_field(field) -> callable:
    """A batched float64 numpy function ``(K, D) -> (K, D)`` for any field.

    ``nn.Module`` fields are copied to float64 on the CPU so finite differences stay accurate.
    """
    if isinstance(field, torch.nn.Module):
        module = copy.deepcopy(field).double().cpu().eval()  # small float64 work: CPU

        def evaluate(z: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.as_tensor(z, dtype=torch.float64)).numpy()

        return evaluate
    return lambda z: np.asarray(field(np.asarray(z, dtype=np.float64)), dtype=np.float64)


def _jacobians(f, z: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    k, d = z.shape
    steps = np.eye(d) * eps
    plus = f((z[:, None, :] + steps).reshape(-1, d)).reshape(k, d, d)
    minus = f((z[:, None, :] - steps).reshape(-1, d)).reshape(k, d, d)
    return np.swapaxes((plus - minus) / (2 * eps), 1, 2)  # [k, i, j] = d f_i / d z_j


def classify_discrete(eigenvalues: np.ndarray, *, tol: float = 1e-6) -> str:
    """Stability of a fixed point of a map: |lambda| against 1."""
    magnitude = np.abs(np.asarray(eigenvalues)) - 1.0
    return classify_stability(magnitude, tol=tol)


def find_fixed_points(
    field, starts: np.ndarray, *, discrete: bool = False, iterations: int = 200,
    tolerance: float = 1e-8, slow_tolerance: float | None = None, merge_distance: float = 1e-3,
    marginal_tolerance: float = 1e-4,
) -> FixedPoints:
    """Finds fixed (and optionally slow) points of ``field`` from ``starts`` (K, D).

    Args:
        discrete: ``field`` is a map z -> F(z) rather than a flow dz/dt = f(z).
        tolerance: largest speed |f(z)| of a fixed point.
        slow_tolerance: also keep local minima of the speed below this (slow points).
        merge_distance: points closer than this are one point.
        marginal_tolerance: eigenvalue real parts (or |lambda| - 1) this close to 0 are marginal.
    """
    base = as_numpy_field(field)
    f = (lambda z: base(z) - z) if discrete else base
    z = np.array(starts, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"starts: expected (K, D), got shape {z.shape}")
    damping = np.full(len(z), 1e-3)
    eye = np.eye(z.shape[1])
    value = f(z)
    cost = 0.5 * (value ** 2).sum(-1)
    for _ in range(iterations):
        jac = _jacobians(f, z)
        jt = np.swapaxes(jac, 1, 2)
        lhs = jt @ jac + damping[:, None, None] * eye
        step = np.linalg.solve(lhs, (jt @ value[..., None]))[..., 0]
        trial = z - step
        trial_value = f(trial)
        trial_cost = 0.5 * (trial_value ** 2).sum(-1)
        better = np.isfinite(trial_cost) & (trial_cost < cost)
        z = np.where(better[:, None], trial, z)
        value = np.where(better[:, None], trial_value, value)
        cost = np.where(better, trial_cost, cost)
        damping = np.clip(np.where(better, damping / 3, damping * 4), 1e-12, 1e12)
        if np.sqrt(2 * cost).max() < tolerance * 1e-2:
            break
    speed = np.sqrt(2 * cost)
    limit = tolerance if slow_tolerance is None else max(tolerance, slow_tolerance)
    keep = np.isfinite(speed) & (speed <= limit)
    z, speed = z[keep], speed[keep]
    order = np.argsort(speed)
    chosen: list[int] = []
    for i in order:  # greedy merge, best (slowest) representative first
        if all(np.linalg.norm(z[i] - z[j]) > merge_distance for j in chosen):
            chosen.append(i)
    points, speed = z[chosen], speed[chosen]
    jac = _jacobians(base, points) if len(points) else np.zeros((0,) + (z.shape[1],) * 2)
    eigenvalues = np.linalg.eigvals(jac) if len(points) else np.zeros((0, z.shape[1]), complex)
    classify = classify_discrete if discrete else classify_stability
    stability = tuple(classify(e, tol=marginal_tolerance) for e in eigenvalues)
    return FixedPoints(points, speed, eigenvalues, stability, speed > tolerance)


def attractor_shape(points: np.ndarray, *, tolerance: float = 0.1) -> str | None:
    """Recognizes a continuous attractor from many marginal fixed/slow points.

    Returns "line" when the points lie along one direction, "ring" when they lie on a circle in
    a plane, else None. ``tolerance`` is relative to the set's extent.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 5:
        return None
    centred = points - points.mean(0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    extent = singular[0] / np.sqrt(len(points))
    if extent == 0:
        return None
    if len(singular) == 1 or singular[1] / np.sqrt(len(points)) < tolerance * extent:
        return "line"
    off_plane = singular[2] / np.sqrt(len(points)) if len(singular) > 2 else 0.0
    planar = centred @ axes[:2].T
    radius = np.linalg.norm(planar, axis=1)
    if off_plane < tolerance * extent and radius.std() < tolerance * radius.mean():
        return "ring"
    return None


def fixed_point_scores(field, inferred_train: np.ndarray, truth: GroundTruth, *,
                       discrete: bool = False, n_starts: int = 500, seed: int = 0
                       ) -> tuple[dict[str, float], np.ndarray | None]:
    """Fixed-point recovery of a fitted vector field (or transition map, ``discrete``), and
    the points found in true coordinates (None when none were found).

    The search starts from the inferred training states and their bounding box; found points
    are mapped into true coordinates with the inferred -> true affine map fit on the training
    trials and matched to ``truth.fixed_points`` (for rings and lines, the sampled points of
    the attractor the data visit) within a quarter of the true latents' spread. Scores:
    ``fp_found``, ``fp_true``, ``fp_recall`` (matched / true), ``fp_error`` (mean distance of
    matched pairs over the true latents' spread), ``fp_stability`` (agreement of stability
    labels) and, for ring and line attractors, ``shape_recovered``.
    """
    states = inferred_train.reshape(-1, inferred_train.shape[-1])
    # Half the starts on visited states, half spread over their bounding box: unstable points
    # and saddles lie between the states trajectories visit.
    rng = np.random.default_rng(seed)
    low, high = states.min(0), states.max(0)
    starts = np.concatenate([states[rng.choice(len(states), n_starts - n_starts // 2)],
                             rng.uniform(low, high, (n_starts // 2, states.shape[1]))])
    continuous = CONTINUOUS.get(truth.system)
    # Learned continuous attractors are only approximately flat: keep slow points there, slow
    # against the fast speeds the field shows (states mostly rest on such an attractor).
    f = as_numpy_field(field)
    speeds = f(states[:2000]) - (states[:2000] if discrete else 0)
    speed = np.quantile(np.linalg.norm(speeds, axis=-1), 0.95)
    found = find_fixed_points(field, starts, discrete=discrete,
                              tolerance=1e-6 * max(speed, 1e-12),
                              slow_tolerance=0.05 * speed if continuous else None,
                              merge_distance=0.05 * float(states.std()))
    true_states = truth.latents.reshape(-1, truth.latents.shape[-1])
    true_spread = float(true_states.std())
    tolerance = 0.25 * true_spread
    points, labels = truth.fixed_points, truth.stability
    if continuous:  # score the part of a ring or line that the data visit
        near = np.array([np.linalg.norm(true_states - p, axis=-1).min() < tolerance
                         for p in points])
        points, labels = points[near], tuple(np.asarray(labels)[near])
    to_true = fit_affine(inferred_train, truth.latents)
    match = match_fixed_points(points, labels, found.points, found.stability, affine=to_true,
                               tolerance=tolerance)
    in_true = apply_affine(found.points, to_true) if len(found.points) else None
    scores = {"fp_found": float(len(found.points)), "fp_true": float(match.n_true),
              "fp_recall": match.recall, "fp_error": match.location_error / true_spread,
              "fp_stability": match.stability_agreement}
    if continuous:
        shape = attractor_shape(in_true) if in_true is not None else None
        scores["shape_recovered"] = float(shape == continuous)
    return scores, in_true
