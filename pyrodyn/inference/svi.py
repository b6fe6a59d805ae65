"""``fit``: minibatch SVI for any pyrodyn model and guide.

Minibatches over trials (the trial plate scales each minibatch ELBO to the data set), KL warm-up,
coordinated dropout, gradient clipping, a learning-rate schedule (exponential decay by default;
any torch optimizer and scheduler), early stopping on the validation objective, checkpoints that
resume the exact same run, a time budget, a seed, ``device=``, a progress bar on a terminal and
progress lines in logs otherwise, optional TensorBoard events. A non-finite loss or gradient
rolls back to the last finite state with the learning rate halved (a bounded number of times);
SIGINT and SIGTERM stop at the next step boundary with the checkpoint saved.

The run is a pure function of (seed, step): the batch order of each epoch comes from
``default_rng([seed, epoch])`` and all other randomness from torch's generator, whose state is
checkpointed; validation runs on a forked generator so it never changes the training draws.
The fit seeds only itself: the caller's random generators, thread count and Pyro settings are
as they were when it returns. It trains the modules' own parameters with a torch optimizer, so
it works under either value of Pyro's ``module_local_params``.

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
import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from pyro.poutine.util import site_is_subsample
from torch import nn
from tqdm.auto import tqdm

from .._isolation import (
    get_torch_rng,
    isolated_rng,
    own_param_store,
    set_torch_rng,
    torch_threads,
)
from ..analysis.scores import mean_rates, score_rates
from ..data.spikes import SpikeBatch, SpikeData
from ..models import sites
from ..models.base import SpikeModel
from ..models.paths import shared_drift
from ..models.readouts import FlowReadout
from . import distributed
from .guides import AmortizedGuide, per_trial_trials, trial_plate
from .options import FitOptions, planned_steps
from .schedules import exponential_decay
from .state import read_state, write_state
from .traces import model_args, replay

__all__ = ["fit", "FitResult", "FitOptions", "FitInterrupted", "make_elbo"]

log = logging.getLogger(__name__)

Optimizer = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
Scheduler = Callable[[torch.optim.Optimizer], Any]


@dataclass
class FitResult:
    """What a fit produced.

    Attributes:
        losses: training loss (negative ELBO per trial) at every step.
        valid: validation records ``{"step", "loss", "bits_per_spike"[, "co_bps", ...]}``.
        best_step: step of the best validation loss (or the last step without validation).
        best_valid_loss: that loss (nan without validation).
        best_state: ``{"model": state_dict, "guide": state_dict}`` at the best step.
        elapsed: seconds of fitting, summed over resumed runs.
        stop_reason: "steps", "early_stopping", "time_budget" or "budget".
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


