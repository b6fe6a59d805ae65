"""Generative models (latent neural ODE, readouts, likelihoods, multi-area): see issue 4."""
