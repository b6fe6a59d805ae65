"""Saving and loading a fitted model and guide: tensors and numbers only, never code.

Files are read with ``torch.load(weights_only=True)``, so a planted pickle payload cannot run,
and written to a temporary file first, then moved into place, so a crash never leaves half a
file. Guides built by Pyro's AutoGuides create their parameters on the first call, so
``load_state`` first calls the guide once on a few trials of ``data`` (without disturbing the
random state).

Example (with a fitted ``model`` and ``guide``)::

    save_state("run/model.pt", model, guide)
    load_state("run/model.pt", model, guide, data)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine

from .._isolation import isolated_rng, own_param_store
from ..data.spikes import SpikeData
from .traces import model_args

__all__ = ["save_state", "load_state", "initialize_guide", "read_state", "write_state"]


def write_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes ``state`` (tensors, numbers, strings, lists, dicts) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # never leave a half-written file behind


def read_state(path: str | os.PathLike, *, device: str | torch.device = "cpu"
               ) -> dict[str, Any]:
    """Reads what ``write_state`` wrote; anything else (code, a truncated file) is a
    ValueError naming the file."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # pickle's and torch's many ways of saying "not this"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ValueError(f"{path}: not a pyrodyn state file of tensors and numbers "
                         f"({reason})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a pyrodyn state file (holds a {type(state).__name__})")
    return state


def save_state(path: str | os.PathLike, model: torch.nn.Module, guide: torch.nn.Module) -> None:
    """Writes both state dicts to one file."""
    write_state(path, {"model": model.state_dict(), "guide": guide.state_dict()})


@torch.no_grad()
def initialize_guide(model: torch.nn.Module, guide: torch.nn.Module, data: SpikeData, *,
                     device: str | torch.device = "cpu") -> None:
    """Creates lazily made guide parameters by one call on up to two trials of ``data``."""
    with isolated_rng(None, device), own_param_store(guide):
        batch = data.to_batch(np.arange(min(2, data.n_trials)), device=device)
        poutine.trace(guide).get_trace(**model_args(batch, data.n_trials))


def load_state(path: str | os.PathLike, model: torch.nn.Module, guide: torch.nn.Module,
               data: SpikeData | None = None, *, device: str | torch.device = "cpu") -> None:
    """Loads what ``save_state`` (or a ``fit`` checkpoint) wrote into ``model`` and ``guide``.

    ``data`` (any trials of the same neurons) is needed for guides with lazy parameters; the
    trial count of per-trial guides must match the data they were fitted on.
    """
    state = read_state(path, device=device)
    if "model" not in state or "guide" not in state:
        raise ValueError(f"{path}: holds no model and guide state")
    model.load_state_dict(state["model"])
    model.to(device)
    if data is not None:
        initialize_guide(model, guide, data, device=device)
    guide.load_state_dict(state["guide"])
    guide.to(device)
    model.eval()
    guide.eval()
