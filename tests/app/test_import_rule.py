"""House rule: labeltool/ never imports streamlit; app.py reaches labeltool only through the session."""

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
