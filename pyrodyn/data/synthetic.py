"""Synthetic spike data with known ground truth, for tests, examples and benchmarks.

Each generator simulates a system of ``pyrodyn.data.systems`` (RK4, inputs held per bin), embeds
the standardized latents into log-rates (log-linear or a saturating nonlinear map), scales every
neuron to ``mean_rate`` Hz and draws Poisson counts. The returned ``SpikeData`` carries the
truth: latents, rates (counts per bin), the vector field, the fixed points with their stability,
the inputs and, for multi-area systems, the communication signals. The same seed gives identical
arrays.

Example:
    >>> from pyrodyn.data import synthetic
    >>> data = synthetic.lorenz(n_trials=10, n_bins=50, n_neurons=20, seed=0)
    >>> data.truth.latents.shape, data.truth.fixed_points.shape
    ((10, 50, 3), (3, 3))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .spikes import GroundTruth, SpikeData
from .systems import (
    Arneodo,
    DrivenPair,
    DynamicalSystem,
    FlipFlop,
    LimitCycle,
    LineAttractor,
    Lorenz,
    MultiArea,
    RingAttractor,
    Rossler,
    build_system,
    integrate,
)

__all__ = [
    "simulate",
    "embed",
    "lorenz",
    "rossler",
    "arneodo",
    "limit_cycle",
    "ring_attractor",
    "line_attractor",
    "flip_flop",
    "multi_area",
    "two_area",
    "three_area_chain",
    "bidirectional_pair",
    "driven_pair",
    "phase_locked_pair",
    "GENERATORS",
    "EMBEDDINGS",
    "rebuild_vector_field",
]

EMBEDDINGS = ("linear", "nonlinear")


def embed(
    latents: np.ndarray, n_neurons: int, *, kind: str = "linear", rate_per_bin: float = 0.2,
    gain: float = 1.0, rng: np.random.Generator,
) -> np.ndarray:
    """Maps latents (trial, time, D) to rates in counts per bin (trial, time, n_neurons).

    ``linear``: log r = C z + b. ``nonlinear``: log r = 2 gain tanh(W z + c) + b, a saturating
    map that a linear readout cannot undo with as many latent dimensions. z is the standardized
    latent; b sets every neuron's mean rate to ``rate_per_bin``; ``gain`` is the spread of log r.
    """
    if kind not in EMBEDDINGS:
        raise ValueError(f"embedding: unknown embedding {kind!r} (expected one of {EMBEDDINGS})")
    if n_neurons < 1:
        raise ValueError(f"n_neurons: must be >= 1, got {n_neurons}")
    d = latents.shape[-1]
    z = (latents - latents.mean(axis=(0, 1))) / latents.std(axis=(0, 1)).clip(1e-12)
    weights = rng.normal(size=(n_neurons, d)) / np.sqrt(d)
    if kind == "linear":
        log_rates = gain * z @ weights.T
    else:
        offsets = rng.uniform(-1.0, 1.0, n_neurons)
        log_rates = 2.0 * gain * np.tanh(1.5 * z @ weights.T + offsets)
    log_rates -= np.log(np.exp(log_rates).mean(axis=(0, 1)))
    return rate_per_bin * np.exp(log_rates)


def simulate(
    system: DynamicalSystem | str,
    *,
    n_trials: int = 200,
    n_bins: int = 100,
    n_neurons: int = 30,
    dt: float = 0.01,
    mean_rate: float = 20.0,
    gain: float = 1.0,
    embedding: str = "linear",
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> SpikeData:
    """Simulates any system into spike data with its ground truth.

    Args:
        system: a ``DynamicalSystem`` or a registered name ("lorenz", "ring_attractor", ...).
        n_trials, n_bins: data size; each bin advances the system by its ``time_step``.
        n_neurons: neurons (per area for multi-area systems).
        dt: bin width in seconds (only labels time; dynamics run in system time).
        mean_rate: mean firing rate of every neuron in Hz.
        gain: spread of the log-rates around the mean.
        embedding: "linear" (log-linear) or "nonlinear".
        seed: one seed for start states, inputs, embedding and Poisson draws.
        params: system parameters when ``system`` is a name.
    """
    if isinstance(system, str):
        system = build_system(system, params)
    for name, value in (("n_trials", n_trials), ("n_bins", n_bins)):
        if value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    if mean_rate <= 0:
        raise ValueError(f"mean_rate: must be > 0 Hz, got {mean_rate}")
    rng = np.random.default_rng(seed)
    z0 = system.initial_states(rng, n_trials)
    inputs = system.inputs(rng, n_trials, n_bins)
    latents = integrate(system.field, z0, n_bins, system.time_step, inputs=inputs)

    latent_area = system.latent_area()
    if latent_area is None:
        rates = embed(latents, n_neurons, kind=embedding, rate_per_bin=mean_rate * dt,
                      gain=gain, rng=rng)
        neuron_area = None
    else:
        areas = list(dict.fromkeys(latent_area.tolist()))
        rates = np.concatenate([
            embed(latents[..., latent_area == a], n_neurons, kind=embedding,
                  rate_per_bin=mean_rate * dt, gain=gain, rng=rng) for a in areas], axis=-1)
        neuron_area = np.repeat(areas, n_neurons)
    spikes = rng.poisson(rates)
    points, stability = system.fixed_points()
    communication = (system.communication(latents) if isinstance(system, (MultiArea, DrivenPair))
                     else {})
    truth = GroundTruth(
        rates=rates, latents=latents, latent_area=latent_area, fixed_points=points,
        stability=stability, vector_field=system, communication=communication,
        system=system.name, system_params=system.params,
    )
    return SpikeData(
        spikes, dt=dt, neuron_area=neuron_area, inputs=inputs, truth=truth,
        meta=dict(system=system.name, embedding=embedding, mean_rate=mean_rate, gain=gain,
                  seed=seed, n_neurons_per_area=n_neurons),
    )


def rebuild_vector_field(name: str, params: dict[str, Any]) -> DynamicalSystem | None:
    """The vector field of a saved data set's system (None for a name this version lacks)."""
    try:
        return build_system(name, params)
    except (ValueError, TypeError):
        return None


