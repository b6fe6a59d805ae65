"""Generative models of spike counts as Pyro programs, and their swappable parts.

Example:
    >>> from pyrodyn.models import LatentODEModel
    >>> model = LatentODEModel(n_neurons=30, latent_dim=3, readout="flow")
"""

from . import sites
from .base import SpikeModel, record
from .communication import CHANNELS, Channel, CoupledField, LowRankChannel, MLPChannel
from .dynamics import (
    FIELDS,
    GRUTransition,
    LinearField,
    LowRankRNNField,
    MLPField,
    VectorField,
    build_field,
)
from .latent_ode import LatentODEModel
from .likelihoods import (
    LIKELIHOODS,
    GaussianLikelihood,
    Likelihood,
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    build_likelihood,
)
from .multi_area import MultiAreaModel
from .priors import AR1Prior
from .readouts import (
    READOUTS,
    AffineReadout,
    FlowReadout,
    MLPReadout,
    MonotoneLink,
    PlaneReadout,
    Readout,
    ResidualFlowReadout,
    build_readout,
)
from .solver import ODESolver

__all__ = [
    "SpikeModel", "record", "LatentODEModel", "MultiAreaModel",
    "Channel", "LowRankChannel", "MLPChannel", "CHANNELS", "CoupledField",
    "VectorField", "MLPField", "LinearField", "LowRankRNNField", "GRUTransition", "FIELDS",
    "build_field",
    "Readout", "AffineReadout", "MLPReadout", "FlowReadout", "ResidualFlowReadout", "PlaneReadout",
    "MonotoneLink",
    "READOUTS",
    "build_readout",
    "Likelihood", "PoissonLikelihood", "NegativeBinomialLikelihood", "GaussianLikelihood",
    "LIKELIHOODS", "build_likelihood",
    "AR1Prior", "ODESolver", "sites",
]
