"""Input checks shared by the data container and every loader.

Each check raises ``ValueError`` naming the field and the first offending position, so a user
with a bad file learns what to fix instead of reading a stack trace from deep inside torch.

Example:
    >>> import numpy as np
    >>> check_counts("spikes", np.array([[[1, -2]]]))
    Traceback (most recent call last):
    ...
    ValueError: spikes: negative count -2 at (trial 0, time 0, neuron 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "check_counts",
    "check_finite",
    "check_rank",
    "check_length",
    "check_unique",
    "check_indices",
    "check_positive",
    "position",
]

AXES = ("trial", "time", "neuron")


def position(index: Sequence[int], axes: Sequence[str] = AXES) -> str:
    """Formats an array index as ``(trial 2, time 5, neuron 1)``."""
    return "(" + ", ".join(f"{name} {int(i)}" for name, i in zip(axes, index)) + ")"


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_rank(name: str, array: np.ndarray, rank: int, axes: Sequence[str] = AXES) -> None:
    """Requires ``array.ndim == rank`` and no empty axis."""
    if array.ndim != rank:
        raise ValueError(
            f"{name}: expected {rank} dimensions ({', '.join(axes[:rank])}), "
            f"got {array.ndim} with shape {tuple(array.shape)}"
        )
    for axis, size in enumerate(array.shape):
        if size == 0:
            raise ValueError(f"{name}: zero {axes[axis]}s (shape {tuple(array.shape)})")


def check_finite(name: str, array: np.ndarray, axes: Sequence[str] = AXES) -> None:
    """Rejects NaN and inf, naming the first offending entry."""
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.integer):
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = _first(bad)
        raise ValueError(f"{name}: non-finite value {array[index]} at {position(index, axes)}")


def check_counts(name: str, array: np.ndarray) -> np.ndarray:
    """Checks spike counts (finite, non-negative integers) and returns them as int64."""
    array = np.asarray(array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name}: expected numeric spike counts, got dtype {array.dtype}")
    check_rank(name, array, 3)
    check_finite(name, array)
    negative = array < 0
    if negative.any():
        index = _first(negative)
        raise ValueError(f"{name}: negative count {array[index]} at {position(index)}")
    if not np.issubdtype(array.dtype, np.integer):
        fractional = array != np.round(array)
        if fractional.any():
            index = _first(fractional)
            raise ValueError(f"{name}: non-integer count {array[index]} at {position(index)}")
    return array.astype(np.int64, copy=False)  # no second copy of counts already int64


def check_length(name: str, values: Sequence | np.ndarray, expected: int, what: str) -> None:
    """Requires one entry per trial/neuron/..."""
    if len(values) != expected:
        raise ValueError(f"{name}: expected {expected} entries (one per {what}), got {len(values)}")


def check_unique(name: str, values: np.ndarray) -> None:
    """Rejects repeated ids, naming the first repeat and both positions."""
    seen: dict = {}
    for i, value in enumerate(values.tolist()):
        if value in seen:
            raise ValueError(
                f"{name}: duplicate id {value!r} at positions {seen[value]} and {i}"
            )
        seen[value] = i


def check_indices(name: str, indices: np.ndarray, size: int, what: str) -> np.ndarray:
    """Requires integer indices in ``[0, size)`` and returns them as int64."""
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(
            f"{name}: expected a 1-d array of {what} indices, got shape {indices.shape}")
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{name}: expected integer {what} indices, got dtype {indices.dtype}")
    out = (indices < 0) | (indices >= size)
    if out.any():
        i = int(np.argmax(out))
        raise ValueError(
            f"{name}: index {indices[i]} at position {i} is out of range for {size} {what}s"
        )
    return indices.astype(np.int64)


def check_positive(name: str, value: float) -> float:
    """Requires a finite number > 0 (bin widths, time constants)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive number, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {value}")
    return value
