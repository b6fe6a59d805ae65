"""Readouts from latent states (..., latent) to log-rates (..., neuron).

``FlowReadout`` is ODIN's injective readout made exactly invertible: lift z into neuron space by
zero-padding, then apply an invertible nflows transform (an LU-decomposed linear map that makes
the lift a learned full-rank linear one, then affine coupling layers). ``inverse`` maps
log-rates back to latent space exactly (up to float precision) for points in the image.
nflows transforms take one batch dimension: ``_flat`` reshapes in this one place.

Example:
    >>> import torch
    >>> readout = FlowReadout(3, 30)
    >>> z = torch.randn(8, 50, 3)
    >>> torch.allclose(readout.inverse(readout(z)), z, atol=1e-5)
    True
"""

from __future__ import annotations

import math
import warnings

import torch
from nflows import transforms
from nflows.nn.nets import ResidualNet
from torch import nn

__all__ = ["Readout", "AffineReadout", "MLPReadout", "FlowReadout", "READOUTS", "build_readout"]


class Readout(nn.Module):
    """Base class: ``forward(z) -> log-rates``; ``bias`` holds each neuron's log mean rate."""

    def __init__(self, latent_dim: int, n_neurons: int) -> None:
        super().__init__()
        if latent_dim < 1 or n_neurons < 1:
            raise ValueError(
                f"readout: latent_dim and n_neurons must be >= 1, got {latent_dim}, {n_neurons}")
        self.latent_dim, self.n_neurons = latent_dim, n_neurons
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    def init_bias(self, mean_counts: torch.Tensor) -> None:
        """Starts each neuron at its mean count per bin, so training begins at the null model."""
        with torch.no_grad():
            self.bias.copy_(torch.log(torch.as_tensor(mean_counts).clamp_min(1e-3)))


class AffineReadout(Readout):
    """``log r = W z + b`` (the linear readout of LFADS-like models)."""

    def __init__(self, latent_dim: int, n_neurons: int) -> None:
        super().__init__(latent_dim, n_neurons)
        self.weight = nn.Parameter(torch.randn(n_neurons, latent_dim) / math.sqrt(latent_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T + self.bias


class MLPReadout(Readout):
    """``log r = MLP(z) + b``: flexible but not injective, so it can hide latent structure."""

    def __init__(self, latent_dim: int, n_neurons: int, *, hidden: int = 64) -> None:
        super().__init__(latent_dim, n_neurons)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(),
                                 nn.Linear(hidden, n_neurons))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z) + self.bias


class FlowReadout(Readout):
    """Injective readout: zero-pad z to N dims, then an invertible nflows transform.

    Args:
        layers: affine coupling layers after the LU linear map.
        hidden: width of each coupling layer's residual network.
    """

    def __init__(self, latent_dim: int, n_neurons: int, *, layers: int = 2,
                 hidden: int = 64) -> None:
        super().__init__(latent_dim, n_neurons)
        if n_neurons < latent_dim:
            raise ValueError(
                f"FlowReadout: needs n_neurons >= latent_dim to be injective, got {n_neurons} "
                f"< {latent_dim}")
        steps: list[transforms.Transform] = [transforms.LULinear(n_neurons, identity_init=False)]
        if n_neurons > 1:
            for i in range(layers):
                mask = (torch.arange(n_neurons) + i) % 2 * 2 - 1  # alternate halves: +1/-1
                steps += [
                    transforms.AffineCouplingTransform(
                        mask, lambda fin, fout: _small_residual_net(fin, fout, hidden)),
                    transforms.RandomPermutation(n_neurons),
                ]
        self.transform = transforms.CompositeTransform(steps)
        # RandomPermutation draws from the global torch RNG: seeds fix it like any weight.

    def _flat(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out, _ = (self.transform.inverse if inverse else self.transform)(flat)
        return out.reshape(x.shape[:-1] + out.shape[-1:])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lifted = nn.functional.pad(z, (0, self.n_neurons - self.latent_dim))
        return self._flat(lifted) + self.bias

    def inverse(self, log_rates: torch.Tensor) -> torch.Tensor:
        """Latent states whose log-rates these are (exact for points in the readout's image)."""
        with warnings.catch_warnings():  # nflows' LU inverse calls a deprecated torch solver
            warnings.filterwarnings("ignore", message=".*triangular_solve is deprecated")
            return self._flat(log_rates - self.bias, inverse=True)[..., : self.latent_dim]


def _small_residual_net(in_features: int, out_features: int, hidden: int) -> nn.Module:
    net = ResidualNet(in_features, out_features, hidden_features=hidden, num_blocks=1)
    with torch.no_grad():  # start each coupling near the identity
        net.final_layer.weight.mul_(0.01)
        net.final_layer.bias.zero_()
    return net


READOUTS: dict[str, type[Readout]] = {
    "affine": AffineReadout, "mlp": MLPReadout, "flow": FlowReadout,
}


def build_readout(name: str, latent_dim: int, n_neurons: int, **options) -> Readout:
    """Builds a readout by name: "flow" (injective), "affine" or "mlp"."""
    if name not in READOUTS:
        raise ValueError(f"readout: unknown readout {name!r} (known: {', '.join(READOUTS)})")
    return READOUTS[name](latent_dim, n_neurons, **options)
