"""Choosing the readout and the latent dimensionality from held-out evidence.

``select`` fits a ladder of models (each latent dimensionality x each readout) with one recipe
on the training trials, scores each on the validation trials with ``heldout_evidence`` (the
importance-weighted log p(trial), with the guide refined per trial as the recipe's scores are)
and picks the **smallest model within one standard error of the best**: a more complex model
(more latent dimensions, or a nonlinear readout where an affine one does as well) must earn its
place by predicting held-out trials better than chance would. Chance has two parts. Trials
differ: the paired standard error over trials (both models score the same trials), as ArviZ's
``compare`` computes it. Fits differ: the best model is fitted again with other seeds
(``refits``), and the spread of its evidence between those fits (``refit_spread``, nats per
trial) counts for each of the two models compared. Models are ordered by latent
dimensionality, then by readout (``affine`` < ``plane`` < ``flow`` < ``residual_flow`` <
``mlp``).

Example::

    selection = select(data, latent_dims=[1, 2, 3, 4], readouts=["affine", "flow"],
                       budget=1200)
    selection.chosen.latent_dim, selection.chosen.readout
    print(selection.markdown())

``pyrodyn select DATA --out DIR`` does the same from the shell and writes ``selection.csv``,
``selection.md``, ``selection.png`` and ``selected.yaml`` (the chosen config, which
``pyrodyn fit --config`` reruns); ``pyrodyn fit --latent-dim auto`` selects, then fits.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig, build_run
from .data.spikes import SpikeData
from .inference import Evidence, fit, heldout_evidence

__all__ = ["Candidate", "Selection", "select", "choose", "tolerance", "parse_latent_dims",
           "READOUT_ORDER"]

logger = logging.getLogger("pyrodyn")

READOUT_ORDER = ("affine", "plane", "flow", "residual_flow", "mlp")  # simplest first


@dataclass
class Candidate:
    """One fitted model of the ladder and its held-out evidence."""

    latent_dim: int
    readout: str
    evidence: Evidence
    fit_seconds: float
    steps: int
    model: Any = field(default=None, repr=False)
    guide: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.readout}, {self.latent_dim}-d"

    @property
    def complexity(self) -> tuple[int, int]:
        order = READOUT_ORDER.index(self.readout) if self.readout in READOUT_ORDER else 99
        return self.latent_dim, order


@dataclass
class Selection:
    """The fitted ladder: ``best`` has the highest held-out evidence, ``chosen`` is the
    simplest within one standard error of it (trials' and refits' spread together)."""

    candidates: list[Candidate]
    best: Candidate
    chosen: Candidate
    config: RunConfig
    refit_spread: float = 0.0  # sd of the best model's evidence between seeds (nats/trial)
    refit_evidence: list[float] = field(default_factory=list)  # its refits' log p per trial

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate, simplest first: evidence per trial (nats) with its
        standard errors, the difference to the best with its paired standard error,
        bits per spike of the evidence and, with held-out neurons, co-bps."""
        rows = []
        for c in sorted(self.candidates, key=lambda c: c.complexity):
            summary = c.evidence.summary()
            diff, diff_se = c.evidence.compare(self.best.evidence)
            row = {"latent_dim": c.latent_dim, "readout": c.readout,
                   "log_marginal": summary["log_marginal"],
                   "log_marginal_se": summary["log_marginal_se"],
                   "log_marginal_mc_se": summary["log_marginal_mc_se"],
                   "diff_to_best": diff, "diff_se": diff_se,
                   "tolerance": tolerance(diff_se, self.refit_spread)}
            for key in ("evidence_bps", "evidence_bps_se", "co_bps", "co_bps_se"):
                if key in summary:
                    row[key] = summary[key]
            row.update(fit_seconds=round(c.fit_seconds, 1), steps=c.steps,
                       best=c is self.best, chosen=c is self.chosen)
            rows.append(row)
        return rows

    def csv(self) -> str:
        rows = self.rows()
        keys = list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def markdown(self) -> str:
        """The ladder as a Markdown table (nats per trial; SE over validation trials)."""
        lines = ["| latent dims | readout | log p per trial | vs best (paired SE) | tolerance | "
                 "evidence bits/spike | co-bps | fit s | |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for row in self.rows():
            mark = "chosen" if row["chosen"] else ("best" if row["best"] else "")
            co = (f"{row['co_bps']:.3f} ± {row['co_bps_se']:.3f}" if "co_bps" in row else "-")
            bps = (f"{row['evidence_bps']:.3f}" if "evidence_bps" in row else "-")
            lines.append(
                f"| {row['latent_dim']} | {row['readout']} | {row['log_marginal']:.2f} ± "
                f"{row['log_marginal_se']:.2f} | {row['diff_to_best']:+.2f} ± "
                f"{row['diff_se']:.2f} | {row['tolerance']:.2f} | {bps} | {co} | "
                f"{row['fit_seconds']:.0f} | {mark} |")
        if self.refit_evidence:
            refits = ", ".join(f"{v:.2f}" for v in self.refit_evidence)
            lines.append(f"\nThe best refitted with other seeds: log p per trial {refits}; "
                         f"spread between fits {self.refit_spread:.2f}. Tolerance: "
                         "sqrt(paired SE^2 + 2 spread^2).")
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> None:
        """selection.csv, selection.md, selection.png and selected.yaml into ``folder``."""
        import yaml

        from . import plots, runs

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        runs.write_text(folder / "selection.csv", self.csv())
        runs.write_text(folder / "selection.md", self.markdown())
        runs.write_text(folder / "selected.yaml",
                        yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        runs.save_figure(plots.plot_selection(self.rows()), folder / "selection.png", dpi=120)


def parse_latent_dims(text: str) -> list[int]:
    """"1-8", "2,3,5" or "1-3,6" -> sorted dimensionalities.

    Example:
        >>> parse_latent_dims("1-3,6")
        [1, 2, 3, 6]
    """
    dims: set[int] = set()
    for part in str(text).split(","):
        low, sep, high = part.strip().partition("-")
        try:
            values = range(int(low), int(high) + 1) if sep else [int(low)]
        except ValueError:
            raise ValueError(f"latent_dims: expected e.g. 1-8 or 2,3,5, got {text!r}") from None
        dims.update(values)
    if not dims or min(dims) < 1:
        raise ValueError(f"latent_dims: need dimensionalities >= 1, got {text!r}")
    return sorted(dims)


def select(data: SpikeData, *, latent_dims: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
           readouts: Sequence[str] | None = None, config: RunConfig | None = None,
           budget: float | None = None, num_particles: int = 32, refits: int = 1,
           keep_models: bool = False) -> Selection:
    """Fits every (latent dimensionality, readout) pair with ``config``'s recipe on the
    training trials of ``data`` and chooses by held-out evidence on its validation trials.

    Args:
        latent_dims, readouts: the ladder (readouts default to ``config.readout``, the one
            a plain fit uses).
        config: the recipe (default ``RunConfig()``); its ``latent_dim`` and ``readout`` are
            replaced by each candidate's.
        budget: seconds of fitting for the whole ladder and the refits, shared equally, each
            fit's schedule run on the clock (``FitOptions.budget``; default: each fit runs the
            recipe as is).
        num_particles: importance samples per validation trial.
        refits: fits of the best model with other seeds (``config.seed + 1, ...``), whose
            spread widens the tolerance (0: trials' spread only).
        keep_models: keep each candidate's fitted model and guide (memory).

    Raises:
        ValueError: no validation trials, an empty ladder, a readout or dimensionality the
            data cannot take (all checked before the first fit).
    """
    config = config or RunConfig()
    readouts = [config.readout] if readouts is None else readouts
    if data.split is None or not (data.split == "valid").any():
        raise ValueError("data: select needs validation trials to score the candidates on "
                         "(SpikeData.with_split(valid=0.15, ...))")
    ladder = [(d, r) for d in sorted(set(int(d) for d in latent_dims)) for r in
              dict.fromkeys(readouts)]
    if not ladder:
        raise ValueError("select: the ladder is empty (give latent_dims and readouts)")
    if isinstance(refits, bool) or not isinstance(refits, int) or refits < 0:
        raise ValueError(f"refits: must be an integer >= 0, got {refits!r}")
    train, valid = data.select("train"), data.select("valid")
    configs = [dataclasses.replace(config, latent_dim=d, readout=r) for d, r in ladder]
    built = [build_run(c, train) for c in configs]  # every candidate checked before any fit
    per_fit = None if budget is None else budget / (len(ladder) + refits)

    def fit_and_score(candidate_config: RunConfig, model, guide) -> Candidate:
        start = time.perf_counter()
        options = candidate_config.fit_options()
        if per_fit is not None:
            options = dataclasses.replace(options, budget=per_fit)
        result = fit(model, guide, train, valid=valid, options=options, progress=False)
        seconds = time.perf_counter() - start
        evidence = heldout_evidence(model, guide, train, valid, num_particles=num_particles,
                                    refine_steps=candidate_config.refine_steps,
                                    device=candidate_config.device, seed=candidate_config.seed)
        candidate = Candidate(candidate_config.latent_dim, candidate_config.readout, evidence,
                              seconds, result.steps, *((model, guide) if keep_models else ()))
        summary = evidence.summary()
        logger.info("select: %s (seed %d): log p per trial %.2f ± %.2f (%d steps, %.0f s)",
                    candidate.label, candidate_config.seed, summary["log_marginal"],
                    summary["log_marginal_se"], result.steps, seconds)
        return candidate

    candidates = [fit_and_score(c, *pair) for c, pair in zip(configs, built)]
    best, _ = choose(candidates)
    best_config = configs[candidates.index(best)]
    refit_evidence = []
    for k in range(1, refits + 1):
        again = dataclasses.replace(best_config, seed=best_config.seed + k)
        refit = fit_and_score(again, *build_run(again, train))
        refit_evidence.append(refit.evidence.summary()["log_marginal"])
    means = [best.evidence.summary()["log_marginal"], *refit_evidence]
    spread = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    best, chosen = choose(candidates, refit_spread=spread)
    return Selection(candidates, best, chosen, configs[candidates.index(chosen)],
                     refit_spread=spread, refit_evidence=refit_evidence)


def tolerance(paired_se: float, refit_spread: float = 0.0) -> float:
    """How far (nats per trial) a model may fall behind the best and still count as as good:
    one standard error of the difference, from the trials (``paired_se``) and from refitting
    each of the two models (``refit_spread`` each)."""
    return math.sqrt(paired_se ** 2 + 2 * refit_spread ** 2)


def choose(candidates: Sequence[Candidate],
           refit_spread: float = 0.0) -> tuple[Candidate, Candidate]:
    """(best, chosen): the candidate with the highest mean held-out log p per trial, and the
    simplest one whose deficit to it is at most ``tolerance`` (one paired standard error,
    widened by the spread between refits)."""
    best = max(candidates, key=lambda c: c.evidence.summary()["log_marginal"])

    def within_tolerance(candidate: Candidate) -> bool:
        if candidate is best:
            return True
        diff, se = candidate.evidence.compare(best.evidence)
        return math.isfinite(se) and -diff <= tolerance(se, refit_spread)

    return best, next(c for c in sorted(candidates, key=lambda c: c.complexity)
                      if within_tolerance(c))
