"""How well do the data pin down each channel's strength? The profile of the held-out-style
evidence along each channel's scale.

A channel's strength interval from ``communication_summary`` covers the posterior of the paths
given the fitted weights. This measures what the weights themselves are worth: each channel's
output is scaled by ``a`` (everything else at the fit), and the importance-weighted log
marginal likelihood of the trials, log p(spikes | a) (``heldout_evidence``, the guide refined
per trial as its proposal, the same random numbers for every ``a``), is compared with ``a = 1``.
A quadratic through the profile gives the curvature, the standard deviation of ``a`` it
implies, and the 90% profile interval of the strength (``a`` where the log marginal is within
1.35 nats, half the 90% quantile of chi2(1), of its peak). On ``pyrodyn simulate`` data the
true strength is printed beside it.

    .venv/bin/python bench/channel_profile.py RUN DATA [--split train]
        [--scales 0.94 0.97 1 1.03 1.06]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pyrodyn.analysis import communication_summary, true_communication_strengths
from pyrodyn.cli import _load_run
from pyrodyn.data import io
from pyrodyn.inference import heldout_evidence, posterior

CHI2_90_HALF = 1.353  # half the 0.9 quantile of chi2 with one degree of freedom


def scaled(channel: torch.nn.Module, a: float):
    """A forward hook scaling the channel's output by ``a`` (remove it when done)."""
    return channel.register_forward_hook(lambda module, args, output: output * a)


def profile(model, guide, train, trials, channel: str, scales, *, particles, refine):
    """Per scale: log p of every trial of ``trials`` with the channel scaled."""
    module = model.field.channels[channel]
    out = {}
    for a in scales:
        handle = scaled(module, a)
        try:
            out[a] = heldout_evidence(model, guide, train, trials, num_particles=particles,
                                      refine_steps=refine).log_marginal
        finally:
            handle.remove()
    return out


def summarize(logp: dict[float, np.ndarray]) -> dict:
    scales = np.array(sorted(logp))
    total = np.array([logp[a].sum() for a in scales])
    base = logp[1.0] if 1.0 in logp else logp[scales[len(scales) // 2]]
    c2, c1, c0 = np.polyfit(scales, total, 2)
    row = {"scales": scales.tolist(),
           "log_p_change": [round(float(t - base.sum()), 2) for t in total],
           "se_between_trials": [round(float(np.std(logp[a] - base, ddof=1)
                                             * np.sqrt(base.size)), 2) for a in scales]}
    if c2 < 0:
        peak = -c1 / (2 * c2)
        half_width = np.sqrt(CHI2_90_HALF / -c2)
        row.update(peak=round(float(peak), 4), sd=round(float(1 / np.sqrt(-2 * c2)), 4),
                   interval=[round(float(peak - half_width), 4),
                             round(float(peak + half_width), 4)])
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--split", default="train")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.94, 0.97, 1.0, 1.03, 1.06])
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--max-trials", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, model, guide, data = _load_run(Path(args.run), io.load(args.data))
    train, held = data.select("train"), data.select(args.split)
    if held.n_trials > args.max_trials:
        held = held.select(np.arange(args.max_trials))
    summary = communication_summary(posterior(model, guide, data.select("test"), num_samples=50,
                                              refine_steps=config.refine_steps))
    truth = true_communication_strengths(data.select("test")) if data.truth is not None else {}
    for name, channel in summary.items():
        start = time.perf_counter()
        row = summarize(profile(model, guide, train, held, name, args.scales,
                                particles=args.particles, refine=config.refine_steps))
        row.update(channel=name, strength=round(channel.strength, 5),
                   path_interval=[round(x, 5) for x in channel.interval],
                   true=None if name not in truth else round(truth[name], 5),
                   trials=held.n_trials, seconds=round(time.perf_counter() - start))
        if "interval" in row:
            row["profile_strength_interval"] = [round(channel.strength * a, 5)
                                                for a in row["interval"]]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
