import numpy as np
import pytest
import torch

from pyrodyn import SpikeData
from pyrodyn.data import synthetic


@pytest.fixture
def data():
    return synthetic.two_area(n_trials=20, n_bins=15, n_neurons=6, seed=3)


def test_split_is_seeded_disjoint_and_complete(data):
    a = data.with_split(valid=0.2, test=0.3, seed=1)
    b = data.with_split(valid=0.2, test=0.3, seed=1)
    c = data.with_split(valid=0.2, test=0.3, seed=2)
    assert (a.split == b.split).all() and (a.split != c.split).any()
    parts = [a.split_indices(s) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [10, 4, 6]
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))


def test_select_keeps_truth_inputs_and_ids_aligned(data):
    split = data.with_split(seed=0)
    test = split.select("test")
    index = split.split_indices("test")
    assert (test.spikes == data.spikes[index]).all()
    assert (test.trial_ids == data.trial_ids[index]).all()
    assert (test.truth.latents == data.truth.latents[index]).all()
    assert (test.truth.communication["B<-A"] == data.truth.communication["B<-A"][index]).all()
    assert (test.split == "test").all()


def test_heldout_neurons_and_masks(data):
    held = data.with_heldout_neurons(3, seed=0)
    assert len(held.heldout_neurons) == 3
    mask = held.observed_mask()
    assert not mask[..., held.heldout_neurons].any()
    assert mask[..., held.heldin_neurons].all()
    assert held.observed_mask(include_heldout=True).all()
    missing = np.ones(data.shape, bool)
    missing[0, 0, 0] = False
    masked = held.replace(mask=missing)
    assert not masked.observed_mask(include_heldout=True)[0, 0, 0]


def test_area_view(data):
    b = data.area("B")
    assert b.areas == ("B",) and b.n_neurons == 6
    assert (b.spikes == data.spikes[..., 6:]).all()
    assert (b.truth.latents == data.truth.latents[..., 2:]).all()
    held = data.with_heldout_neurons([1, 7, 8]).area("B")
    assert held.heldout_neurons.tolist() == [1, 2]


def test_batches_cover_every_trial_once_on_device(data):
    seen = []
    for batch in data.batches(6, seed=0, device="cpu"):
        assert batch.spikes.dtype == torch.float32 and batch.spikes.device.type == "cpu"
        assert batch.inputs is None and batch.mask is None
        index = batch.trial_index.numpy()
        assert torch.equal(batch.spikes, torch.as_tensor(data.spikes[index], dtype=torch.float32))
        seen += index.tolist()
    assert sorted(seen) == list(range(data.n_trials))
    # Held-out neurons are scored (fit on the trials that show them) but hidden from encoders.
    heldout = data.with_heldout_neurons(2, seed=0)
    held = heldout.to_batch()
    assert held.mask is None
    assert held.encoder_mask.dtype == torch.bool
    assert not held.encoder_mask[..., heldout.heldout_neurons].any()
    assert held.encoder_mask[..., heldout.heldin_neurons].all()
    assert heldout.to_batch(include_heldout=True).encoder_mask is None


def test_batch_moves_to_device():
    data = synthetic.line_attractor(n_trials=3, n_bins=10, n_neurons=4)
    batch = data.to_batch().to("cpu")
    assert batch.inputs.shape == (3, 10, 1)


def test_time_axis_and_repr(data):
    assert np.allclose(data.time, np.arange(15) * 0.01)
    assert "areas=['A', 'B']" in repr(data)


def test_integer_and_string_ids():
    spikes = np.ones((2, 3, 2))
    data = SpikeData(spikes, neuron_ids=["n1", "n2"], trial_ids=[10, 20])
    assert data.neuron_ids.dtype.kind == "U" and data.trial_ids.dtype == np.int64
