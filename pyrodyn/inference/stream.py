"""Posterior draws streamed to an ArviZ netCDF file one batch of trials at a time, so memory
stays bounded however many trials, bins, neurons and draws there are.

The file has the groups, dims, coords and attrs of ``to_inference_data`` (read it with
``az.from_netcdf``); it is written to a temporary name and moved into place when complete.

Example (with a fitted ``model`` and ``guide``)::

    write_posterior("test.nc", model, guide, data.select("test"), num_samples=100)
    idata = az.from_netcdf("test.nc")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np

from ..data.spikes import SpikeData
from ..models import sites
from .export import to_inference_data
from .posterior import iter_posterior

__all__ = ["write_posterior", "trials_per_batch"]


def trials_per_batch(model, data: SpikeData, num_samples: int, *, memory_mb: float = 256,
                     most: int = 256) -> int:
    """Trials per batch whose draws take about ``memory_mb`` (rates, predictive spikes,
    latents, log-likelihoods; each held twice while a batch is assembled)."""
    per_entry = 4 + np.dtype(data.spikes.dtype).itemsize  # rates float32, counts as observed
    per_trial = num_samples * data.n_bins * (data.n_neurons * per_entry
                                             + 8 * model.latent_dim) * 2
    return int(max(1, min(most, memory_mb * 2**20 // max(per_trial, 1))))


def write_posterior(path: str | os.PathLike, model, guide, data: SpikeData, *,
                    num_samples: int = 100, batch_size: int | None = None,
                    memory_mb: float = 256, elbo: str | None = None,
                    guide_name: str | None = None, trials: np.ndarray | str | None = None,
                    **options: Any) -> Path:
    """Draws the posterior of ``data`` (as ``posterior``; ``options`` go there) and writes it
    batch by batch. ``batch_size`` None: as many trials as fit in ``memory_mb``. ``trials``:
    a split name or trial indices to write (default all), without copying that split.

    Returns:
        the path written.
    """
    path = Path(path)
    if isinstance(trials, str):
        trials = data.split_indices(trials)
        if trials.size == 0:
            raise ValueError("trials: that split has no trials")
    trials = np.arange(data.n_trials) if trials is None else np.asarray(trials)
    if batch_size is None:
        batch_size = trials_per_batch(model, data, num_samples, memory_mb=memory_mb)
    partial = path.with_name(path.name + ".partial")
    batches = iter_posterior(model, guide, data, num_samples=num_samples,
                             batch_size=batch_size, trials=trials, **options)
    with h5netcdf.File(partial, "w") as f:
        start = 0
        for post in batches:
            idata = to_inference_data(post, elbo=elbo, guide_name=guide_name)
            if start == 0:
                _create(f, idata, data.trial_ids[trials], batch_size)
            _fill(f, idata, slice(start, start + post.data.n_trials), first=start == 0)
            start += post.data.n_trials
    os.replace(partial, path)
    return path


def _values(values: np.ndarray) -> tuple[np.ndarray, Any]:
    """netCDF-ready values and dtype (text as variable-length strings)."""
    values = np.asarray(values)
    if values.dtype.kind in "UO":
        return values.astype(object), h5py.string_dtype()
    return values, values.dtype


def _create(f, idata, trial_ids: np.ndarray, batch_size: int) -> None:
    """Every group, dimension, coordinate and variable at full size (trials: all of them)."""
    n_trials = len(trial_ids)
    for group in idata.groups():
        dataset = idata[group]
        g = f.create_group(group)
        for dim, size in dataset.sizes.items():
            g.dimensions[dim] = n_trials if dim == "trial" else size
        for name, coord in dataset.coords.items():
            raw = trial_ids if name == "trial" else coord.values
            values, dtype = _values(raw)
            g.create_variable(name, coord.dims, dtype=dtype, data=values)
        for name, variable in dataset.data_vars.items():
            chunks = tuple(min(batch_size, n_trials) if d == "trial" else n
                           for d, n in zip(variable.dims, variable.shape))
            # counts compress well; continuous draws hardly at all
            compression = dict(compression="gzip", compression_opts=1) \
                if name == sites.SPIKES else {}
            created = g.create_variable(name, variable.dims, dtype=variable.dtype,
                                        chunks=chunks or None, **compression)
            if "area" in dataset.coords and "neuron" in variable.dims:
                created.attrs["coordinates"] = "area"
        g.attrs.update({k: str(v) for k, v in dataset.attrs.items()})


def _fill(f, idata, trials: slice, *, first: bool) -> None:
    """One batch's values into their trials; variables without trials once."""
    for group in idata.groups():
        dataset, g = idata[group], f[group]
        for name, variable in dataset.data_vars.items():
            if "trial" in variable.dims:
                axis = variable.dims.index("trial")
                index = tuple(trials if i == axis else slice(None)
                              for i in range(variable.ndim))
                g[name][index] = variable.values
            elif first:
                g[name][...] = variable.values
