"""Names of the sample, deterministic and plate sites every pyrodyn model and guide share.

Plate names double as ArviZ dimension names.
"""

TRIAL_PLATE = "trial"
Z0 = "z0"                # initial latent state, event (latent,)
INPUTS = "inputs"        # inferred inputs, event (time, input)
LATENTS = "latents"      # deterministic, (trial, time, latent)
RATES = "rates"          # deterministic, (trial, time, neuron), counts per bin
SPIKES = "spikes"        # observed, event (time, neuron)
READOUT_PENALTY = "readout.penalty"  # factor: a readout's log-prior term per trial

LATENT_SITES = (Z0, INPUTS)

__all__ = ["TRIAL_PLATE", "Z0", "INPUTS", "LATENTS", "RATES", "SPIKES", "READOUT_PENALTY",
           "LATENT_SITES"]
