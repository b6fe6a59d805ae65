import time

import numpy as np
import pytest
import torch

from pyrodyn.analysis.fixed_points import attractor_shape, find_fixed_points
from pyrodyn.analysis.metrics import match_fixed_points
from pyrodyn.data.systems import SYSTEMS, build_system
from pyrodyn.models import MLPField

ISOLATED = ["lorenz", "rossler", "arneodo", "limit_cycle", "flip_flop", "multi_area", "driven_pair"]


def starts_for(system, n=1000, seed=0):
    """Starts drawn around where the system lives (as a fitted model's posterior would)."""
    points, _ = system.fixed_points()
    low, high = points.min(0) - 1.5, points.max(0) + 1.5
    return np.random.default_rng(seed).uniform(low, high, (n, system.dim))


@pytest.mark.parametrize("name", ISOLATED)
def test_recovers_every_isolated_fixed_point_of_the_true_field(name):
    system = build_system(name)
    true_points, true_stability = system.fixed_points()
    found = find_fixed_points(system, starts_for(system))
    match = match_fixed_points(true_points, true_stability, found.points, found.stability,
                               tolerance=1e-3)
    assert match.n_matched == len(true_points), (name, match)
    assert match.location_error < 1e-3
    assert match.stability_agreement == 1.0
    assert len(found.points) == len(true_points)  # nothing spurious either


@pytest.mark.parametrize("name, shape", [("ring_attractor", "ring"),
                                         ("line_attractor", "line")])
def test_recognizes_continuous_attractors(name, shape):
    system = build_system(name)
    found = find_fixed_points(system, starts_for(system, 400), merge_distance=0.05)
    marginal = found.points[np.array(found.stability) == "marginal"]
    assert len(marginal) >= 10
    true_points, true_stability = system.fixed_points()
    # Every marginal point lies on the true continuum, within 1e-3.
    if shape == "ring":
        assert np.abs(np.linalg.norm(marginal, axis=1) - 1).max() < 1e-3
        isolated = found.points[np.array(found.stability) != "marginal"]
        assert len(isolated) == 1 and np.linalg.norm(isolated[0]) < 1e-3  # unstable origin
        assert [s for s in found.stability if s != "marginal"] == ["unstable"]
    else:
        assert np.abs(marginal[:, 1]).max() < 1e-3
        assert set(found.stability) == {"marginal"}
    assert attractor_shape(marginal) == shape
    # The listed sample points of the continuum are fixed points with the listed stability.
    check = find_fixed_points(system, true_points)
    assert check.stability == true_stability


def test_thousand_starts_take_seconds():
    system = build_system("lorenz")
    start = time.perf_counter()
    find_fixed_points(system, starts_for(system, 1000))
    assert time.perf_counter() - start < 10


def test_learned_field_and_discrete_map():
    torch.manual_seed(0)
    field = MLPField(2, hidden=16, init_scale=1.0)
    found = find_fixed_points(field, np.random.default_rng(0).normal(size=(200, 2)) * 3)
    residual = field(torch.as_tensor(found.points, dtype=torch.float32)).abs().max()
    assert len(found.points) >= 1 and residual < 1e-4
    # A contracting linear map z -> 0.5 z has one stable fixed point at the origin.
    found = find_fixed_points(lambda z: 0.5 * z, np.random.default_rng(1).normal(size=(50, 2)),
                              discrete=True)
    assert np.allclose(found.points, 0, atol=1e-6) and found.stability == ("stable",)


def test_every_system_is_covered():
    assert set(ISOLATED) | {"ring_attractor", "line_attractor"} == set(SYSTEMS)
