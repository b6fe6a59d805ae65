"""Readouts from latent states (..., latent) to log-rates (..., neuron).

``FlowReadout`` is ODIN's injective readout made exactly invertible: lift z into neuron space by
zero-padding, then apply an invertible nflows transform (an LU-decomposed linear map that makes
the lift a learned full-rank linear one, then affine coupling layers). ``inverse`` maps
log-rates back to latent space exactly (up to float precision) for points in the image.
nflows transforms take one batch dimension: ``_flat`` reshapes in this one place.
``ResidualFlowReadout`` is ODIN's own architecture (zero-pad, then small residual steps in
neuron space, no learned lift), kept so the two can be compared on the same data.

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

__all__ = ["Readout", "AffineReadout", "MLPReadout", "FlowReadout", "ResidualFlowReadout",
           "PlaneReadout", "MonotoneLink", "READOUTS", "build_readout"]


class Readout(nn.Module):
    """Base class: ``forward(z) -> log-rates``; ``bias`` holds each neuron's log mean rate;
    ``log_penalty(latents, log_rates)`` (None by default) is a per-trial log-prior term on the
    readout's shape that the model adds as a factor."""

    injective = False  # injective readouts need at least as many neurons as latents

    def __init__(self, latent_dim: int, n_neurons: int) -> None:
        super().__init__()
        if latent_dim < 1 or n_neurons < 1:
            raise ValueError(
                f"readout: latent_dim and n_neurons must be >= 1, got {latent_dim}, {n_neurons}")
        if self.injective and n_neurons < latent_dim:
            raise ValueError(
                f"{type(self).__name__}: needs n_neurons >= latent_dim to be injective, got "
                f"{n_neurons} < {latent_dim}")
        self.latent_dim, self.n_neurons = latent_dim, n_neurons
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    def log_penalty(self, z: torch.Tensor, log_rates: torch.Tensor) -> torch.Tensor | None:
        """Per-trial log-prior of this readout's shape given its own output; None: none."""
        return None

    def shape_features(self, z: torch.Tensor) -> torch.Tensor | None:
        """(..., neuron, K): each neuron's own directions of change of its log-rate beyond an
        affine one in ``z`` (``parameter_laplace`` puts a posterior on them); None: none."""
        return None

    def reported_basis(self) -> torch.Tensor | None:
        """The map M (latent, latent) from the model's latent coordinates to the ones it
        reports (``z_reported = M z``); None: the model's own. See ``orthonormal_basis``."""
        return None

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

    def reported_basis(self) -> torch.Tensor:
        return orthonormal_basis(self.weight)


