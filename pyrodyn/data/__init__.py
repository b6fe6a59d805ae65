"""Spike data: the validated container, loaders and savers, and synthetic ground truth.

Example:
    >>> from pyrodyn.data import load, synthetic
    >>> data = synthetic.ring_attractor(n_trials=8, n_bins=40, n_neurons=12, seed=1)
    >>> data.truth.stability[:2]
    ('unstable', 'marginal')
"""

from . import synthetic, systems
from .io import load, load_lfads_h5, save
from .nwb import load_nwb
from .spikes import SPLITS, GroundTruth, SilentNeuronWarning, SpikeBatch, SpikeData

__all__ = [
    "SpikeData",
    "GroundTruth",
    "SpikeBatch",
    "SilentNeuronWarning",
    "SPLITS",
    "load",
    "save",
    "load_lfads_h5",
    "load_nwb",
    "synthetic",
    "systems",
]
