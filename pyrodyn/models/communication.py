"""Communication between areas: channels ``c_{A<-B}(t) = g_AB(z_B(t))`` and the coupled field.

Each channel maps the source area's latent state to a term added to the target area's velocity,
``dz_A/dt = f_A(z_A, u_A) + sum_B c_{A<-B}``, so a channel's signal is in the target's velocity
units and a zero channel means no influence at all. ``CoupledField`` is the whole system as one
``VectorField`` over the concatenated state, so all areas are solved in one ODE call and the
fixed-point tools apply to it unchanged.

Example:
    >>> import torch
    >>> from pyrodyn.models.dynamics import MLPField
    >>> field = CoupledField({"A": MLPField(2), "B": MLPField(2)},
    ...                      {("B", "A"): LowRankChannel(2, 2)})
    >>> field(torch.zeros(5, 4)).shape
    torch.Size([5, 4])
    >>> sorted(field.communication(torch.zeros(5, 4)))
    ['B<-A']
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .dynamics import VectorField

__all__ = ["Channel", "LowRankChannel", "MLPChannel", "CHANNELS", "build_channel",
           "CoupledField", "channel_name"]


def channel_name(target: str, source: str) -> str:
    """The key of the channel from ``source`` into ``target``: ``"target<-source"``."""
    return f"{target}<-{source}"


class Channel(nn.Module):
    """Base class: ``forward(z_source) -> c`` on (..., source_dim) -> (..., target_dim)."""

    def __init__(self, source_dim: int, target_dim: int) -> None:
        super().__init__()
        if source_dim < 1 or target_dim < 1:
            raise ValueError(f"channel: source_dim and target_dim must be >= 1, got "
                             f"{source_dim}, {target_dim}")
        self.source_dim, self.target_dim = source_dim, target_dim

    def gain(self) -> torch.Tensor:
        """A scalar size of the channel's weights; the coupling prior shrinks it toward zero."""
        raise NotImplementedError

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """What the channel's output is linear in: ``c = W features(z)`` for a weight ``W``
        (target_dim, features); the Laplace posterior over channels perturbs ``W``."""
        raise NotImplementedError


class LowRankChannel(Channel):
    """``c = U V^T z_source``, rank ``rank`` (default 1).

    Starts weak (gain ~ ``init_scale``^2) but not at zero, where the gradient of U V^T vanishes.
    """

    def __init__(self, source_dim: int, target_dim: int, *, rank: int = 1,
                 init_scale: float = 0.1) -> None:
        super().__init__(source_dim, target_dim)
        if not 1 <= rank <= min(source_dim, target_dim):
            raise ValueError(
                f"rank: must be in [1, {min(source_dim, target_dim)}], got {rank}")
        self.rank = rank
        self.source = nn.Parameter(init_scale * torch.randn(source_dim, rank) / math.sqrt(rank))
        self.target = nn.Parameter(init_scale * torch.randn(target_dim, rank))

    def matrix(self) -> torch.Tensor:
        """The (target_dim, source_dim) channel matrix U V^T."""
        return self.target @ self.source.T

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.source) @ self.target.T

    def gain(self) -> torch.Tensor:
        return torch.linalg.matrix_norm(self.matrix())

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return z  # c = (U V^T) z


class MLPChannel(Channel):
    """``c = W2 tanh(W1 z_source + b1)``: a nonlinear channel; its gain is ``|W2|_F``."""

    def __init__(self, source_dim: int, target_dim: int, *, hidden: int = 16,
                 init_scale: float = 0.01) -> None:
        super().__init__(source_dim, target_dim)
        self.hidden = nn.Linear(source_dim, hidden)
        self.out = nn.Linear(hidden, target_dim, bias=False)
        with torch.no_grad():
            self.out.weight.mul_(init_scale)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hidden(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(z))

    def gain(self) -> torch.Tensor:
        return torch.linalg.matrix_norm(self.out.weight)


CHANNELS: dict[str, type[Channel]] = {"low_rank": LowRankChannel, "mlp": MLPChannel}


def build_channel(name: str, source_dim: int, target_dim: int, **options) -> Channel:
    """Builds a channel by name: "low_rank" (default) or "mlp"."""
    if name not in CHANNELS:
        raise ValueError(f"communication: unknown channel {name!r} (known: {', '.join(CHANNELS)})")
    return CHANNELS[name](source_dim, target_dim, **options)


class CoupledField(VectorField):
    """All areas' dynamics as one field over the concatenated state (areas in the given order).

    Args:
        fields: area name -> that area's own ``VectorField``. Each area's field takes the
            ``shared_input_dim`` shared inputs followed by its own inputs (its ``input_dim``
            minus the shared ones).
        channels: (target, source) -> ``Channel``; pairs not listed have no coupling at all.
        shared_input_dim: leading input channels every area sees (external inputs).

    The input vector is the shared inputs followed by each area's own inputs in area order.
    """

    def __init__(self, fields: dict[str, VectorField],
                 channels: dict[tuple[str, str], Channel], *, shared_input_dim: int = 0) -> None:
        own = {a: f.input_dim - shared_input_dim for a, f in fields.items()}
        if any(n < 0 for n in own.values()):
            raise ValueError(f"fields: every area's field needs the {shared_input_dim} shared "
                             f"inputs; input dims are {[f.input_dim for f in fields.values()]}")
        super().__init__(sum(f.latent_dim for f in fields.values()),
                         shared_input_dim + sum(own.values()))
        if any(f.discrete for f in fields.values()):
            raise ValueError("fields: a discrete transition cannot be coupled as an ODE")
        self.areas = list(fields)
        self.fields = nn.ModuleDict(fields)
        self.latent_dims = [f.latent_dim for f in fields.values()]
        self.own_input_dims = [own[a] for a in self.areas]
        self.shared_input_dim = shared_input_dim
        for target, source in channels:
            for name in (target, source):
                if name not in fields:
                    raise ValueError(f"channels: unknown area {name!r} (areas: {self.areas})")
            channel = channels[(target, source)]
            if (channel.source_dim, channel.target_dim) != (fields[source].latent_dim,
                                                            fields[target].latent_dim):
                raise ValueError(f"channels: {channel_name(target, source)} maps "
                                 f"{channel.source_dim} -> {channel.target_dim} dims, the areas "
                                 f"have {fields[source].latent_dim} -> {fields[target].latent_dim}")
        self.pairs = list(channels)
        self.channels = nn.ModuleDict({channel_name(t, s): c for (t, s), c in channels.items()})

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The concatenated state (..., latent) as area name -> (..., area latent)."""
        return dict(zip(self.areas, z.split(self.latent_dims, dim=-1)))

    def communication(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every channel's signal ``"A<-B" -> c_{A<-B}`` at states ``z`` (..., latent)."""
        parts = self.split(z)
        return {channel_name(t, s): self.channels[channel_name(t, s)](parts[s])
                for t, s in self.pairs}

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.split(z)
        if u is not None:
            shared, *own = u.split([self.shared_input_dim] + self.own_input_dims, dim=-1)
        velocity = {}
        for i, area in enumerate(self.areas):
            field = self.fields[area]
            area_input = None
            if field.input_dim and u is not None:
                area_input = torch.cat([shared, own[i]], dim=-1)
            velocity[area] = field(parts[area], area_input)
        for (target, _), signal in zip(self.pairs, self.communication(z).values()):
            velocity[target] = velocity[target] + signal
        return torch.cat([velocity[a] for a in self.areas], dim=-1)
