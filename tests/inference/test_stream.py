"""Streaming the posterior to netCDF gives the same InferenceData as building it in memory."""

import sys
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from pyrodyn.data import synthetic
from pyrodyn.inference import AmortizedNormalGuide, posterior, write_posterior
from pyrodyn.inference.stream import trials_per_batch
from pyrodyn.models import LatentODEModel, MultiAreaModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from custom_variant import GainModel  # noqa: E402


@pytest.mark.parametrize("kind", ["multi_area", "global_sites", "latent_ode"])
def test_streamed_file_equals_the_in_memory_export(tmp_path, kind):
    data = synthetic.two_area(n_trials=10, n_bins=8, n_neurons=4, seed=0).with_heldout_neurons(1)
    model = {"multi_area": lambda: MultiAreaModel.from_data(data, 2),
             "global_sites": lambda: GainModel(data.n_neurons, 2),
             "latent_ode": lambda: LatentODEModel(data.n_neurons, 2)}[kind]()
    guide = AmortizedNormalGuide(model)
    posterior(model, guide, data, num_samples=1)  # lazily made parameters exist (as once fit)
    path = write_posterior(tmp_path / "p.nc", model, guide, data, num_samples=3, batch_size=3,
                           refine_steps=2, guide_name="normal")
    assert not (tmp_path / "p.nc.partial").exists()
    streamed = az.from_netcdf(path)
    built = posterior(model, guide, data, num_samples=3, batch_size=3,
                      refine_steps=2).to_inference_data(guide_name="normal")
    assert set(streamed.groups()) == set(built.groups())
    for group in built.groups():
        a, b = streamed[group], built[group]
        assert dict(a.sizes) == dict(b.sizes) and set(a.coords) == set(b.coords)
        for name in b.data_vars:
            assert a[name].dims == b[name].dims
            assert a[name].dtype == b[name].dtype
            assert np.array_equal(a[name].values, b[name].values), (group, name)
        assert np.array_equal(a["trial"].values, data.trial_ids)
        assert a.attrs["guide"] == "normal"
    az.loo(streamed)  # one log-likelihood per trial, as in memory


def test_batches_shrink_to_the_memory_asked_for():
    data = synthetic.lorenz(n_trials=4, n_bins=100, n_neurons=100, seed=0)
    model = LatentODEModel(100, 3)
    assert trials_per_batch(model, data, 100, memory_mb=256) < 20
    assert trials_per_batch(model, data, 1, memory_mb=256) == 256
