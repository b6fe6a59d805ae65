"""Where do a fitted run's latent intervals over-cover? Smooth error against rough spread.

Loads a ``pyrodyn fit`` run, draws the test trials' posterior, maps the latent draws into the
truth's coordinates (the affine map fit on the training trials' posterior means) and prints the
latents' coverage per window of bins, then how smooth the posterior mean's error is against
how smooth the posterior's deviations from its mean are (lag-1 autocorrelation, and the ratio
of their bin-to-bin steps), and how the error compares with the posterior's width, over all
entries, per latent dimension and trial by trial, with the rates' coverage beside it.
``--refine N [N ...]`` repeats it at other per-trial refinement step counts (default: the
run's). Run from the repository root, on data with ground truth:

    .venv/bin/pyrodyn simulate lorenz --out lz.npz --n-trials 1000 --n-bins 100 \\
        --n-neurons 30 --valid 0.15 --test 0.15 --seed 0
    .venv/bin/pyrodyn fit lz.npz --out lzrun
    .venv/bin/python bench/posterior_roughness.py lzrun lz.npz [--refine 0 100 400]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pyrodyn.analysis import apply_affine, coverage, fit_affine
from pyrodyn.cli import _load_run
from pyrodyn.data import io
from pyrodyn.inference import posterior, posterior_means


def lag1(x: np.ndarray, axis: int) -> float:
    """Lag-1 autocorrelation along ``axis``, pooled over every other axis."""
    n = x.shape[axis]
    a, b = np.take(x, range(1, n), axis=axis), np.take(x, range(n - 1), axis=axis)
    return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--refine", type=int, nargs="+",
                        help="per-trial refinement steps (default: the run's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, model, guide, data = _load_run(Path(args.run), io.load(args.data))
    model.parameter_posterior = None  # weight draws would not change the latents
    train, test = data.select("train"), data.select("test")
    train_means = posterior_means(model, guide, train, refine_steps=config.refine_steps)[0]
    affine = fit_affine(train_means, train.truth.latents)
    for refine in args.refine or [config.refine_steps]:
        print(f"## refinement: {refine} steps per trial")
        post = posterior(model, guide, test, num_samples=args.num_samples, refine_steps=refine)
        report(apply_affine(post.draws["latents"], affine), test.truth.latents)
        print("rates", coverage(post.draws["rates"], test.truth.rates, (0.5, 0.9)))


def report(draws: np.ndarray, truth: np.ndarray) -> None:
    """Coverage, smoothness and error against width of latent draws (sample, trial, time, dim)
    in the truth's coordinates."""
    print("latents", coverage(draws, truth, (0.5, 0.9)))
    n_bins = truth.shape[1]
    for low, high in [(0, 5), (5, 20), (20, 50), (50, 80), (80, n_bins)]:
        window = coverage(draws[:, :, low:high], truth[:, low:high], (0.5, 0.9))
        print(f"bins {low}-{high}:", window)
    mean = draws.mean(0)
    error, deviation = truth - mean, draws - mean
    steps = (np.sqrt((np.diff(deviation, axis=2) ** 2).mean())
             / np.sqrt((np.diff(error, axis=1) ** 2).mean()))
    print(f"lag-1 autocorrelation: error {lag1(error, 1):.3f}, posterior deviation "
          f"{lag1(deviation, 2):.3f}; bin-to-bin steps, deviation / error: {steps:.2f}")
    # One width factor cannot fix a posterior whose error-to-width ratio varies by trial: then
    # the standardized errors are heavy-tailed (kurtosis > 3) and trials spread around 1.
    spread = draws.std(0)
    z = error / spread
    per_trial = np.sqrt((error ** 2).mean((1, 2))) / spread.mean((1, 2))
    print(f"error / posterior sd: rms {np.sqrt((z ** 2).mean()):.2f}, kurtosis "
          f"{(z ** 4).mean() / (z ** 2).mean() ** 2:.2f}; per trial (10/50/90%): "
          + " / ".join(f"{q:.2f}" for q in np.quantile(per_trial, [0.1, 0.5, 0.9])))
    # too wide alike in every direction, or in one weakly observed direction?
    for j in range(truth.shape[-1]):
        zj = z[..., j]
        print(f"  dimension {j}: error rms {np.sqrt((error[..., j] ** 2).mean()):.4f}, error / "
              f"sd rms {np.sqrt((zj ** 2).mean()):.2f}, kurtosis "
              f"{(zj ** 4).mean() / (zj ** 2).mean() ** 2:.2f}, "
              f"{coverage(draws[..., j], truth[..., j], (0.5, 0.9))}")


if __name__ == "__main__":
    main()
