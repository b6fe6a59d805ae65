"""Saving and loading a fitted model and guide.

Guides built by Pyro's AutoGuides create their parameters on the first call, so ``load_state``
first calls the guide once on a few trials of ``data`` (without disturbing the random state).

Example (with a fitted ``model`` and ``guide``)::

    save_state("run/model.pt", model, guide)
    load_state("run/model.pt", model, guide, data)
"""

from __future__ import annotations

import os

import numpy as np
import torch
from pyro import poutine

from ..data.spikes import SpikeData
from .svi import model_args

__all__ = ["save_state", "load_state", "initialize_guide"]


def save_state(path: str | os.PathLike, model: torch.nn.Module, guide: torch.nn.Module) -> None:
    """Writes both state dicts to one file."""
    torch.save({"model": model.state_dict(), "guide": guide.state_dict()}, path)


@torch.no_grad()
def initialize_guide(model: torch.nn.Module, guide: torch.nn.Module, data: SpikeData, *,
                     device: str | torch.device = "cpu") -> None:
    """Creates lazily made guide parameters by one call on up to two trials of ``data``."""
    with torch.random.fork_rng(devices=[]):
        batch = data.to_batch(np.arange(min(2, data.n_trials)), device=device)
        poutine.trace(guide).get_trace(**model_args(batch, data.n_trials))


def load_state(path: str | os.PathLike, model: torch.nn.Module, guide: torch.nn.Module,
               data: SpikeData | None = None, *, device: str | torch.device = "cpu") -> None:
    """Loads what ``save_state`` (or a ``fit`` checkpoint) wrote into ``model`` and ``guide``.

    ``data`` (any trials of the same neurons) is needed for guides with lazy parameters; the
    trial count of per-trial guides must match the data they were fitted on.
    """
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    if data is not None:
        initialize_guide(model, guide, data, device=device)
    guide.load_state_dict(state["guide"])
    model.eval()
    guide.eval()
