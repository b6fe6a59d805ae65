import numpy as np
import pytest

from pyrodyn.data import synthetic
from pyrodyn.data.systems import SYSTEMS, build_system, classify_stability, integrate, jacobian

SMALL = dict(n_trials=6, n_bins=30, n_neurons=8)


@pytest.mark.parametrize("name", sorted(synthetic.GENERATORS))
def test_same_seed_same_data_other_seed_other_data(name):
    make = synthetic.GENERATORS[name]
    a, b, c = make(seed=4, **SMALL), make(seed=4, **SMALL), make(seed=5, **SMALL)
    assert np.array_equal(a.spikes, b.spikes)
    assert np.array_equal(a.truth.latents, b.truth.latents)
    assert np.array_equal(a.truth.rates, b.truth.rates)
    assert not np.array_equal(a.spikes, c.spikes)
    assert not np.allclose(a.truth.latents, c.truth.latents)


@pytest.mark.parametrize("name", sorted(synthetic.GENERATORS))
@pytest.mark.parametrize("embedding", ["linear", "nonlinear"])
def test_generated_data_is_complete_and_consistent(name, embedding):
    data = synthetic.GENERATORS[name](seed=0, embedding=embedding, mean_rate=15.0,
                                      n_trials=40, n_bins=50, n_neurons=10)
    truth = data.truth
    n_areas = max(1, len(data.areas))
    assert data.shape == (40, 50, 10 * n_areas)
    assert truth.latents.shape[:2] == (40, 50)
    assert truth.rates.shape == data.shape
    # Each neuron's mean rate is the requested one, in counts per bin.
    assert np.allclose(truth.rates.mean(axis=(0, 1)), 15.0 * data.dt)
    assert abs(data.spikes.mean() / truth.rates.mean() - 1) < 0.05
    system = truth.vector_field
    assert truth.latents.shape[2] == system.dim
    if system.n_inputs:
        assert data.inputs.shape == (40, 50, system.n_inputs) and (data.inputs != 0).any()
    assert len(truth.stability) == len(truth.fixed_points)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_stated_fixed_points_are_zeros_with_the_stated_stability(name):
    system = build_system(name)
    points, stability = system.fixed_points()
    assert np.abs(system(points)).max() < 1e-6
    for point, label in zip(points, stability):
        eigenvalues = np.linalg.eigvals(jacobian(system, point))
        assert classify_stability(eigenvalues, tol=1e-4) == label


def test_nonlinear_embedding_is_not_log_linear():
    """A log-linear fit from the true latents explains the linear embedding, not the other."""
    fits = {}
    for embedding in ("linear", "nonlinear"):
        data = synthetic.lorenz(n_trials=20, n_bins=50, n_neurons=10, embedding=embedding)
        z = data.truth.latents.reshape(-1, 3)
        log_rates = np.log(data.truth.rates.reshape(-1, 10))
        design = np.c_[z, np.ones(len(z))]
        residual = log_rates - design @ np.linalg.lstsq(design, log_rates, rcond=None)[0]
        fits[embedding] = 1 - residual.var(0).sum() / log_rates.var(0).sum()
    assert fits["linear"] > 0.999 and fits["nonlinear"] < 0.95


def test_flip_flop_pulses_switch_between_stable_states():
    data = synthetic.flip_flop(n_trials=20, n_bins=100, seed=0)
    signs = np.sign(data.truth.latents)
    assert (signs[:, 1:] != signs[:, :-1]).sum() > 20
    settled = data.truth.latents[:, -1]  # between pulses the state sits near a corner
    assert np.median(np.abs(np.abs(settled) - 1)) < 0.1


def test_ring_and_line_attractors_keep_the_state_on_their_attractor():
    ring = synthetic.ring_attractor(n_trials=10, n_bins=100, seed=0).truth.latents
    radius = np.linalg.norm(ring[:, -1], axis=-1)
    assert np.median(np.abs(radius - 1)) < 0.05
    line = synthetic.line_attractor(n_trials=10, n_bins=100, seed=0)
    # With no input the integrator holds its value: x changes only when a pulse arrives.
    dx = np.diff(line.truth.latents[..., 0], axis=1)
    quiet = line.inputs[:, :-1, 0] == 0
    assert np.abs(dx[quiet]).max() < 1e-12 and np.abs(dx[~quiet]).min() > 0.1


