"""Attractor-recovery benchmark: does a method find the true dynamics, not only the variance?

Systems with known dynamics (limit cycle, ring attractor, line attractor with inputs,
flip-flop, Lorenz), each through a linear and a nonlinear embedding, x methods (pyrodyn's NODE
with the flow readout, NODE with an affine readout, the discrete GRU baseline, or any user
method) x seeds. Each cell is scored on held-out test trials:

- ``co_bps`` (held-out neurons) and ``bits_per_spike`` (held-in), ``rate_r2`` against the true
  rates, ``state_r2_true_to_inferred`` / ``state_r2_inferred_to_true`` (affine maps fit on the
  training trials) and ``state_r2_nonlinear_*`` (a nearest-neighbour regression instead);
- fixed points of the method's vector field or transition map (if it has one), searched from
  its inferred training states and their bounding box, mapped into true coordinates with the
  inferred -> true affine map and matched to the true fixed points (for rings and lines, the
  sampled points of the attractor that the data visit): ``fp_found``, ``fp_true``,
  ``fp_recall`` (matched / true), ``fp_error`` (mean distance of matched pairs over the true
  latents' spread; on rings and lines it includes up to half the sampling spacing, as found
  points sit anywhere along them), ``fp_stability`` (agreement of stability labels), and for
  ring/line attractors whether the slow points form that shape (``shape_recovered``).

A **method** is any callable ``method(train, valid, seed) -> FittedMethod``: it trains on
``train`` (``valid`` for early stopping) and returns functions from trials to inferred latents
and rates, plus its vector field or transition map if it has one.

Example (``pyrodyn benchmark --preset small`` does the same from the shell)::

    rows = run_benchmark(PRESETS["small"], out="benchmark_out")
    print(markdown_table(summarize(rows)))
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._isolation import torch_threads
from .analysis.fixed_points import fixed_point_scores
from .analysis.metrics import apply_affine, fit_affine, mean_rates
from .analysis.scores import score_rates, score_states
from .data import synthetic
from .data.spikes import SpikeData
from .models.base import reported_field

__all__ = ["FittedMethod", "BenchmarkPreset", "PRESETS", "SYSTEMS", "pyrodyn_method",
           "BUILTIN_METHODS", "score_method", "run_benchmark", "summarize", "markdown_table",
           "write_csv", "plot_phase_portraits", "preset_with", "make_data", "run_cell"]

SYSTEMS = ("limit_cycle", "ring_attractor", "line_attractor", "flip_flop", "lorenz")
METRICS = ("co_bps", "bits_per_spike", "rate_r2", "state_r2_true_to_inferred",
           "state_r2_inferred_to_true", "state_r2_nonlinear_true_to_inferred",
           "state_r2_nonlinear_inferred_to_true", "fp_found", "fp_true", "fp_recall", "fp_error",
           "fp_stability", "shape_recovered", "fit_seconds")


@dataclass
class FittedMethod:
    """What a method returns after training.

    Attributes:
        latents: trials (``SpikeData``) -> inferred latents (trial, time, dim).
        rates: trials -> predicted rates in counts per bin (trial, time, neuron), every neuron,
            held-out ones included (predicted from the held-in ones); None if it has none.
        field: its vector field ``f(z) -> dz/dt`` (or map ``z -> F(z)`` with ``discrete``), a
            torch module or a numpy callable on (K, dim); None if it has none.
        discrete: ``field`` is a transition map.
    """

    latents: Callable[[SpikeData], np.ndarray]
    rates: Callable[[SpikeData], np.ndarray] | None = None
    field: Any = None
    discrete: bool = False


Method = Callable[[SpikeData, SpikeData, int], FittedMethod]


@dataclass(frozen=True)
class BenchmarkPreset:
    """Grid and budget of one benchmark run."""

    systems: tuple[str, ...] = SYSTEMS
    embeddings: tuple[str, ...] = synthetic.EMBEDDINGS
    methods: tuple[str, ...] = ("node_flow", "node_affine", "gru")
    seeds: tuple[int, ...] = (0, 1, 2)
    n_trials: int = 300
    n_bins: int = 100
    n_neurons: int = 30
    n_heldout: int = 6
    steps: int = 600
    time_budget: float = 60.0
    fp_starts: int = 500


PRESETS = {
    "tiny": BenchmarkPreset(systems=("limit_cycle",), embeddings=("linear",),
                            methods=("node_affine", "gru"), seeds=(0,), n_trials=24, n_bins=20,
                            n_neurons=10, n_heldout=2, steps=4, time_budget=20.0, fp_starts=50),
    "small": BenchmarkPreset(systems=("limit_cycle", "line_attractor"), embeddings=("linear",),
                             seeds=(0,), n_trials=200, n_bins=60, steps=300, time_budget=40.0,
                             fp_starts=300),
    "full": BenchmarkPreset(),
}


# --------------------------------------------------------------------- pyrodyn's methods
def pyrodyn_method(**config: Any) -> Method:
    """A method from ``RunConfig`` options (e.g. ``readout="affine"``), latent dimension set to
    the system's; ``steps``/``time_budget`` come from the preset unless given (``steps=None``:
    the recipe's plan). Fits shorter than twice the recipe's KL warm-up have their KL warm-up and
    curriculum span their first half; longer ones keep the recipe's. Posteriors are refined
    per trial as the recipe does (``refine_steps``)."""

    def method(train: SpikeData, valid: SpikeData, seed: int, *, steps: int | None = 600,
               time_budget: float | None = None) -> FittedMethod:
        from .config import RunConfig, build_run
        from .inference import fit, posterior_means

        dim = train.truth.latents.shape[-1]
        short = steps is not None and steps < 2 * RunConfig.kl_warmup  # e.g. the presets' 600
        schedule = {"kl_warmup": steps // 2, "curriculum": [10, steps // 2]} if short else {}
        options = {"steps": steps, "time_budget": time_budget, **schedule, **config,
                   "seed": seed, "latent_dim": dim}
        run = RunConfig(**options)
        model, guide = build_run(run, train)
        fit(model, guide, train, valid=valid, progress=False, options=run.fit_options())
        drawn: list[tuple[SpikeData, Any]] = []  # latents and rates of a split share draws

        def means(data: SpikeData):
            for seen, both in drawn:
                if seen is data:
                    return both
            drawn.append((data, posterior_means(model, guide, data,
                                                refine_steps=run.refine_steps)))
            return drawn[-1][1]

        return FittedMethod(latents=lambda data: means(data)[0],
                            rates=lambda data: means(data)[1],
                            field=reported_field(model), discrete=model.field.discrete)

    return method


BUILTIN_METHODS: dict[str, Method] = {
    "node_flow": pyrodyn_method(readout="flow"),
    "node_plane": pyrodyn_method(readout="plane"),
    "node_affine": pyrodyn_method(readout="affine"),
    # LFADS-like: discrete GRU generator with a linear readout.
    "gru": pyrodyn_method(dynamics="gru", readout="affine", diffusion=None),
}


# ------------------------------------------------------------------------------ scoring
def make_data(system: str, embedding: str, seed: int, preset: BenchmarkPreset) -> SpikeData:
    """The benchmark's data set of one cell: split 70/15/15, held-out neurons for co-bps."""
    data = synthetic.GENERATORS[system](n_trials=preset.n_trials, n_bins=preset.n_bins,
                                        n_neurons=preset.n_neurons, embedding=embedding,
                                        seed=seed)
    data = data.with_split(valid=0.15, test=0.15, seed=seed)
    return data.with_heldout_neurons(preset.n_heldout, seed=seed) if preset.n_heldout else data


