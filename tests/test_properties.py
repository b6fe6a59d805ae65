"""Property-based tests: random malformed inputs to the loaders, ``SpikeData`` and the config
only ever raise ``ValueError`` (a message that says what and where), never a stack trace from
deep inside numpy, h5py or yaml."""

import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyrodyn.config import RunConfig
from pyrodyn.data import SpikeData, load

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

numbers = hnp.arrays(
    dtype=st.sampled_from([np.int64, np.float64, np.float32, np.int8, np.bool_, np.uint16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    elements=None)


def accepted_or_value_error(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # silent neurons, assumed dt: warnings, not errors
        try:
            return make()
        except ValueError:
            return None


@SETTINGS
@given(spikes=numbers, dt=st.one_of(st.floats(allow_nan=True), st.integers(-3, 3)),
       heldout=st.lists(st.integers(-5, 8), max_size=3),
       split=st.one_of(st.none(), st.lists(st.sampled_from(["train", "valid", "test", "x"]),
                                           max_size=5)))
def test_spike_data_rejects_bad_input_with_a_value_error(spikes, dt, heldout, split):
    data = accepted_or_value_error(
        lambda: SpikeData(spikes, dt=dt, heldout_neurons=heldout, split=split))
    if data is not None:  # what it accepts is what it promises
        assert data.spikes.ndim == 3 and dt > 0
        assert np.all(data.spikes >= 0) and np.all(np.isfinite(data.spikes))


KEYS = ["spikes", "dt", "neuron_ids", "trial_ids", "split", "heldout_neurons", "mask", "inputs",
        "rates", "latents", "neuron_area", "system", "fixed_points"]


@SETTINGS
@given(arrays=st.dictionaries(st.sampled_from(KEYS), numbers, max_size=5),
       suffix=st.sampled_from([".npz", ".h5"]))
def test_files_of_random_arrays_load_or_raise_a_value_error(arrays, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"d{suffix}"
        if suffix == ".npz":
            np.savez(path, **arrays)
        else:
            import h5py

            with h5py.File(path, "w") as f:
                for key, value in arrays.items():
                    f[key] = value
        accepted_or_value_error(lambda: load(path))


@SETTINGS
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".npz", ".h5", ".hdf5"]))
def test_random_bytes_raise_a_value_error(content, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"d{suffix}"
        path.write_bytes(content)
        assert accepted_or_value_error(lambda: load(path)) is None


FIELDS = list(RunConfig.__dataclass_fields__)


@SETTINGS
@given(items=st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)),
                                st.one_of(st.text(max_size=12),
                                          st.sampled_from(["true", "-1", "0", "1e-4", "[1]",
                                                           "null", "!!python/none", "{a: 1}",
                                                           "[10, 700]", "nan", "inf"]))),
                      max_size=4))
def test_config_overrides_are_checked_with_a_value_error(items):
    overrides = [f"{key}={value}" for key, value in items]
    config = accepted_or_value_error(lambda: RunConfig.from_sources(overrides=overrides))
    if config is not None:
        config.fit_options()  # what it accepts, fit accepts
