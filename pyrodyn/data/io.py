"""Reading and writing ``SpikeData``: pyrodyn's own ``.npz``/``.h5`` layout and lfads-torch HDF5.

pyrodyn's layout (the same keys in ``.npz`` and ``.h5``; all but ``spikes`` optional):

============================  ==========================================================
``spikes``                    int (trial, time, neuron) counts
``dt``                        bin width in seconds (scalar)
``neuron_ids``/``trial_ids``  one id per neuron / trial (integers or strings)
``neuron_area``, ``areas``    area label per neuron; the area names in order
``split``                     "train"/"valid"/"test" per trial
``heldout_neurons``           indices of neurons held out for co-smoothing
``forward_bins``              the last bins of each trial held out for forward prediction
``mask``                      bool (trial, time, neuron), True where observed
``inputs``                    float (trial, time, input) external inputs
``rates``, ``latents``        ground truth: rates in counts/bin; latent states
``latent_area``               area of each true latent dimension
``fixed_points``, ``stability``  known fixed points (K, latent) and their labels
``communication/<B<-A>``      true inter-area signals (trial, time, rank)
``system``, ``system_params``  generating system and its parameters (JSON)
``meta``                      JSON notes
============================  ==========================================================

A synthetic system's vector field is rebuilt on load from ``system`` and ``system_params``.

Example:
    >>> from pyrodyn.data import load, save, synthetic
    >>> data = synthetic.lorenz(n_trials=4, n_bins=20, n_neurons=5, seed=0)
    >>> save(data, "/tmp/lorenz.npz")
    >>> bool((load("/tmp/lorenz.npz").spikes == data.spikes).all())
    True
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .spikes import GroundTruth, SpikeData

__all__ = ["load", "save", "load_lfads_h5", "LAYOUT_VERSION"]

LAYOUT_VERSION = 1
_COMM = "communication/"


def _to_arrays(data: SpikeData) -> dict[str, Any]:
    arrays: dict[str, Any] = {
        "layout_version": LAYOUT_VERSION,
        "spikes": data.spikes,
        "dt": data.dt,
        "neuron_ids": data.neuron_ids,
        "trial_ids": data.trial_ids,
        "heldout_neurons": data.heldout_neurons,
        "forward_bins": data.forward_bins,
        "meta": json.dumps(data.meta),
    }
    optional = {
        "neuron_area": data.neuron_area,
        "areas": np.asarray(data.areas) if data.neuron_area is not None else None,
        "split": data.split,
        "mask": data.mask,
        "inputs": data.inputs,
    }
    truth = data.truth
    if truth is not None:
        optional.update(
            rates=truth.rates, latents=truth.latents, latent_area=truth.latent_area,
            fixed_points=truth.fixed_points,
            stability=None if truth.stability is None else np.asarray(truth.stability),
            system=truth.system,
            system_params=json.dumps(truth.system_params),
        )
        optional.update({_COMM + k: v for k, v in truth.communication.items()})
    arrays.update({k: v for k, v in optional.items() if v is not None})
    return arrays


def _from_arrays(arrays: dict[str, Any], source: str, dt: float | None = None) -> SpikeData:
    if "spikes" not in arrays:
        raise ValueError(f"{source}: no 'spikes' array (keys: {', '.join(sorted(arrays))})")
    get = arrays.get
    truth = None
    truth_keys = ("rates", "latents", "fixed_points", "system")
    if any(k in arrays for k in truth_keys) or any(k.startswith(_COMM) for k in arrays):
        system = None if get("system") is None else str(get("system"))
        params = json.loads(str(get("system_params", "{}")))
        field = None
        if system is not None:
            from . import synthetic

            field = synthetic.rebuild_vector_field(system, params)
        truth = GroundTruth(
            rates=get("rates"), latents=get("latents"), latent_area=get("latent_area"),
            fixed_points=get("fixed_points"),
            stability=None if get("stability") is None else tuple(get("stability").tolist()),
            vector_field=field,
            communication={k[len(_COMM):]: v for k, v in arrays.items() if k.startswith(_COMM)},
            system=system, system_params=params,
        )
    meta = json.loads(str(get("meta", "{}")))
    meta.setdefault("source", source)
    return SpikeData(
        arrays["spikes"], dt=_bin_width(get("dt"), dt, source), neuron_ids=get("neuron_ids"),
        neuron_area=get("neuron_area"),
        areas=None if get("areas") is None else tuple(get("areas").tolist()),
        trial_ids=get("trial_ids"), split=get("split"), heldout_neurons=get("heldout_neurons"),
        forward_bins=int(get("forward_bins", 0)), mask=get("mask"), inputs=get("inputs"),
        truth=truth, meta=meta,
    )


def save(data: SpikeData, path: str | os.PathLike) -> None:
    """Writes ``data`` to ``.npz`` or ``.h5``/``.hdf5`` in pyrodyn's layout; round-trips exactly."""
    path = Path(path)
    arrays = _to_arrays(data)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        # Key names with "/" are fine inside an npz archive (they are zip member names).
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})
    elif suffix in (".h5", ".hdf5"):
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                value = np.asarray(value)
                if value.dtype.kind == "U":
                    value = value.astype(h5py.string_dtype())
                    f.create_dataset(key, data=value)
                elif value.ndim >= 2:
                    f.create_dataset(key, data=value, compression="gzip")
                else:
                    f.create_dataset(key, data=value)
    else:
        raise ValueError(f"path: unsupported extension {suffix!r} for {path} (use .npz or .h5)")


