"""``FitOptions``: every option of ``fit`` in one validated object.

``RunConfig.fit_options()`` builds one from a run's configuration; ``fit(..., options=...)``
takes it, and keyword arguments of ``fit`` replace single fields.

Example:
    >>> FitOptions(steps=300, batch_size=64).lr
    0.01
    >>> planned_steps(n_bins=70)   # steps=None: planned from the trials' length
    4286
    >>> FitOptions(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: steps: must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FitOptions", "check_device", "check_number", "planned_steps"]

# ``steps=None`` plans about the same work for every data set: 3000 steps of 100-bin trials of one
# area of up to 30 neurons, within these bounds. A step's cost grows with its bins, its areas and,
# per area, as 1 + neurons / PLANNED_NEURON_COST: 1.64x from 30 to 100 neurons, between the
# 1.44x of single full-length steps and the 1.82x of whole fits measured on CPU (README, "Steps
# planned by the neurons' cost too").
PLANNED_BIN_STEPS = 300_000
PLANNED_RANGE = (1500, 6000)
PLANNED_NEURONS = 30
PLANNED_NEURON_COST = 80.0


def planned_steps(n_bins: int, n_areas: int = 1, n_neurons: int | None = None) -> int:
    """The steps ``fit`` plans when ``steps`` is None: ``300000 / (n_bins * n_areas)``, between
    1500 and 6000 (3000 for 100-bin trials, 4286 for 70, 1500 for two areas of 100 bins), and
    above 30 neurons per area fewer by the step's cost (1833 for 100 neurons of 100 bins), so
    that every plan takes about as long. Shorter trials carry less of the dynamics per step: on
    a 10-neuron, 70-bin Lorenz set 3000 steps left rate R2 at 0.93 where 4300 reached 0.95
    (README (f)); a 100-neuron step carries more (its validation bits per spike stopped rising
    by step 1100 of 3000)."""
    low, high = PLANNED_RANGE
    steps = PLANNED_BIN_STEPS / (n_bins * n_areas)
    if n_neurons is not None:
        per_area = n_neurons / n_areas
        steps *= min(1.0, (1 + PLANNED_NEURONS / PLANNED_NEURON_COST)
                     / (1 + per_area / PLANNED_NEURON_COST))
    return int(min(high, max(low, round(steps))))


def check_device(device) -> torch.device:
    """``device`` as a torch device, or a ValueError saying why it cannot be used here."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: unknown device {device!r} (cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but CUDA is not available here "
                         f"(torch {torch.__version__}); use cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {device!r} is not supported (cpu, cuda or cuda:N)")
    return parsed


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
            high: float | None = None, low_open: bool = False, none: bool = False) -> None:
    if value is None and none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{name}: must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name}: must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high:g}, got {value!r}")


