import datetime

import h5py
import numpy as np
import pytest

from pyrodyn import SpikeData, load
from pyrodyn.data import save, synthetic

SYNTHETIC_FIELDS = ("spikes", "neuron_ids", "trial_ids", "split", "heldout_neurons", "inputs")


def assert_same(a: SpikeData, b: SpikeData):
    for name in SYNTHETIC_FIELDS + ("neuron_area", "mask"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.dt == b.dt and a.areas == b.areas and a.meta == b.meta
    if a.truth is not None:
        for name in ("rates", "latents", "latent_area", "fixed_points"):
            x, y = getattr(a.truth, name), getattr(b.truth, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert np.array_equal(x, y), name
        assert a.truth.stability == b.truth.stability
        assert a.truth.system == b.truth.system and a.truth.system_params == b.truth.system_params
        assert a.truth.communication.keys() == b.truth.communication.keys()
        for key in a.truth.communication:
            assert np.array_equal(a.truth.communication[key], b.truth.communication[key])


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("make", [
    lambda: synthetic.two_area(n_trials=8, n_bins=12, n_neurons=4, seed=1),
    lambda: synthetic.line_attractor(n_trials=8, n_bins=12, n_neurons=5, seed=2),
    lambda: SpikeData(np.random.default_rng(0).poisson(1.0, (5, 7, 3)), dt=0.02,
                      neuron_ids=["u1", "u2", "u3"], trial_ids=[3, 1, 4, 5, 9],
                      mask=np.random.default_rng(1).random((5, 7, 3)) > 0.1),
], ids=["two-area", "line-attractor", "plain"])
def test_save_load_round_trip_is_exact(tmp_path, suffix, make):
    data = make().with_split(valid=0.25, test=0.25, seed=0).with_heldout_neurons(1, seed=0)
    data.meta["note"] = "round trip"
    path = tmp_path / f"data{suffix}"
    save(data, path)
    loaded = load(path)
    data.meta["source"] = str(path)  # load records where the data came from
    assert_same(data, loaded)


def test_loaded_truth_rebuilds_the_vector_field(tmp_path):
    data = synthetic.lorenz(n_trials=3, n_bins=10, n_neurons=4, seed=0)
    save(data, tmp_path / "l.npz")
    field = load(tmp_path / "l.npz").truth.vector_field
    z = data.truth.latents[0]
    assert np.array_equal(field(z), data.truth.vector_field(z))


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load(tmp_path / "missing.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match="unsupported extension '.csv'"):
        load(tmp_path / "x.csv")
    np.savez(tmp_path / "nospikes.npz", counts=np.ones(3))
    with pytest.raises(ValueError, match="no 'spikes' array"):
        load(tmp_path / "nospikes.npz")
    np.savez(tmp_path / "neg.npz", spikes=-np.ones((2, 2, 2)))
    message = r"spikes: negative count -1.0 at \(trial 0, time 0, neuron 0\)"
    with pytest.raises(ValueError, match=message):
        load(tmp_path / "neg.npz")


def test_lfads_torch_layout_loads_with_splits(tmp_path):
    rng = np.random.default_rng(0)
    train, valid = rng.poisson(1.0, (7, 10, 6)), rng.poisson(1.0, (3, 10, 6))
    truth_train, truth_valid = rng.random((7, 10, 6)), rng.random((3, 10, 6))
    with h5py.File(tmp_path / "lfads.h5", "w") as f:
        f["train_encod_data"], f["valid_encod_data"] = train[..., :4], valid[..., :4]
        f["train_recon_data"], f["valid_recon_data"] = train, valid
        f["train_truth"], f["valid_truth"] = truth_train * 5.0, truth_valid * 5.0
        f["conversion_factor"] = 5.0
        f["train_inds"], f["valid_inds"] = np.arange(7) * 2, np.arange(3) * 2 + 1
        f["train_ext_input"], f["valid_ext_input"] = np.ones((7, 10, 1)), np.zeros((3, 10, 1))
    data = load(tmp_path / "lfads.h5", dt=0.005)
    assert data.dt == 0.005 and data.shape == (10, 10, 6)
    assert data.split.tolist() == ["train"] * 7 + ["valid"] * 3
    assert np.array_equal(data.select("train").spikes, train)
    assert np.array_equal(data.select("valid").spikes, valid)
    assert data.heldout_neurons.tolist() == [4, 5]
    assert data.trial_ids.tolist() == [0, 2, 4, 6, 8, 10, 12, 1, 3, 5]
    assert np.allclose(data.select("valid").truth.rates, truth_valid)
    assert data.inputs[:7].all() and not data.inputs[7:].any()


def test_lfads_torch_layout_without_valid_is_an_error(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["train_encod_data"] = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match="needs 'valid_encod_data'"):
        load(tmp_path / "bad.h5")


def write_nwb(path, counts, dt, starts, offset, areas, with_electrodes=True):
    """Builds an NWB file whose units spike ``counts`` times in each bin after start+offset."""
    from pynwb import NWBHDF5IO, NWBFile

    nwb = NWBFile(session_description="test", identifier="test",
                  session_start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    nwb.add_trial_column("go_cue_time", "alignment event")
    duration = counts.shape[1] * dt + offset + 0.5
    for start in starts:
        nwb.add_trial(start_time=start, stop_time=start + duration, go_cue_time=start + offset)
    if with_electrodes:
        device = nwb.create_device("probe")
        for area in dict.fromkeys(areas):
            group = nwb.create_electrode_group(area, description="shank", location=area,
                                               device=device)
            for unit, unit_area in enumerate(areas):
                if unit_area == area:
                    nwb.add_electrode(location=area, group=group, id=unit)
    else:
        nwb.add_unit_column("brain_area", "area of the unit")
    rng = np.random.default_rng(0)
    for unit in range(counts.shape[2]):
        times = []
        for trial, start in enumerate(starts):
            for k in range(counts.shape[1]):
                left = start + offset + k * dt
                times += list(left + rng.uniform(0.05, 0.95, counts[trial, k, unit]) * dt)
        extra = dict(electrodes=[unit]) if with_electrodes else dict(brain_area=areas[unit])
        nwb.add_unit(spike_times=np.sort(times), id=100 + unit, **extra)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


@pytest.mark.parametrize("with_electrodes", [True, False])
def test_nwb_binned_counts_equal_the_counts_it_was_built_from(tmp_path, with_electrodes):
    pytest.importorskip("pynwb")
    rng = np.random.default_rng(1)
    counts = rng.poisson(1.2, (4, 25, 5))
    areas = ["M1", "M1", "PMd", "PMd", "PMd"]
    starts = np.array([1.0, 3.0, 5.5, 8.0])
    path = tmp_path / "session.nwb"
    write_nwb(path, counts, 0.02, starts, 0.3, areas, with_electrodes)
    options = dict(dt=0.02, align="go_cue_time", window=(0.0, 0.5))
    if not with_electrodes:
        options["area_column"] = "brain_area"
    data = load(path, **options)
    assert np.array_equal(data.spikes, counts)
    assert data.neuron_ids.tolist() == [100, 101, 102, 103, 104]
    assert data.neuron_area.tolist() == areas and data.areas == ("M1", "PMd")
    # A window starting before the cue sees the same spikes shifted by the lead.
    early = load(path, dt=0.02, align="go_cue_time", window=(-0.1, 0.5))
    assert np.array_equal(early.spikes[:, 5:], counts) and early.spikes[:, :5].sum() == 0


def test_nwb_unknown_column_is_a_clear_error(tmp_path):
    pytest.importorskip("pynwb")
    path = tmp_path / "s.nwb"
    write_nwb(path, np.ones((1, 3, 1), dtype=int), 0.1, np.array([0.0]), 0.0, ["V1"])
    with pytest.raises(ValueError, match="align: no column 'reward_time' in the trials table"):
        load(path, dt=0.1, align="reward_time")
    with pytest.raises(ValueError, match="area_column: no column 'area'"):
        load(path, dt=0.1, area_column="area")
    with pytest.raises(ValueError, match="holds no bin"):
        load(path, dt=0.1, window=(0.0, 0.05))


def test_lfads_forward_bins_are_hidden_from_the_encoder_and_scored(tmp_path):
    from pyrodyn.analysis.scores import score_rates

    rng = np.random.default_rng(0)
    train, valid = rng.poisson(1.0, (7, 12, 6)), rng.poisson(1.0, (3, 12, 6))
    with h5py.File(tmp_path / "lfads.h5", "w") as f:
        f["train_encod_data"], f["valid_encod_data"] = train[:, :9, :4], valid[:, :9, :4]
        f["train_recon_data"], f["valid_recon_data"] = train, valid
    data = load(tmp_path / "lfads.h5")
    assert data.forward_bins == 3 and data.heldout_neurons.tolist() == [4, 5]
    batch = data.to_batch()
    assert not batch.encoder_mask[:, 9:].any() and batch.encoder_mask[:, :9, :4].all()
    assert batch.mask is None  # every count is fit where seen in training
    assert not data.observed_mask()[:, 9:].any()
    save(data, tmp_path / "round.npz")
    assert load(tmp_path / "round.npz").forward_bins == 3
    assert data.select_bins(0, 10).forward_bins == 1 and data.select_bins(0, 9).forward_bins == 0
    rates = np.ones(data.shape)
    scores = score_rates(rates, data, null_rates=np.ones(6))
    assert scores["fp_bps"] == pytest.approx(0.0) and scores["co_bps"] == pytest.approx(0.0)
    better = rates.copy()
    better[:, 9:] = np.maximum(data.spikes[:, 9:], 0.1)  # better only in the forward bins
    moved = score_rates(better, data, null_rates=np.ones(6))
    assert moved["fp_bps"] > 0 and moved["co_bps"] == pytest.approx(0.0)
    assert moved["bits_per_spike"] == pytest.approx(scores["bits_per_spike"])
    with pytest.raises(ValueError, match="forward_bins: must be a whole number"):
        data.replace(forward_bins=12)