def score_method(fitted: FittedMethod, train: SpikeData, test: SpikeData, *,
                 fp_starts: int = 500, seed: int = 0
                 ) -> tuple[dict[str, float], dict[str, Any]]:
    """The benchmark's metrics of one fitted method, and what its phase-portrait plot needs."""
    inferred_train, inferred_test = fitted.latents(train), fitted.latents(test)
    truth = test.truth
    scores = score_states(train.truth.latents, inferred_train, truth.latents, inferred_test)
    if fitted.rates is not None:
        null = mean_rates(train.spikes, mask=train.observed_mask(include_heldout=True))
        scores.update(score_rates(fitted.rates(test), test, null_rates=null))
    to_true = fit_affine(inferred_train, train.truth.latents)
    extras: dict[str, Any] = {"inferred_test": apply_affine(inferred_test, to_true),
                              "true_test": truth.latents, "found": None}
    if fitted.field is not None and truth.fixed_points is not None:
        fp_scores, extras["found"] = fixed_point_scores(
            fitted.field, inferred_train, train.truth, discrete=fitted.discrete,
            n_starts=fp_starts, seed=seed)
        scores.update(fp_scores)
    return scores, extras


def run_cell(system: str, embedding: str, method: str | Method, seed: int,
             preset: BenchmarkPreset, *, num_threads: int | None = 1) -> dict[str, Any]:
    """Fits and scores one (system, embedding, method, seed) cell; returns its row."""
    with torch_threads(num_threads):
        return _run_cell(system, embedding, method, seed, preset)


