"""Guides, ``fit`` and the posterior: see issue 4."""
