"""Scoring a fitted model on held-out trials against the data and, when known, the truth.

Example (with a fitted ``model`` and ``guide``)::

    scores = evaluate(model, guide, data.select("train"), data.select("test"))
    scores["bits_per_spike"], scores.get("state_r2_true_to_inferred")
"""

from __future__ import annotations

import numpy as np

from ..analysis.fixed_points import fixed_point_scores
from ..analysis.metrics import bits_per_spike, mean_rates
from ..analysis.scores import score_rates, score_states
from ..data.spikes import SpikeData
from ..models.base import reported_field
from .forecast import forward_rates
from .posterior import MEAN_SAMPLES, posterior_means

__all__ = ["evaluate"]


def evaluate(model, guide, train: SpikeData, test: SpikeData, *,
             num_samples: int = MEAN_SAMPLES, refine_steps: int = 0, device: str | None = None,
             train_latents: np.ndarray | None = None, fp_starts: int = 500,
             forward_bins: int = 0) -> dict[str, float]:
    """Metrics of the posterior-mean rates on ``test`` trials.

    - ``bits_per_spike`` on held-in neurons (null: training mean rates); with held-out neurons
      also ``co_bps``; with true rates ``true_bits_per_spike`` (the ceiling) and ``rate_r2``.
    - With true latents: ``state_r2_true_to_inferred`` and ``state_r2_inferred_to_true``, affine
      maps fit on the training trials' posterior means, scored on ``test``, and the same with
      a nonlinear regression (``state_r2_nonlinear_*``; ``analysis.scores.score_states``).
    - With known fixed points and a model with a vector field (``model.field``): fixed-point
      recovery, ``fp_*`` (``analysis.fixed_points.fixed_point_scores``, ``fp_starts`` starts).

    - With forward bins in the data (``test.forward_bins``, e.g. an lfads-torch file), their
      ``fp_bps``: the encoder never saw them (``score_rates``).
    - With ``forward_bins``: ``fp_bps``, bits per spike (every neuron) of the last
      ``forward_bins`` bins predicted from the bins before them (``forward_rates``), and with
      true rates ``true_fp_bps``, the true rates' figure on the same entries.

    ``refine_steps`` refines every trial's posterior first (see ``posterior``); ``device``: where
    to run (default: where the model's parameters are).
    ``train_latents``: the training trials' posterior means when already at hand (scoring
    several splits then derives them once: ``posterior_means(...)[0]``).
    """
    if forward_bins and test.forward_bins:
        raise ValueError(f"forward_bins: the data hold their own {test.forward_bins} forward "
                         "bins, scored as fp_bps; leave forward_bins at 0")
    options = dict(num_samples=num_samples, refine_steps=refine_steps, device=device)
    latents, rates = posterior_means(model, guide, test, **options)
    null = mean_rates(train.spikes, mask=train.observed_mask(include_heldout=True))
    scores = score_rates(rates, test, null_rates=null)
    truth = test.truth
    if truth is not None and truth.latents is not None and train.truth is not None:
        if train_latents is None:
            train_latents, _ = posterior_means(model, guide, train, **options)
        scores.update(score_states(train.truth.latents, train_latents, truth.latents, latents))
        if getattr(model, "field", None) is not None and truth.fixed_points is not None \
                and fp_starts:
            field = reported_field(model)  # where the "latents" site writes the states
            fp, _ = fixed_point_scores(field, train_latents, train.truth,
                                       discrete=field.discrete, n_starts=fp_starts)
            scores.update(fp)
    if forward_bins:
        scores.update(_forward_scores(model, guide, test, null, forward_bins, options))
    return scores


def _forward_scores(model, guide, test, null, forward_bins, options) -> dict[str, float]:
    window = slice(test.n_bins - forward_bins, None)
    spikes = test.spikes[:, window]
    mask = test.observed_mask(include_heldout=True)[:, window]
    predicted = forward_rates(model, guide, test, forward_bins=forward_bins,
                              num_samples=options["num_samples"],
                              refine_steps=options["refine_steps"], device=options["device"])
    scores = {"fp_bps": float(bits_per_spike(predicted, spikes, null_rates=null, mask=mask))}
    if test.truth is not None and test.truth.rates is not None:
        scores["true_fp_bps"] = float(bits_per_spike(test.truth.rates[:, window], spikes,
                                                     null_rates=null, mask=mask))
    return scores
