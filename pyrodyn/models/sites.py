"""Names of the sample, deterministic and plate sites every pyrodyn model and guide share.

Plate names double as ArviZ dimension names.
"""

TRIAL_PLATE = "trial"
Z0 = "z0"                # initial latent state, event (latent,)
INPUTS = "inputs"        # inferred inputs, event (time, input)
PATH = "path"            # stochastic latent path after bin 0, event (time - 1, latent)
LATENTS = "latents"      # deterministic, (trial, time, latent)
RATES = "rates"          # deterministic, (trial, time, neuron), counts per bin
SPIKES = "spikes"        # observed, event (time, neuron)
READOUT_PENALTY = "readout.penalty"  # factor: a readout's log-prior term per trial

LATENT_SITES = (Z0, INPUTS, PATH)

__all__ = ["TRIAL_PLATE", "Z0", "INPUTS", "PATH", "LATENTS", "RATES", "SPIKES", "READOUT_PENALTY",
           "LATENT_SITES"]