def orthonormal_basis(weight: torch.Tensor) -> torch.Tensor:
    """GPFA's orthonormalized coordinates (Yu et al. 2009) of a loading matrix W (neuron,
    latent): ``M = S V^T`` from ``W = U S V^T``, so that ``W z = U (M z)`` with orthonormal
    loadings ``U``; dimensions ordered by how strongly the neurons load on them, each signed
    so that its largest loading is positive.

    A fitted model's latent coordinates are defined only up to an invertible linear map, and
    the optimizer's choice is an accident of the fit: with per-dimension path noise it tends
    to put the noisiest direction on one axis. Reported in these coordinates, the latents of
    two fits of the same data differ by a rotation at most, and a scale of the latents is a
    scale of the log-rates. Scores that average over latent dimensions (state R2 true ->
    inferred) depend on the basis; this one is set by the readout alone, not by the noise.

    Example:
        >>> w = torch.randn(20, 3)
        >>> m = orthonormal_basis(w)
        >>> u = w @ torch.linalg.inv(m)  # the loadings in the reported coordinates
        >>> bool(torch.allclose(u.T @ u, torch.eye(3), atol=1e-5))
        True
    """
    with torch.no_grad():
        u, s, vt = torch.linalg.svd(weight.detach(), full_matrices=False)
        peak = u.gather(0, u.abs().argmax(0, keepdim=True)).sign()  # (1, latent)
        return (peak.T * s[:, None]) * vt


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

    Setting ``linear_only`` skips the coupling layers (the readout is then affine); ``fit``
    does so for its first ``readout_warmup`` steps.
    """

    injective = True

    def __init__(self, latent_dim: int, n_neurons: int, *, layers: int = 2,
                 hidden: int = 64) -> None:
        super().__init__(latent_dim, n_neurons)
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
        self.linear_only = False  # True: the lift alone (``fit``'s readout warm-up)

    def _flat(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        transform = self.transform._transforms[0] if self.linear_only else self.transform
        out, _ = (transform.inverse if inverse else transform)(flat)
        return out.reshape(x.shape[:-1] + out.shape[-1:])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lifted = nn.functional.pad(z, (0, self.n_neurons - self.latent_dim))
        return self._flat(lifted) + self.bias

    def inverse(self, log_rates: torch.Tensor) -> torch.Tensor:
        """Latent states whose log-rates these are (exact for points in the readout's image)."""
        with warnings.catch_warnings():  # nflows' LU inverse calls a deprecated torch solver
            warnings.filterwarnings("ignore", message=".*triangular_solve is deprecated")
            return self._flat(log_rates - self.bias, inverse=True)[..., : self.latent_dim]


class ResidualFlowReadout(Readout):
    """ODIN's readout: zero-pad z to N dims, then ``steps`` residual steps
    ``x <- x + scale * MLP(x)`` (an Euler-discretized flow in neuron space), then the bias.

    Each step is invertible while ``scale`` times the MLP's Lipschitz constant stays below 1; as
    in ODIN that is not enforced, so injectivity is encouraged by the small steps, not
    guaranteed. ``inverse`` undoes each step by fixed-point iteration (ODIN's own inverse,
    ``x - scale * MLP(x)``, is only first-order accurate). ODIN used 20 steps of a 2-layer,
    128-unit MLP; the defaults here (10 steps, one layer of 64) cost about what ``FlowReadout``
    costs per training step on a CPU, where ODIN's own sizes are about 10 times slower.

    Example:
        >>> readout = ResidualFlowReadout(3, 30, steps=4)
        >>> readout(torch.randn(8, 50, 3)).shape
        torch.Size([8, 50, 30])
    """

    injective = True

    def __init__(self, latent_dim: int, n_neurons: int, *, steps: int = 10, hidden: int = 64,
                 layers: int = 1, scale: float = 0.1) -> None:
        super().__init__(latent_dim, n_neurons)
        if steps < 1 or layers < 1 or hidden < 1 or not scale > 0:
            raise ValueError("ResidualFlowReadout: steps, layers, hidden and scale must be "
                             f"positive, got {steps}, {layers}, {hidden}, {scale}")
        self.steps, self.scale = steps, scale
        widths = [n_neurons] + [hidden] * layers
        blocks: list[nn.Module] = []
        for fin, fout in zip(widths[:-1], widths[1:]):
            blocks += [nn.Linear(fin, fout), nn.ReLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, n_neurons))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(z, (0, self.n_neurons - self.latent_dim))
        for _ in range(self.steps):
            x = x + self.scale * self.net(x)
        return x + self.bias

    @torch.no_grad()
    def inverse(self, log_rates: torch.Tensor, *, tol: float = 1e-6,
                max_iter: int = 500) -> torch.Tensor:
        """Latent states whose log-rates these are: each step ``y = x + scale * MLP(x)`` is
        solved for x by the iteration ``x <- y - scale * MLP(x)`` (converges while the step is
        contractive; warns when it did not reach ``tol``, relative to the largest entry)."""
        y = log_rates - self.bias
        for _ in range(self.steps):
            x, limit = y, tol * (1.0 + y.abs().max())
            for _ in range(max_iter):
                x_next = y - self.scale * self.net(x)
                done = (x_next - x).abs().max() <= limit
                x = x_next
                if done:
                    break
            else:
                warnings.warn("ResidualFlowReadout.inverse: fixed-point iteration did not "
                              f"converge in {max_iter} iterations (a step is not contractive)",
                              stacklevel=2)
            y = x
        return y[..., : self.latent_dim]