@dataclass(frozen=True)
class FitOptions:
    """Options of ``pyrodyn.inference.fit``.

    Attributes:
        steps: optimizer steps (minibatches; None: ``planned_steps`` for the training trials'
            bins and neurons and the model's areas); ``batch_size``: trials per step.
        lr, lr_final: initial learning rate, decayed exponentially to ``lr * lr_final`` (the
            default optimizer and schedule; ``fit`` takes your own).
        weight_decay: L2 penalty of the default optimizer (Adam); ``clip_norm``: gradient norm
            clipping.
        kl_warmup: steps over which the latent sites' weight ramps from 0 to 1.
        readout_warmup: steps during which flow readouts apply only their linear lift.
        coordinated_dropout: fraction of entries hidden from the encoder and scored only there.
        curriculum: ``(start, steps)``: fit only the first ``start`` bins at first and grow to
            all bins over ``steps`` steps (ODIN's trick for chaotic data).
        elbo: "trace", "meanfield" or a Pyro ELBO; ``num_particles`` > 1 vectorizes particles.
        eval_every: steps between validations; ``patience`` evaluations without improvement
            stop early; ``restore_best`` loads the best state at the end.
        checkpoint_every: steps between checkpoints; ``checkpoint_seconds``: also after this
            many seconds since the last one; ``resume``: continue an existing checkpoint.
        nan_retries: restarts from the last finite state, each with the learning rate halved,
            before a non-finite loss or gradient stops the fit.
        time_budget: seconds of fitting after which to stop (a cap: the schedule still runs
            on steps).
        budget: seconds the fit is planned to take (None: ``steps`` steps). The schedule then
            runs on the clock: the learning-rate decay, KL warm-up, curriculum and readout
            warm-up reach the same point at the same fraction of the budget as they would at
            that fraction of ``steps``, so the fit ends annealed when the budget is spent,
            whatever the machine's speed (``steps`` sets only those fractions). Its number of
            steps follows the clock, so two runs on one seed agree only as closely as their
            machines' timings.
        seed: seeds the fit (inside it only); same seed, data and options, same losses.
        device: "cpu" or "cuda"; ``num_threads``: torch threads during the fit (1 is fastest
            for small models on few cores; None leaves torch's setting).
        init_from_data: start the readout at each neuron's mean rate.
        progress_every: seconds between progress lines when no progress bar is shown (None:
            none).
        tensorboard: folder for TensorBoard event files (loss and learning rate per step,
            validation scores); None: none.
    """

    steps: int | None = 2000
    batch_size: int = 256
    lr: float = 1e-2
    lr_final: float = 0.1
    weight_decay: float = 1e-5
    clip_norm: float = 10.0
    kl_warmup: int = 0
    readout_warmup: int = 0
    coordinated_dropout: float = 0.0
    curriculum: tuple[int, int] | None = None
    elbo: Any = "trace"
    num_particles: int = 1
    eval_every: int = 100
    patience: int | None = None
    restore_best: bool = True
    checkpoint_every: int = 200
    checkpoint_seconds: float | None = None
    resume: bool = True
    nan_retries: int = 3
    time_budget: float | None = None
    budget: float | None = None
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = 1
    init_from_data: bool = True
    progress_every: float | None = 30.0
    tensorboard: str | None = None

    def __post_init__(self) -> None:
        check_number("steps", self.steps, integer=True, low=1, none=True)
        for name in ("batch_size", "eval_every", "checkpoint_every", "num_particles"):
            check_number(name, getattr(self, name), integer=True, low=1)
        for name in ("kl_warmup", "readout_warmup", "seed", "nan_retries"):
            check_number(name, getattr(self, name), integer=True, low=0)
        if self.readout_warmup and self.steps is not None \
                and self.readout_warmup >= self.steps:
            # the coupling layers would be switched on untrained when the fit ends
            raise ValueError(f"readout_warmup: must end before the last step ({self.steps}), "
                             f"got {self.readout_warmup}; for an affine lift alone use "
                             "flow_layers=0")
        check_number("patience", self.patience, integer=True, low=1, none=True)
        check_number("num_threads", self.num_threads, integer=True, low=1, none=True)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("lr_final", self.lr_final, low=0, low_open=True, high=1)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("clip_norm", self.clip_norm, low=0, low_open=True)
        check_number("coordinated_dropout", self.coordinated_dropout, low=0)
        if self.coordinated_dropout >= 1:
            raise ValueError(f"coordinated_dropout: must be < 1, got {self.coordinated_dropout}")
        check_number("time_budget", self.time_budget, low=0, none=True)
        check_number("budget", self.budget, low=0, low_open=True, none=True)
        check_number("progress_every", self.progress_every, low=0, none=True)
        check_number("checkpoint_seconds", self.checkpoint_seconds, low=0, low_open=True,
                     none=True)
        check_device(self.device)
        if self.tensorboard is not None and not isinstance(self.tensorboard, str):
            raise ValueError(f"tensorboard: must be a folder name, got {self.tensorboard!r}")
        for name in ("restore_best", "resume", "init_from_data"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.curriculum is not None:
            curriculum = tuple(self.curriculum) if isinstance(self.curriculum, (list, tuple)) \
                else ()
            if len(curriculum) != 2:
                raise ValueError(f"curriculum: expected (start bins, steps), got "
                                 f"{self.curriculum!r}")
            check_number("curriculum start", curriculum[0], integer=True, low=1)
            check_number("curriculum steps", curriculum[1], integer=True, low=0)
            object.__setattr__(self, "curriculum", curriculum)

    def replace(self, **changes: Any) -> FitOptions:
        """A copy with some fields changed; unknown names raise a ValueError naming them."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"fit: unknown option(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
