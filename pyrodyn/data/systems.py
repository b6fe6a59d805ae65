"""Ground-truth dynamical systems: vector fields with known fixed points.

Each system is autonomous apart from optional piecewise-constant inputs, ``dz/dt = f(z, u)``, with
time in the system's own units. ``pyrodyn.data.synthetic`` turns a system into spike data.
Every system is rebuilt exactly from ``(name, params)``, so a saved data set keeps its truth.

Example:
    >>> system = Lorenz()
    >>> points, stability = system.fixed_points()
    >>> float(abs(system.field(points)).max()) < 1e-9, stability[0]
    (True, 'saddle')
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

__all__ = [
    "DynamicalSystem",
    "Lorenz",
    "Rossler",
    "Arneodo",
    "LimitCycle",
    "RingAttractor",
    "LineAttractor",
    "FlipFlop",
    "MultiArea",
    "SYSTEMS",
    "build_system",
    "classify_stability",
    "jacobian",
    "integrate",
]


def classify_stability(eigenvalues: np.ndarray, *, tol: float = 1e-6) -> str:
    """Stability of a fixed point of a flow from its Jacobian's eigenvalues.

    "stable" (all real parts < 0), "unstable" (all > 0), "saddle" (both signs), "marginal" (some
    real part within ``tol`` of zero and none positive: line/ring attractors, centres).
    """
    real = np.real(np.asarray(eigenvalues))
    zero = np.abs(real) <= tol
    if zero.any():
        return "saddle" if (real > tol).any() else "marginal"
    if (real < 0).all():
        return "stable"
    if (real > 0).all():
        return "unstable"
    return "saddle"


def jacobian(field, z: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of ``field`` at one point ``z`` (D,), float64."""
    z = np.asarray(z, dtype=np.float64)
    d = z.shape[-1]
    steps = np.eye(d) * eps
    return ((field(z + steps) - field(z - steps)) / (2 * eps)).T


def integrate(
    field, z0: np.ndarray, n_bins: int, time_step: float, *, inputs: np.ndarray | None = None,
    substeps: int = 10,
) -> np.ndarray:
    """Classical RK4 from ``z0`` (trial, D); returns the state at each bin start (trial, T, D).

    Inputs (trial, T, U) are held constant within each bin.
    """
    h = time_step / substeps
    z = np.asarray(z0, dtype=np.float64)
    states = np.empty((z.shape[0], n_bins, z.shape[1]))
    for k in range(n_bins):
        states[:, k] = z
        u = None if inputs is None else inputs[:, k]
        for _ in range(substeps):
            k1 = field(z, u)
            k2 = field(z + 0.5 * h * k1, u)
            k3 = field(z + 0.5 * h * k2, u)
            k4 = field(z + h * k3, u)
            z = z + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return states


def _pulses(rng: np.random.Generator, n_trials: int, n_bins: int, n_inputs: int,
            rate: float, amplitude: float) -> np.ndarray:
    """One-bin pulses of random sign, on average ``rate`` per input channel per bin."""
    hits = rng.random((n_trials, n_bins, n_inputs)) < rate
    hits[:, :5] = False  # let each trial settle before the first pulse
    signs = rng.choice([-1.0, 1.0], size=hits.shape)
    return hits * signs * amplitude


