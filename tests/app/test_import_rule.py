"""House rules: labeltool/ never imports streamlit; app.py reaches labeltool only through the session,
and its renderers (app_widgets.py) not at all."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_labeltool_never_imports_streamlit() -> None:
    files = sorted((REPO / "labeltool").rglob("*.py"))
    assert len(files) > 10
    offenders = {
        str(p.relative_to(REPO)): sorted(n for n in _imports(p) if n == "streamlit" or n.startswith("streamlit."))
        for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_app_talks_only_to_the_session() -> None:
    used = {n for n in _imports(REPO / "app.py") if n == "labeltool" or n.startswith("labeltool.")}
    assert used == {"labeltool.session"}


def test_app_widgets_import_nothing_from_labeltool() -> None:
    """The generic renderers take the objects they are handed; only streamlit and the standard library."""
    names = _imports(REPO / "app_widgets.py")
    assert "streamlit" in names
    assert {n for n in names if n == "labeltool" or n.startswith("labeltool.")} == set()


def test_app_renderers_live_beside_the_layout() -> None:
    """app.py imports its renderers from app_widgets and stays a page layout (under 300 lines)."""
    assert "app_widgets" in _imports(REPO / "app.py")
    assert len((REPO / "app.py").read_text(encoding="utf-8").splitlines()) < 300