def _batch_indices(n_trials: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    per_epoch = math.ceil(n_trials / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_trials)
    return np.sort(order[position * batch_size:(position + 1) * batch_size])


def validation_scores(elbo, model, guide, data: SpikeData, *, batch_size: int, device,
                      null_rates: np.ndarray, seed: int) -> dict[str, float]:
    """Negative ELBO per trial and ``score_rates`` of one posterior draw per trial."""
    was_training = guide.training, model.training
    guide.eval()
    model.eval()
    total, rates = 0.0, []
    with torch.no_grad(), isolated_rng(seed, device):
        for start in range(0, data.n_trials, batch_size):
            index = np.arange(start, min(start + batch_size, data.n_trials))
            kwargs = model_args(data.to_batch(index, device=device), data.n_trials)
            with shared_drift():
                total += float(elbo.loss(model, guide, **kwargs)) * len(index) / data.n_trials
            rates.append(replay(model, guide, kwargs)[1].nodes[sites.RATES]["value"].cpu())
    guide.train(was_training[0])
    model.train(was_training[1])
    scores = score_rates(torch.cat(rates).numpy(), data, null_rates=null_rates)
    return {"loss": total / data.n_trials, **scores}


def _horizon(curriculum: tuple[int, int], step: int, n_bins: int) -> int:
    """Bins scored at ``step``: from ``start`` growing linearly to all bins over ``steps``."""
    start, steps = curriculum
    return min(n_bins, start + (n_bins - start) * step // max(steps, 1))


def _first_bins(batch: SpikeBatch, n_bins: int) -> SpikeBatch:
    cut = lambda x: None if x is None else x[:, :n_bins]  # noqa: E731
    return SpikeBatch(cut(batch.spikes), cut(batch.mask), cut(batch.inputs), batch.trial_index,
                      cut(batch.encoder_mask))


def _score_first_bins(batch: SpikeBatch, n_bins: int) -> SpikeBatch:
    """All bins, the likelihood scoring only the first ``n_bins``: the curriculum for a guide
    whose per-trial sites keep one shape (a stochastic path under an AutoGuide)."""
    early = torch.arange(batch.spikes.shape[1], device=batch.spikes.device) < n_bins
    mask = early[None, :, None].expand(batch.spikes.shape)  # (trial, time, neuron), as masks are
    return dataclasses.replace(batch, mask=mask if batch.mask is None else batch.mask & mask)


def _shape_fixed_per_trial(model: nn.Module, guide: nn.Module) -> bool:
    """Whether ``guide`` holds per-trial parameters over sites whose shape follows the bins
    (a non-amortized AutoGuide over a stochastic path): it cannot take fewer bins. An
    amortized guide's own AutoGuide covers only global sites."""
    if not getattr(model, "path_sites", None) or isinstance(guide, AmortizedGuide):
        return False
    return any(isinstance(part, AutoGuide) for part in guide.modules())


def fit(
    model: nn.Module,
    guide: nn.Module,
    train: SpikeData,
    *,
    valid: SpikeData | None = None,
    options: FitOptions | None = None,
    optimizer: Optimizer | None = None,
    scheduler: Scheduler | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool | None = None,
    on_validation: Callable[[dict[str, float]], None] | None = None,
    **changes: Any,
) -> FitResult:
    """Fits ``model`` and ``guide`` to the training trials by stochastic variational inference.

    Args:
        model, guide: a pyrodyn model (a ``SpikeModel``) and any guide taking its arguments:
            pyrodyn's, Pyro's AutoGuides (their trial plate is set to the model's minibatch),
            an ``AutoGuideList`` built with ``create_plates=trial_plate``, or your own.
        train: training trials; held-out neurons and masked entries are never scored.
        valid: validation trials for early stopping and the validation record.
        options: a ``FitOptions``; keyword arguments (``steps=...``) replace its fields.
        optimizer: ``params -> torch.optim.Optimizer`` (e.g. ``lambda p: torch.optim.SGD(p,
            lr=0.1)``; default Adam with ``lr`` and ``weight_decay``).
        scheduler: ``optimizer -> torch LR scheduler``, stepped once per step (default:
            exponential decay from ``lr`` to ``lr * lr_final`` over ``steps``).
        checkpoint: file to save to every ``checkpoint_every`` steps, at the end and when the
            fit is interrupted; with ``resume`` an existing file continues the same run.
        progress: show a progress bar (default: when stderr is a terminal); without one, a
            line with loss, held-out scores and ETA goes to the ``pyrodyn`` logger at INFO
            level every ``progress_every`` seconds (the command line prints them).
        on_validation: called with each validation record (``step``, ``seconds`` of fitting,
            ``loss``, ``bits_per_spike``, ...); an exception it raises stops the fit, as an
            interruption does (e.g. a tuner pruning the trial).

    Raises:
        ValueError: bad options or a guide that cannot follow the minibatches;
        FloatingPointError: the loss or gradient stayed non-finite after ``nan_retries``
            restarts from the last finite state; FitInterrupted (a ``KeyboardInterrupt``):
            SIGINT or SIGTERM stopped the fit at a step boundary, checkpoint saved.
    """
    o = (options or FitOptions()).replace(**changes)
    if o.steps is None:  # the recipe's default: as many steps as the data's size calls for
        o = o.replace(steps=planned_steps(train.n_bins, len(getattr(model, "areas", ())) or 1,
                                          train.n_neurons))
    o = o.replace(batch_size=min(o.batch_size, train.n_trials))
    _check_call(model, guide, train, valid)
    _follow_minibatches(guide)
    if o.budget is not None and scheduler is not None:
        raise ValueError("scheduler: a fit with a budget runs the default schedule on the "
                         "clock; pass budget=None to step your own scheduler")
    with torch_threads(o.num_threads), isolated_rng(o.seed, o.device), own_param_store(guide):
        run = _Run(model, guide, train, valid, o, optimizer=optimizer, scheduler=scheduler,
                   checkpoint=None if checkpoint is None else Path(checkpoint),
                   on_validation=on_validation)
        try:
            progress = sys.stderr.isatty() if progress is None else progress
            result = run.train(progress=progress and distributed.is_main())
        finally:  # an interrupted warm-up must not leave the readout affine
            _linear_readouts(model, False)
    if o.restore_best and result.best_state:
        model.load_state_dict(result.best_state["model"])
        guide.load_state_dict(result.best_state["guide"])
    model.eval()
    guide.eval()
    return result


def _linear_readouts(model: nn.Module, linear: bool) -> None:
    for module in model.modules():
        if isinstance(module, FlowReadout):
            module.linear_only = linear


def _check_call(model, guide, train, valid) -> None:
    if not isinstance(model, SpikeModel):
        raise ValueError(f"model: fit needs a pyrodyn SpikeModel (subclass "
                         f"pyrodyn.models.SpikeModel), got {type(model).__name__}")
    if not isinstance(guide, nn.Module):
        raise ValueError(f"guide: fit trains a guide that is an nn.Module (pyrodyn's, an "
                         f"AutoGuide, a PyroModule), got {type(guide).__name__}; for a plain "
                         "function use Pyro's SVI")
    for name, data in (("train", train), ("valid", valid)):
        if data is not None and data.n_neurons != model.n_neurons:
            raise ValueError(f"{name}: has {data.n_neurons} neurons but the model was built "
                             f"for {model.n_neurons}")


def _follow_minibatches(guide) -> None:
    """An AutoGuide that draws its own trial subsample would score other trials than the
    model: give it the model's minibatch (before its parameters exist)."""
    if isinstance(guide, AutoGuide) and not isinstance(guide, AmortizedGuide) \
            and guide.master is None and guide.create_plates is None:
        if guide.prototype_trace is not None:
            raise ValueError(f"guide: this {type(guide).__name__} was already run with its own "
                             "trial plate; build it with create_plates=trial_plate")
        guide.create_plates = trial_plate


def _check_guide(guide, model_kwargs, guide_trace, n_trials, batch_size, valid) -> None:
    """After the first call: the guide drew the model's trials and can follow minibatches."""
    drawn = guide_trace.nodes.get(sites.TRIAL_PLATE)
    if drawn is not None and not torch.equal(drawn["value"].cpu(),
                                             model_kwargs["trial_index"].cpu()):
        raise ValueError("guide: its trial plate drew other trials than the model's minibatch; "
                         "build it with create_plates=pyrodyn.inference.trial_plate")
    for part in guide.modules():
        if isinstance(part, AutoContinuous) and batch_size < n_trials and part.prototype_trace \
                is not None and _has_trial_sites(part.prototype_trace):
            raise ValueError(
                f"guide: {type(part).__name__} joins every trial's latents in one vector and "
                f"cannot follow minibatches of {batch_size} of {n_trials} trials; use "
                f"batch_size={n_trials} (or more), or AutoNormal / an amortized guide")
    if valid is not None and per_trial_trials(guide) is not None:
        raise ValueError("valid: a per-trial (non-amortized) guide has no posterior for other "
                         "trials; use an amortized guide to validate, or pass valid=None")


def _has_trial_sites(trace) -> bool:
    return any(site["type"] == "sample" and not site_is_subsample(site)
               and any(f.name == sites.TRIAL_PLATE for f in site["cond_indep_stack"])
               for site in trace.nodes.values())


def _parameters(model: nn.Module, guide: nn.Module, trace) -> tuple[list, list]:
    """(model and guide weights, other ``pyro.param`` tensors a user's program declares)."""
    own = {id(p): p for p in [*model.parameters(), *guide.parameters()] if p.requires_grad}
    extra = {}
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"]
            value = value.unconstrained() if hasattr(value, "unconstrained") else value
            if value.requires_grad and id(value) not in own:
                extra[id(value)] = value
    return list(own.values()), list(extra.values())


class _Run:
    """One fit's mutable state: optimizer, history, early-stopping counter, generator state."""

    def __init__(self, model, guide, train, valid, options: FitOptions, *, optimizer,
                 scheduler, checkpoint, on_validation=None) -> None:
        self.model, self.guide, self.train_data, self.valid = model, guide, train, valid
        self.on_validation = on_validation
        self.parallel = distributed.world()[1] > 1
        if options.batch_size < distributed.world()[1]:
            raise ValueError(f"batch_size: {options.batch_size} trials cannot be shared by "
                             f"{distributed.world()[1]} processes")
        self.o, self.checkpoint = options, checkpoint
        self.fixed_bins = _shape_fixed_per_trial(model, guide)
        self.elbo = make_elbo(options.elbo, num_particles=options.num_particles)
        o = options
        resuming = bool(checkpoint and o.resume and checkpoint.exists())
        model.to(o.device)
        guide.to(o.device)
        model.train()
        guide.train()
        self.null_rates = mean_rates(train.spikes, mask=train.observed_mask(include_heldout=True))
        if o.init_from_data and not resuming:
            model.init_bias(torch.as_tensor(self.null_rates, dtype=torch.float32,
                                            device=o.device))
        self.result, self.bad_evals, self.retries = FitResult(), 0, 0
        # Lazily created parameters (AutoGuides) exist only after a first call.
        kwargs = self.step_args(0)
        with isolated_rng(None, o.device), torch.no_grad(), pyro.validation_enabled(False):
            with poutine.trace(param_only=True) as capture:
                guide_trace = poutine.trace(guide).get_trace(**kwargs)
                poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**kwargs)
        _check_guide(guide, kwargs, guide_trace, train.n_trials, o.batch_size, valid)
        own, self.extra = _parameters(model, guide, capture.trace)
        self.params = own + self.extra
        self.optimizer = (optimizer or self._adam)(self.params)
        self.scheduler = (scheduler or self._decay)(self.optimizer)
        if resuming:
            self._restore(read_state(checkpoint, device=o.device))
        # The generator state at the start of the next step to run: a checkpoint written when
        # a step fails half-way must not record the draws that step already made.
        self.rng_state = get_torch_rng(o.device)

    def _adam(self, params):
        return torch.optim.Adam(params, lr=self.o.lr, weight_decay=self.o.weight_decay)

    def _decay(self, optimizer):
        return exponential_decay(optimizer, steps=self.o.steps, final=self.o.lr_final)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])
        with torch.no_grad():
            for tensor, saved in zip(self.extra, state["extra_params"]):
                tensor.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_torch_rng(state["rng"])
        self.result, self.bad_evals = FitResult(**state["result"]), state["bad_evals"]
        self.retries = state.get("nan_retries", 0)
        self.result.stop_reason = "steps"
        log.info("resumed %s at step %d", self.checkpoint, self.result.steps)

    def step_args(self, step: int) -> dict[str, Any]:
        o, train = self.o, self.train_data
        everyone = _batch_indices(train.n_trials, o.batch_size, o.seed, step)
        mine = distributed.shard(everyone)
        self.share = len(mine) / len(everyone)  # of the global minibatch, for the gradient
        batch = train.to_batch(mine, device=o.device)
        at = self.schedule_step(step)
        if o.curriculum is not None:
            horizon = _horizon(o.curriculum, at, train.n_bins)
            batch = (_score_first_bins if self.fixed_bins else _first_bins)(batch, horizon)
        kl_scale = min(1.0, (at + 1) / o.kl_warmup) if o.kl_warmup else 1.0
        kwargs = model_args(batch, train.n_trials, kl_scale=kl_scale)
        if o.coordinated_dropout:
            observed = (torch.ones_like(batch.spikes, dtype=torch.bool) if batch.mask is None
                        else batch.mask)
            visible = observed if batch.encoder_mask is None else batch.encoder_mask
            shown = visible & (torch.rand_like(batch.spikes) >= o.coordinated_dropout)
            # Score only what the encoder did not see (held-out neurons always).
            kwargs.update(encoder_mask=shown, mask=observed & ~shown)
        return kwargs

    def schedule_step(self, step: int) -> int:
        """Where the schedule is at ``step``: the step itself, or with a ``budget`` the same
        fraction of ``steps`` as the fraction of the budget spent."""
        o = self.o
        if o.budget is None:
            return step
        return min(o.steps - 1, int(o.steps * self.result.elapsed / o.budget))

    def loss(self, step: int) -> torch.Tensor:
        try:
            with shared_drift():  # model and guide run with the same weights here
                loss = self.elbo.differentiable_loss(self.model, self.guide,
                                                     **self.step_args(step))
        except ValueError as error:  # Pyro's validation met a NaN parameter first
            if "invalid values" not in str(error):
                raise
            loss = torch.tensor(math.nan)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}")
        return loss / self.train_data.n_trials

    def snapshot(self) -> dict[str, Any]:
        """Tensors, numbers, lists and dicts only: loadable with ``weights_only=True``."""
        return dict(model=self.model.state_dict(), guide=self.guide.state_dict(),
                    extra_params=[t.detach() for t in self.extra],
                    optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                    rng=self.rng_state, result=dataclasses.asdict(self.result),
                    bad_evals=self.bad_evals, nan_retries=self.retries)

    def save(self, state: dict[str, Any] | None = None) -> None:
        """Writes the checkpoint (``state``, default the current one) unless it holds a
        non-finite weight: a checkpoint is always a state worth resuming."""
        if not self.checkpoint or not distributed.is_main():
            return
        state = self.snapshot() if state is None else state
        finite = all(torch.isfinite(t).all() for part in ("model", "guide")
                     for t in state[part].values() if t.is_floating_point())
        if finite:
            write_state(self.checkpoint, state)
        else:
            log.warning("fit: not saving a state with non-finite weights to %s", self.checkpoint)

    def validate(self, done: int) -> bool:
        """Records validation; True when early stopping says stop."""
        o, result = self.o, self.result
        record = validation_scores(self.elbo, self.model, self.guide, self.valid,
                                   batch_size=o.batch_size, device=o.device,
                                   null_rates=self.null_rates, seed=o.seed)
        result.valid.append({"step": done, "seconds": result.elapsed, **record})
        if self.on_validation is not None:
            self.on_validation(dict(result.valid[-1]))
        if record["loss"] < result.best_valid_loss:
            result.best_valid_loss, result.best_step, self.bad_evals = record["loss"], done, 0
            result.best_state = self._states()
            return False
        self.bad_evals += 1
        return o.patience is not None and self.bad_evals >= o.patience

    def _states(self) -> dict[str, Any]:
        return copy.deepcopy(dict(model=self.model.state_dict(), guide=self.guide.state_dict()))

    def step(self, step: int) -> torch.Tensor:
        """One optimizer step; FloatingPointError (nothing changed) when the loss or the
        gradient is not finite."""
        failure = None
        try:
            loss = self.loss(step)
        except FloatingPointError as error:
            failure = error
        if self.parallel and distributed.agree([failure is not None], self.o.device)[0]:
            failure = failure or FloatingPointError(
                f"the loss became non-finite on another process at step {step}")
        if failure is not None:
            raise failure
        self.optimizer.zero_grad()
        loss.backward()
        if self.parallel:  # every rank then holds the whole minibatch's gradient
            distributed.reduce_gradients(self.params, self.share)
            loss = distributed.reduce_sum(loss * self.share)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.o.clip_norm)
        if not torch.isfinite(norm):
            raise FloatingPointError(f"the gradient became {norm.item()} at step {step}")
        self.optimizer.step()
        if self.o.budget is None:
            self.scheduler.step()
        else:  # the default decay, read at the schedule's position on the clock
            at = self.schedule_step(step)
            for group, base, rate in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                         self.scheduler.lr_lambdas):
                group["lr"] = base * rate(at)
        return loss

    def roll_back(self, error: FloatingPointError) -> None:
        """Back to the last finite state with the learning rate halved, or a one-line stop
        after ``nan_retries`` tries."""
        good_step = len(self.good["result"]["losses"])
        if self.retries >= self.o.nan_retries:
            lr = self.optimizer.param_groups[0]["lr"]
            raise FloatingPointError(
                f"{error}, again after {self.retries} restarts from the last finite state "
                f"with the learning rate halved each time (now {lr:.3g}); lower lr or clip_norm "
                f"(the checkpoint keeps step {good_step})") from None
        elapsed = self.result.elapsed
        self._restore(self.good)
        self.retries += 1
        self.result.elapsed = elapsed  # time spent is spent
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] *= 0.5
            if hasattr(self.scheduler, "base_lrs"):
                self.scheduler.base_lrs[i] *= 0.5
        log.warning("fit: %s; back to step %d with the learning rate halved (restart %d of %d)",
                    error, good_step, self.retries, self.o.nan_retries)
        self.good = self.boundary()

    def boundary(self) -> dict[str, Any]:
        """A copy of the state between two steps, to roll back to."""
        return copy.deepcopy(self.snapshot())

    def train(self, *, progress: bool) -> FitResult:
        o = self.o
        clock, elapsed_before = time.perf_counter(), self.result.elapsed
        last_save = last_line = clock
        bar = tqdm(total=None if o.budget else o.steps, initial=self.result.steps,
                   disable=not progress, desc="fit", leave=False)
        self.good, between_steps = self.boundary(), True
        board = _board(o.tensorboard, self.result.steps) if distributed.is_main() else None
        try:
            with _stop_requests() as requested:
                while o.budget is not None or self.result.steps < o.steps:
                    step, result = self.result.steps, self.result
                    stop = requested()
                    if self.parallel:  # one clock and one stop request for all processes
                        asked, result.elapsed = distributed.agree(
                            [stop is not None, result.elapsed], o.device)
                        stop = stop or ("a stop request to another process" if asked else None)
                    if stop:
                        raise FitInterrupted(stop, step, self.checkpoint)
                    if o.time_budget is not None and result.elapsed >= o.time_budget:
                        result.stop_reason = "time_budget"
                        break
                    if o.budget is not None and result.elapsed >= o.budget:
                        result.stop_reason = "budget"
                        if self.valid is not None and step and (
                                not result.valid or result.valid[-1]["step"] != step):
                            self.validate(step)  # the annealed end is scored too
                        break
                    if o.readout_warmup:
                        _linear_readouts(self.model, self.schedule_step(step) < o.readout_warmup)
                    between_steps = False
                    try:
                        loss = self.step(step)
                    except FloatingPointError as error:
                        self.roll_back(error)
                        bar.n = self.result.steps
                        between_steps = True
                        continue
                    result.losses.append(loss.item())
                    self.rng_state = get_torch_rng(o.device)
                    if board is not None:
                        board.add_scalar("loss", result.losses[-1], step + 1)
                        board.add_scalar("lr", self.optimizer.param_groups[0]["lr"], step + 1)
                    between_steps = True
                    now = time.perf_counter()
                    result.elapsed = elapsed_before + now - clock
                    bar.update(1)
                    done = step + 1
                    last_step = o.budget is None and done == o.steps  # a budget ends on time
                    if self.valid is not None and (done % o.eval_every == 0 or last_step):
                        stop = self.validate(done)
                        last = result.valid[-1]
                        for name, value in last.items():
                            if board is not None and name not in ("step", "seconds"):
                                board.add_scalar(f"valid/{name}", value, done)
                        bar.set_postfix(loss=f"{loss.item():.1f}", valid=f"{last['loss']:.1f}",
                                        bps=f"{last['bits_per_spike']:.3f}")
                        if stop:
                            result.stop_reason = "early_stopping"
                            break
                    if not progress and o.progress_every is not None and distributed.is_main() and (
                            now - last_line >= o.progress_every or last_step):
                        log.info(_progress_line(result, o, loss.item()))
                        last_line = now
                    if done % o.checkpoint_every == 0 or (
                            o.checkpoint_seconds is not None
                            and now - last_save >= o.checkpoint_seconds):
                        self.save()
                        self.good, last_save = self.boundary(), now
        except BaseException:
            # Keep what the run achieved, never half a step: between steps the state is
            # consistent; inside one, the last boundary copy is.
            if self.checkpoint:
                self.save(None if between_steps else self.good)
            raise
        finally:
            bar.close()
            if board is not None:
                board.close()
        if self.valid is None:
            self.result.best_step, self.result.best_valid_loss = self.result.steps, math.nan
            self.result.best_state = self._states()
        self.save()
        return self.result