def _read_h5(f: h5py.File) -> dict[str, Any]:
    arrays: dict[str, Any] = {}

    def visit(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset):
            if h5py.check_string_dtype(node.dtype) is not None:
                value = node.asstr()[()]
                arrays[name] = str(value) if np.ndim(value) == 0 else np.asarray(value, dtype=str)
            else:
                value = node[()]
                arrays[name] = value
    f.visititems(visit)
    return arrays


def _bin_width(stored, given: float | None, source: str) -> float:
    """The file's bin width, or the one the caller gives (they must agree when both exist)."""
    if stored is None and given is None:
        warnings.warn(f"{source}: holds no 'dt'; assuming bins of 10 ms (give dt=..., --dt on "
                      "the command line, or save the bin width in seconds as 'dt')",
                      stacklevel=4)
        return 0.01
    if stored is not None and given is not None and not np.isclose(float(stored), given):
        raise ValueError(f"dt: {source} says its bins are {float(stored)} s, but {given} s "
                         "was given")
    return float(given if stored is None else stored)


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"path: {path} is not an .npz archive NumPy can read "
                         f"({type(error).__name__})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"path: {path} holds one .npy array, not an .npz archive of named "
                         "arrays (spikes, dt, ...); write it with numpy.savez")
    with npz:
        arrays = {k: npz[k] for k in npz.files}
    return {k: (v.item() if v.ndim == 0 and v.dtype.kind == "U" else v) for k, v in arrays.items()}


