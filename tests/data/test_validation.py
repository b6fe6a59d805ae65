"""Every bad input raises ValueError naming the field and the first offending position."""

import warnings

import numpy as np
import pytest

from pyrodyn import SpikeData
from pyrodyn.data import GroundTruth, SilentNeuronWarning

GOOD = np.ones((4, 5, 3), dtype=np.int64)


def with_value(index, value, dtype=np.float64):
    spikes = GOOD.astype(dtype)
    spikes[index] = value
    return spikes


BAD_INPUTS = [
    # (case, spikes, keyword arguments, pattern the message must match)
    ("nan", with_value((1, 2, 0), np.nan), {}, r"spikes: non-finite value nan at \(trial 1, time 2, neuron 0\)"),
    ("inf", with_value((0, 4, 2), np.inf), {}, r"spikes: non-finite value inf at \(trial 0, time 4, neuron 2\)"),
    ("negative", with_value((2, 0, 1), -3, np.int64), {}, r"spikes: negative count -3 at \(trial 2, time 0, neuron 1\)"),
    ("non-integer", with_value((3, 1, 2), 0.5), {}, r"spikes: non-integer count 0.5 at \(trial 3, time 1, neuron 2\)"),
    ("rank 2", GOOD[0], {}, r"spikes: expected 3 dimensions .* got 2"),
    ("rank 4", GOOD[None], {}, r"spikes: expected 3 dimensions .* got 4"),
    ("zero trials", GOOD[:0], {}, r"spikes: zero trials"),
    ("zero bins", GOOD[:, :0], {}, r"spikes: zero times"),
    ("zero neurons", GOOD[..., :0], {}, r"spikes: zero neurons"),
    ("strings", GOOD.astype(str), {}, r"spikes: expected numeric spike counts"),
    ("dt zero", GOOD, {"dt": 0.0}, r"dt: must be a finite number > 0, got 0.0"),
    ("dt negative", GOOD, {"dt": -0.01}, r"dt: must be a finite number > 0"),
    ("dt nan", GOOD, {"dt": float("nan")}, r"dt: must be a finite number > 0"),
    ("neuron ids length", GOOD, {"neuron_ids": ["a", "b"]}, r"neuron_ids: expected 3 entries \(one per neuron\), got 2"),
    ("duplicate neuron ids", GOOD, {"neuron_ids": ["a", "b", "a"]}, r"neuron_ids: duplicate id 'a' at positions 0 and 2"),
    ("trial ids length", GOOD, {"trial_ids": [0, 1, 2]}, r"trial_ids: expected 4 entries \(one per trial\), got 3"),
    ("duplicate trial ids", GOOD, {"trial_ids": [5, 6, 5, 7]}, r"trial_ids: duplicate id 5 at positions 0 and 2"),
    ("area labels length", GOOD, {"neuron_area": ["A", "B"]}, r"neuron_area: expected 3 entries \(one per neuron\), got 2"),
    ("unknown area", GOOD, {"neuron_area": ["A", "B", "C"], "areas": ["A", "B"]}, r"neuron_area: unknown area 'C' at neuron 2"),
    ("areas without labels", GOOD, {"areas": ["A"]}, r"areas: given without neuron_area"),
    ("split labels length", GOOD, {"split": ["train"] * 3}, r"split: expected 4 entries \(one per trial\), got 3"),
    ("unknown split label", GOOD, {"split": ["train", "train", "val", "test"]}, r"split: unknown label 'val' at trial 2"),
    ("split index out of range", GOOD, {"split": {"train": [0, 1, 2], "test": [4]}}, r"split\['test'\]: index 4 at position 0 is out of range for 4 trials"),
    ("split negative index", GOOD, {"split": {"train": [0, 1, -1], "test": [3]}}, r"split\['train'\]: index -1 at position 2 is out of range"),
    ("split overlap", GOOD, {"split": {"train": [0, 1, 2], "test": [2, 3]}}, r"split\['test'\]: trial 2 is already in split 'train'"),
    ("split gap", GOOD, {"split": {"train": [0, 1], "test": [3]}}, r"split: trial 2 is in no split"),
    ("heldout out of range", GOOD, {"heldout_neurons": [0, 3]}, r"heldout_neurons: index 3 at position 1 is out of range for 3 neurons"),
    ("mask shape", GOOD, {"mask": np.ones((4, 5, 2), bool)}, r"mask: shape \(4, 5, 2\) does not match spikes \(4, 5, 3\)"),
    ("mask dtype", GOOD, {"mask": np.ones((4, 5, 3))}, r"mask: expected a boolean array"),
    ("inputs trials", GOOD, {"inputs": np.zeros((3, 5, 1))}, r"inputs: \(trial, time\) shape \(3, 5\) does not match spikes \(4, 5\)"),
    ("inputs nan", GOOD, {"inputs": with_value((0, 3, 0), np.nan)[..., :1]}, r"inputs: non-finite value nan at \(trial 0, time 3, feature 0\)"),
    ("truth rates shape", GOOD, {"truth": GroundTruth(rates=np.ones((4, 5, 2)))}, r"truth.rates: shape \(4, 5, 2\) does not match spikes"),
    ("truth rates negative", GOOD, {"truth": GroundTruth(rates=with_value((1, 1, 1), -1.0))}, r"truth.rates: negative rate at .* \(1, 1, 1\)"),
    ("truth latents bins", GOOD, {"truth": GroundTruth(latents=np.ones((4, 6, 2)))}, r"truth.latents: \(trial, time\) shape \(4, 6\) does not match"),
    ("truth latents nan", GOOD, {"truth": GroundTruth(latents=with_value((2, 1, 0), np.nan)[..., :2])}, r"truth.latents: non-finite value nan at \(trial 2, time 1, latent 0\)"),
]


@pytest.mark.parametrize("case, spikes, kwargs, pattern", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_value_error_naming_field_and_position(case, spikes, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SpikeData(spikes, **kwargs)


def test_float_counts_that_are_integers_are_accepted():
    data = SpikeData(GOOD.astype(np.float32))
    assert data.spikes.dtype == np.int64


def test_silent_neuron_warns_not_raises():
    spikes = GOOD.copy()
    spikes[..., 1] = 0
    with pytest.warns(SilentNeuronWarning, match=r"1 neuron\(s\) never spike \(first: neuron 1"):
        SpikeData(spikes)


def test_derived_copies_do_not_repeat_the_silent_warning():
    spikes = GOOD.copy()
    spikes[..., 1] = 0
    with pytest.warns(SilentNeuronWarning):
        data = SpikeData(spikes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.with_split(valid=0.25, test=0.25)


@pytest.mark.parametrize("method, args, pattern", [
    ("area", ("X",), r"area: unknown area 'X' \(known: A, B\)"),
    ("select", ([0, 9],), r"trials: index 9 at position 1 is out of range for 4 trials"),
    ("select", ("valid",), r"split: split 'valid' has no trials"),
    ("split_indices", ("dev",), r"split: unknown split 'dev'"),
    ("with_heldout_neurons", (3,), r"heldout_neurons: count must be in \[0, 3\)"),
])
def test_bad_arguments_to_methods(method, args, pattern):
    data = SpikeData(GOOD, neuron_area=["A", "B", "A"])
    with pytest.raises(ValueError, match=pattern):
        getattr(data, method)(*args)


def test_split_fractions_that_leave_no_training_trials():
    with pytest.raises(ValueError, match="leave no training trials"):
        SpikeData(GOOD).with_split(valid=0.5, test=0.5)
