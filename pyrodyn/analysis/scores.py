"""One scoring of predicted rates (and of inferred latents) on a set of trials, used by
``evaluate``, the validation inside ``fit`` and the benchmark, so the three never disagree.

Example:
    >>> from pyrodyn.data import synthetic
    >>> data = synthetic.lorenz(n_trials=6, n_bins=20, n_neurons=8, seed=0)
    >>> scores = score_rates(data.truth.rates, data, null_rates=mean_rates(data.spikes))
    >>> sorted(scores)
    ['bits_per_spike', 'rate_r2', 'true_bits_per_spike']
"""

from __future__ import annotations

import numpy as np

from ..data.spikes import SpikeData
from .metrics import bits_per_spike, co_bps, mean_rates, nonlinear_state_r2, rate_r2, state_r2

__all__ = ["score_rates", "score_states", "mean_rates"]


def score_rates(rates: np.ndarray, data: SpikeData, *, null_rates: np.ndarray
                ) -> dict[str, float]:
    """Scores of ``rates`` (trial, time, neuron; counts per bin, every neuron) on ``data``.

    - ``bits_per_spike``: held-in neurons, observed entries only (null: ``null_rates``, e.g.
      the training trials' mean rates);
    - ``co_bps``: the held-out neurons, when ``data`` has any (observed entries before the
      forward bins);
    - ``fp_bps``: every neuron in the forward bins, when ``data`` has any (NLB's fp-bps: the
      encoder never saw them);
    - with true rates: ``true_bits_per_spike`` (the ceiling, scored the same way),
      ``true_co_bps`` and ``true_fp_bps`` where those are scored, and ``rate_r2``.
    """
    heldin, mask = data.heldin_neurons, data.observed_mask()[..., data.heldin_neurons]
    null_rates = np.asarray(null_rates)

    def bps(predicted):
        return float(bits_per_spike(predicted[..., heldin], data.spikes[..., heldin],
                                    null_rates=null_rates[heldin], mask=mask))

    held, forward = data.heldout_neurons, data.forward_bins
    observed = data.observed_mask(include_heldout=True)
    seen = observed.copy()
    if forward:
        seen[:, -forward:] = False
    ahead = observed & ~seen  # the forward bins' observed entries

    def cobps(predicted):
        return float(co_bps(predicted, data.spikes, held, null_rates=null_rates[held],
                            mask=seen))

    def fpbps(predicted):
        return float(bits_per_spike(predicted, data.spikes, null_rates=null_rates, mask=ahead))

    scores = {"bits_per_spike": bps(rates)}
    if held.size:
        scores["co_bps"] = cobps(rates)
    if forward:
        scores["fp_bps"] = fpbps(rates)
    truth = data.truth
    if truth is not None and truth.rates is not None:
        scores["true_bits_per_spike"] = bps(truth.rates)
        if held.size:
            scores["true_co_bps"] = cobps(truth.rates)
        if forward:
            scores["true_fp_bps"] = fpbps(truth.rates)
        scores["rate_r2"] = float(rate_r2(rates, truth.rates))
    return scores


def score_states(true_train: np.ndarray, inferred_train: np.ndarray, true_test: np.ndarray,
                 inferred_test: np.ndarray) -> dict[str, float]:
    """State R2 both ways, affine (``state_r2_*``: are the latents an affine image of the
    truth?) and nonlinear (``state_r2_nonlinear_*``: do they hold the same information,
    whatever their coordinates?), maps fit on the training trials, scored on the test trials."""
    true = np.concatenate([true_train, true_test])
    inferred = np.concatenate([inferred_train, inferred_test])
    split = dict(train=np.arange(len(true_train)), test=np.arange(len(true_train), len(true)))
    affine, nonlinear = state_r2(true, inferred, **split), nonlinear_state_r2(true, inferred,
                                                                              **split)
    return {"state_r2_true_to_inferred": affine.true_to_inferred,
            "state_r2_inferred_to_true": affine.inferred_to_true,
            "state_r2_nonlinear_true_to_inferred": nonlinear.true_to_inferred,
            "state_r2_nonlinear_inferred_to_true": nonlinear.inferred_to_true}
