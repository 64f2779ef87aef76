"""The app's command line and the state a browser session starts from."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["app_parser", "app_state"]


def app_parser() -> argparse.ArgumentParser:
    """Options after ``streamlit run app.py --``: ``--folder``, ``--project-dir``, ``--image-size``, ``--no-umap``."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--folder")
    p.add_argument("--project-dir")
    p.add_argument("--image-size", type=int)
    p.add_argument("--no-umap", action="store_true")
    return p


def app_state(argv: Sequence[str], default_folder: str | Path) -> dict[str, Any]:
    """Starting values of the app's session state: the folder (``default_folder`` unless given),
    project dir, image size, whether UMAP runs on its own, and the empty page state.
    Arguments that are not the app's own (a test runner's, say) are ignored."""
    parser = app_parser()
    try:
        args = parser.parse_known_args(list(argv))[0]
    except SystemExit:  # a malformed value of an app option: start from the defaults
        args = parser.parse_known_args([])[0]
    return {"folder": args.folder or str(default_folder), "project_dir": args.project_dir,
            "image_size": args.image_size, "umap_auto": not args.no_umap, "flash": None, "evidence_for": None,
            "last_export": None}
