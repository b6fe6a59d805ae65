"""The Laplace approximation of each trial's stochastic path at its refined centre.

``refine`` moves each trial's path to the mode of p(path | spikes, weights). The encoder's
spread that came with it was fitted for the encoder's own centres, which lie further from the
truth (on two_area the refined latents then over-cover: 61% / 96% in the 50% / 90% intervals).
Here the spread is the inverse curvature of the log joint density at the mode instead: per trial,
and exact for linear dynamics with Gaussian observations (the Kalman smoother's posterior).

A trial's state path ``x = (z[0], ..., z[T-1])`` enters the log density only through terms that
span at most three neighbouring bins: the likelihood and the readout's prior per bin, the
transition from bin k to k+1, and its noise's AR(1) correlation one transition back. So the
Hessian is banded, ``REACH = 2`` bins either side, and ``5 * latent`` Hessian-vector products
(probes that mark every fifth bin in one dimension) give all of it for a whole batch of trials
at once. In pairs of bins it is block tridiagonal, factored block by block in O(T latent^3).
One random probe checks the band: a model with terms that reach further is refused
(``BandError``) rather than given a wrong spread.

Example (``log_density`` maps paths (trial, time, latent) to the summed log joint density)::

    precision = path_precision(log_density, centre)      # -Hessian at the centre, by blocks
    q = PathLaplace(centre, precision)                   # N(centre, precision^-1) per trial
    draws = q.rsample((100,))                            # (100, trial, time, latent)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from pyro.distributions import TorchDistribution, constraints

__all__ = ["REACH", "BandError", "BlockTridiagonal", "path_precision", "PathLaplace",
           "lift_to_positive_definite"]

REACH = 2  # bins: a transition spans two, its correlated noise one more
_COLOURS = 2 * REACH + 1  # probes mark bins this far apart, so their columns never overlap


class BandError(ValueError):
    """The log density couples bins further apart than ``REACH``."""


class BlockTridiagonal(NamedTuple):
    """A symmetric matrix over pairs of bins: ``diagonal`` (trial, block, b, b) and
    ``lower`` (trial, block - 1, b, b), the block below each diagonal one; b = 2 * latent."""

    diagonal: torch.Tensor
    lower: torch.Tensor


def path_precision(log_density: Callable[[torch.Tensor], torch.Tensor],
                   centre: torch.Tensor) -> BlockTridiagonal:
    """Minus the Hessian of ``log_density`` (summed over trials) at ``centre`` (trial, time,
    latent), per trial, as pairs of bins.

    Raises:
        BandError: the Hessian reaches further than ``REACH`` bins from the diagonal.
    """
    n, t, d = centre.shape
    x = centre.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(log_density(x), x, create_graph=True)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True)[0].detach()

        # band[:, k, o, :, i]: the column of bin k, dimension i, rows at bin k + o - REACH
        band = centre.new_zeros(n, t, _COLOURS, d, d)
        for colour in range(_COLOURS):
            columns = torch.arange(colour, t, _COLOURS, device=centre.device)
            for i in range(d):
                probe = torch.zeros_like(centre)
                probe[:, colour::_COLOURS, i] = 1
                product = hvp(probe)
                for o in range(_COLOURS):
                    rows = columns + o - REACH
                    inside = (rows >= 0) & (rows < t)
                    band[:, columns[inside], o, :, i] = product[:, rows[inside]]
        check = torch.randn_like(centre)
        exact = hvp(check)
    if not torch.allclose(_band_times(band, check), exact, rtol=1e-3,
                          atol=1e-3 * float(exact.abs().max())):
        raise BandError(f"the model's log density couples bins more than {REACH} apart; a "
                        "Laplace spread needs terms local in time (likelihood per bin, Markov "
                        "transitions)")
    return _pairs(-band)


def _band_times(band: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The banded matrix ``band`` times paths ``x`` (trial, time, latent)."""
    t = x.shape[1]
    out = torch.zeros_like(x)
    for o in range(_COLOURS):
        shift = o - REACH  # column bin k feeds row bin k + shift
        lo, hi = max(0, -shift), min(t, t - shift)
        out[:, lo + shift:hi + shift] += (band[:, lo:hi, o] @ x[:, lo:hi].unsqueeze(-1)
                                          ).squeeze(-1)
    return out


