"""Inference: interchangeable guides and ``fit`` (minibatch SVI).

pyrodyn keeps every parameter inside its module (``pyro.settings`` ``module_local_params``,
Pyro's recommended mode for ``nn.Module`` models): two models or guides in one process never
share values through Pyro's global parameter store.

Example:
    >>> from pyrodyn.inference import AmortizedNormalGuide, fit
"""

import pyro

from .evaluate import evaluate
from .export import to_inference_data
from .guides import (
    GUIDES,
    AmortizedFlowGuide,
    AmortizedGuide,
    AmortizedNormalGuide,
    MAPGuide,
    SpikeEncoder,
    build_guide,
    per_trial_map_guide,
    per_trial_normal_guide,
)
from .posterior import Posterior, posterior, posterior_means
from .state import initialize_guide, load_state, save_state
from .svi import FitResult, fit, make_elbo, model_args

pyro.settings.set(module_local_params=True)

__all__ = [
    "fit", "FitResult", "make_elbo", "model_args", "posterior_means", "posterior", "Posterior",
    "to_inference_data",
    "save_state", "load_state", "initialize_guide", "evaluate",
    "AmortizedGuide", "AmortizedNormalGuide", "AmortizedFlowGuide", "MAPGuide", "SpikeEncoder",
    "per_trial_normal_guide", "per_trial_map_guide", "GUIDES", "build_guide",
]