def load_lfads_h5(path: str | os.PathLike, *, dt: float = 0.01) -> SpikeData:
    """Loads lfads-torch's HDF5 layout into one ``SpikeData`` with train/valid splits.

    Reads ``{train,valid}_encod_data`` (or ``{train,valid}_data``) and, when present,
    ``*_recon_data`` (neurons beyond the encoder's are held out; bins beyond the encoder's are
    ``forward_bins``, hidden from the encoder and scored as forward prediction),
    ``*_ext_input``, ``*_truth`` (divided by ``conversion_factor`` to counts per bin) and
    ``*_inds`` (original trial order, used as ids).
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    return _lfads_from_arrays(arrays, str(path), dt)


def _lfads_from_arrays(arrays: dict[str, Any], source: str, dt: float) -> SpikeData:
    def part(split: str, name: str) -> np.ndarray | None:
        return arrays.get(f"{split}_{name}")

    blocks: dict[str, dict[str, np.ndarray | None]] = {}
    for split in ("train", "valid", "test"):
        encod = part(split, "encod_data")
        if encod is None:
            encod = part(split, "data")
        if encod is None:
            continue
        recon = part(split, "recon_data")
        blocks[split] = dict(
            encod=np.asarray(encod), spikes=np.asarray(encod if recon is None else recon),
            inputs=part(split, "ext_input"), truth=part(split, "truth"), inds=part(split, "inds"),
        )
    for required in ("train", "valid"):
        if required not in blocks:
            raise ValueError(
                f"{source}: lfads-torch layout needs '{required}_encod_data' "
                f"(keys: {', '.join(sorted(arrays))})"
            )
    for split, block in blocks.items():
        if block["spikes"].ndim != 3 or block["encod"].ndim != 3:
            raise ValueError(f"{source}: {split} data must be (trial, time, neuron), got "
                             f"shape {block['encod'].shape}")
    first = blocks["train"]
    n_encod_neurons, n_encod_bins = first["encod"].shape[2], first["encod"].shape[1]
    for split, block in blocks.items():
        if block["spikes"].shape[1:] != first["spikes"].shape[1:]:
            raise ValueError(
                f"{source}: {split} data shape {block['spikes'].shape[1:]} differs from "
                f"train {first['spikes'].shape[1:]} (time, neuron)"
            )
    spikes = np.concatenate([b["spikes"] for b in blocks.values()])
    n_neurons, n_bins = spikes.shape[2], spikes.shape[1]
    labels = np.concatenate([[s] * len(b["spikes"]) for s, b in blocks.items()])
    inds = [b["inds"] for b in blocks.values()]
    trial_ids = np.concatenate(inds).astype(np.int64) if all(i is not None for i in inds) else None

    def stacked(key: str) -> np.ndarray | None:
        values = [b[key] for b in blocks.values()]
        if any(v is None for v in values):
            return None
        return np.concatenate(values).astype(np.float64)

    truth = None
    true_rates = stacked("truth")
    if true_rates is not None:
        true_rates = true_rates / float(arrays.get("conversion_factor", 1.0))
        truth = GroundTruth(rates=true_rates)
    return SpikeData(
        spikes, dt=dt, trial_ids=trial_ids, split=labels,
        heldout_neurons=np.arange(n_encod_neurons, n_neurons),
        forward_bins=int(n_bins - n_encod_bins), inputs=stacked("inputs"), truth=truth,
        meta={"source": source, "format": "lfads-torch"},
    )


def _read_layout(path: Path, read):
    """``read()``, with a malformed field (wrong kind or shape of array) reported as a
    ValueError naming the file rather than a TypeError from deep inside numpy."""
    try:
        return read()
    except (TypeError, KeyError, IndexError, AttributeError, OverflowError) as error:
        raise ValueError(f"path: {path} does not hold pyrodyn's layout "
                         f"({type(error).__name__}: {error})") from None


def load(path: str | os.PathLike, *, dt: float | None = None, **options: Any) -> SpikeData:
    """Loads spike data, dispatching on the file.

    ``.npz`` and ``.h5`` in pyrodyn's layout, ``.h5`` in lfads-torch's layout (detected by its
    ``train_encod_data``/``train_data`` key), and ``.nwb`` (options go to ``load_nwb``).
    ``dt``: bin width in seconds, for files that do not store it (a file that does must
    agree); without either, 10 ms with a warning.

    Raises:
        ValueError: for a missing file, an unknown extension or an invalid layout or content.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no such file {path}")
    suffix = path.suffix.lower()
    if suffix == ".nwb":
        from .nwb import load_nwb

        return load_nwb(path, **({} if dt is None else {"dt": dt}), **options)
    if options:
        raise ValueError(f"options: {', '.join(sorted(options))} apply to .nwb files only, not "
                         f"{path.name}")
    if suffix == ".npz":
        return _read_layout(path, lambda: _from_arrays(_read_npz(path), str(path), dt))
    if suffix in (".h5", ".hdf5"):
        try:
            with h5py.File(path, "r") as f:
                keys = set(f.keys())
        except OSError as error:
            raise ValueError(f"path: {path} is not an HDF5 file h5py can read "
                             f"({str(error).strip() or type(error).__name__})") from None
        if "spikes" not in keys and ({"train_encod_data", "train_data"} & keys):
            return _read_layout(path, lambda: load_lfads_h5(
                path, dt=_bin_width(None, dt, str(path))))

        def read():
            with h5py.File(path, "r") as f:
                return _from_arrays(_read_h5(f), str(path), dt)

        return _read_layout(path, read)
    raise ValueError(f"path: unsupported extension {suffix!r} for {path} (.npz, .h5, .nwb)")
