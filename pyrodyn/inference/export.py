"""ArviZ export: a ``Posterior`` as ``arviz.InferenceData``.

Groups: posterior (z0, latents, rates, inputs and communication signals where the model has
them), posterior_predictive (spikes), log_likelihood (spikes: log p(count | draw) per trial,
bin and neuron), observed_data (spikes).

What the log_likelihood group is valid for: each trial's latents are drawn from that trial's
own posterior, so leaving one count out barely moves them, and ``az.loo`` is a valid
leave-one-count-out estimate (how well the rest of a trial predicts one count; Pareto k small),
``az.plot_loo_pit`` checks the counts' calibration. It is not a leave-one-trial-out estimate:
leaving a whole trial out would put its latents back at the prior, which importance sampling
from its own posterior cannot reach (every Pareto k above 0.7). To compare models on new
trials use the held-out marginal likelihood, ``Evidence.to_elpd_data`` (``az.compare``) or
``pyrodyn compare``. Dims: chain, draw, trial, time,
latent, neuron (input, area where present); coords: the data's trial ids, bin start times in
seconds, neuron ids and, for multi-area data, each neuron's area. One chain of independent
draws.

Example (with a fitted ``model`` and ``guide``)::

    import arviz as az
    idata = to_inference_data(post, elbo="Trace_ELBO")
    az.summary(idata, var_names=["z0"], kind="stats")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import arviz as az
import numpy as np

from ..models import sites

if TYPE_CHECKING:  # the import graph points from posterior to export, never back
    from .posterior import Posterior

__all__ = ["to_inference_data"]

_DIMS = {
    sites.Z0: ["trial", "latent"],
    sites.INPUTS: ["trial", "time", "input"],
    sites.LATENTS: ["trial", "time", "latent"],
    sites.RATES: ["trial", "time", "neuron"],
    sites.SPIKES: ["trial", "time", "neuron"],
}


def _dims_of(name: str, value: np.ndarray) -> list[str]:
    """Dims of a site without the sample axis; per-area sites get their own latent dims."""
    if name in _DIMS:
        return _DIMS[name]
    base, _, area = name.partition(".")
    if base in _DIMS and area:
        dims = list(_DIMS[base])
        return [f"{d}_{area}" if d in ("latent", "neuron", "input") else d for d in dims]
    if base == "comm":  # "comm.B<-A" is a velocity of B: (trial, time, B's latent)
        return ["trial", "time", f"latent_{area.partition('<-')[0]}"]
    return ["trial"] + [f"{name}_dim_{i}" for i in range(value.ndim - 2)]


def _global_dims(name: str, value: np.ndarray) -> list[str]:
    """A global site's dims (no trial axis), from one draw."""
    return [f"{name}_dim_{i}" for i in range(value.ndim)]


def to_inference_data(posterior: Posterior, *, elbo: str | None = None,
                      model_name: str | None = None, guide_name: str | None = None
                      ) -> az.InferenceData:
    """Builds InferenceData from posterior draws with pyrodyn's dims, coords and attrs."""
    data = posterior.data
    draws = posterior.draws
    latent_vars = {name: value[None] for name, value in draws.items()
                   if name not in (sites.SPIKES, "log_likelihood")}
    dims = {name: (_global_dims(name, value[0, 0]) if name in posterior.global_sites
                   else _dims_of(name, value[0])) for name, value in latent_vars.items()}
    dims[sites.SPIKES] = _DIMS[sites.SPIKES]
    dims["log_likelihood_spikes"] = ["trial"]
    coords = {"trial": data.trial_ids, "time": data.time, "neuron": data.neuron_ids}
    if sites.Z0 in draws:
        coords["latent"] = np.arange(draws[sites.Z0].shape[-1])
    else:  # multi-area: "latents" concatenates the areas' states, labelled "A0", "A1", "B0", ...
        per_area = [(name.partition(".")[2], value.shape[-1]) for name, value in draws.items()
                    if name.startswith(f"{sites.Z0}.")]
        if per_area:
            coords["latent"] = [f"{area}{i}" for area, dim in per_area for i in range(dim)]
    if data.neuron_area is not None:
        coords["area"] = ("neuron", data.neuron_area)
    attrs = dict(posterior.attrs)
    attrs.update({k: v for k, v in (("model", model_name), ("guide", guide_name),
                                    ("elbo", elbo)) if v is not None})
    attrs.setdefault("elbo", "unknown")
    attrs = {k: str(v) for k, v in attrs.items()}
    area = coords.pop("area", None)
    idata = az.from_dict(
        posterior=latent_vars,
        posterior_predictive={sites.SPIKES: draws[sites.SPIKES][None]},
        observed_data={sites.SPIKES: data.spikes},
        coords=coords, dims={**dims, sites.SPIKES: _DIMS[sites.SPIKES]},
    )
    # One log-likelihood per count, shaped like the observed spikes (see the module docstring).
    idata.extend(az.from_dict(
        log_likelihood={sites.SPIKES: draws["log_likelihood"][None]},
        coords=coords, dims={sites.SPIKES: _DIMS[sites.SPIKES]}))
    for group in idata.groups():
        dataset = getattr(idata, group)
        if area is not None and "neuron" in dataset.dims:
            dataset = dataset.assign_coords(area=area)
            setattr(idata, group, dataset)
        dataset.attrs.update(attrs)
    return idata