class MonotoneLink(nn.Module):
    """Each neuron's own strictly increasing map ``g(u) = a u + sum_k c_k (tanh(s_k u + t_k) -
    tanh(t_k))`` (``a``, ``c_k``, ``s_k`` > 0; ``g(0) = 0``), applied elementwise over the last
    (neuron) dimension: a linear-nonlinear (LN) neuron's saturation or threshold. It starts
    nearly the identity (``a = 1``, ``c_k`` about 0.02), and ``a`` may fall towards 0 for a
    neuron that saturates. Being strictly increasing, it never makes a readout lose
    injectivity.

    Example:
        >>> link = MonotoneLink(30)
        >>> u = torch.randn(8, 30)
        >>> torch.allclose(link.inverse(link(u)), u, atol=1e-4)
        True
    """

    def __init__(self, n_neurons: int, *, units: int = 2) -> None:
        super().__init__()
        one = math.log(math.expm1(1.0))  # softplus(one) == 1
        self.raw_slope = nn.Parameter(torch.full((n_neurons,), one))
        self.raw_amplitude = nn.Parameter(torch.full((n_neurons, units), -4.0))
        self.raw_sharpness = nn.Parameter(torch.full((n_neurons, units), one))
        # the units' centres spread over the range a standardized input covers
        self.shift = nn.Parameter(torch.linspace(-1.0, 1.0, units).repeat(n_neurons, 1))

    def _parts(self):
        softplus = nn.functional.softplus
        return (softplus(self.raw_slope) + 1e-3, softplus(self.raw_amplitude),
                softplus(self.raw_sharpness))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        slope, amplitude, sharpness = self._parts()
        units = torch.tanh(torch.addcmul(self.shift, sharpness, u.unsqueeze(-1)))
        at_zero = (amplitude * torch.tanh(self.shift)).sum(-1)   # per neuron, not per entry
        return slope * u + (amplitude * units).sum(-1) - at_zero

    def parameter_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        """(..., neuron, 1 + 3 units): the derivatives of ``g(u)`` in each neuron's ``a``, then
        its ``c_k``, ``s_k`` and ``t_k``: the ways its link can change shape."""
        _, amplitude, sharpness = self._parts()
        u = u.unsqueeze(-1)
        units = torch.tanh(torch.addcmul(self.shift, sharpness, u))
        at_zero = torch.tanh(self.shift)
        return torch.cat([u, units - at_zero, amplitude * (1 - units ** 2) * u,
                          amplitude * (at_zero ** 2 - units ** 2)], -1)

    def inverse(self, y: torch.Tensor, *, iterations: int = 60) -> torch.Tensor:
        """``u`` with ``g(u) = y``, by bisection: ``|g(u) - a u| <= 2 sum_k c_k`` brackets it."""
        slope, amplitude, _ = self._parts()
        reach = 2.0 * amplitude.sum(-1)
        low, high = (y - reach) / slope, (y + reach) / slope
        for _ in range(iterations):
            middle = 0.5 * (low + high)
            above = self(middle) > y
            high = torch.where(above, middle, high)
            low = torch.where(above, low, middle)
        return 0.5 * (low + high)


