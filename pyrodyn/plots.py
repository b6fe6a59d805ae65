"""Figures of a fit: the loss curve, inferred against true latents, rates against spikes.

Every function returns a matplotlib ``Figure`` made without pyplot: no backend is chosen and no
figure is registered anywhere, so importing or calling this module changes no global state
(``fig.savefig`` works headless; a notebook shows the figure it returns).

Example (with a fitted ``result``)::

    fig = plot_loss(result.losses, result.valid)
    fig.savefig("loss.png")
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

__all__ = ["subplots", "plot_loss", "plot_latents", "plot_rates", "plot_area_graph",
           "plot_communication", "plot_selection", "plot_reliability", "plot_tuning"]


def subplots(*grid, figsize=None, **options):
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot's global figure manager."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **options)


def plot_loss(losses, valid=()):
    """Training loss per step and validation loss per evaluation."""
    fig, ax = subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.7, label="train (per trial)")
    if valid:
        ax.plot([v["step"] for v in valid], [v["loss"] for v in valid], "o-", ms=3,
                label="validation (per trial)")
    ax.set(xlabel="step", ylabel="negative ELBO", yscale="symlog")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_latents(time, draws, true=None, *, trial: int = 0, level: float = 0.9):
    """Posterior latents of one trial with a ``level`` band, beside the truth if given.

    Args:
        time: (time,) seconds.
        draws: (sample, trial, time, dim) posterior draws, already mapped to the truth's
            coordinates when ``true`` is given (e.g. with ``analysis.apply_affine``).
        true: (trial, time, dim) true latents.
    """
    draws = np.asarray(draws)[:, trial]
    lower, upper = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    dims = draws.shape[-1]
    fig, axes = subplots(dims, 1, figsize=(7, 1.8 * dims), sharex=True, squeeze=False)
    for d, ax in enumerate(axes[:, 0]):
        ax.fill_between(time, lower[:, d], upper[:, d], alpha=0.3, label=f"{level:.0%} interval")
        ax.plot(time, draws[:, :, d].mean(0), lw=1.2, label="posterior mean")
        if true is not None:
            ax.plot(time, true[trial, :, d], "k--", lw=1, label="truth")
        ax.set_ylabel(f"latent {d}")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def plot_rates(time, rates, spikes, true_rates=None, *, trial: int = 0, neurons=(0, 1, 2, 3)):
    """Inferred rates (counts per bin) against spikes (and true rates) for a few neurons."""
    neurons = [n for n in neurons if n < spikes.shape[-1]]
    fig, axes = subplots(len(neurons), 1, figsize=(7, 1.6 * len(neurons)), sharex=True,
                             squeeze=False)
    for ax, n in zip(axes[:, 0], neurons):
        ax.vlines(time, 0, spikes[trial, :, n], color="0.7", lw=1, label="spikes")
        ax.plot(time, rates[trial, :, n], lw=1.2, label="inferred rate")
        if true_rates is not None:
            ax.plot(time, true_rates[trial, :, n], "k--", lw=1, label="true rate")
        ax.set_ylabel(f"neuron {n}")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def plot_area_graph(summary, *, true=None):
    """Areas on a circle, an arrow per channel ``B -> A`` with width and label from its
    strength [interval] (``analysis.communication_summary``); ``true`` strengths in brackets."""
    areas = list(dict.fromkeys([c.source for c in summary.values()] +
                               [c.target for c in summary.values()]))
    angle = np.pi / 2 - 2 * np.pi * np.arange(len(areas)) / len(areas)
    where = {a: np.array([np.cos(t), np.sin(t)]) for a, t in zip(areas, angle)}
    top = max(c.strength for c in summary.values()) or 1.0
    fig, ax = subplots(figsize=(4.5, 4.5))
    for c in summary.values():
        start, end = where[c.source], where[c.target]
        normal = np.array([-(end - start)[1], (end - start)[0]]) * 0.08  # keep A->B, B->A apart
        start, end = start + normal + 0.18 * (end - start), end + normal - 0.18 * (end - start)
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(
            arrowstyle="-|>", lw=0.5 + 6 * c.strength / top, color="C3", alpha=0.8,
            mutation_scale=12))
        label = f"{c.strength:.3f}\n[{c.interval[0]:.3f}, {c.interval[1]:.3f}]"
        if true is not None:
            label += f"\n(true {true.get(c.name, 0.0):.3f})"
        mid = (start + end) / 2 + normal * 1.5
        ax.text(*mid, label, fontsize=7, ha="center", va="center")
    for area, xy in where.items():
        ax.add_patch(Circle(xy, 0.16, color="C0", alpha=0.85))
        ax.text(*xy, area, color="white", ha="center", va="center", fontsize=12)
    ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal",
           title="communication strength (per bin)")
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_communication(time, summary):
    """Every channel's strength per bin: posterior median with its interval band."""
    fig, ax = subplots(figsize=(7, 3))
    for c in summary.values():
        median, lower, upper = c.time_course
        line, = ax.plot(time, median, lw=1.2, label=c.name)
        ax.fill_between(time, lower, upper, color=line.get_color(), alpha=0.25)
    ax.set(xlabel="time (s)", ylabel="strength per bin")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_selection(rows):
    """Held-out evidence of each candidate of ``pyrodyn.select`` (``Selection.rows()``):
    log p per validation trial relative to the best, with paired standard errors, against
    the latent dimensionality, one line per readout; the chosen model ringed."""
    fig, ax = subplots(figsize=(6, 3.5))
    for readout in dict.fromkeys(row["readout"] for row in rows):
        mine = [row for row in rows if row["readout"] == readout]
        ax.errorbar([r["latent_dim"] for r in mine], [r["diff_to_best"] for r in mine],
                    yerr=[r["diff_se"] for r in mine], marker="o", ms=4, capsize=3,
                    label=readout)
    for row in rows:
        if row["chosen"]:
            ax.plot(row["latent_dim"], row["diff_to_best"], "o", ms=12, mfc="none", mec="k",
                    label="chosen")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set(xlabel="latent dimensions", ylabel="log p per trial - best (nats)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_tuning(trials, scores, errors, label: str):
    """Held-out score of each completed trial of ``pyrodyn.tuning.tune`` with its standard
    error (as a difference to the recipe's, paired over validation trials, where trial 0 is
    the recipe); the best ringed."""
    fig, ax = subplots(figsize=(6, 3.5))
    ax.errorbar(trials, scores, yerr=errors, fmt="o", ms=4, capsize=3)
    if 0 in trials:
        ax.axhline(scores[trials.index(0)], color="0.6", ls="--", lw=0.8, label="recipe")
    best = int(np.nanargmax(scores))
    ax.plot(trials[best], scores[best], "o", ms=12, mfc="none", mec="k", label="best")
    ax.set(xlabel="trial", ylabel=label.replace("_", " "))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability(table):
    """Nominal against empirical coverage of the posterior's central intervals, one line per
    quantity (``pyrodyn.analysis.reliability``'s table): on the diagonal when calibrated, below
    it when overconfident."""
    fig, ax = subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="calibrated")
    for name, curve in table.items():
        levels = sorted(curve)
        ax.plot(levels, [curve[level] for level in levels], "o-", ms=3, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal coverage of the central interval",
           ylabel="fraction of true values inside")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