def _run_cell(system, embedding, method, seed, preset) -> dict[str, Any]:
    data = make_data(system, embedding, seed, preset)
    train, valid, test = data.select("train"), data.select("valid"), data.select("test")
    name = method if isinstance(method, str) else getattr(method, "__name__", "method")
    fn = BUILTIN_METHODS[method] if isinstance(method, str) else method
    start = time.perf_counter()
    if isinstance(method, str):
        fitted = fn(train, valid, seed, steps=preset.steps, time_budget=preset.time_budget)
    else:
        fitted = fn(train, valid, seed)
    fit_seconds = time.perf_counter() - start
    scores, extras = score_method(fitted, train, test, fp_starts=preset.fp_starts,
                                  seed=seed)
    row = {"system": system, "embedding": embedding, "method": name, "seed": seed,
           "fit_seconds": fit_seconds, **scores}
    return {"row": row, "portrait": {k: extras[k] for k in ("inferred_test", "true_test",
                                                            "found")},
            "true_fixed_points": train.truth.fixed_points}


def _run_job(job):
    return run_cell(*job)


def run_benchmark(preset: BenchmarkPreset, *, methods: dict[str, Method] | None = None,
                  out: str | Path | None = None, workers: int = 1,
                  log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Runs the grid and returns one row per cell; with ``out``, writes ``results.csv``,
    ``summary.md`` and one phase-portrait PNG per (system, embedding) (first seed).

    Args:
        methods: user methods by name, run beside the preset's built-in ones.
        workers: processes for built-in methods (each on one torch thread).
    """
    for system in preset.systems:
        if system not in SYSTEMS:
            raise ValueError(f"systems: unknown system {system!r} (known: {', '.join(SYSTEMS)})")
    for name in preset.methods:
        if name not in BUILTIN_METHODS:
            raise ValueError(f"methods: unknown method {name!r} "
                             f"(built in: {', '.join(BUILTIN_METHODS)})")
    cells = [(s, e, m, seed) for s in preset.systems for e in preset.embeddings
             for m in [*preset.methods, *(methods or {})] for seed in preset.seeds]
    builtin = [c + (preset,) for c in cells if c[2] in preset.methods]
    results: list[dict[str, Any]] = []
    if workers > 1 and len(builtin) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(_run_job, builtin):
                results.append(result)
                if log:
                    log(_row_line(result["row"]))
    else:
        for job in builtin:
            results.append(_run_job(job))
            if log:
                log(_row_line(results[-1]["row"]))
    for s, e, m, seed in cells:
        if m in (methods or {}):
            method = methods[m]
            result = run_cell(s, e, method, seed, preset, num_threads=None)
            result["row"]["method"] = m
            results.append(result)
            if log:
                log(_row_line(result["row"]))
    rows = [r["row"] for r in results]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out / "results.csv")
        (out / "summary.md").write_text(markdown_table(summarize(rows)) + "\n")
        plot_phase_portraits(results, out)
    return rows


def _row_line(row: dict[str, Any]) -> str:
    shown = ", ".join(f"{k} {row[k]:.3f}" for k in METRICS if k in row and k != "fit_seconds")
    return (f"{row['system']}/{row['embedding']}/{row['method']}/seed {row['seed']}: "
            f"{shown} ({row['fit_seconds']:.0f} s)")


# ------------------------------------------------------------------------------- output
def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median and spread (min-max) over seeds of every metric, per (system, embedding,
    method) cell."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["system"], row["embedding"], row["method"]), []).append(row)
    out = []
    for (system, embedding, method), members in groups.items():
        cell = {"system": system, "embedding": embedding, "method": method,
                "seeds": len(members)}
        for metric in METRICS:
            values = np.array([m[metric] for m in members if metric in m], dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                cell[metric] = (float(np.median(values)), float(values.min()),
                                float(values.max()))
        out.append(cell)
    return out


_COLUMNS = (("co_bps", "co-bps", 3), ("rate_r2", "rate R2", 2),
            ("state_r2_true_to_inferred", "state R2 t->i", 2),
            ("state_r2_inferred_to_true", "state R2 i->t", 2),
            ("state_r2_nonlinear_true_to_inferred", "nonlinear t->i", 2),
            ("state_r2_nonlinear_inferred_to_true", "nonlinear i->t", 2),
            ("fp_found", "FP found", 0),
            ("fp_recall", "FP recall", 2), ("fp_error", "FP error", 2),
            ("fp_stability", "FP stability", 2), ("shape_recovered", "shape", 2))


def markdown_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table: median [min, max] over seeds."""
    header = ["system", "embedding", "method", "seeds"] + [title for _, title, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in summary:
        values = [cell["system"], cell["embedding"], cell["method"], str(cell["seeds"])]
        for key, _, digits in _COLUMNS:
            if key not in cell:
                values.append("-")
                continue
            median, low, high = cell[key]
            text = f"{median:.{digits}f}"
            if cell["seeds"] > 1 and high > low:
                text += f" [{low:.{digits}f}, {high:.{digits}f}]"
            values.append(text)
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One line per cell and seed, every metric a column (empty where it does not apply)."""
    columns = ["system", "embedding", "method", "seed", *METRICS]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(row.get(k), float) and math.isnan(row[k])
                                 else row.get(k, "")) for k in columns})


def plot_phase_portraits(results: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Per (system, embedding), first seed: the true phase portrait with its fixed points, and
    each method's inferred test trajectories and found fixed points in true coordinates
    (first two dimensions)."""
    from . import plots

    by_system: dict[tuple, list] = {}
    for result in results:
        row = result["row"]
        by_system.setdefault((row["system"], row["embedding"]), []).append(result)
    written = []
    for (system, embedding), members in by_system.items():
        first = min(r["row"]["seed"] for r in members)
        members = [r for r in members if r["row"]["seed"] == first]
        fig, axes = plots.subplots(1, len(members) + 1,
                                   figsize=(3.2 * (len(members) + 1), 3.2), squeeze=False)
        true_states = members[0]["portrait"]["true_test"][..., :2].reshape(-1, 2)
        low, high = true_states.min(0), true_states.max(0)
        low, high = low - 0.3 * (high - low), high + 0.3 * (high - low)
        panels = [("truth", members[0]["portrait"]["true_test"],
                   members[0]["true_fixed_points"])]
        panels += [(r["row"]["method"], r["portrait"]["inferred_test"], r["portrait"]["found"])
                   for r in members]
        for ax, (title, latents, points) in zip(axes[0], panels):
            for trial in latents[:12]:
                ax.plot(trial[:, 0], trial[:, 1], lw=0.6, alpha=0.7)
            if points is not None and len(points):
                ax.plot(points[:, 0], points[:, 1], "kx", ms=6, mew=1.5)
            ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]))  # the truth's region
            ax.set_title(title, fontsize=9)
        fig.suptitle(f"{system} ({embedding}): test trials and fixed points (x)", fontsize=10)
        fig.tight_layout()
        path = out / f"phase_{system}_{embedding}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def preset_with(preset: BenchmarkPreset, **changes: Any) -> BenchmarkPreset:
    """A preset with some fields replaced (None values ignored)."""
    return dataclasses.replace(preset, **{k: v for k, v in changes.items() if v is not None})

