"""Scoring models against data and ground truth, and looking inside learned dynamics.

Example:
    >>> from pyrodyn.analysis import bits_per_spike, rate_r2, state_r2
"""

from .communication import (
    ChannelSummary,
    channel_strengths,
    communication_summary,
    true_communication_strengths,
)
from .coverage import LEVELS, coverage, latent_coverage, reliability
from .fixed_points import FixedPoints, attractor_shape, find_fixed_points
from .metrics import (
    FixedPointMatch,
    StateR2,
    apply_affine,
    bits_per_spike,
    co_bps,
    fit_affine,
    interval_coverage,
    match_fixed_points,
    mean_rates,
    nonlinear_state_r2,
    poisson_log_likelihood,
    r2_score,
    rate_r2,
    state_r2,
)
from .scores import score_rates

__all__ = [
    "score_rates",
    "bits_per_spike",
    "co_bps",
    "mean_rates",
    "poisson_log_likelihood",
    "r2_score",
    "rate_r2",
    "state_r2",
    "nonlinear_state_r2",
    "StateR2",
    "fit_affine",
    "interval_coverage",
    "coverage",
    "latent_coverage",
    "reliability",
    "LEVELS",
    "apply_affine",
    "match_fixed_points",
    "FixedPointMatch",
    "find_fixed_points",
    "FixedPoints",
    "attractor_shape",
    "communication_summary",
    "ChannelSummary",
    "channel_strengths",
    "true_communication_strengths",
]
