"""Run folders that never lie: what a run was fitted on, checked before anything is written,
and every file written whole or not at all.

A ``pyrodyn fit`` run folder holds ``run.json`` (pyrodyn version, data fingerprint, resolved
config), ``config.yaml``, ``checkpoint.pt``, ``model.pt``, ``losses.json``, ``metrics.json``
and, where the data file had no split, ``split.json`` (the split the fit made). A fit into a
folder that holds another fit (other data or options) stops with one line instead of resuming
it; ``overwrite=True`` clears the folder's run files first.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> record = {"data": "abc", "config": {"steps": 10}, "pyrodyn_version": "0"}
    >>> claim(folder, record)
    False
    >>> write_json(folder / "run.json", record)
    >>> claim(folder, record)   # the same fit: resume it
    True
    >>> claim(folder, dict(record, config={"steps": 20}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...holds a fit of other options (steps 10 -> 20); rerun with --overwrite...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RUN_FILES", "claim", "write_json", "write_text", "save_figure"]

RUN_FILES = ("run.json", "config.yaml", "checkpoint.pt", "model.pt", "losses.json",
             "metrics.json", "split.json", "communication.json", "communication.png")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path``, then moves it into place."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_json(path: str | os.PathLike, value: Any) -> None:
    write_text(path, json.dumps(value, indent=1) + "\n")


def save_figure(figure, path: str | os.PathLike, **options: Any) -> None:
    """``figure.savefig`` written whole or not at all."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    figure.savefig(partial, format=path.suffix.lstrip(".") or "png", **options)
    os.replace(partial, path)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}".replace("'", "") for k in keys
            if old.get(k) != new.get(k)]


def claim(folder: str | os.PathLike, record: dict[str, Any], *, overwrite: bool = False,
          replace_other: bool = False) -> bool:
    """Makes ``folder`` ready for the fit ``record`` describes ({"data": fingerprint,
    "config": resolved options, "pyrodyn_version": ...}); True when it already holds that fit
    (resume it). Writes nothing but removes the folder's run files with ``overwrite`` (always)
    or ``replace_other`` (when they belong to another fit: the demo's own folder).

    Raises:
        ValueError: the folder holds another fit, or run files without a record.
    """
    folder = Path(folder)
    present = [name for name in RUN_FILES if (folder / name).exists()]
    if present and not overwrite and replace_other:
        try:
            return claim(folder, record)
        except ValueError:
            overwrite = True
    if not present:
        return False
    if overwrite:
        for name in present:
            (folder / name).unlink()
        return False
    choices = "rerun with --overwrite to replace it, or give another --out"
    try:
        saved = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{folder}: holds run files ({', '.join(present)}) but no readable "
                         f"run.json saying what they were fitted on; {choices}") from None
    if saved.get("data") != record["data"]:
        raise ValueError(f"{folder}: holds a fit of other data (fingerprint {saved.get('data')}"
                         f", this data {record['data']}); {choices}")
    changed = _differences(saved.get("config", {}), record["config"])
    if changed:
        raise ValueError(f"{folder}: holds a fit of other options ({'; '.join(changed)}); "
                         f"{choices}")
    return True
