"""Ground-truth test of who drives whom: multi-area model against one pooled single-area model.

Systems (pyrodyn.data.synthetic, 2-d Hopf oscillators per area coupled by rank-1 channels):
two_area (A -> B only), three_area_chain (A -> B -> C, no A -> C), bidirectional_pair
(A <-> B). For each, a ``MultiAreaModel`` with every ordered pair of channels available and a
pooled ``LatentODEModel`` on all neurons are fit at the same seed and budget, and scored on
held-out test trials: bits per spike, rate R2, per-area state R2 (true -> inferred, affine map
fit on the training trials), and, for the multi-area model, every channel's strength with its
90% posterior interval beside the true strength (0 for absent channels). Posteriors are refined
per trial (``refine_steps``), as the recipe's are; strength intervals come from
``INTERVAL_SAMPLES`` draws, as ``pyrodyn fit`` writes them (100 draws before 2026-12-07). The
recipe is the (d) figures' of 2026-12-04 (batch 256, 1500 steps) unless ``--default-recipe``
fits with ``pyrodyn fit``'s defaults (batch 128, steps planned from the data). Run from the
root:

    .venv/bin/python bench/multi_area.py                    # all systems, both models
    .venv/bin/python bench/multi_area.py --systems two_area --models multi_area
    .venv/bin/python bench/multi_area.py --models multi_area --default-recipe
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from pyrodyn.analysis import communication_summary, state_r2, true_communication_strengths
from pyrodyn.analysis.communication import INTERVAL_SAMPLES, communication_sites
from pyrodyn.config import RunConfig, build_run
from pyrodyn.data import synthetic
from pyrodyn.inference import (
    channel_scale_laplace,
    evaluate,
    fit,
    has_channel_scales,
    posterior,
    posterior_means,
)
from pyrodyn.models import sites

SYSTEMS = ("two_area", "three_area_chain", "bidirectional_pair")
MODELS = ("multi_area", "pooled")
# 2 latents per area (each area is a 2-d oscillator); the pooled model gets as many in total.
CONFIG = RunConfig(latent_dim=2, hidden=64, steps=1500, batch_size=256, kl_warmup=500,
                   curriculum=[10, 500])  # the recipe of the README's (d) figures


def area_state_r2(data_train, data_test, latents_train, latents_test, area_columns) -> dict:
    """State R2 per area, [true -> inferred, inferred -> true]: area A's true latents against
    ``area_columns[A]`` of the inferred latents (the area's own latents in a multi-area model;
    all latents of a pooled model, where true -> inferred is low by construction because the
    pooled latents also hold the other areas, so inferred -> true is its fair figure)."""
    truth_area = data_train.truth.latent_area
    out = {}
    for area, columns in area_columns.items():
        true = np.concatenate([data_train.truth.latents, data_test.truth.latents])
        inferred = np.concatenate([latents_train, latents_test])[..., columns]
        both = state_r2(true[..., truth_area == area], inferred,
                        train=np.arange(data_train.n_trials),
                        test=np.arange(data_train.n_trials, data_train.n_trials +
                                       data_test.n_trials))
        out[area] = [both.true_to_inferred, both.inferred_to_true]
    return out


def run(system: str, model_kind: str, *, n_trials: int, n_neurons: int, steps: int | None,
        budget: float, seed: int, base: RunConfig = CONFIG) -> dict:
    data = synthetic.GENERATORS[system](n_trials=n_trials, n_bins=100, n_neurons=n_neurons,
                                        seed=seed).with_split(valid=0.15, test=0.15, seed=seed)
    train, valid, test = data.select("train"), data.select("valid"), data.select("test")
    areas = list(data.areas)
    latent_dim = base.latent_dim * (len(areas) if model_kind == "pooled" else 1)
    config = dataclasses.replace(
        base, model="multi_area" if model_kind == "multi_area" else "latent_ode",
        latent_dim=latent_dim, seed=seed)
    model, guide = build_run(config, train)
    start = time.perf_counter()
    result = fit(model, guide, train, valid=valid, options=config.fit_options(), steps=steps,
                 time_budget=budget, seed=seed, progress=False)
    wall = time.perf_counter() - start
    # Posteriors refined per trial as the recipe does (``pyrodyn fit`` / ``posterior``).
    refine = config.refine_steps
    scores = evaluate(model, guide, train, test, refine_steps=refine)
    train_latents = posterior_means(model, guide, train, refine_steps=refine)[0]
    if has_channel_scales(model):  # as `pyrodyn fit` does: the test draws carry the scales
        model.parameter_posterior = channel_scale_laplace(model, guide, train,
                                                          refine_steps=refine)
    names = None if model_kind == "pooled" else (*communication_sites(model), sites.LATENTS)
    post_test = posterior(model, guide, test, num_samples=INTERVAL_SAMPLES, refine_steps=refine,
                          names=names)
    if model_kind == "multi_area":
        offsets = np.cumsum([0] + [model.latent_dims[a] for a in areas])
        columns = {a: np.arange(offsets[i], offsets[i + 1]) for i, a in enumerate(areas)}
    else:
        columns = {a: np.arange(latent_dim) for a in areas}
    per_area = area_state_r2(train, test, train_latents,
                             post_test.mean("latents"), columns)
    row = dict(system=system, model=model_kind, seed=seed, steps=result.steps,
               fit_seconds=round(wall, 1),
               bps_ratio=scores["bits_per_spike"] / scores["true_bits_per_spike"],
               rate_r2=scores["rate_r2"],
               state_r2_true_to_inferred=scores["state_r2_true_to_inferred"],
               area_state_r2=per_area)
    if model_kind == "multi_area":
        truth = true_communication_strengths(test, areas)
        summary = communication_summary(post_test)
        row["channels"] = {name: dict(true=truth[name], strength=s.strength,
                                      interval=list(s.interval),
                                      source_from_target_r2=s.source_from_target_r2)
                           for name, s in summary.items()}
        row.update(channel_verdict(row["channels"]))
    return row


def channel_verdict(channels: dict, fraction: float = 0.1) -> dict:
    """The acceptance checks: every true channel stronger than every absent one, each absent
    channel's upper interval bound below ``fraction`` of the weakest true strength, and how many
    true strengths lie inside their intervals."""
    true = {k: v for k, v in channels.items() if v["true"] > 0}
    absent = {k: v for k, v in channels.items() if v["true"] == 0}
    covered = sum(v["interval"][0] <= v["true"] <= v["interval"][1] for v in true.values())
    weakest = min(v["strength"] for v in true.values())
    strongest_absent = max((v["strength"] for v in absent.values()), default=0.0)
    absent_upper = max((v["interval"][1] for v in absent.values()), default=0.0)
    return dict(true_in_interval=f"{covered} of {len(true)}",
                true_above_absent=weakest > strongest_absent,
                absent_upper_over_weakest_true=absent_upper / weakest,
                absent_below_fraction=absent_upper < fraction * weakest)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--neurons", type=int, default=20, help="neurons per area")
    parser.add_argument("--steps", type=int, help="default: the recipe's")
    parser.add_argument("--default-recipe", action="store_true",
                        help="pyrodyn fit's defaults (2 latents per area) instead of the (d) "
                             "recipe of 2026-12-04")
    parser.add_argument("--budget", type=float, default=840.0,
                        help="seconds of fitting per model (the acceptance allows 900)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="RunConfig overrides, e.g. coupling_prior=30")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = RunConfig(latent_dim=2) if args.default_recipe else CONFIG
    base = RunConfig.from_sources(overrides=args.set, **recipe.to_dict())
    steps = base.steps if args.steps is None else args.steps
    rows = []
    for system in args.systems:
        for kind in args.models:
            row = run(system, kind, n_trials=args.trials, n_neurons=args.neurons,
                      steps=steps, budget=args.budget, seed=args.seed, base=base)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| system | model | fit s | bps / true | rate R2 | state R2 per area (true->inf) "
             "[i->t] | channels: strength [90% interval] (true) |", "|---" * 6 + "|"]
    for r in rows:
        areas = ", ".join(f"{a} {v[0]:.2f} [{v[1]:.2f}]" for a, v in r["area_state_r2"].items())
        channels = "; ".join(
            f"{k} {c['strength']:.3f} [{c['interval'][0]:.3f}, {c['interval'][1]:.3f}] "
            f"({c['true']:.3f})" for k, c in r.get("channels", {}).items()) or "-"
        lines.append(f"| {r['system']} | {r['model']} | {r['fit_seconds']:.0f} | "
                     f"{r['bps_ratio']:.3f} | {r['rate_r2']:.3f} | {areas} | {channels} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