class PlaneReadout(Readout):
    """Affine coordinates, nonlinear rates: ``log r = W z + (I - P_W) h(z) + b``, where
    ``P_W`` projects onto the columns of ``W`` and ``h`` is a small MLP (its output layer
    starts at zero, so the readout starts affine).

    The nonlinear part only moves log-rates off the plane spanned by ``W``, so the latent state
    is always the least-squares coordinate of the log-rates in that plane,
    ``z = W^+ (log r - b)``: the readout is injective (``inverse`` is that formula), and when
    the true log-rates are an affine function of the true state and the fitted rates match
    them, the latents are an affine image of it whatever ``h`` learns. Where the embedding is
    nonlinear, ``h`` bends the rates without bending the coordinates.

    ``link="monotone"`` passes each neuron's log-rate through its own learned increasing map
    (``MonotoneLink``): ``log r = b + g(W z + (I - P_W) h(z))``, a linear-nonlinear neuron
    whose saturation or threshold needs no bend; ``z = W^+ g^{-1}(log r - b)``.

    Example:
        >>> readout = PlaneReadout(3, 30)
        >>> z = torch.randn(8, 50, 3)
        >>> torch.allclose(readout.inverse(readout(z)), z, atol=1e-4)
        True
    """

    injective = True
    LINKS = ("identity", "monotone")

    def __init__(self, latent_dim: int, n_neurons: int, *, hidden: int = 64,
                 bend_precision: float = 0.5, link: str = "identity") -> None:
        super().__init__(latent_dim, n_neurons)
        if link not in self.LINKS:
            raise ValueError(f"PlaneReadout: link must be one of {', '.join(self.LINKS)}, got "
                             f"{link!r}")
        self.bend_precision = bend_precision
        self.weight = nn.Parameter(torch.randn(n_neurons, latent_dim) / math.sqrt(latent_dim))
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(),
                                 nn.Linear(hidden, n_neurons))
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
        self.link = MonotoneLink(n_neurons) if link == "monotone" else None

    def _bend(self, z: torch.Tensor) -> torch.Tensor:
        basis, _ = torch.linalg.qr(self.weight)              # (neuron, latent), orthonormal
        bend = self.net(z)
        return bend - (bend @ basis) @ basis.T               # off the plane only

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        inner = z @ self.weight.T + self._bend(z)
        return (inner if self.link is None else self.link(inner)) + self.bias

    def log_penalty(self, z: torch.Tensor, log_rates: torch.Tensor) -> torch.Tensor:
        """A weak Gaussian prior on the bend, summed over (time, neuron): among planes that
        fit equally well it prefers the one the log-rates vary in most, their principal plane.

        The bend is measured in log-rates, as what the plane's own neurons (``b + g(W z)``)
        leave: measured before the link it would shrink as the link's slope grows and ``W``
        shrinks, a free trade that would let the readout escape its prior."""
        plane = z @ self.weight.T
        if self.link is not None:
            plane = self.link(plane)
        return -0.5 * self.bend_precision * (log_rates - plane - self.bias).pow(2).sum((-2, -1))

    def shape_features(self, z: torch.Tensor) -> torch.Tensor | None:
        """The link's parameter derivatives (``MonotoneLink.parameter_jacobian``) where it has
        one: a saturation or threshold the fit placed with few spikes stays uncertain."""
        if self.link is None:
            return None
        return self.link.parameter_jacobian(z @ self.weight.T + self._bend(z))

    def reported_basis(self) -> torch.Tensor:
        return orthonormal_basis(self.weight)

    def inverse(self, log_rates: torch.Tensor) -> torch.Tensor:
        """Latent states whose log-rates these are (exact for points in the image)."""
        inner = log_rates - self.bias
        if self.link is not None:
            inner = self.link.inverse(inner)
        return inner @ torch.linalg.pinv(self.weight).T


def _small_residual_net(in_features: int, out_features: int, hidden: int) -> nn.Module:
    net = ResidualNet(in_features, out_features, hidden_features=hidden, num_blocks=1)
    with torch.no_grad():  # start each coupling near the identity
        net.final_layer.weight.mul_(0.01)
        net.final_layer.bias.zero_()
    return net


READOUTS: dict[str, type[Readout]] = {
    "affine": AffineReadout, "mlp": MLPReadout, "flow": FlowReadout,
    "residual_flow": ResidualFlowReadout, "plane": PlaneReadout,
}


def build_readout(name: str, latent_dim: int, n_neurons: int, **options) -> Readout:
    """Builds a readout by name: "flow" (injective), "residual_flow" (ODIN's), "affine" or
    "mlp"."""
    if name not in READOUTS:
        raise ValueError(f"readout: unknown readout {name!r} (known: {', '.join(READOUTS)})")
    return READOUTS[name](latent_dim, n_neurons, **options)