class DynamicalSystem:
    """Base class: a vector field with its parameters, fixed points, inputs and start states."""

    name: ClassVar[str]
    n_inputs: ClassVar[int] = 0
    time_step: float = 0.01  # system time per bin

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Any]:
        """JSON-serializable parameters; ``build_system(name, params)`` rebuilds the system."""
        raise NotImplementedError

    def field(self, z: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def fixed_points(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """Known fixed points (K, D) and their stability labels."""
        raise NotImplementedError

    def initial_states(self, rng: np.random.Generator, n_trials: int) -> np.ndarray:
        raise NotImplementedError

    def inputs(self, rng: np.random.Generator, n_trials: int, n_bins: int) -> np.ndarray | None:
        return None

    def latent_area(self) -> np.ndarray | None:
        return None

    def __call__(self, z: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        return self.field(np.asarray(z, dtype=np.float64), u)


class Lorenz(DynamicalSystem):
    """The Lorenz system (chaotic for the classic sigma=10, rho=28, beta=8/3)."""

    name = "lorenz"

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0,
                 time_step: float = 0.01, burn_in: float = 10.0) -> None:
        self.sigma, self.rho, self.beta = float(sigma), float(rho), float(beta)
        self.time_step, self.burn_in = float(time_step), float(burn_in)

    dim = 3

    @property
    def params(self):
        return dict(sigma=self.sigma, rho=self.rho, beta=self.beta, time_step=self.time_step,
                    burn_in=self.burn_in)

    def field(self, z, u=None):
        x, y, w = z[..., 0], z[..., 1], z[..., 2]
        return np.stack([self.sigma * (y - x), x * (self.rho - w) - y, x * y - self.beta * w], -1)

    def fixed_points(self):
        points = [np.zeros(3)]
        if self.rho > 1:
            c = np.sqrt(self.beta * (self.rho - 1))
            points += [np.array([c, c, self.rho - 1]), np.array([-c, -c, self.rho - 1])]
        points = np.stack(points)
        # Origin: a saddle for rho > 1. C+-: stable below the Hopf value
        # rho_H = sigma (sigma + beta + 3) / (sigma - beta - 1), saddle-foci above it.
        rho_h = self.sigma * (self.sigma + self.beta + 3) / (self.sigma - self.beta - 1)
        off_origin = "stable" if self.rho < rho_h else "saddle"
        labels = ("saddle" if self.rho > 1 else "stable",) + (off_origin,) * (len(points) - 1)
        return points, labels

    def initial_states(self, rng, n_trials):
        z0 = rng.normal(0.0, 5.0, (n_trials, 3)) + np.array([0.0, 0.0, 25.0])
        # Run each start onto the attractor before the trial begins.
        substeps = max(1, round(self.burn_in / self.time_step)) * 10
        return integrate(self.field, z0, 2, self.burn_in, substeps=substeps)[:, 1]


class _BurnedIn(DynamicalSystem):
    """A chaotic flow whose trials start on its attractor: a point of the attractor (``start``
    run for ``burn_in`` time units), perturbed by ``spread`` and run for ``burn_in`` again, so
    the starts spread over the attractor and none leaves its basin. Fixed points (``_points``)
    are labelled by their Jacobian's eigenvalues."""

    dim = 3
    start = np.array([1.0, 1.0, 0.0])
    spread = 0.5

    def initial_states(self, rng, n_trials):
        substeps = max(1, round(self.burn_in / self.time_step)) * 10
        settle = lambda z: integrate(self.field, z, 2, self.burn_in, substeps=substeps)[:, 1]  # noqa: E731
        on_attractor = settle(self.start[None])
        return settle(on_attractor + rng.normal(0.0, self.spread, (n_trials, 3)))

    def fixed_points(self):
        points = self._points()
        return points, tuple(classify_stability(np.linalg.eigvals(jacobian(self.field, p)))
                             for p in points)


class Rossler(_BurnedIn):
    """The Rössler system, chaotic for the classic a=0.2, b=0.2, c=5.7 (Rössler 1976):
    ``x' = -y - z, y' = x + a y, z' = b + z (x - c)``; two saddle-foci. One bin is 0.1 time
    units (a trial of 100 bins spans about 1.7 turns)."""

    name = "rossler"

    def __init__(self, a: float = 0.2, b: float = 0.2, c: float = 5.7, time_step: float = 0.1,
                 burn_in: float = 50.0) -> None:
        self.a, self.b, self.c = float(a), float(b), float(c)
        self.time_step, self.burn_in = float(time_step), float(burn_in)

    @property
    def params(self):
        return dict(a=self.a, b=self.b, c=self.c, time_step=self.time_step,
                    burn_in=self.burn_in)

    def field(self, z, u=None):
        x, y, w = z[..., 0], z[..., 1], z[..., 2]
        return np.stack([-y - w, x + self.a * y, self.b + w * (x - self.c)], -1)

    def _points(self):
        root = np.sqrt(self.c ** 2 - 4 * self.a * self.b)
        xs = np.array([(self.c - root) / 2, (self.c + root) / 2])
        return np.stack([xs, -xs / self.a, xs / self.a], -1)


class Arneodo(_BurnedIn):
    """The Arneodo system (Arneodo, Coullet & Tresser 1981), chaotic for a=-5.5, b=3.5, c=1,
    d=-1 (the parameters of the dysts package): ``x' = y, y' = w, w' = -a x - b y - c w +
    d x^3``; a saddle at the origin and two saddle-foci at x = +-sqrt(a/d). One bin is 0.1
    time units (a trial of 100 bins spans about one turn)."""

    name = "arneodo"

    def __init__(self, a: float = -5.5, b: float = 3.5, c: float = 1.0, d: float = -1.0,
                 time_step: float = 0.1, burn_in: float = 50.0) -> None:
        self.a, self.b, self.c, self.d = float(a), float(b), float(c), float(d)
        self.time_step, self.burn_in = float(time_step), float(burn_in)

    @property
    def params(self):
        return dict(a=self.a, b=self.b, c=self.c, d=self.d, time_step=self.time_step,
                    burn_in=self.burn_in)

    def field(self, z, u=None):
        x, y, w = z[..., 0], z[..., 1], z[..., 2]
        return np.stack([y, w, -self.a * x - self.b * y - self.c * w + self.d * x ** 3], -1)

    def _points(self):
        xs = [0.0] + ([] if self.a / self.d <= 0 else  # w' = 0: d x^2 = a
                      [np.sqrt(self.a / self.d), -np.sqrt(self.a / self.d)])
        return np.array([[x, 0.0, 0.0] for x in xs])


class LimitCycle(DynamicalSystem):
    """Hopf normal form: a stable limit cycle of radius sqrt(mu) around an unstable focus."""

    name = "limit_cycle"
    dim = 2

    def __init__(self, mu: float = 1.0, omega: float = 2 * np.pi, time_step: float = 0.02) -> None:
        self.mu, self.omega, self.time_step = float(mu), float(omega), float(time_step)

    @property
    def params(self):
        return dict(mu=self.mu, omega=self.omega, time_step=self.time_step)

    def field(self, z, u=None):
        x, y = z[..., 0], z[..., 1]
        r2 = x * x + y * y
        return np.stack([self.mu * x - self.omega * y - x * r2,
                         self.omega * x + self.mu * y - y * r2], -1)

    def fixed_points(self):
        return np.zeros((1, 2)), ("unstable" if self.mu > 0 else "stable",)

    def initial_states(self, rng, n_trials):
        angle = rng.uniform(0, 2 * np.pi, n_trials)
        radius = rng.uniform(0.2, 1.6, n_trials) * np.sqrt(max(self.mu, 1e-3))
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1)


class RingAttractor(DynamicalSystem):
    """A continuous ring of marginally stable fixed points (radius 1); input pulses move the state
    along it. ``dz/dt = k z (1 - |z|^2) + u``; the origin is an unstable node."""

    name = "ring_attractor"
    dim = 2
    n_inputs = 2

    def __init__(self, k: float = 2.0, time_step: float = 0.05, n_ring_points: int = 16,
                 pulse_rate: float = 0.03, pulse_amplitude: float = 12.0) -> None:
        self.k, self.time_step, self.n_ring_points = float(k), float(time_step), int(n_ring_points)
        self.pulse_rate, self.pulse_amplitude = float(pulse_rate), float(pulse_amplitude)

    @property
    def params(self):
        return dict(k=self.k, time_step=self.time_step, n_ring_points=self.n_ring_points,
                    pulse_rate=self.pulse_rate, pulse_amplitude=self.pulse_amplitude)

    def field(self, z, u=None):
        r2 = (z * z).sum(-1, keepdims=True)
        dz = self.k * z * (1 - r2)
        return dz if u is None else dz + u

    def fixed_points(self):
        angle = np.arange(self.n_ring_points) * 2 * np.pi / self.n_ring_points
        ring = np.stack([np.cos(angle), np.sin(angle)], -1)
        points = np.concatenate([np.zeros((1, 2)), ring])
        return points, ("unstable",) + ("marginal",) * self.n_ring_points

    def initial_states(self, rng, n_trials):
        angle = rng.uniform(0, 2 * np.pi, n_trials)
        radius = rng.uniform(0.5, 1.3, n_trials)
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1)

    def inputs(self, rng, n_trials, n_bins):
        return _pulses(rng, n_trials, n_bins, 2, self.pulse_rate, self.pulse_amplitude)


