"""The learning-rate schedule ``fit`` and ``refine`` use by default, as a torch scheduler.

Example:
    >>> import torch
    >>> optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> schedule = exponential_decay(optimizer, steps=3, final=0.25)
    >>> for _ in range(2):
    ...     optimizer.step(); schedule.step()
    >>> optimizer.param_groups[0]["lr"]
    0.25
"""

from __future__ import annotations

import torch

__all__ = ["exponential_decay"]


def exponential_decay(optimizer: torch.optim.Optimizer, *, steps: int, final: float
                      ) -> torch.optim.lr_scheduler.LambdaLR:
    """The rate decays exponentially from its initial value to ``final`` times it at the last
    of ``steps`` steps (and stays there)."""
    span = max(steps - 1, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: final ** (min(step, span) / span))
