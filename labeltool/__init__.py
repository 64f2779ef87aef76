"""labeltool: semi-supervised image labeling with pretrained embeddings and metric learning."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path: str, runtime: str = "auto"):  # noqa: ANN201 - re-exported, typed in labeltool.io.model_io
    """Load an exported model folder; see :func:`labeltool.io.model_io.load_model`."""
    from labeltool.io.model_io import load_model as _load

    return _load(path, runtime)
