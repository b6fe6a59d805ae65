"""``SpikeData``: the one validated container for binned spike counts.

Counts are (trial, time, neuron) non-negative integers in bins of ``dt`` seconds. Beside them the
container keeps neuron ids and areas, trial ids and a train/valid/test split, held-out neurons for
co-smoothing, an observation mask, external inputs and, for synthetic data, the ground truth.
Everything is numpy; ``batches``/``to_batch`` hand torch tensors on a device to the models.

Example:
    >>> import numpy as np
    >>> from pyrodyn import SpikeData
    >>> data = SpikeData(np.random.default_rng(0).poisson(2.0, (20, 50, 8)), dt=0.01)
    >>> data = data.with_split(valid=0.2, test=0.2, seed=0).with_heldout_neurons(2, seed=0)
    >>> data.select("train").n_trials, len(data.heldout_neurons)
    (12, 2)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .validation import (
    check_counts,
    check_finite,
    check_indices,
    check_length,
    check_positive,
    check_rank,
    check_unique,
)

__all__ = ["SpikeData", "GroundTruth", "SpikeBatch", "SilentNeuronWarning", "SPLITS"]

SPLITS = ("train", "valid", "test")


class SilentNeuronWarning(UserWarning):
    """Some neurons never spike: they carry no information but are not an error."""


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What generated a synthetic data set.

    Attributes:
        rates: true rates in counts per bin, (trial, time, neuron).
        latents: true latent states, (trial, time, latent).
        latent_area: area label of each latent dimension (multi-area systems), or None.
        fixed_points: known fixed points in latent coordinates, (K, latent), or None.
        stability: one label per fixed point ("stable", "unstable", "saddle", "marginal").
        vector_field: ``f(z, u=None) -> dz/dt`` on numpy arrays of shape (..., latent), in the
            system's own time units per bin step ``time_scale`` (see ``system_params``).
        communication: true inter-area signals, ``{"B<-A": (trial, time, rank)}``.
        system: name of the generating system, e.g. "lorenz".
        system_params: the parameters it was generated with (JSON-serializable).
    """

    rates: np.ndarray | None = None
    latents: np.ndarray | None = None
    latent_area: np.ndarray | None = None
    fixed_points: np.ndarray | None = None
    stability: tuple[str, ...] | None = None
    vector_field: Callable[..., np.ndarray] | None = None
    communication: dict[str, np.ndarray] = field(default_factory=dict)
    system: str | None = None
    system_params: dict[str, Any] = field(default_factory=dict)

    def select_bins(self, bins: slice) -> GroundTruth:
        return dataclasses.replace(
            self,
            rates=None if self.rates is None else self.rates[:, bins],
            latents=None if self.latents is None else self.latents[:, bins],
            communication={k: v[:, bins] for k, v in self.communication.items()},
        )

    def select_trials(self, index: np.ndarray) -> GroundTruth:
        return dataclasses.replace(
            self,
            rates=None if self.rates is None else self.rates[index],
            latents=None if self.latents is None else self.latents[index],
            communication={k: v[index] for k, v in self.communication.items()},
        )


@dataclass(frozen=True)
class SpikeBatch:
    """Tensors of a group of trials, ready for a model (spikes as float32)."""

    spikes: torch.Tensor
    mask: torch.Tensor | None          # entries the likelihood scores (None: all)
    inputs: torch.Tensor | None
    trial_index: torch.Tensor
    encoder_mask: torch.Tensor | None = None  # entries an encoder may see (None: ``mask``)

    def to(self, device: str | torch.device) -> SpikeBatch:
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return SpikeBatch(move(self.spikes), move(self.mask), move(self.inputs),
                          move(self.trial_index), move(self.encoder_mask))


def _as_str_array(values: Sequence | np.ndarray) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=str)


