"""``fit``: minibatch SVI for any pyrodyn model and guide.

Minibatches over trials (the trial plate scales each minibatch ELBO to the data set), KL warm-up,
coordinated dropout, gradient clipping, an exponentially decaying learning rate, early stopping
on the validation objective, checkpoints that resume the exact same run, a time budget, a seed,
``device=`` and a progress bar that stays quiet when output is not a terminal.

The run is a pure function of (seed, step): the batch order of each epoch comes from
``default_rng([seed, epoch])`` and all other randomness from torch's generator, whose state is
checkpointed; validation runs on a forked generator so it never changes the training draws.

Example:
    >>> from pyrodyn.data import synthetic
    >>> from pyrodyn.models import LatentODEModel
    >>> from pyrodyn.inference import AmortizedNormalGuide, fit
    >>> data = synthetic.lorenz(n_trials=40, n_bins=30, n_neurons=20).with_split(seed=0)
    >>> model = LatentODEModel(data.n_neurons, 3)
    >>> result = fit(model, AmortizedNormalGuide(model), data.select("train"),
    ...              valid=data.select("valid"), steps=20, progress=False)
    >>> len(result.losses)
    20
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoGuide
from torch import nn
from tqdm.auto import tqdm

from ..analysis.metrics import bits_per_spike, mean_rates
from ..data.spikes import SpikeBatch, SpikeData
from ..models import sites
from ..models.readouts import FlowReadout

__all__ = ["fit", "FitResult", "make_elbo", "model_args"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a fit produced.

    Attributes:
        losses: training loss (negative ELBO per trial) at every step.
        valid: validation records ``{"step", "loss", "bits_per_spike"}``.
        best_step: step of the best validation loss (or the last step without validation).
        best_valid_loss: that loss (nan without validation).
        best_state: ``{"model": state_dict, "guide": state_dict}`` at the best step.
        elapsed: seconds of fitting, summed over resumed runs.
        stop_reason: "steps", "early_stopping" or "time_budget".
    """

    losses: list[float] = field(default_factory=list)
    valid: list[dict[str, float]] = field(default_factory=list)
    best_step: int = -1
    best_valid_loss: float = math.inf
    best_state: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    stop_reason: str = "steps"

    @property
    def steps(self) -> int:
        return len(self.losses)


def make_elbo(elbo: str | ELBO = "trace", *, num_particles: int = 1) -> ELBO:
    """"trace" (Trace_ELBO) or "meanfield" (TraceMeanField_ELBO, analytic KL where it exists)."""
    if isinstance(elbo, ELBO):
        return elbo
    kinds = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
    if elbo not in kinds:
        raise ValueError(f"elbo: unknown ELBO {elbo!r} (known: {', '.join(kinds)})")
    return kinds[elbo](num_particles=num_particles, vectorize_particles=num_particles > 1,
                       max_plate_nesting=1)


def model_args(batch: SpikeBatch, num_trials: int, **extra: Any) -> dict[str, Any]:
    """The keyword arguments every pyrodyn model and guide take, for one batch."""
    return dict(spikes=batch.spikes, mask=batch.mask, encoder_mask=batch.encoder_mask,
                inputs=batch.inputs, trial_index=batch.trial_index, num_trials=num_trials,
                **extra)


def _parameters(model: nn.Module, guide: nn.Module, trace) -> list[torch.Tensor]:
    """Model and guide weights plus any ``pyro.param`` a user's program declares."""
    found = [*model.parameters(), *guide.parameters()]
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"]
            found.append(value.unconstrained() if hasattr(value, "unconstrained") else value)
    unique = {id(p): p for p in found if p.requires_grad}
    return list(unique.values())


