"""pyrodyn: latent dynamical models of neural spiking data as Pyro programs.

Example:
    >>> import pyrodyn
    >>> data = pyrodyn.data.synthetic.lorenz(n_trials=20, n_bins=50, n_neurons=10, seed=0)
    >>> data.n_neurons
    10
"""

from . import analysis, data, inference, models
from ._version import __version__
from .data import SpikeData, load

__all__ = ["SpikeData", "load", "data", "models", "inference", "analysis", "__version__"]