def _board(folder: str | None, start: int):
    """A TensorBoard writer for ``folder`` (events past ``start`` from an earlier, interrupted
    run are dropped, so a resumed fit draws one curve), or None."""
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard comes with nflows
        raise ValueError("tensorboard: needs the tensorboard package (pip install "
                         "tensorboard)") from None
    return SummaryWriter(folder, purge_step=start + 1 if start else None)


def _progress_line(result: FitResult, o: FitOptions, loss: float) -> str:
    """One line for logs of runs without a terminal: step, loss, held-out scores, ETA."""
    done = result.steps
    parts = ([f"fit: step {done}/{o.steps} ({done / o.steps:.0%})"] if o.budget is None else
             [f"fit: step {done} ({result.elapsed / o.budget:.0%} of {o.budget:.0f} s)"])
    parts.append(f"loss {loss:.2f}")
    if result.valid:
        last = result.valid[-1]
        parts += [f"valid {name.replace('_', ' ')} {last[name]:.3f} (step {last['step']})"
                  for name in ("bits_per_spike", "co_bps") if name in last]
    rate = result.elapsed / max(done, 1)
    left = rate * (o.steps - done) if o.budget is None else max(o.budget - result.elapsed, 0)
    parts += [f"{result.elapsed:.0f} s", f"ETA {left:.0f} s"]
    return ", ".join(parts)


class FitInterrupted(KeyboardInterrupt):
    """A fit stopped by SIGINT or SIGTERM at a step boundary, its checkpoint saved."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None) -> None:
        where = (f"checkpoint saved to {checkpoint}; rerun the same command to resume"
                 if checkpoint else "no checkpoint was asked for")
        super().__init__(f"fit interrupted by {signal_name} at step {step}; {where}")
        self.step, self.checkpoint = step, checkpoint


@contextmanager
def _stop_requests() -> Iterator[Callable[[], str | None]]:
    """SIGINT and SIGTERM ask the fit to stop at the next step boundary (a second SIGINT stops
    at once); the previous handlers come back afterwards. Only in the main thread, where
    Python delivers signals."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