def _batch_indices(n_trials: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    per_epoch = math.ceil(n_trials / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_trials)
    return np.sort(order[position * batch_size:(position + 1) * batch_size])


def _evaluate(elbo, model, guide, data, batch_size, device, null_rates, seed):
    """Validation: negative ELBO per trial and bits per spike of one posterior draw."""
    was_training = guide.training, model.training
    guide.eval()
    model.eval()
    total, rates = 0.0, []
    with torch.no_grad(), _forked_rng(device):
        torch.manual_seed(seed)
        for start in range(0, data.n_trials, batch_size):
            index = np.arange(start, min(start + batch_size, data.n_trials))
            batch = data.to_batch(index, device=device)
            kwargs = model_args(batch, data.n_trials)
            total += float(elbo.loss(model, guide, **kwargs)) * len(index) / data.n_trials
            guide_trace = poutine.trace(guide).get_trace(**kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                **kwargs)
            rates.append(model_trace.nodes[sites.RATES]["value"].cpu().numpy())
    guide.train(was_training[0])
    model.train(was_training[1])
    mask = data.observed_mask()
    bps = bits_per_spike(np.concatenate(rates), data.spikes, null_rates=null_rates, mask=mask)
    return {"loss": total / data.n_trials, "bits_per_spike": bps}


def _horizon(curriculum: tuple[int, int], step: int, n_bins: int) -> int:
    """Bins scored at ``step``: from ``start`` growing linearly to all bins over ``steps``."""
    start, steps = curriculum
    return min(n_bins, start + (n_bins - start) * step // max(steps, 1))


def _first_bins(batch: SpikeBatch, n_bins: int) -> SpikeBatch:
    cut = lambda x: None if x is None else x[:, :n_bins]  # noqa: E731
    return SpikeBatch(cut(batch.spikes), cut(batch.mask), cut(batch.inputs), batch.trial_index)


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _get_rng(device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def _set_rng(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _forked_rng(device):
    """Random draws inside do not change the training generators."""
    devices = [] if torch.device(device).type == "cpu" else [torch.device(device)]
    return torch.random.fork_rng(devices=devices)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # never leave a half-written checkpoint behind


def fit(
    model: nn.Module,
    guide: nn.Module,
    train: SpikeData,
    *,
    valid: SpikeData | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-2,
    lr_final: float = 0.1,
    weight_decay: float = 1e-5,
    clip_norm: float = 10.0,
    kl_warmup: int = 0,
    readout_warmup: int = 0,
    coordinated_dropout: float = 0.0,
    curriculum: tuple[int, int] | None = None,
    elbo: str | ELBO = "trace",
    num_particles: int = 1,
    eval_every: int = 100,
    patience: int | None = None,
    restore_best: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    resume: bool = True,
    time_budget: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_threads: int | None = 1,
    init_from_data: bool = True,
    progress: bool | None = None,
) -> FitResult:
    """Fits ``model`` and ``guide`` to the training trials by stochastic variational inference.

    Args:
        model, guide: a pyrodyn model (or any Pyro program with pyrodyn's arguments) and a
            guide with the same arguments.
        train: training trials; held-out neurons and masked entries are never scored.
        valid: validation trials for early stopping and the validation record.
        steps: optimizer steps (minibatches).
        batch_size: trials per step.
        lr, lr_final: initial learning rate, decayed exponentially to ``lr * lr_final``.
        weight_decay: L2 penalty on every weight (Adam).
        clip_norm: gradient norm clipping.
        kl_warmup: steps over which the latent sites' weight ramps from 0 to 1.
        readout_warmup: steps during which flow readouts apply only their linear lift, so the
            dynamics settle in coordinates the readout maps linearly before it may bend.
        coordinated_dropout: fraction of entries hidden from the encoder and scored only there.
        curriculum: ``(start, steps)``: fit only the first ``start`` bins of each trial at
            first and grow to all bins over ``steps`` steps (ODIN's trick for chaotic data:
            long horizons are hard to fit from the start, and short ones are cheap).
        elbo: "trace", "meanfield" or a Pyro ELBO; ``num_particles`` > 1 vectorizes particles.
        eval_every: steps between validations; ``patience`` evaluations without improvement
            stop the fit early; ``restore_best`` loads the best state at the end.
        checkpoint: file to save to every ``checkpoint_every`` steps, at the end and when the
            fit is interrupted; with ``resume`` an existing file continues the same run.
        time_budget: seconds of fitting after which to stop.
        seed: seeds everything; same seed, data and settings give the same loss history.
        device: "cpu" or "cuda".
        num_threads: torch threads during the fit (1 is fastest for small models on few cores;
            None leaves torch's setting).
        init_from_data: start the readout at each neuron's mean rate.
        progress: show a progress bar (default: when stderr is a terminal).

    Raises:
        ValueError: bad options; FloatingPointError: the loss became NaN or inf.
    """
    _check_options(model, guide, train, valid, steps=steps, batch_size=batch_size,
                   eval_every=eval_every, checkpoint_every=checkpoint_every, lr=lr,
                   lr_final=lr_final, coordinated_dropout=coordinated_dropout,
                   curriculum=curriculum)
    options = dict(steps=steps, batch_size=min(batch_size, train.n_trials), lr=lr,
                   lr_final=lr_final, weight_decay=weight_decay, clip_norm=clip_norm,
                   kl_warmup=kl_warmup, readout_warmup=readout_warmup,
                   coordinated_dropout=coordinated_dropout,
                   curriculum=curriculum, eval_every=eval_every, patience=patience,
                   checkpoint_every=checkpoint_every, time_budget=time_budget, seed=seed,
                   device=device)
    with _torch_threads(num_threads):
        run = _Run(model, guide, train, valid, make_elbo(elbo, num_particles=num_particles),
                   checkpoint=None if checkpoint is None else Path(checkpoint), resume=resume,
                   init_from_data=init_from_data, **options)
        try:
            result = run.train(progress=sys.stderr.isatty() if progress is None else progress)
        finally:  # an interrupted warm-up must not leave the readout affine
            _linear_readouts(model, False)
    if restore_best and result.best_state:
        model.load_state_dict(result.best_state["model"])
        guide.load_state_dict(result.best_state["guide"])
    model.eval()
    guide.eval()
    return result


def _linear_readouts(model: nn.Module, linear: bool) -> None:
    for module in model.modules():
        if isinstance(module, FlowReadout):
            module.linear_only = linear


def _check_options(model, guide, train, valid, *, steps, batch_size, eval_every,
                   checkpoint_every, lr, lr_final, coordinated_dropout, curriculum) -> None:
    if min(steps, batch_size, eval_every, checkpoint_every) < 1:
        raise ValueError("steps, batch_size, eval_every and checkpoint_every must be >= 1")
    if not 0 <= coordinated_dropout < 1:
        raise ValueError(f"coordinated_dropout: must be in [0, 1), got {coordinated_dropout}")
    if curriculum is not None and (curriculum[0] < 1 or curriculum[1] < 0):
        raise ValueError(f"curriculum: expected (start bins >= 1, steps >= 0), got {curriculum}")
    if lr <= 0 or not 0 < lr_final <= 1:
        raise ValueError(f"lr must be > 0 and lr_final in (0, 1], got {lr}, {lr_final}")
    n_neurons = getattr(model, "n_neurons", train.n_neurons)
    for name, data in (("train", train), ("valid", valid)):
        if data is not None and data.n_neurons != n_neurons:
            raise ValueError(
                f"{name}: has {data.n_neurons} neurons but the model was built for {n_neurons}")
    if valid is not None and isinstance(guide, AutoGuide):
        raise ValueError(
            "valid: a per-trial (non-amortized) guide has no posterior for other trials; "
            "use an amortized guide to validate, or pass valid=None")


class _Run:
    """One fit's mutable state: optimizer, history, early-stopping counter, generator state."""

    def __init__(self, model, guide, train, valid, elbo, *, checkpoint, resume, init_from_data,
                 **options) -> None:
        self.model, self.guide, self.train_data, self.valid = model, guide, train, valid
        self.elbo, self.checkpoint = elbo, checkpoint
        self.o = _Options(**options)
        resuming = bool(checkpoint and resume and checkpoint.exists())
        model.to(self.o.device)
        guide.to(self.o.device)
        model.train()
        guide.train()
        self.null_rates = mean_rates(train.spikes, mask=train.observed_mask(include_heldout=True))
        pyro.set_rng_seed(self.o.seed)
        # Multi-area models start every area's readout; single-area ones their one readout.
        starts = model if hasattr(model, "init_bias") else getattr(model, "readout", None)
        if init_from_data and not resuming and hasattr(starts, "init_bias"):
            starts.init_bias(torch.as_tensor(self.null_rates, dtype=torch.float32))
        # Lazily created parameters (AutoGuides) exist only after a first call.
        with _forked_rng(self.o.device), pyro.validation_enabled(False):
            with poutine.trace(param_only=True) as capture:
                elbo.differentiable_loss(model, guide, **self.step_args(0))
        self.params = _parameters(model, guide, capture.trace)
        self.optimizer = torch.optim.Adam(self.params, lr=self.o.lr,
                                          weight_decay=self.o.weight_decay)
        self.result, self.bad_evals = FitResult(), 0
        if resuming:
            self._restore(torch.load(checkpoint, map_location=self.o.device, weights_only=False))
        # The generator state at the start of the next step to run: a checkpoint written when
        # a step fails half-way must not record the draws that step already made.
        self.rng_state = _get_rng(self.o.device)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])
        self.optimizer.load_state_dict(state["optimizer"])
        pyro.get_param_store().set_state(state["param_store"])
        _set_rng(state["rng"])
        self.result, self.bad_evals = state["result"], state["bad_evals"]
        self.result.stop_reason = "steps"
        log.info("resumed %s at step %d", self.checkpoint, self.result.steps)

    def step_args(self, step: int) -> dict[str, Any]:
        o, train = self.o, self.train_data
        batch = train.to_batch(_batch_indices(train.n_trials, o.batch_size, o.seed, step),
                               device=o.device)
        if o.curriculum is not None:
            batch = _first_bins(batch, _horizon(o.curriculum, step, train.n_bins))
        kl_scale = min(1.0, (step + 1) / o.kl_warmup) if o.kl_warmup else 1.0
        kwargs = model_args(batch, train.n_trials, kl_scale=kl_scale)
        if o.coordinated_dropout:
            observed = (torch.ones_like(batch.spikes, dtype=torch.bool) if batch.mask is None
                        else batch.mask)
            visible = observed if batch.encoder_mask is None else batch.encoder_mask
            shown = visible & (torch.rand_like(batch.spikes) >= o.coordinated_dropout)
            # Score only what the encoder did not see (held-out neurons always).
            kwargs.update(encoder_mask=shown, mask=observed & ~shown)
        return kwargs

    def loss(self, step: int) -> torch.Tensor:
        try:
            loss = self.elbo.differentiable_loss(self.model, self.guide, **self.step_args(step))
        except ValueError as error:  # Pyro's validation met a NaN parameter first
            if "invalid values" not in str(error):
                raise
            loss = torch.tensor(math.nan)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {step}; lower lr (now {self.o.lr}) or "
                f"clip_norm (now {self.o.clip_norm}), or resume from the last checkpoint")
        return loss / self.train_data.n_trials

    def snapshot(self) -> dict[str, Any]:
        return dict(model=self.model.state_dict(), guide=self.guide.state_dict(),
                    optimizer=self.optimizer.state_dict(),
                    param_store=pyro.get_param_store().get_state(), rng=self.rng_state,
                    result=self.result, bad_evals=self.bad_evals)

    def save(self) -> None:
        if self.checkpoint:
            _save_checkpoint(self.checkpoint, self.snapshot())

    def validate(self, done: int) -> bool:
        """Records validation; True when early stopping says stop."""
        o, result = self.o, self.result
        record = _evaluate(self.elbo, self.model, self.guide, self.valid, o.batch_size, o.device,
                           self.null_rates, o.seed)
        result.valid.append({"step": done, **record})
        if record["loss"] < result.best_valid_loss:
            result.best_valid_loss, result.best_step, self.bad_evals = record["loss"], done, 0
            result.best_state = self._states()
            return False
        self.bad_evals += 1
        return o.patience is not None and self.bad_evals >= o.patience

    def _states(self) -> dict[str, Any]:
        return copy.deepcopy(dict(model=self.model.state_dict(), guide=self.guide.state_dict()))

    def train(self, *, progress: bool) -> FitResult:
        o, result = self.o, self.result
        start, clock, elapsed_before = result.steps, time.perf_counter(), result.elapsed
        bar = tqdm(total=o.steps, initial=start, disable=not progress, desc="fit", leave=False)
        step = start
        try:
            for step in range(start, o.steps):
                if o.time_budget is not None and result.elapsed >= o.time_budget:
                    result.stop_reason = "time_budget"
                    break
                for group in self.optimizer.param_groups:
                    group["lr"] = o.lr * o.lr_final ** (step / max(o.steps - 1, 1))
                if o.readout_warmup:
                    _linear_readouts(self.model, step < o.readout_warmup)
                loss = self.loss(step)
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, o.clip_norm)
                self.optimizer.step()
                result.losses.append(loss.item())
                self.rng_state = _get_rng(o.device)
                result.elapsed = elapsed_before + time.perf_counter() - clock
                bar.update(1)
                done = step + 1
                if self.valid is not None and (done % o.eval_every == 0 or done == o.steps):
                    stop = self.validate(done)
                    last = result.valid[-1]
                    bar.set_postfix(loss=f"{loss.item():.1f}", valid=f"{last['loss']:.1f}",
                                    bps=f"{last['bits_per_spike']:.3f}")
                    if stop:
                        result.stop_reason = "early_stopping"
                        break
                if done % o.checkpoint_every == 0:
                    self.save()
        except BaseException:
            # Keep everything the run achieved: the parameters are consistent between steps.
            if self.checkpoint:
                self.save()
                log.warning("fit stopped at step %d; checkpoint saved to %s", step,
                            self.checkpoint)
            raise
        finally:
            bar.close()
        if self.valid is None:
            result.best_step, result.best_valid_loss = result.steps, math.nan
            result.best_state = self._states()
        self.save()
        return result


@dataclass(frozen=True)
class _Options:
    steps: int
    batch_size: int
    lr: float
    lr_final: float
    weight_decay: float
    clip_norm: float
    kl_warmup: int
    readout_warmup: int
    coordinated_dropout: float
    curriculum: tuple[int, int] | None
    eval_every: int
    patience: int | None
    checkpoint_every: int
    time_budget: float | None
    seed: int
    device: str | torch.device
