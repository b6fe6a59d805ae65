"""The best forward prediction any model could make: a particle filter with the true system.

fp-bps (``bench/calibration.py``, ``evaluate(..., forward_bins=20)``) is quoted as a share of
the true rates' figure, but the true rates know each trial's exact state, and no model that
sees only spikes does. This bench measures the attainable share. On the same data and test
trials as ``bench/calibration.py``, a bootstrap particle filter runs the data's own system
(``integrate``, RK4) and its own log-linear readout (recovered exactly from the true rates) over
each test trial's first ``n_bins - forward_bins`` bins, from start states drawn from the
system's own start distribution (a pool of up to 50000 draws). It then runs every particle on,
deterministically, and predicts the forward bins' rates as the particles' weighted mean: the
Bayes-optimal forecast under the true model. Its fp-bps, over the true rates', is the ceiling
of that ratio.

After a resampling the particles are jittered (Liu and West's shrinkage kernel, bandwidth
``--jitter``), since copies of a deterministic particle never part again. Run it at two
particle counts and two bandwidths: where the figures agree, the filter has converged.

    .venv/bin/python bench/oracle_forecast.py --neurons 8
    .venv/bin/python bench/oracle_forecast.py --neurons 8 --particles 8000 --jitter 0.03
    .venv/bin/python bench/oracle_forecast.py --neurons 30
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from pyrodyn.analysis import bits_per_spike, mean_rates
from pyrodyn.data import synthetic
from pyrodyn.data.systems import integrate


def log_linear_readout(latents: np.ndarray, rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weights (D, N), offsets (N,)) with log rates = latents @ weights + offsets, by least
    squares over every trial and bin; raises if the embedding is not log-linear."""
    z = latents.reshape(-1, latents.shape[-1])
    design = np.column_stack([z, np.ones(len(z))])
    target = np.log(rates.reshape(-1, rates.shape[-1]))
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    error = np.abs(design @ coef - target).max()
    if error > 1e-6:
        raise ValueError(f"the data's embedding is not log-linear (max error {error:.2g})")
    return coef[:-1], coef[-1]


