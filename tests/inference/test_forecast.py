"""Forward prediction: the predicted bins are never seen, and the scores land in evaluate."""

import numpy as np
import pytest

from pyrodyn.data import synthetic
from pyrodyn.inference import AmortizedNormalGuide, evaluate, fit, forward_rates
from pyrodyn.models import LatentODEModel


@pytest.fixture(scope="module", params=["ode", "sde", "correlated_sde", "student_sde", "inputs"])
def fitted(request):
    data = synthetic.lorenz(n_trials=30, n_bins=24, n_neurons=10, seed=0)
    data = data.with_split(valid=0.2, test=0.2, seed=0)
    options = {"ode": {}, "sde": {"diffusion": 0.3},
               "correlated_sde": {"diffusion": 0.3, "noise_tau": 5.0},
               "student_sde": {"diffusion": 0.3, "noise_tau": 5.0, "noise_df": 4.0},
               "inputs": {"inferred_input_dim": 1}}
    model = LatentODEModel(10, 3, **options[request.param])
    guide = AmortizedNormalGuide(model)
    fit(model, guide, data.select("train"), steps=10, batch_size=10, progress=False,
        curriculum=None)
    return data, model, guide


def test_the_predicted_bins_never_reach_the_posterior(fitted):
    data, model, guide = fitted
    test = data.select("test")
    rates = forward_rates(model, guide, test, forward_bins=6, num_samples=3, refine_steps=2)
    assert rates.shape == (test.n_trials, 6, 10) and (rates > 0).all()
    spikes = test.spikes.copy()
    spikes[:, -6:] = spikes[:, -6:][:, ::-1] + 3  # other counts in the bins to predict
    same = forward_rates(model, guide, test.replace(spikes=spikes), forward_bins=6,
                         num_samples=3, refine_steps=2)
    np.testing.assert_allclose(same, rates, rtol=1e-5)
    spikes[:, :6] += 2  # while the seen bins move the prediction
    other = forward_rates(model, guide, test.replace(spikes=spikes), forward_bins=6,
                          num_samples=3, refine_steps=2)
    assert not np.allclose(other, rates)


def test_evaluate_reports_forward_prediction(fitted):
    data, model, guide = fitted
    scores = evaluate(model, guide, data.select("train"), data.select("test"), forward_bins=5,
                      fp_starts=0)
    assert np.isfinite(scores["fp_bps"]) and scores["true_fp_bps"] > 0
    with pytest.raises(ValueError, match="forward_bins"):
        forward_rates(model, guide, data.select("test"), forward_bins=24)


def test_the_data_s_own_forward_bins_are_never_seen_and_scored(fitted):
    """Forward bins held in the data (lfads-torch files): hidden from the encoder and from
    refinement, scored as fp_bps by evaluate and by fit's validation."""
    data, model, guide = fitted
    held = data.replace(forward_bins=6)
    test = held.select("test")
    scores = evaluate(model, guide, held.select("train"), test, refine_steps=2, fp_starts=0)
    assert np.isfinite(scores["fp_bps"]) and scores["true_fp_bps"] > 0
    spikes = test.spikes.copy()
    spikes[:, -6:] = spikes[:, -6:][:, ::-1] + 3  # other counts in the forward bins
    again = evaluate(model, guide, held.select("train"), test.replace(spikes=spikes),
                     refine_steps=2, fp_starts=0)
    assert again["bits_per_spike"] == pytest.approx(scores["bits_per_spike"], rel=1e-5)
    assert again["fp_bps"] != pytest.approx(scores["fp_bps"])  # scored on the new counts
    with pytest.raises(ValueError, match="hold their own 6 forward bins"):
        evaluate(model, guide, held.select("train"), test, forward_bins=3)
    result = fit(model, guide, held.select("train"), valid=held.select("valid"), steps=2,
                 batch_size=10, eval_every=1, progress=False, curriculum=None)
    assert np.isfinite(result.valid[-1]["fp_bps"])