def _generator(cls: type[DynamicalSystem], doc: str):
    def generate(*, n_trials: int = 200, n_bins: int = 100, n_neurons: int = 30,
                 dt: float = 0.01, mean_rate: float = 20.0, gain: float = 1.0,
                 embedding: str = "linear", seed: int = 0, **params: Any) -> SpikeData:
        return simulate(cls(**params), n_trials=n_trials, n_bins=n_bins, n_neurons=n_neurons,
                        dt=dt, mean_rate=mean_rate, gain=gain, embedding=embedding, seed=seed)

    generate.__name__ = cls.name
    generate.__doc__ = (f"{doc}\n\n    Takes ``simulate``'s options; other keywords are "
                        f"``{cls.__name__}`` parameters.")
    return generate


lorenz = _generator(Lorenz, "Lorenz attractor (3 latents): chaotic, three unstable fixed points.")
rossler = _generator(Rossler, "Rössler attractor (3 latents): chaotic, two unstable "
                     "saddle-foci.")
arneodo = _generator(Arneodo, "Arneodo attractor (3 latents): chaotic, three unstable fixed "
                     "points.")
limit_cycle = _generator(LimitCycle, "Stable limit cycle (2 latents) around an unstable focus.")
ring_attractor = _generator(RingAttractor, "Ring attractor (2 latents) moved by input pulses.")
line_attractor = _generator(LineAttractor, "Line attractor (2 latents) integrating input pulses.")
flip_flop = _generator(FlipFlop, "Multistable flip-flop (n_bits latents) switched by pulses.")
multi_area = _generator(MultiArea, "Areas coupled only through given low-rank channels.")


driven_pair = _generator(DrivenPair, "A limit cycle (ctx) drives a leaky integrator (str), "
                         "never the reverse; burn_in hides the transients.")


def phase_locked_pair(**options: Any) -> SpikeData:
    """``driven_pair`` observed only after 10 time units of burn-in: both areas locked on one
    orbit, so the direction of the channel is not identifiable from the data."""
    return driven_pair(burn_in=10.0, **options)


def two_area(**options: Any) -> SpikeData:
    """Two areas, A drives B through a rank-1 channel and B does not drive A."""
    return multi_area(areas=("A", "B"), edges=(("A", "B"),), **options)


def three_area_chain(**options: Any) -> SpikeData:
    """Three areas in a chain A -> B -> C (no direct A -> C channel)."""
    return multi_area(areas=("A", "B", "C"), edges=(("A", "B"), ("B", "C")), **options)


def bidirectional_pair(**options: Any) -> SpikeData:
    """Two areas driving each other (A -> B and B -> A)."""
    return multi_area(areas=("A", "B"), edges=(("A", "B"), ("B", "A")), **options)


GENERATORS = {
    "lorenz": lorenz,
    "rossler": rossler,
    "arneodo": arneodo,
    "limit_cycle": limit_cycle,
    "ring_attractor": ring_attractor,
    "line_attractor": line_attractor,
    "flip_flop": flip_flop,
    "two_area": two_area,
    "three_area_chain": three_area_chain,
    "bidirectional_pair": bidirectional_pair,
    "driven_pair": driven_pair,
    "phase_locked_pair": phase_locked_pair,
}