def _as_id_array(values: Sequence | np.ndarray) -> np.ndarray:
    """Ids stay integers when they are integers, else become strings."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    return _as_str_array(array)


class SpikeData:
    """Binned spike counts with everything needed to fit, split and score a model.

    Args:
        spikes: counts, (trial, time, neuron), non-negative integers (any numeric dtype).
        dt: bin width in seconds.
        neuron_ids: one id per neuron (default ``0..N-1``); must be unique.
        neuron_area: area label per neuron, or None for a single area.
        areas: the known area names in order; default: order of first appearance.
        trial_ids: one id per trial (default ``0..K-1``); must be unique.
        split: per-trial labels from ``SPLITS``, or a dict ``{"train": indices, ...}``.
        heldout_neurons: indices of neurons held out for co-smoothing.
        forward_bins: the last bins of every trial, held out like the held-out neurons: hidden
            from the encoder, fit where seen in training, scored as forward prediction
            (fp-bps; lfads-torch files whose ``recon_data`` is longer than ``encod_data``).
        mask: boolean (trial, time, neuron), True where an entry is observed.
        inputs: external inputs, (trial, time, input).
        truth: ground truth of synthetic data (rates and latents are shape-checked).
        meta: free-form JSON-serializable notes (source file, system, ...).

    Raises:
        ValueError: naming the field and first offending position for any inconsistent input.
    """

    def __init__(
        self,
        spikes: np.ndarray,
        *,
        dt: float = 0.01,
        neuron_ids: Sequence | np.ndarray | None = None,
        neuron_area: Sequence | np.ndarray | None = None,
        areas: Sequence[str] | None = None,
        trial_ids: Sequence | np.ndarray | None = None,
        split: Sequence[str] | np.ndarray | dict[str, Sequence[int]] | None = None,
        heldout_neurons: Sequence[int] | np.ndarray | None = None,
        forward_bins: int = 0,
        mask: np.ndarray | None = None,
        inputs: np.ndarray | None = None,
        truth: GroundTruth | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.spikes = check_counts("spikes", spikes)
        n_trials, n_bins, n_neurons = self.spikes.shape
        self.dt = check_positive("dt", dt)

        self.neuron_ids = _as_id_array(np.arange(n_neurons) if neuron_ids is None else neuron_ids)
        check_length("neuron_ids", self.neuron_ids, n_neurons, "neuron")
        check_unique("neuron_ids", self.neuron_ids)
        self.trial_ids = _as_id_array(np.arange(n_trials) if trial_ids is None else trial_ids)
        check_length("trial_ids", self.trial_ids, n_trials, "trial")
        check_unique("trial_ids", self.trial_ids)

        self.neuron_area, self.areas = self._check_areas(neuron_area, areas, n_neurons)
        self.split = self._check_split(split, n_trials)
        self.heldout_neurons = np.unique(
            check_indices("heldout_neurons", np.asarray(
                [] if heldout_neurons is None else heldout_neurons, dtype=np.int64
            ), n_neurons, "neuron")
        )
        if isinstance(forward_bins, (bool, np.bool_)) or not isinstance(
                forward_bins, (int, np.integer)) or not 0 <= forward_bins < n_bins:
            raise ValueError(f"forward_bins: must be a whole number in [0, {n_bins}) for trials "
                             f"of {n_bins} bins, got {forward_bins!r}")
        self.forward_bins = int(forward_bins)
        self.mask = None if mask is None else self._check_mask(mask)
        self.inputs = None if inputs is None else self._check_per_bin("inputs", inputs, np.float64)
        self.truth = None if truth is None else self._check_truth(truth)
        self.meta = dict(meta or {})

        silent = np.flatnonzero(self.spikes.sum(axis=(0, 1)) == 0)
        if silent.size:
            warnings.warn(
                f"spikes: {silent.size} neuron(s) never spike (first: neuron {silent[0]}, "
                f"id {self.neuron_ids[silent[0]].item()!r}); they carry no information",
                SilentNeuronWarning,
                stacklevel=2,
            )

    # ----------------------------------------------------------------- checks
    @staticmethod
    def _check_areas(neuron_area, areas, n_neurons):
        if neuron_area is None:
            if areas is not None:
                raise ValueError("areas: given without neuron_area (one area label per neuron)")
            return None, ()
        labels = _as_str_array(neuron_area)
        check_length("neuron_area", labels, n_neurons, "neuron")
        if areas is None:
            areas = tuple(dict.fromkeys(labels.tolist()))
        areas = tuple(str(a) for a in areas)
        check_unique("areas", np.asarray(areas))
        known = set(areas)
        for i, label in enumerate(labels.tolist()):
            if label not in known:
                raise ValueError(
                    f"neuron_area: unknown area {label!r} at neuron {i} (known: {', '.join(areas)})"
                )
        return labels, areas

    @staticmethod
    def _check_split(split, n_trials):
        if split is None:
            return None
        if isinstance(split, dict):
            labels = np.full(n_trials, "", dtype="<U5")
            for name, index in split.items():
                if name not in SPLITS:
                    raise ValueError(f"split: unknown split {name!r} (expected one of {SPLITS})")
                index = check_indices(f"split[{name!r}]", np.asarray(index), n_trials, "trial")
                taken = labels[index] != ""
                if taken.any():
                    i = int(index[np.argmax(taken)])
                    raise ValueError(
                        f"split[{name!r}]: trial {i} is already in split {str(labels[i])!r}")
                labels[index] = name
            missing = labels == ""
            if missing.any():
                raise ValueError(f"split: trial {int(np.argmax(missing))} is in no split")
            return labels
        labels = _as_str_array(split)
        check_length("split", labels, n_trials, "trial")
        for i, label in enumerate(labels.tolist()):
            if label not in SPLITS:
                raise ValueError(f"split: unknown label {label!r} at trial {i} (expected {SPLITS})")
        return labels

    def _check_mask(self, mask):
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise ValueError(f"mask: expected a boolean array, got dtype {mask.dtype}")
        if mask.shape != self.spikes.shape:
            raise ValueError(f"mask: shape {mask.shape} does not match spikes {self.spikes.shape}")
        return mask

    def _check_per_bin(self, name, array, dtype, last_axis="feature"):
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
            raise ValueError(f"{name}: expected a numeric array, got dtype {array.dtype}")
        check_rank(name, array, 3, ("trial", "time", last_axis))
        if array.shape[:2] != self.spikes.shape[:2]:
            raise ValueError(
                f"{name}: (trial, time) shape {array.shape[:2]} does not match spikes "
                f"{self.spikes.shape[:2]}"
            )
        check_finite(name, array, ("trial", "time", last_axis))
        return array.astype(dtype)

    def _check_truth(self, truth: GroundTruth) -> GroundTruth:
        rates = latents = None
        if truth.rates is not None:
            rates = self._check_per_bin("truth.rates", truth.rates, np.float64, "neuron")
            if rates.shape != self.spikes.shape:
                raise ValueError(
                    f"truth.rates: shape {rates.shape} does not match spikes {self.spikes.shape}"
                )
            if (rates < 0).any():
                i = tuple(int(j) for j in np.argwhere(rates < 0)[0])
                raise ValueError(f"truth.rates: negative rate at (trial, time, neuron) {i}")
        if truth.latents is not None:
            latents = self._check_per_bin("truth.latents", truth.latents, np.float64, "latent")
        return dataclasses.replace(truth, rates=rates, latents=latents)

    # ------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spikes.shape

    @property
    def n_trials(self) -> int:
        return self.spikes.shape[0]

    @property
    def n_bins(self) -> int:
        return self.spikes.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.spikes.shape[2]

    @property
    def time(self) -> np.ndarray:
        """Start time of each bin in seconds."""
        return np.arange(self.n_bins) * self.dt

    @property
    def heldin_neurons(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.n_neurons), self.heldout_neurons)

    def __repr__(self) -> str:
        parts = [f"trials={self.n_trials}", f"bins={self.n_bins}", f"neurons={self.n_neurons}",
                 f"dt={self.dt}"]
        if self.areas:
            parts.append(f"areas={list(self.areas)}")
        if self.split is not None:
            parts.append("split=" + "/".join(str(int((self.split == s).sum())) for s in SPLITS))
        if self.heldout_neurons.size:
            parts.append(f"heldout={self.heldout_neurons.size}")
        if self.forward_bins:
            parts.append(f"forward_bins={self.forward_bins}")
        if self.truth is not None:
            parts.append(f"truth={self.truth.system or 'yes'}")
        return f"SpikeData({', '.join(parts)})"

    # ------------------------------------------------------- derived copies
    def replace(self, **changes: Any) -> SpikeData:
        """A validated copy with some fields changed."""
        fields = dict(
            dt=self.dt, neuron_ids=self.neuron_ids, neuron_area=self.neuron_area,
            areas=self.areas if self.neuron_area is not None else None, trial_ids=self.trial_ids,
            split=self.split, heldout_neurons=self.heldout_neurons,
            forward_bins=self.forward_bins, mask=self.mask, inputs=self.inputs, truth=self.truth,
            meta=self.meta,
        )
        fields.update(changes)
        spikes = fields.pop("spikes", self.spikes)
        with warnings.catch_warnings():  # the original already warned about silent neurons
            warnings.simplefilter("ignore", SilentNeuronWarning)
            return SpikeData(spikes, **fields)

    def select_bins(self, start: int = 0, stop: int | None = None) -> SpikeData:
        """The same trials over bins ``start:stop`` (spikes, mask, inputs and truth); e.g.
        the bins a forward prediction may see, ``data.select_bins(0, n_bins - forward)``."""
        window = slice(start, stop)
        kept = range(self.n_bins)[window]
        if not len(kept):
            raise ValueError(f"bins: {start}:{stop} selects no bins of {self.n_bins}")
        first_forward = self.n_bins - self.forward_bins
        forward = max(0, kept.stop - max(kept.start, first_forward)) if self.forward_bins else 0
        if forward >= len(kept):
            raise ValueError(f"bins: {start}:{stop} holds only forward bins")
        return self.replace(
            spikes=self.spikes[:, window], forward_bins=forward,
            mask=None if self.mask is None else self.mask[:, window],
            inputs=None if self.inputs is None else self.inputs[:, window],
            truth=None if self.truth is None else self.truth.select_bins(window))

    def fingerprint(self) -> str:
        """A short hash of everything a fit reads: counts, mask, inputs, split, held-out
        neurons, bin width and neuron ids (a run folder records what it was fitted on)."""
        import hashlib

        digest = hashlib.sha256()
        parts = [self.spikes, self.mask, self.inputs, self.split, self.heldout_neurons,
                 np.asarray(self.dt), np.asarray(self.neuron_ids).astype(str)]
        if self.forward_bins:  # (absent from the hash otherwise: earlier runs keep theirs)
            parts.append(np.asarray(self.forward_bins))
        for part in parts:
            if part is None:
                digest.update(b"none")
                continue
            part = np.ascontiguousarray(part)
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            digest.update(part.tobytes())
        return digest.hexdigest()[:16]

    def with_split(self, *, valid: float = 0.2, test: float = 0.2, seed: int = 0) -> SpikeData:
        """Assigns trials at random (seeded) to train/valid/test by the given fractions."""
        for name, fraction in (("valid", valid), ("test", test)):
            if not 0 <= fraction < 1:
                raise ValueError(f"{name}: fraction must be in [0, 1), got {fraction}")
        n_valid, n_test = round(valid * self.n_trials), round(test * self.n_trials)
        if n_valid + n_test >= self.n_trials:
            raise ValueError(
                f"split: valid={valid} and test={test} leave no training trials of {self.n_trials}"
            )
        order = np.random.default_rng(seed).permutation(self.n_trials)
        labels = np.full(self.n_trials, "train", dtype="<U5")
        labels[order[:n_valid]] = "valid"
        labels[order[n_valid:n_valid + n_test]] = "test"
        return self.replace(split=labels)

    def split_indices(self, name: str) -> np.ndarray:
        """Trial indices of one split (all trials are "train" when no split is set)."""
        if name not in SPLITS:
            raise ValueError(f"split: unknown split {name!r} (expected one of {SPLITS})")
        if self.split is None:
            return np.arange(self.n_trials) if name == "train" else np.arange(0)
        return np.flatnonzero(self.split == name)

    def select(self, trials: str | Sequence[int] | np.ndarray) -> SpikeData:
        """A copy with a subset of trials: a split name or trial indices."""
        if isinstance(trials, str):
            index = self.split_indices(trials)
            if index.size == 0:
                raise ValueError(f"split: split {trials!r} has no trials")
        else:
            index = check_indices("trials", np.asarray(trials), self.n_trials, "trial")
        sub = lambda x: None if x is None else x[index]  # noqa: E731
        return self.replace(
            spikes=self.spikes[index], trial_ids=self.trial_ids[index], split=sub(self.split),
            mask=sub(self.mask), inputs=sub(self.inputs),
            truth=None if self.truth is None else self.truth.select_trials(index),
        )

    def with_heldout_neurons(
        self, heldout: int | Sequence[int] | np.ndarray, *, seed: int = 0
    ) -> SpikeData:
        """Holds out neurons for co-smoothing: a count (chosen at random, seeded) or indices."""
        if isinstance(heldout, (int, np.integer)):
            if not 0 <= heldout < self.n_neurons:
                raise ValueError(
                    f"heldout_neurons: count must be in [0, {self.n_neurons}), got {heldout}"
                )
            heldout = np.random.default_rng(seed).choice(self.n_neurons, heldout, replace=False)
        return self.replace(heldout_neurons=np.asarray(heldout))

    def observed_mask(self, trials: np.ndarray | None = None, *,
                      include_heldout: bool = False) -> np.ndarray:
        """Boolean (trial, time, neuron): observed entries, minus held-out neurons and forward
        bins by default.

        ``trials`` restricts it to those trial indices (built for them only).
        """
        index = np.arange(self.n_trials) if trials is None else np.asarray(trials)
        mask = (np.ones((len(index),) + self.shape[1:], dtype=bool) if self.mask is None
                else self.mask[index])
        if not include_heldout:
            mask[:, :, self.heldout_neurons] = False
            if self.forward_bins:
                mask[:, -self.forward_bins:] = False
        return mask

    def area(self, name: str) -> SpikeData:
        """The neurons of one area (truth latents and rates restricted to that area)."""
        if name not in self.areas:
            known = ", ".join(self.areas) if self.areas else "none: the data has no area labels"
            raise ValueError(f"area: unknown area {name!r} (known: {known})")
        neurons = np.flatnonzero(self.neuron_area == name)
        remap = np.full(self.n_neurons, -1)
        remap[neurons] = np.arange(neurons.size)
        heldout = remap[self.heldout_neurons]
        truth = self.truth
        if truth is not None:
            latents = truth.latents
            if latents is not None and truth.latent_area is not None:
                latents = latents[..., truth.latent_area == name]
            truth = dataclasses.replace(
                truth, rates=None if truth.rates is None else truth.rates[..., neurons],
                latents=latents, latent_area=None, fixed_points=None, stability=None,
                vector_field=None,
            )
        return self.replace(
            spikes=self.spikes[..., neurons], neuron_ids=self.neuron_ids[neurons],
            neuron_area=self.neuron_area[neurons], areas=(name,),
            heldout_neurons=heldout[heldout >= 0],
            mask=None if self.mask is None else self.mask[..., neurons], truth=truth,
        )

    # ---------------------------------------------------------------- torch
    def to_batch(
        self, trials: Sequence[int] | np.ndarray | None = None, *,
        device: str | torch.device = "cpu", include_heldout: bool = False,
    ) -> SpikeBatch:
        """Tensors of the given trials (all by default) on ``device``.

        ``mask`` marks every observed entry, held-out neurons included: they are fit on the
        trials that show them, like any neuron. ``encoder_mask`` hides the held-out neurons
        and the forward bins from an encoder (unless ``include_heldout``), so their rates are
        predicted from the held-in neurons and earlier bins alone (co-smoothing, forward
        prediction). Either is None when it would be all True.
        """
        index = np.arange(self.n_trials) if trials is None else np.asarray(trials)
        observed = self.observed_mask(index, include_heldout=True)
        hide = (self.heldout_neurons.size or self.forward_bins) and not include_heldout
        visible = self.observed_mask(index) if hide else observed

        def tensor(mask):
            return None if mask.all() else torch.as_tensor(mask, device=device)

        return SpikeBatch(
            spikes=torch.as_tensor(self.spikes[index], dtype=torch.float32, device=device),
            mask=tensor(observed),
            inputs=None if self.inputs is None else torch.as_tensor(
                self.inputs[index], dtype=torch.float32, device=device),
            trial_index=torch.as_tensor(index, dtype=torch.long, device=device),
            encoder_mask=None if visible is observed else tensor(visible),
        )

    def batches(
        self, batch_size: int, *, shuffle: bool = True, seed: int | None = None,
        device: str | torch.device = "cpu", include_heldout: bool = False,
    ) -> Iterator[SpikeBatch]:
        """Minibatches over trials; one pass covers every trial exactly once."""
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        order = (np.random.default_rng(seed).permutation(self.n_trials) if shuffle
                 else np.arange(self.n_trials))
        for start in range(0, self.n_trials, batch_size):
            yield self.to_batch(order[start:start + batch_size], device=device,
                                include_heldout=include_heldout)