class LineAttractor(DynamicalSystem):
    """An integrator: a line (y = 0) of marginally stable fixed points. Input pulses push along
    b = (1, 0.5); the y part decays with rate k while x keeps the integral.
    ``dx/dt = u``, ``dy/dt = -k y + 0.5 u``."""

    name = "line_attractor"
    dim = 2
    n_inputs = 1

    def __init__(self, k: float = 3.0, time_step: float = 0.05, extent: float = 2.0,
                 n_line_points: int = 9, pulse_rate: float = 0.04,
                 pulse_amplitude: float = 6.0) -> None:
        self.k, self.time_step, self.extent = float(k), float(time_step), float(extent)
        self.n_line_points = int(n_line_points)
        self.pulse_rate, self.pulse_amplitude = float(pulse_rate), float(pulse_amplitude)

    @property
    def params(self):
        return dict(k=self.k, time_step=self.time_step, extent=self.extent,
                    n_line_points=self.n_line_points, pulse_rate=self.pulse_rate,
                    pulse_amplitude=self.pulse_amplitude)

    def field(self, z, u=None):
        drive = 0.0 if u is None else u[..., 0]
        return np.stack([np.broadcast_to(drive, z[..., 0].shape).astype(np.float64),
                         -self.k * z[..., 1] + 0.5 * drive], -1)

    def fixed_points(self):
        x = np.linspace(-self.extent, self.extent, self.n_line_points)
        points = np.stack([x, np.zeros_like(x)], -1)
        return points, ("marginal",) * self.n_line_points

    def initial_states(self, rng, n_trials):
        return np.stack([rng.uniform(-1, 1, n_trials), rng.uniform(-0.5, 0.5, n_trials)], -1)

    def inputs(self, rng, n_trials, n_bins):
        return _pulses(rng, n_trials, n_bins, 1, self.pulse_rate, self.pulse_amplitude)


