"""Inference: interchangeable guides and ``fit`` (minibatch SVI).

pyrodyn changes no global setting: its models and guides work under either value of Pyro's
``module_local_params`` (the classic ``SVI`` + ``pyro.optim`` loop needs it off, Pyro's default;
the module-local ELBO + torch optimizer loop needs it on). ``fit`` trains the modules' own
parameters with a torch optimizer in either mode.

Example:
    >>> from pyrodyn.inference import AmortizedNormalGuide, fit
"""

from .evaluate import evaluate
from .evidence import Evidence, heldout_evidence, importance_log_marginal
from .export import to_inference_data
from .forecast import forward_rates
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
    per_trial_trials,
    trial_plate,
)
from .laplace import (
    ChannelScales,
    ParameterPosterior,
    channel_scale_laplace,
    has_channel_scales,
    parameter_laplace,
)
from .options import FitOptions, planned_steps
from .posterior import MEAN_SAMPLES, Posterior, iter_posterior, posterior, posterior_means
from .refine import LocalGuide, refine
from .state import initialize_guide, load_state, read_state, save_state, write_state
from .stream import write_posterior
from .svi import FitInterrupted, FitResult, fit, make_elbo
from .traces import apply_parameter_draw, model_args, replay

__all__ = [
    "fit", "FitResult", "FitOptions", "planned_steps", "FitInterrupted", "make_elbo",
    "model_args", "replay",
    "posterior", "iter_posterior", "posterior_means", "MEAN_SAMPLES", "write_posterior",
    "Posterior",
    "to_inference_data", "refine", "LocalGuide",
    "ParameterPosterior", "parameter_laplace", "apply_parameter_draw",
    "ChannelScales", "channel_scale_laplace", "has_channel_scales",
    "Evidence", "heldout_evidence", "importance_log_marginal", "forward_rates",
    "save_state", "load_state", "read_state", "write_state", "initialize_guide", "evaluate",
    "trial_plate", "per_trial_trials",
    "AmortizedGuide", "AmortizedNormalGuide", "AmortizedFlowGuide", "MAPGuide", "SpikeEncoder",
    "per_trial_normal_guide", "per_trial_map_guide", "GUIDES", "build_guide",
]
