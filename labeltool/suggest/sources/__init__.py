"""Suggestion sources: one scorer per module, registered with :func:`labeltool.suggest.registry.register_source`."""