class FlipFlop(DynamicalSystem):
    """Independent bistable units ``dz_i/dt = k (z_i - z_i^3) + u_i``: stable fixed points at
    every corner of {-1, 1}^n, switched by input pulses; saddles and one unstable point at the
    combinations with zeros (3^n fixed points in all)."""

    name = "flip_flop"

    def __init__(self, n_bits: int = 3, k: float = 2.0, time_step: float = 0.05,
                 pulse_rate: float = 0.02, pulse_amplitude: float = 30.0) -> None:
        self.n_bits, self.k, self.time_step = int(n_bits), float(k), float(time_step)
        self.pulse_rate, self.pulse_amplitude = float(pulse_rate), float(pulse_amplitude)

    @property
    def dim(self):
        return self.n_bits

    @property
    def n_inputs(self):  # type: ignore[override]
        return self.n_bits

    @property
    def params(self):
        return dict(n_bits=self.n_bits, k=self.k, time_step=self.time_step,
                    pulse_rate=self.pulse_rate, pulse_amplitude=self.pulse_amplitude)

    def field(self, z, u=None):
        dz = self.k * (z - z ** 3)
        return dz if u is None else dz + u

    def fixed_points(self):
        grids = np.meshgrid(*[[-1.0, 0.0, 1.0]] * self.n_bits, indexing="ij")
        points = np.stack([g.ravel() for g in grids], -1)
        n_zero = (points == 0).sum(-1)
        labels = tuple("stable" if n == 0 else "unstable" if n == self.n_bits else "saddle"
                       for n in n_zero)
        return points, labels

    def initial_states(self, rng, n_trials):
        corners = rng.choice([-1.0, 1.0], size=(n_trials, self.n_bits))
        return corners + rng.normal(0, 0.1, corners.shape)

    def inputs(self, rng, n_trials, n_bins):
        return _pulses(rng, n_trials, n_bins, self.n_bits, self.pulse_rate, self.pulse_amplitude)


