"""NWB loader: bins the units' spike times inside each trial of the trials table.

Needs the optional extra ``pip install pyrodyn[nwb]`` (pynwb).

Example (needs an NWB file with units and trials)::

    from pyrodyn.data import load
    data = load("session.nwb", dt=0.02, align="go_cue_time", window=(-0.5, 1.0))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .spikes import SpikeData
from .validation import check_positive

__all__ = ["load_nwb", "bin_spike_times"]


def bin_spike_times(
    spike_times: list[np.ndarray], starts: np.ndarray, n_bins: int, dt: float
) -> np.ndarray:
    """Counts spikes of each unit in ``n_bins`` bins of ``dt`` after each trial start.

    Bins are half-open ``[start + k dt, start + (k+1) dt)``. Returns (trial, time, unit) int64.
    """
    counts = np.zeros((len(starts), n_bins, len(spike_times)), dtype=np.int64)
    offsets = np.arange(n_bins + 1) * dt
    for unit, times in enumerate(spike_times):
        times = np.sort(np.asarray(times, dtype=np.float64))
        for trial, start in enumerate(starts):
            edges = np.searchsorted(times, start + offsets, side="left")
            counts[trial, :, unit] = np.diff(edges)
    return counts


def load_nwb(
    path: str | os.PathLike,
    *,
    dt: float = 0.01,
    align: str = "start_time",
    window: tuple[float, float] | None = None,
    area_column: str | None = None,
) -> SpikeData:
    """Loads the units of an NWB file as trial-aligned binned counts.

    Args:
        path: the ``.nwb`` file.
        dt: bin width in seconds.
        align: column of the trials table to align each trial to (e.g. "go_cue_time").
        window: (before, after) in seconds relative to ``align``; default: from the aligned time
            to the shortest trial's ``stop_time``.
        area_column: units column holding each unit's area; default: the ``location`` of each
            unit's first electrode when the units table has electrodes, else no areas.

    Raises:
        ValueError: no units or trials table, an unknown column, or an empty window.
    """
    try:
        from pynwb import NWBHDF5IO
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("reading NWB needs pynwb: pip install 'pyrodyn[nwb]'") from error
    dt = check_positive("dt", dt)
    path = Path(path)
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        units, trials = nwb.units, nwb.trials
        if units is None or len(units) == 0:
            raise ValueError(f"{path}: the NWB file has no units table (spike times)")
        if trials is None or len(trials) == 0:
            raise ValueError(f"{path}: the NWB file has no trials table")
        if align not in trials.colnames and align not in ("start_time", "stop_time"):
            raise ValueError(
                f"align: no column {align!r} in the trials table "
                f"(columns: {', '.join(trials.colnames)})"
            )
        aligned = np.asarray(trials[align].data[:], dtype=np.float64)
        if window is None:
            stops = np.asarray(trials["stop_time"].data[:], dtype=np.float64)
            window = (0.0, float(np.min(stops - aligned)))
        before, after = float(window[0]), float(window[1])
        n_bins = int(np.floor((after - before) / dt + 1e-9))
        if n_bins < 1:
            raise ValueError(f"window: ({before}, {after}) holds no bin of dt={dt}")
        spike_times = [np.asarray(units.get_unit_spike_times(i)) for i in range(len(units))]
        neuron_ids = np.asarray(units.id[:])
        if area_column is not None:
            if area_column not in units.colnames:
                raise ValueError(
                    f"area_column: no column {area_column!r} in the units table "
                    f"(columns: {', '.join(units.colnames)})"
                )
            areas = [str(a) for a in units[area_column].data[:]]
        elif "electrodes" in units.colnames:
            areas = [str(units["electrodes"][i]["location"].iloc[0]) for i in range(len(units))]
        else:
            areas = None
        trial_ids = np.asarray(trials.id[:])
    counts = bin_spike_times(spike_times, aligned + before, n_bins, dt)
    return SpikeData(
        counts, dt=dt, neuron_ids=neuron_ids, neuron_area=areas, trial_ids=trial_ids,
        meta={"source": str(path), "format": "nwb", "align": align, "window": [before, after]},
    )