def test_two_area_b_depends_on_a_and_a_not_on_b():
    data = synthetic.two_area(n_trials=5, n_bins=60, n_neurons=5, seed=0)
    system = data.truth.vector_field
    a, b = slice(0, 2), slice(2, 4)
    for z in data.truth.latents[:, ::10].reshape(-1, 4):
        jac = jacobian(system, z)
        assert np.abs(jac[a, b]).max() < 1e-8      # A's field ignores B
        assert np.abs(jac[b, a]).max() > 0.1       # B's field feels A
    z0 = data.truth.latents[:, 0]
    base = integrate(system, z0, 60, system.time_step)
    kick_b, kick_a = z0.copy(), z0.copy()
    kick_b[:, b] += 0.5
    kick_a[:, a] += 0.5
    moved_b = integrate(system, kick_b, 60, system.time_step)
    moved_a = integrate(system, kick_a, 60, system.time_step)
    assert np.array_equal(moved_b[..., a], base[..., a])
    assert np.abs(moved_a[..., b] - base[..., b]).max() > 0.1
    assert list(data.truth.communication) == ["B<-A"]
    signal = data.truth.communication["B<-A"]
    assert np.allclose(signal, data.truth.latents[..., a] @ system.channel_matrix("B<-A").T)
    assert np.linalg.matrix_rank(system.channel_matrix("B<-A")) == 1


def test_three_area_chain_has_no_direct_a_to_c_channel():
    data = synthetic.three_area_chain(n_trials=3, n_bins=20, n_neurons=4)
    system = data.truth.vector_field
    assert sorted(data.truth.communication) == ["B<-A", "C<-B"]
    jac = jacobian(system, data.truth.latents[0, 10])
    assert np.abs(jac[4:6, 0:2]).max() < 1e-8 and np.abs(jac[4:6, 2:4]).max() > 0.1


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="embedding: unknown embedding 'cubic'"):
        synthetic.lorenz(n_trials=2, n_bins=5, embedding="cubic")
    with pytest.raises(ValueError, match="mean_rate: must be > 0"):
        synthetic.lorenz(n_trials=2, n_bins=5, mean_rate=0)
    with pytest.raises(ValueError, match="edges: unknown area 'C'"):
        synthetic.multi_area(areas=("A", "B"), edges=(("A", "C"),))
    with pytest.raises(ValueError, match="system: unknown system 'duffing'"):
        synthetic.simulate("duffing")


def test_driven_pair_locks_after_burn_in():
    free = synthetic.driven_pair(n_trials=40, n_bins=50, n_neurons=5, seed=0)
    locked = synthetic.phase_locked_pair(n_trials=40, n_bins=50, n_neurons=5, seed=0)
    assert free.areas == ("ctx", "str") and free.n_neurons == 10
    radius = lambda d: np.linalg.norm(d.truth.latents[:, 0, :2], axis=-1)  # noqa: E731
    assert radius(free).std() > 0.2 and radius(locked).std() < 0.01  # on the cycle already
    assert set(free.truth.communication) == {"str<-ctx"}
    # locked: str is a function of ctx's phase, the same in every trial
    phase = np.arctan2(locked.truth.latents[:, 0, 1], locked.truth.latents[:, 0, 0])
    design = np.stack([np.cos(phase), np.sin(phase), np.ones_like(phase)], -1)
    fitted, *_ = np.linalg.lstsq(design, locked.truth.latents[:, 0, 2], rcond=None)
    residual = locked.truth.latents[:, 0, 2] - design @ fitted
    assert residual.std() < 0.01 < np.abs(fitted[:2]).max()


def test_rossler_and_arneodo_trials_lie_on_their_published_attractors():
    """Burned-in starts are on the attractor from the first bin: the classic Rössler band
    (x in about [-9, 12], rare z bursts to about 20) and Arneodo's double scroll (around both
    saddle-foci x = +-sqrt(5.5))."""
    rossler = synthetic.rossler(n_trials=30, n_bins=100, seed=0).truth.latents
    assert -12 < rossler[..., 0].min() < -6 and 8 < rossler[..., 0].max() < 14
    assert rossler[..., 2].min() > -0.1 and 10 < rossler[..., 2].max() < 30
    assert np.abs(rossler[:, 0] - rossler[:, 0].mean(0)).max() > 3  # starts spread on it
    arneodo = synthetic.arneodo(n_trials=30, n_bins=100, seed=0).truth.latents
    assert np.abs(arneodo).max() < 15
    assert (arneodo[..., 0] > 1).any() and (arneodo[..., 0] < -1).any()