def particle_forecast(system, spikes, inputs, weights, offsets, starts, *, forward_bins: int,
                      jitter: float, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Filters each trial's first bins with particles (trial, particle, D) started at
    ``starts``; returns the predicted forward rates (trial, forward_bins, neuron), the
    filtered mean state at the last seen bin (trial, D) and the mean effective sample size
    after each seen bin."""
    n_trials, n_bins, _ = spikes.shape
    n_particles, dim = starts.shape[1], starts.shape[2]
    z = starts.reshape(-1, dim)
    log_w = np.zeros((n_trials, n_particles))
    ess = []
    seen = n_bins - forward_bins
    for t in range(seen):
        log_r = z.reshape(n_trials, n_particles, dim) @ weights + offsets
        log_w += (spikes[:, None, t] * log_r - np.exp(log_r)).sum(-1)
        w = _normalized(log_w)
        n_eff = 1.0 / (w ** 2).sum(axis=1)
        ess.append(float(n_eff.mean()))
        low = n_eff < n_particles / 2
        if low.any():
            z = z.reshape(n_trials, n_particles, dim)
            z[low] = _resample_and_jitter(z[low], w[low], jitter, rng)
            log_w[low] = 0.0
            z = z.reshape(-1, dim)
        if t < seen - 1:
            z = _step(system, z, inputs, t, n_particles)
    # run on from the last seen bin: the states of bins seen .. n_bins - 1
    u = None if inputs is None else np.repeat(inputs[:, seen - 1:], n_particles, axis=0)
    path = integrate(system.field, z, forward_bins + 1, system.time_step, inputs=u)[:, 1:]
    path = path.reshape(n_trials, n_particles, forward_bins, dim)
    w = _normalized(log_w)  # after any resampling of the last seen bin
    last = np.einsum("tp,tpd->td", w, z.reshape(n_trials, n_particles, dim))
    # one bin at a time: (trial, particle, bin, neuron) at once can outgrow the memory
    predicted = np.stack([np.einsum("tp,tpn->tn", w, np.exp(path[:, :, b] @ weights + offsets))
                          for b in range(forward_bins)], axis=1)
    return predicted, last, np.asarray(ess)


def _normalized(log_w):
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def _step(system, z, inputs, t, n_particles):
    u = None if inputs is None else np.repeat(inputs[:, t:t + 1], n_particles, axis=0)
    return integrate(system.field, z, 2, system.time_step, inputs=u)[:, 1]


def _resample_and_jitter(z, w, jitter, rng):
    """Systematic resampling per trial (trial, particle, D), then Liu-West jitter: shrink each
    copy toward the weighted mean by sqrt(1 - h^2) and add noise of h^2 times the weighted
    covariance, so the particles' mean and covariance are kept."""
    n_trials, n_particles, dim = z.shape
    mean = np.einsum("tp,tpd->td", w, z)
    centred = z - mean[:, None]
    cov = np.einsum("tp,tpd,tpe->tde", w, centred, centred) + 1e-9 * np.eye(dim)
    positions = (rng.random((n_trials, 1)) + np.arange(n_particles)) / n_particles
    index = np.minimum(np.array([np.searchsorted(c, p) for c, p in
                                 zip(np.cumsum(w, axis=1), positions)]), n_particles - 1)
    picked = np.take_along_axis(z, index[..., None], axis=1)
    shrink = np.sqrt(1.0 - jitter ** 2)
    noise = np.einsum("tde,tpe->tpd", np.linalg.cholesky(cov),
                      rng.standard_normal((n_trials, n_particles, dim)))
    return shrink * picked + (1.0 - shrink) * mean[:, None] + jitter * noise


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="lorenz", choices=sorted(synthetic.GENERATORS))
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--neurons", type=int, default=30)
    parser.add_argument("--forward-bins", type=int, default=20)
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--jitter", type=float, default=0.1, help="Liu-West bandwidth h")
    parser.add_argument("--seed", type=int, default=0, help="the data's seed")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    # the data and split of bench/calibration.py
    data = synthetic.GENERATORS[args.system](n_trials=args.trials, n_bins=100,
                                             n_neurons=args.neurons, seed=args.seed)
    data = data.with_split(valid=0.15, test=0.15, seed=args.seed)
    train, test = data.select("train"), data.select("test")
    system = data.truth.vector_field
    weights, offsets = log_linear_readout(data.truth.latents, data.truth.rates)
    rng = np.random.default_rng(1000 + args.seed)
    # draws of the system's own start distribution, a pool shared by the trials (its burn-in
    # is the slow part)
    pool = system.initial_states(rng, min(test.n_trials * args.particles, 50000))
    starts = pool[rng.integers(len(pool), size=(test.n_trials, args.particles))]
    predicted, last, ess = particle_forecast(
        system, test.spikes.astype(np.float64), test.inputs, weights, offsets, starts,
        forward_bins=args.forward_bins, jitter=args.jitter, rng=rng)
    window = slice(test.n_bins - args.forward_bins, None)
    null = mean_rates(train.spikes)
    spikes = test.spikes[:, window]
    oracle = bits_per_spike(predicted, spikes, null_rates=null)
    true = bits_per_spike(test.truth.rates[:, window], spikes, null_rates=null)
    # how well the last seen bin's state is known: R2 of the filtered mean against the truth
    truth_last = test.truth.latents[:, window.start - 1]
    spread = ((truth_last - truth_last.mean(0)) ** 2).sum()
    last_r2 = 1 - ((last - truth_last) ** 2).sum() / spread
    row = dict(system=args.system, neurons=args.neurons, particles=args.particles,
               jitter=args.jitter, oracle_fp_bps=oracle, true_fp_bps=true,
               oracle_fp_bps_ratio=oracle / true, last_seen_state_r2=float(last_r2),
               min_mean_ess=float(ess.min()),
               seconds=round(time.perf_counter() - start, 1))
    print(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    main()
