"""Data-parallel fitting on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

When a process group is initialized (``torchrun``, or ``pyrodyn fit --nproc N``), ``fit`` is
data-parallel: every rank builds the same model and guide from the same seed, takes its share
of each global minibatch (``shard``), and the ranks' gradients are summed with weights that
make the step exactly the single-process step on the whole minibatch (``reduce_gradients``).
So the parameters stay identical on every rank, and one rank's losses equal a single process's
with the same global batch. The decisions that end a fit (a stop request, the clock of a time
budget, a non-finite loss) are agreed on by all ranks each step (``agree``), so no rank waits
on one that stopped. Only rank 0 writes checkpoints, logs and the run folder.

Example (two processes on one machine)::

    torchrun --nproc-per-node 2 -m pyrodyn.cli fit data.npz --out run
    pyrodyn fit data.npz --out run --nproc 2      # the same, launched for you
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["world", "is_main", "shard", "reduce_gradients", "reduce_sum", "agree"]


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) without an initialized process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def shard(indices: np.ndarray) -> np.ndarray:
    """This rank's share of a global minibatch (every ``world``-th trial)."""
    rank, size = world()
    return indices[rank::size]


def reduce_gradients(params: list[torch.Tensor], share: float) -> None:
    """Sums ``share`` times each rank's gradient over ranks, in one flat buffer. With
    ``share`` = this rank's trials / the global batch's, and each rank's loss scaled to the
    data set over its own trials, the sum is the gradient of the whole minibatch's loss."""
    if world()[1] == 1:
        return
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * share
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for p, part in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p).clone()


def agree(values: list[float], device) -> list[float]:
    """The largest of each value over ranks (flags as 0/1, clocks in seconds): every rank
    then takes the same decision."""
    if world()[1] == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a (detached) scalar."""
    if world()[1] == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
