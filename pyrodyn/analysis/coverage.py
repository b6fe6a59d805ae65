"""Calibration: how often the truth lies inside the posterior's intervals, at any level.

A calibrated posterior's central ``level`` interval holds the truth for about ``level`` of the
entries. ``coverage`` gives that fraction per level, for rates (the true rates against posterior
draws of the rates) or for latents; ``latent_coverage`` first puts the latent draws in the
truth's coordinates with the affine map fit on the training trials' posterior means, because
latents are identified only up to such a map. ``reliability`` collects both into the table a
reliability plot draws (``pyrodyn.plots.plot_reliability``: nominal against empirical).

Example:
    >>> import numpy as np
    >>> draws = np.random.default_rng(0).normal(size=(4000, 3000))
    >>> truth = np.random.default_rng(1).normal(size=3000)
    >>> {level: round(value, 1) for level, value in coverage(draws, truth, [0.5, 0.9]).items()}
    {0.5: 0.5, 0.9: 0.9}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import apply_affine, fit_affine

__all__ = ["LEVELS", "coverage", "latent_coverage", "reliability"]

LEVELS = tuple(round(0.1 * k, 1) for k in range(1, 10))  # 10% ... 90%


def coverage(draws: np.ndarray, truth: np.ndarray,
             levels: Sequence[float] = LEVELS) -> dict[float, float]:
    """Level -> fraction of the entries of ``truth`` (...) inside the equal-tailed interval of
    ``draws`` (sample, ...) at that level.

    Raises:
        ValueError: shapes that do not match, fewer than 2 draws, or a level outside (0, 1).
    """
    draws, truth = np.asarray(draws), np.asarray(truth)
    if draws.shape[1:] != truth.shape:
        raise ValueError(f"draws, truth: shapes {draws.shape} and {truth.shape} do not match as "
                         "(sample, ...) and (...)")
    if draws.shape[0] < 2:
        raise ValueError(f"draws: need >= 2 posterior draws, got {draws.shape[0]}")
    levels = [float(level) for level in levels]
    if any(not 0 < level < 1 for level in levels):
        raise ValueError(f"levels: each must be in (0, 1), got {levels}")
    tails = sorted({q for level in levels for q in ((1 - level) / 2, (1 + level) / 2)})
    quantiles = dict(zip(tails, np.quantile(draws, tails, axis=0)))
    return {level: float(((truth >= quantiles[(1 - level) / 2])
                          & (truth <= quantiles[(1 + level) / 2])).mean())
            for level in levels}


def latent_coverage(draws: np.ndarray, truth: np.ndarray, train_means: np.ndarray,
                    train_truth: np.ndarray, levels: Sequence[float] = LEVELS
                    ) -> dict[float, float]:
    """``coverage`` of the true latents (trial, time, true latent) by latent ``draws`` (sample,
    trial, time, latent) mapped into the truth's coordinates by the affine map that best takes
    the training trials' posterior means ``train_means`` to ``train_truth``."""
    affine = fit_affine(train_means, train_truth)
    return coverage(apply_affine(np.asarray(draws), affine), truth, levels)


def reliability(rates: tuple[np.ndarray, np.ndarray] | None = None,
                latents: tuple[np.ndarray, ...] | None = None,
                levels: Sequence[float] = LEVELS) -> dict[str, dict[float, float]]:
    """{"rates": level -> coverage, "latents": ...} for what is given: ``rates`` as (draws,
    truth), ``latents`` as ``latent_coverage``'s (draws, truth, train_means, train_truth)."""
    out = {}
    if rates is not None:
        out["rates"] = coverage(*rates, levels)
    if latents is not None:
        out["latents"] = latent_coverage(*latents, levels)
    return out