def _pairs(band: torch.Tensor) -> BlockTridiagonal:
    """The banded matrix as blocks of two bins (an odd path gets a unit dummy bin at its end);
    each block pair is made exactly symmetric."""
    n, t, _, d, _ = band.shape
    if t % 2:
        pad = band.new_zeros(n, 1, _COLOURS, d, d)
        pad[:, 0, REACH] = torch.eye(d, dtype=band.dtype, device=band.device)
        band = torch.cat([band, pad], 1)
        t += 1

    def block(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:  # (rows+a, cols+b)
        parts = [[_entry(band, rows + a, cols + b) for b in (0, 1)] for a in (0, 1)]
        return torch.cat([torch.cat(row, -1) for row in parts], -2)

    starts = torch.arange(0, t, 2, device=band.device)
    diagonal = block(starts, starts)
    diagonal = 0.5 * (diagonal + diagonal.transpose(-1, -2))
    lower = block(starts[1:], starts[:-1])
    upper = block(starts[:-1], starts[1:])
    return BlockTridiagonal(diagonal, 0.5 * (lower + upper.transpose(-1, -2)))


def _entry(band: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The (d, d) blocks of bins ``rows`` against bins ``cols`` (zero beyond the band)."""
    offset = rows - cols + REACH
    inside = (offset >= 0) & (offset < _COLOURS)
    picked = band[:, cols, offset.clamp(0, _COLOURS - 1)]
    return picked * inside.view(1, -1, 1, 1)


def _cholesky(precision: BlockTridiagonal) -> BlockTridiagonal:
    """The lower block-bidiagonal ``L`` with ``L L^T = precision``.

    Raises:
        torch.linalg.LinAlgError: a trial's matrix is not positive definite.
    """
    factor, failed = _cholesky_ex(precision)
    if failed.any():
        raise torch.linalg.LinAlgError(
            f"the precision of trial(s) {failed.nonzero().flatten().tolist()} is not positive "
            "definite")
    return factor


def _cholesky_ex(precision: BlockTridiagonal) -> tuple[BlockTridiagonal, torch.Tensor]:
    """``_cholesky`` and which trials (trial,) it failed on (their factors are meaningless)."""
    diagonal, lower = precision
    first, info = torch.linalg.cholesky_ex(diagonal[:, 0])
    factors, below, failed = [first], [], info != 0
    for j in range(1, diagonal.shape[1]):
        # L[j, j-1] = P[j, j-1] L[j-1, j-1]^-T
        off = torch.linalg.solve_triangular(factors[-1], lower[:, j - 1].transpose(-1, -2),
                                            upper=False).transpose(-1, -2)
        below.append(off)
        block, info = torch.linalg.cholesky_ex(diagonal[:, j] - off @ off.transpose(-1, -2))
        factors.append(block)
        failed = failed | (info != 0)
    stack = torch.stack(factors, 1)
    return BlockTridiagonal(stack, torch.stack(below, 1) if below else stack[:, :0]), failed


def lift_to_positive_definite(precision: BlockTridiagonal, floor: float = 0.1
                              ) -> tuple[BlockTridiagonal, torch.Tensor]:
    """``precision`` with a ridge on each trial whose matrix is not positive definite (a
    path that refinement left off its mode: a saddle, or a flat direction), so that its
    lowest eigenvalue becomes ``floor`` times the trial's mean diagonal entry: those trials
    get a wide spread along the directions the curvature cannot bound, and every other trial
    keeps its own. Returns the lifted precision and which trials were lifted (trial,)."""
    _, failed = _cholesky_ex(precision)
    if not failed.any():
        return precision, failed
    diagonal, lower = (part.clone() for part in precision)
    blocks = diagonal.shape[1]
    size = diagonal.shape[-1]
    dense = diagonal.new_zeros(int(failed.sum()), blocks * size, blocks * size)
    for j in range(blocks):
        rows = slice(j * size, (j + 1) * size)
        dense[:, rows, rows] = diagonal[failed, j]
        if j:
            dense[:, rows, (j - 1) * size:j * size] = lower[failed, j - 1]
            dense[:, (j - 1) * size:j * size, rows] = lower[failed, j - 1].transpose(-1, -2)
    lowest = torch.linalg.eigvalsh(dense.double())[:, 0].to(dense.dtype)
    typical = torch.diagonal(dense, dim1=-2, dim2=-1).abs().mean(-1)
    ridge = floor * typical - lowest
    eye = torch.eye(size, dtype=diagonal.dtype, device=diagonal.device)
    diagonal[failed] += ridge.view(-1, 1, 1, 1) * eye
    return BlockTridiagonal(diagonal, lower), failed


class PathLaplace(TorchDistribution):
    """N(centre, precision^-1) over each trial's path (trial, time, latent), the precision
    block tridiagonal over pairs of bins (``path_precision``).

    Raises:
        torch.linalg.LinAlgError: the precision is not positive definite (not at a mode).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, centre: torch.Tensor, precision: BlockTridiagonal) -> None:
        self.centre = centre
        self.factor = _cholesky(precision)
        super().__init__(centre.shape[:1], centre.shape[1:], validate_args=False)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(..., trial, time, latent) as (..., trial, block, 2 * latent, 1), padded to pairs."""
        if x.shape[-2] % 2:
            x = torch.cat([x, x.new_zeros(x.shape[:-2] + (1, x.shape[-1]))], -2)
        return x.reshape(x.shape[:-2] + (x.shape[-2] // 2, 2 * x.shape[-1], 1))

    def _unblock(self, y: torch.Tensor) -> torch.Tensor:
        t, d = self.centre.shape[-2:]
        return y.reshape(y.shape[:-3] + (-1, d))[..., :t, :]

    def rsample(self, sample_shape=()):
        diagonal, lower = self.factor
        shape = torch.Size(sample_shape) + diagonal.shape[:2] + diagonal.shape[-1:] + (1,)
        eps = torch.randn(shape, dtype=self.centre.dtype, device=self.centre.device)
        # back substitution L^T y = eps, last block first
        y = [torch.linalg.solve_triangular(diagonal[:, -1].transpose(-1, -2), eps[..., -1, :, :],
                                           upper=True)]
        for j in range(diagonal.shape[1] - 2, -1, -1):
            rhs = eps[..., j, :, :] - lower[:, j].transpose(-1, -2) @ y[0]
            y.insert(0, torch.linalg.solve_triangular(diagonal[:, j].transpose(-1, -2), rhs,
                                                      upper=True))
        return self.centre + self._unblock(torch.stack(y, -3))

    def log_prob(self, value):
        diagonal, lower = self.factor
        delta = self._blocks(value - self.centre)
        # v = L^T delta: v_j = L_jj^T delta_j + L_{j+1, j}^T delta_{j+1}
        ahead = lower.transpose(-1, -2) @ delta[..., 1:, :, :]
        v = diagonal.transpose(-1, -2) @ delta + torch.cat(
            [ahead, torch.zeros_like(delta[..., :1, :, :])], -3)
        n = self.centre.shape[-2] * self.centre.shape[-1]
        log_det = torch.log(torch.diagonal(diagonal, dim1=-2, dim2=-1)).sum((-1, -2))
        # the dummy bin of an odd path adds nothing: its unit factor has log 1 = 0
        return -0.5 * v.pow(2).sum((-1, -2, -3)) + log_det - 0.5 * n * math.log(2 * math.pi)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise ValueError(f"PathLaplace: cannot expand {tuple(self.batch_shape)} to "
                             f"{tuple(batch_shape)}")
        return self

    @property
    def mean(self):
        return self.centre