class MultiArea(DynamicalSystem):
    """Areas of 2-d Hopf oscillators (own frequency each) coupled only along the given edges.

    The channel from source S to target T is rank one: ``c_{T<-S} = strength * u v^T z_S`` enters
    ``dz_T/dt``; no other coupling exists, so an area without incoming edges ignores the rest.
    The origin is the one fixed point (its stability comes from the linearization).

    Args:
        areas: area names in order.
        edges: (source, target) pairs, e.g. ``[("A", "B")]`` for A drives B.
        frequencies: angular frequency per area (default spaced from 2 pi).
        strength: gain of every channel.
        seed: draws the channel directions u, v.
    """

    name = "multi_area"
    area_dim = 2

    def __init__(self, areas=("A", "B"), edges=(("A", "B"),), frequencies=None, mu: float = 1.0,
                 strength: float = 2.0, time_step: float = 0.02, channels=None,
                 seed: int = 0) -> None:
        self.areas = tuple(str(a) for a in areas)
        self.edges = tuple((str(s), str(t)) for s, t in edges)
        for source, target in self.edges:
            for name in (source, target):
                if name not in self.areas:
                    raise ValueError(f"edges: unknown area {name!r} (areas: {self.areas})")
            if source == target:
                raise ValueError(f"edges: self-edge {source!r}->{target!r} is not communication")
        if frequencies is None:
            frequencies = [2 * np.pi * (1.0 + 0.45 * i) for i in range(len(self.areas))]
        self.frequencies = [float(f) for f in frequencies]
        self.mu, self.strength, self.time_step = float(mu), float(strength), float(time_step)
        self.seed = int(seed)
        if channels is None:
            rng = np.random.default_rng(seed)
            channels = {}
            for source, target in self.edges:
                u, v = rng.normal(size=(2, self.area_dim))
                channels[f"{target}<-{source}"] = [list(u / np.linalg.norm(u)),
                                                   list(v / np.linalg.norm(v))]
        self.channels = {k: [list(map(float, u)), list(map(float, v))]
                         for k, (u, v) in channels.items()}

    @property
    def dim(self):
        return self.area_dim * len(self.areas)

    @property
    def params(self):
        return dict(areas=list(self.areas), edges=[list(e) for e in self.edges],
                    frequencies=self.frequencies, mu=self.mu, strength=self.strength,
                    time_step=self.time_step, channels=self.channels, seed=self.seed)

    def _slice(self, area: str) -> slice:
        i = self.areas.index(area)
        return slice(i * self.area_dim, (i + 1) * self.area_dim)

    def channel_matrix(self, key: str) -> np.ndarray:
        """The (target_dim, source_dim) matrix of one channel, ``strength * u v^T``."""
        u, v = (np.asarray(x) for x in self.channels[key])
        return self.strength * np.outer(u, v)

    def communication(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Every channel's signal ``c_{T<-S}(z_S)`` entering the target's field."""
        out = {}
        for source, target in self.edges:
            key = f"{target}<-{source}"
            out[key] = z[..., self._slice(source)] @ self.channel_matrix(key).T
        return out

    def field(self, z, u=None):
        dz = np.empty_like(z)
        for area, omega in zip(self.areas, self.frequencies):
            zs = z[..., self._slice(area)]
            x, y = zs[..., 0], zs[..., 1]
            r2 = x * x + y * y
            dz[..., self._slice(area)] = np.stack(
                [self.mu * x - omega * y - x * r2, omega * x + self.mu * y - y * r2], -1)
        for key, signal in self.communication(z).items():
            target = key.split("<-")[0]
            dz[..., self._slice(target)] += signal
        return dz

    def fixed_points(self):
        points = np.zeros((1, self.dim))
        return points, (classify_stability(np.linalg.eigvals(jacobian(self.field, points[0]))),)

    def initial_states(self, rng, n_trials):
        angle = rng.uniform(0, 2 * np.pi, (n_trials, len(self.areas)))
        radius = rng.uniform(0.3, 1.5, (n_trials, len(self.areas)))
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1).reshape(n_trials, -1)

    def latent_area(self):
        return np.repeat(np.asarray(self.areas), self.area_dim)


class DrivenPair(DynamicalSystem):
    """A limit cycle in area "ctx" drives a leaky integrator in area "str" through a 1-d
    channel; "str" never drives "ctx". Once both are locked on one orbit, each area's state is a
    function of the other's and the data cannot tell who drives whom; the transients from random
    starts can.

    Args:
        burn_in: time units the system runs before the first recorded bin (0: transients
            visible; a few periods: only the locked orbit is seen).
        tau: the integrator's time constant; strength: the channel's gain.
    """

    name = "driven_pair"

    def __init__(self, mu: float = 1.0, omega: float = 2 * np.pi, tau: float = 0.5,
                 strength: float = 2.0, burn_in: float = 0.0, time_step: float = 0.02) -> None:
        self.mu, self.omega, self.tau = float(mu), float(omega), float(tau)
        self.strength, self.burn_in, self.time_step = float(strength), float(burn_in), \
            float(time_step)
        self.direction = np.array([1.0, 0.0])  # str reads ctx's first coordinate

    @property
    def dim(self):
        return 3

    @property
    def params(self):
        return dict(mu=self.mu, omega=self.omega, tau=self.tau, strength=self.strength,
                    burn_in=self.burn_in, time_step=self.time_step)

    def communication(self, z: np.ndarray) -> dict[str, np.ndarray]:
        return {"str<-ctx": self.strength * (z[..., :2] @ self.direction)[..., None]}

    def field(self, z, u=None):
        x, y, s = z[..., 0], z[..., 1], z[..., 2]
        r2 = x * x + y * y
        drive = self.communication(z)["str<-ctx"][..., 0]
        return np.stack([self.mu * x - self.omega * y - x * r2,
                         self.omega * x + self.mu * y - y * r2, -s / self.tau + drive], -1)

    def fixed_points(self):
        points = np.zeros((1, 3))
        return points, (classify_stability(np.linalg.eigvals(jacobian(self.field, points[0]))),)

    def initial_states(self, rng, n_trials):
        angle = rng.uniform(0, 2 * np.pi, n_trials)
        radius = rng.uniform(0.3, 1.5, n_trials)
        z0 = np.stack([radius * np.cos(angle), radius * np.sin(angle),
                       rng.uniform(-1.5, 1.5, n_trials)], -1)
        steps = int(round(self.burn_in / self.time_step))
        if steps:
            z0 = integrate(self.field, z0, steps + 1, self.time_step)[:, -1]
        return z0

    def latent_area(self):
        return np.array(["ctx", "ctx", "str"])


SYSTEMS: dict[str, type[DynamicalSystem]] = {
    cls.name: cls for cls in (Lorenz, Rossler, Arneodo, LimitCycle, RingAttractor, LineAttractor,
                              FlipFlop, MultiArea, DrivenPair)
}


def build_system(name: str, params: dict[str, Any] | None = None) -> DynamicalSystem:
    """Builds a registered system by name, e.g. ``build_system("lorenz", {"rho": 28})``."""
    if name not in SYSTEMS:
        raise ValueError(f"system: unknown system {name!r} (known: {', '.join(SYSTEMS)})")
    return SYSTEMS[name](**(params or {}))
