"""Holding global state still: pyrodyn's calls leave the RNGs, torch's thread count and Pyro's
parameter store as they found them (a library inside other people's programs changes nothing
global)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyro
import torch

__all__ = ["isolated_rng", "torch_threads", "own_param_store", "get_torch_rng", "set_torch_rng"]


def get_torch_rng(device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """torch's generator states that draws on ``device`` use (CPU, and CUDA's for a GPU)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_torch_rng(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


@contextmanager
def own_param_store(owner: object) -> Iterator[None]:
    """Inside, Pyro's parameter store is ``owner``'s own (kept on it between calls); outside,
    the user's store is as it was.

    Under Pyro's default (global) mode, modules register their parameters in that store by
    name, and an AutoGuide takes a value already stored under its name: a second guide of the
    same kind would start from (and a classic SVI loop would train) the first one's values.
    pyrodyn's calls therefore never write to the user's store. The owner's store starts as a
    view of the user's (the same tensors), so parameters a user trained with Pyro's classic
    loop are the ones pyrodyn uses; what pyrodyn's calls add stays with the owner.
    """
    depth = owner.__dict__.get("_pyrodyn_store_depth", 0)
    if depth:  # already inside this owner's store
        yield
        return
    store = pyro.get_param_store()
    state = owner.__dict__.get("_pyrodyn_param_store")
    if state is None:
        state = owner.__dict__["_pyrodyn_param_store"] = store.get_state()
    owner.__dict__["_pyrodyn_store_depth"] = 1
    try:
        with store.scope(state):
            yield
    finally:
        owner.__dict__["_pyrodyn_store_depth"] = 0


@contextmanager
def isolated_rng(seed: int | None = None, device: str | torch.device = "cpu") -> Iterator[None]:
    """Inside, the Python, numpy and torch generators start from ``seed`` (as
    ``pyro.set_rng_seed``; None: from their current states); outside, they are as before."""
    devices = [] if torch.device(device).type == "cpu" else [torch.device(device)]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``num_threads`` inside (None: unchanged)."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
