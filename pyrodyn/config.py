"""Run configuration: one dataclass read from YAML (``safe_load``) and ``key=value`` overrides,
and the builders that turn it into a model, a guide and ``fit`` options.

Example:
    >>> config = RunConfig.from_sources(overrides=["latent_dim=4", "readout=affine"])
    >>> config.latent_dim, config.readout
    (4, 'affine')
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from .data.spikes import SpikeData

__all__ = ["RunConfig", "attach_parameter_posterior", "build_model", "build_run"]


# Options added after runs were first saved, with the value every earlier run had.
_BEFORE_ADDED = {"noise_tau": None, "learn_noise_tau": True, "noise_df": None,
                 "readout_link": "identity", "parameter_prior": None,
                 "diffusion_prior": 0.0}


@dataclass
class RunConfig:
    """Everything a ``pyrodyn fit`` run needs besides the data (defaults: the tested recipe)."""

    # model
    model: str = "latent_ode"
    latent_dim: int = 3
    dynamics: str = "mlp"
    hidden: int = 128
    readout: str = "plane"       # affine coordinates, earned bend (README (f))
    flow_layers: int = 2          # coupling layers of the flow readout (0: the learned lift
                                  # alone, an affine map)
    bend_precision: float = 0.5   # the plane readout's prior precision on its bend
    # the plane readout's per-neuron link: "monotone" (a learned increasing map per neuron, a
    # linear-nonlinear neuron; README (f)) or "identity" (log-rates affine in the latents but
    # for the bend)
    readout_link: str = "monotone"
    likelihood: str = "poisson"
    inferred_input_dim: int = 0
    input_scale: float = 0.1      # scale of the inferred inputs' AR(1) prior
    solver: str = "midpoint"
    step_size: float = 0.1
    diffusion: float | None = 0.1  # initial sigma of the stochastic latent path, learned
                                   # (None: a deterministic ODE; README: calibration)
    noise_tau: float | None = 5.0   # correlation time (bins) of the path's noise (None:
                                    # white noise; no path: not used; README (g):
                                    # correlated path noise)
    learn_noise_tau: bool = True    # learn it from that start (false: fixed; README (g):
                                    # better calibrated with 30 neurons, worse with 8)
    # Student-t degrees of freedom of the path's innovations, learned from this start (None,
    # the default: Gaussian; README (f): 4 selected no better, and the fits make it 24-112)
    noise_df: float | None = None
    # rate of an exponential prior on each path dimension's sigma (0: none). "auto", the
    # default: none, the ELBO's own sigma. A rate of 300 (the default until 2026-12-07, ninth
    # session) centred the limit cycle's coverage but took from the flip-flop the noise that
    # covers its fitted field's error: its latents' coverage fell to 19% / 50% (43% / 80%
    # without; README (g), "No prior on the path's noise by default"). On multi-area models it
    # narrows the channels' intervals past the truth ("A prior on the path's noise").
    diffusion_prior: float | str = "auto"
    # multi-area models (``model: multi_area``; ``latent_dim`` is then per area)
    communication: str = "low_rank"
    comm_rank: int = 1
    coupling_prior: float = 10.0
    # guide
    guide: str = "normal"
    # GRU units per direction. 32, not 64, since 2026-12-06: the encoder was half of every
    # training step, and 32 gave the same accuracy on Lorenz and two_area (README (c)).
    encoder_hidden: int = 32
    # fit: 128 trials per step and steps planned from the trials' length (``planned_steps``:
    # 3000 at 100 bins), since 2026-12-06; 256 x 1500 was less accurate and less well calibrated
    # at the same passes over the data (README (f), calibration)
    steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-2
    lr_final: float = 0.1
    weight_decay: float = 1e-5
    clip_norm: float = 10.0
    kl_warmup: int = 700
    readout_warmup: int = 0
    coordinated_dropout: float = 0.0
    curriculum: list[int] | None = field(default_factory=lambda: [10, 700])
    eval_every: int = 100
    checkpoint_every: int = 200
    checkpoint_seconds: float | None = None
    progress_every: float | None = 30.0
    tensorboard: str | None = None
    patience: int | None = None
    time_budget: float | None = None   # a cap in seconds; the schedule runs on steps
    budget: float | None = None        # seconds planned: the schedule runs on the clock
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = 1
    # posterior: per-trial refinement steps after the guide (``posterior(refine_steps=...)``);
    # converged by 50: 25, 50 and 100 give the same scores to 4 digits (README, (c))
    refine_steps: int = 50
    # posterior: precision of the prior of a Laplace posterior over readout and channel weights
    # (``pyrodyn.inference.laplace``, ``attach_parameter_posterior``). "auto", the default: 1
    # for one-area models, whose rates' intervals run too narrow without it (README (g), "A
    # saturating embedding"); none for multi-area models, whose rates already over-cover and
    # whose channels get the scale posterior instead (``channel_scale_laplace``). null: the
    # fitted weights, point estimates
    parameter_prior: float | str | None = "auto"

    @property
    def path_noise_tau(self) -> float | None:
        """``noise_tau`` where there is a stochastic path to correlate, else None."""
        return None if self.diffusion is None else self.noise_tau

    @property
    def path_noise_df(self) -> float | None:
        """``noise_df`` where there is a stochastic path, else None."""
        return None if self.diffusion is None else self.noise_df

    def parameter_prior_for(self, model) -> float | None:
        """The Laplace prior precision ``parameter_prior`` gives ``model`` (None: no weight
        posterior); "auto" is 1 for a one-area model (one pyrodyn ``readout``) and None for
        any other, multi-area models and user programs without such a readout included."""
        from .models.readouts import Readout

        if self.parameter_prior != "auto":
            return self.parameter_prior
        return 1.0 if isinstance(getattr(model, "readout", None), Readout) else None

    def diffusion_prior_rate(self) -> float:
        """The rate ``diffusion_prior`` gives a model's path noise: "auto" is 0 (none) for
        every model today; a run folder records the rate its fit used (``resolved``)."""
        return 0.0 if self.diffusion_prior == "auto" else self.diffusion_prior

    def resolved(self, model) -> RunConfig:
        """This config with each "auto" replaced by what it gives ``model``: what a run folder
        records, so that a resume, or a later version whose "auto" means another rate, rebuilds
        the same fit (and a folder saved with another rate is another fit, not resumed).

        Example:
            >>> from pyrodyn.data import synthetic
            >>> model, guide = build_run(RunConfig(), synthetic.lorenz(n_trials=4, n_bins=10))
            >>> pinned = RunConfig().resolved(model)
            >>> pinned.diffusion_prior, pinned.parameter_prior
            (0.0, 1.0)
        """
        rate = self.diffusion_prior
        if rate == "auto":
            rate = getattr(getattr(model, "diffusion", None), "prior_rate", 0.0)
        return dataclasses.replace(self, parameter_prior=self.parameter_prior_for(model),
                                   diffusion_prior=float(rate))

    def readout_options(self) -> dict[str, Any]:
        """The options of ``readout`` this config sets (``build_readout``'s keywords)."""
        return {"flow": {"layers": self.flow_layers},
                "plane": {"bend_precision": self.bend_precision, "link": self.readout_link},
                }.get(self.readout, {})

    def __post_init__(self) -> None:
        """Every option checked where it is set: a bad value is one line naming it."""
        from .inference.guides import GUIDES
        from .inference.options import check_number
        from .models import CHANNELS, FIELDS, LIKELIHOODS, READOUTS, PlaneReadout
        from .models.solver import ADAPTIVE, FIXED_STEP

        for name, known in (("dynamics", FIELDS), ("readout", READOUTS),
                            ("likelihood", LIKELIHOODS), ("guide", GUIDES),
                            ("communication", CHANNELS), ("solver", FIXED_STEP + ADAPTIVE),
                            ("readout_link", PlaneReadout.LINKS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in known:
                raise ValueError(f"config: {name} must be one of {', '.join(known)}, got "
                                 f"{value!r}")
        for name in ("latent_dim", "hidden", "comm_rank", "encoder_hidden"):
            check_number(f"config: {name}", getattr(self, name), integer=True, low=1)
        for name in ("inferred_input_dim", "refine_steps", "flow_layers"):
            check_number(f"config: {name}", getattr(self, name), integer=True, low=0)
        for name in ("input_scale", "step_size"):
            check_number(f"config: {name}", getattr(self, name), low=0, low_open=True)
        check_number("config: coupling_prior", self.coupling_prior, low=0)
        for name in ("parameter_prior", "diffusion_prior"):  # "auto": the recipe's choice
            if isinstance(getattr(self, name), str) and getattr(self, name) != "auto":
                raise ValueError(f"config: {name} must be a number or auto, got "
                                 f"{getattr(self, name)!r}")
        if self.diffusion_prior != "auto":
            check_number("config: diffusion_prior", self.diffusion_prior, low=0)
        check_number("config: bend_precision", self.bend_precision, low=0)
        if self.parameter_prior != "auto" and self.parameter_prior is not None:
            check_number("config: parameter_prior", self.parameter_prior, low=0, low_open=True)
        if self.diffusion is not None:
            check_number("config: diffusion", self.diffusion, low=0, low_open=True)
        if self.noise_tau is not None:
            check_number("config: noise_tau", self.noise_tau, low=0, low_open=True)
        if self.noise_df is not None:
            check_number("config: noise_df", self.noise_df, low=0, low_open=True)
        if not isinstance(self.learn_noise_tau, bool):
            raise ValueError(f"config: learn_noise_tau must be true or false, got "
                             f"{self.learn_noise_tau!r}")
        if not isinstance(self.model, str):
            raise ValueError(f"config: model must be a name, got {self.model!r}")
        self.fit_options()  # the options fit takes, checked there

    @classmethod
    def from_sources(cls, path: str | os.PathLike | None = None,
                     overrides: list[str] | None = None, **values: Any) -> RunConfig:
        """Defaults, then the YAML file, then ``values``, then ``key=value`` strings."""
        merged: dict[str, Any] = {}
        if path is not None:
            with open(path) as f:
                loaded = _read_yaml(f, str(path)) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"config: {path} must hold a mapping of option: value")
            merged.update(loaded)
        merged.update({k: v for k, v in values.items() if v is not None})
        for item in overrides or []:
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"--set: expected key=value, got {item!r}")
            merged[key.strip()] = _read_yaml(text, f"--set {item}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - set(fields))
        if unknown:
            raise ValueError(f"config: unknown option(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(fields))})")
        return cls(**{k: _as_number(k, v, fields[k].type) for k, v in merged.items()})

    @classmethod
    def from_run(cls, path: str | os.PathLike) -> RunConfig:
        """A saved run's ``config.yaml``; an option the file predates takes the value every fit
        had before it existed (so an older run rebuilds the model it saved)."""
        config = cls.from_sources(path)
        with open(path) as f:
            saved = _read_yaml(f, str(path))
        return dataclasses.replace(config, **{k: v for k, v in _BEFORE_ADDED.items()
                                              if k not in saved})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fit_options(self):
        """The ``FitOptions`` of this run (every option the two share; validated there)."""
        from .inference.options import FitOptions

        mine = self.to_dict()
        return FitOptions(**{name: mine[name] for name in FitOptions.names() if name in mine})


def _read_yaml(source, where: str) -> Any:
    """YAML data (``safe_load``: tags that would build Python objects are refused)."""
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"config: {where} is not plain YAML data ({reason})") from None


def _as_number(name: str, value: Any, annotation: str) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: numbers become numbers, or a clear error."""
    kind = {"float": float, "int": int}.get(annotation.replace(" | None", ""))
    if kind is None or value is None or isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"config: {name} must be a number, got {value!r}") from None
    if kind is int and not number.is_integer():
        raise ValueError(f"config: {name} must be a whole number, got {value!r}")
    return kind(number)


MODELS = ("latent_ode", "multi_area")


def model_class(name: str):
    """"latent_ode", "multi_area", or "package.module:Class" naming a user's ``SpikeModel``
    subclass (imported: the user's own code, named by the user, never read from data)."""
    import importlib

    from .models import LatentODEModel, MultiAreaModel, SpikeModel

    if name in MODELS:
        return {"latent_ode": LatentODEModel, "multi_area": MultiAreaModel}[name]
    module_name, sep, class_name = str(name).partition(":")
    if not sep:
        raise ValueError(f"model: unknown model {name!r} (known: {', '.join(MODELS)}, or "
                         "package.module:Class for your own SpikeModel)")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"model: cannot import {name!r} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, SpikeModel)):
        raise ValueError(f"model: {name!r} is not a pyrodyn SpikeModel subclass")
    return cls


def build_model(config: RunConfig, data: SpikeData):
    """The model a config describes, sized for ``data``: ``from_config(config, data)`` of the
    named ``SpikeModel`` class (a ``LatentODEModel``, the ``MultiAreaModel`` over the data's
    areas, or a user's subclass)."""
    return model_class(config.model).from_config(config, data)


def attach_parameter_posterior(config: RunConfig, model, guide, train: SpikeData):
    """After the fit: the recipe's Laplace posterior over the readout (and channel) weights
    (``config.parameter_prior_for(model)``), put on ``model`` so that every posterior draw
    carries it. Returns it, or None where the recipe asks for none.

    Example::

        fit(model, guide, train, options=config.fit_options())
        attach_parameter_posterior(config, model, guide, train)
        post = posterior(model, guide, test)   # the rates carry the readout's uncertainty
    """
    from .inference import parameter_laplace

    prior = config.parameter_prior_for(model)
    if prior is None:
        return None
    model.parameter_posterior = parameter_laplace(model, guide, train, prior_precision=prior,
                                                  seed=config.seed)
    return model.parameter_posterior


def build_run(config: RunConfig, data: SpikeData):
    """(model, guide) for ``data``: seeded inside (the caller's generators stay as they were),
    so the same config builds the same weights."""
    from ._isolation import isolated_rng
    from .inference import build_guide

    with isolated_rng(config.seed):
        model = build_model(config, data)
        options = ({} if config.guide.startswith("per_trial")
                   else {"hidden": config.encoder_hidden})
        return model, build_guide(config.guide, model, **options)
