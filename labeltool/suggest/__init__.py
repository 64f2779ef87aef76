"""Pseudo-label suggestions: ``propose`` over arrays, the registry of sources, kNN backends, batch selection.

Import-light on purpose: ``labeltool.config`` imports the source registry from here."""
