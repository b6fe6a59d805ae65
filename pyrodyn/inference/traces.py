"""The call every pyrodyn model and guide take, and running a model on a guide's draw (with
the fitted weights, or one draw of them: ``apply_parameter_draw``).

Example:
    >>> from pyrodyn.data import synthetic
    >>> from pyrodyn.models import LatentODEModel
    >>> from pyrodyn.inference import AmortizedNormalGuide
    >>> data = synthetic.lorenz(n_trials=4, n_bins=10, n_neurons=8)
    >>> model = LatentODEModel(8, 3)
    >>> kwargs = model_args(data.to_batch(), data.n_trials)
    >>> guide_trace, model_trace = replay(model, AmortizedNormalGuide(model), kwargs)
    >>> model_trace.nodes["rates"]["value"].shape
    torch.Size([4, 10, 8])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from pyro import poutine

from ..data.spikes import SpikeBatch
from ..models.communication import Channel
from ..models.readouts import Readout

__all__ = ["model_args", "replay", "model_device", "apply_parameter_draw", "draw_parameters",
           "readout_perturbation"]


def model_device(model, device: str | torch.device | None = None) -> torch.device:
    """``device``, or where None the device of ``model``'s parameters (CPU without any): the
    scoring and drawing functions then run where the fit left the model."""
    if device is not None:
        return torch.device(device)
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def model_args(batch: SpikeBatch, num_trials: int, **extra: Any) -> dict[str, Any]:
    """The keyword arguments every pyrodyn model and guide take, for one batch."""
    return dict(spikes=batch.spikes, mask=batch.mask, encoder_mask=batch.encoder_mask,
                inputs=batch.inputs, trial_index=batch.trial_index, num_trials=num_trials,
                **extra)


def replay(model, guide, kwargs: dict[str, Any], *, fixed: dict[str, Any] | None = None,
           parameter_draw: dict[str, torch.Tensor] | None = None):
    """(guide trace, model trace): one draw of ``guide`` and the model run on it. The model's
    observed sites keep their observations; their ``fn`` is the predictive distribution.

    ``fixed``: site -> value this draw of the guide takes there (e.g. a global site shared by
    several batches of trials); the rest of the guide is drawn given them.
    ``parameter_draw``: a ``ParameterPosterior.sample()`` (or ``ChannelScales.sample()``) the
    model (not the guide) runs with.
    """
    if fixed:
        guide_trace = poutine.trace(poutine.condition(guide, data=fixed)).get_trace(**kwargs)
        for name in fixed:  # drawn, as far as the model is concerned
            guide_trace.nodes[name]["is_observed"] = False
    else:
        guide_trace = poutine.trace(guide).get_trace(**kwargs)
    with apply_parameter_draw(model, parameter_draw or {}):
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**kwargs)
    return guide_trace, model_trace


@contextlib.contextmanager
def apply_parameter_draw(model: torch.nn.Module, draw: dict[str, torch.Tensor]) -> Iterator[None]:
    """Runs ``model`` with one ``ParameterPosterior.sample()`` added to its weights, or one
    ``ChannelScales.sample()`` (a scalar per channel: its output times ``1 + delta``), by
    forward hooks on the channels and readouts, removed on exit."""
    handles = []
    try:
        for path, delta in draw.items():
            try:
                module = model.get_submodule(path)
            except AttributeError:
                raise ValueError(f"parameter draw: the model has no module {path!r}; is the "
                                 "parameter posterior of another model?") from None
            rows = getattr(module, "target_dim", getattr(module, "n_neurons", None))
            if rows is not None and delta.dim() and delta.shape[0] != rows:
                raise ValueError(f"parameter draw: {path!r} has {rows} outputs, the draw "
                                 f"{delta.shape[0]}; is the parameter posterior of another "
                                 "model?")
            delta = delta.to(next(module.parameters()).device)
            if isinstance(module, Channel) and not delta.dim():
                def hook(channel, args, out, delta=delta):
                    return out * (1 + delta)
            elif isinstance(module, Channel):
                def hook(channel, args, out, delta=delta):
                    return out + channel.features(args[0]) @ delta.T
            elif isinstance(module, Readout):
                def hook(readout, args, out, delta=delta):
                    return out + readout_perturbation(readout, args[0], delta)
            else:
                raise ValueError(f"parameter draw: {path!r} is neither a channel nor a readout")
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def readout_perturbation(readout: Readout, z: torch.Tensor, delta: torch.Tensor
                         ) -> torch.Tensor:
    """The change of ``readout(z)``'s log-rates under one draw ``delta`` (neuron, F): gains on
    ``z``, the baseline, then the readout's ``shape_features`` where the draw has them."""
    latent = z.shape[-1]
    change = z @ delta[:, :latent].T + delta[:, latent]
    if delta.shape[1] > latent + 1:
        change = change + (readout.shape_features(z) * delta[:, latent + 1:]).sum(-1)
    return change


def draw_parameters(model, num_draws: int, seed: int | None
                    ) -> list[dict[str, torch.Tensor]] | None:
    """``num_draws`` draws of ``model.parameter_posterior`` (None where the model has none),
    from a generator of their own: the other draws then do not depend on whether it is there."""
    laplace = getattr(model, "parameter_posterior", None)
    if laplace is None:
        return None
    generator = torch.Generator().manual_seed(
        seed if seed is not None else int(torch.randint(2 ** 62, ())))
    return [laplace.sample(generator) for _ in range(num_draws)]
