"""The Laplace approximation over whole paths: banded curvature, block Cholesky, draws."""

import pytest
import torch

from pyrodyn._isolation import isolated_rng
from pyrodyn.inference.path_laplace import (
    BandError,
    PathLaplace,
    lift_to_positive_definite,
    path_precision,
)
from pyrodyn.inference.refine import LocalGuide
from pyrodyn.models.paths import GuidedPath

F64 = dict(dtype=torch.float64)


def _banded_quadratic(n, t, d, reach):
    """Per-trial precisions (n, t*d, t*d) that couple bins up to ``reach`` apart, and the
    log density of N(centre, precision^-1) summed over trials, up to a constant."""
    bins = torch.arange(t * d) // d
    sym = torch.randn(n, t * d, t * d, **F64)
    sym = 0.5 * (sym + sym.transpose(1, 2)) * ((bins[:, None] - bins[None, :]).abs() <= reach)
    precision = sym + (sym.abs().sum(-1).max() + 1) * torch.eye(t * d, **F64)  # diagonally dominant
    centre = torch.randn(n, t, d, **F64)

    def log_density(x):
        delta = (x - centre).reshape(n, -1, 1)
        return -0.5 * (delta.transpose(1, 2) @ precision @ delta).sum()

    return precision, centre, log_density


@pytest.mark.parametrize("t", [7, 8])  # an odd path gets a dummy bin to make pairs
def test_the_path_laplace_is_the_gaussian_of_the_curvature(t):
    with isolated_rng(0):
        precision, centre, log_density = _banded_quadratic(3, t, 2, reach=2)
        q = PathLaplace(centre, path_precision(log_density, centre))
        x = torch.randn(3, t, 2, **F64)
        exact = torch.distributions.MultivariateNormal(centre.reshape(3, -1),
                                                       precision_matrix=precision)
        assert torch.allclose(q.log_prob(x), exact.log_prob(x.reshape(3, -1)), atol=1e-8)
        draws = (q.rsample((40000,)) - centre).reshape(40000, 3, -1)
        covariance = torch.einsum("sni,snj->nij", draws, draws) / draws.shape[0]
        truth = torch.linalg.inv(precision)
        assert (covariance - truth).abs().max() < 0.05 * truth.abs().max()


def test_a_density_that_couples_distant_bins_is_refused():
    precision, centre, _ = _banded_quadratic(2, 9, 2, reach=2)
    precision[:, 0, -1] = precision[:, -1, 0] = 0.5  # the first bin with the last

    def log_density(x):
        delta = (x - centre).reshape(2, -1, 1)
        return -0.5 * (delta.transpose(1, 2) @ precision @ delta).sum()

    with pytest.raises(BandError, match="more than 2 apart"):
        path_precision(log_density, centre)


def test_a_path_that_cannot_have_a_laplace_keeps_the_guides_spread():
    chain = GuidedPath(torch.zeros(2, 1), lambda z, u: 0.9 * z, torch.full((1,), 0.1),
                       gains=torch.zeros(2, 5, 1, 1), offsets=torch.zeros(2, 5, 1),
                       scale_tril=torch.ones(2, 5, 1, 1), start_sites=("z0",))
    local = LocalGuide({"z0": (torch.zeros(2, 1), torch.ones(2, 1), 1)}, paths={"path": chain})

    def log_density(values):  # couples the start with the last bin
        return -(values["z0"][:, 0] - values["path"][:, -1, 0]).pow(2).sum() \
            - values["path"].pow(2).sum()

    with pytest.warns(UserWarning, match="keeps the guide's spread"):
        local.fit_laplace(log_density)
    assert local.laplace == {}


def test_a_trial_off_its_mode_gets_a_ridge_and_the_others_keep_their_own():
    precision, centre, _ = _banded_quadratic(3, 8, 2, reach=2)
    precision[1] = -precision[1]  # trial 1 at a minimum of its density, not a mode

    def log_density(x):
        delta = (x - centre).reshape(3, -1, 1)
        return -0.5 * (delta.transpose(1, 2) @ precision @ delta).sum()

    blocks = path_precision(log_density, centre)
    with pytest.raises(torch.linalg.LinAlgError, match=r"trial\(s\) \[1\]"):
        PathLaplace(centre, blocks)
    lifted, which = lift_to_positive_definite(blocks, floor=0.1)
    assert which.tolist() == [False, True, False]
    for part, before in zip(lifted, blocks):
        assert torch.equal(part[[0, 2]], before[[0, 2]])
    # trial 1: its matrix plus a multiple of the identity whose lowest eigenvalue is 0.1 of
    # its mean diagonal entry
    ridge = 0.1 * precision[1].diagonal().abs().mean() - torch.linalg.eigvalsh(precision[1])[0]
    eye = torch.eye(4, **F64)
    assert torch.allclose(lifted.diagonal[1] - blocks.diagonal[1], ridge * eye, rtol=1e-8)
    assert torch.isfinite(PathLaplace(centre, lifted).rsample((2,))).all()
