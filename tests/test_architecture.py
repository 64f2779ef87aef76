"""Architecture rules of ``labeltool/``, checked on its source with ``ast``.

- no import cycles: every import counts (module level, inside functions, relative ones resolved),
  except those under ``if TYPE_CHECKING:``;
- only ``labeltool/cli.py`` imports ``labeltool.session``: everything else sits below the session;
- no file over 400 lines, no function over 60 lines;
- the package root holds only ``__init__``, ``cli`` and ``errors``: the rest sits in sub-packages.

Each check is a function of a package folder, so the tests at the end can run it on a small
deliberately bad package too.
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "labeltool"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


# ---------------------------------------------------------------------------- the module graph
@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "labeltool.data.store"
    path: Path
    is_package: bool  # an __init__.py


def package_modules(root: Path) -> dict[str, Module]:
    """Every ``.py`` file under the package folder ``root``, by dotted module name."""
    modules: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in ``tree`` except in the body of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # an ``else:`` branch does run
            continue
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module named by ``from <...> import``."""
    if node.level == 0:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    base = package.split(".")
    if node.level - 1 >= len(base):
        raise ValueError(f"{module.path}:{node.lineno}: relative import beyond the top-level package")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _import_targets(module: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """Modules of the package that ``node`` runs when ``module`` executes it.

    ``import a.b.c`` runs ``a.b.c`` and the packages above it; ``from a.b import c`` runs the
    submodule ``a.b.c`` if there is one, else needs the contents of ``a.b``. Packages above the
    importing module (and the module itself) are already being imported, so they only count when
    named for their contents.
    """
    named: set[str] = set()
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        source = _resolve_from(module, node)
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            named.add(sub if sub in known else source)
    own = {*_ancestors(module.name), module.name}
    targets = {t for t in named if t in known}
    for t in named:
        targets |= {a for a in _ancestors(t) if a in known and a not in own}
    return targets


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``module -> {imported module of the package -> line of the first such import}``."""
    modules = package_modules(root)
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, module in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for node in _runtime_imports(tree):
            for target in _import_targets(module, node, known):
                edges[target] = min(edges.get(target, node.lineno), node.lineno)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of ``graph`` (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _shortest_cycle(graph: dict[str, dict[str, int]], members: list[str]) -> list[str]:
    """A shortest cycle through ``members[0]`` that stays inside ``members`` (first == last)."""
    start, inside = members[0], set(members)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child in inside and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")


def import_cycles(root: Path) -> list[str]:
    """One line per import cycle of the package at ``root``: its modules and one closed path."""
    graph = import_graph(root)
    found = []
    for members in strongly_connected(graph):
        if len(members) == 1 and members[0] not in graph[members[0]]:
            continue
        path = _shortest_cycle(graph, members)
        steps = " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:], strict=False))
        found.append(f"{len(members)} modules {members}; e.g. {steps} -> {path[-1]}")
    return found


def session_importers(root: Path, allowed: tuple[str, ...] = ("cli",)) -> list[str]:
    """Modules other than ``allowed`` (names under the package) that import ``<package>.session``."""
    session = f"{root.name}.session"
    permitted = {f"{root.name}.{name}" for name in allowed} | {session}
    return sorted(
        f"{module} (line {edges[session]})"
        for module, edges in import_graph(root).items()
        if session in edges and module not in permitted
    )


def long_files(root: Path, limit: int = MAX_FILE_LINES) -> list[str]:
    """Files of the package over ``limit`` lines, as ``path: N lines``."""
    out = []
    for module in package_modules(root).values():
        n = len(module.path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{module.path.relative_to(root.parent)}: {n} lines")
    return out


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods (nested ones too) over ``limit`` lines, ``def`` line to last line."""
    found: list[tuple[str, int, str, int]] = []
    for module in package_modules(root).values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    found.append((str(module.path.relative_to(root.parent)), node.lineno, node.name, n))
    return [f"{path}:{line} {name}: {n} lines" for path, line, name, n in sorted(found)]


# ---------------------------------------------------------------------------- the rules, on labeltool/
def _listing(title: str, lines: list[str]) -> str:
    return f"{len(lines)} {title}:\n  " + "\n  ".join(lines)


def test_no_import_cycles() -> None:
    cycles = import_cycles(PACKAGE_ROOT)
    assert not cycles, _listing("import cycles (strongly connected components)", cycles)


def test_only_the_cli_imports_the_session() -> None:
    importers = session_importers(PACKAGE_ROOT)
    assert not importers, _listing("modules below the session import labeltool.session", importers)


def test_no_file_over_the_line_limit() -> None:
    files = long_files(PACKAGE_ROOT)
    assert not files, _listing(f"files over {MAX_FILE_LINES} lines", files)


def test_no_function_over_the_line_limit() -> None:
    functions = long_functions(PACKAGE_ROOT)
    assert not functions, _listing(f"functions over {MAX_FUNCTION_LINES} lines", functions)


def test_the_package_root_holds_only_the_entry_points() -> None:
    """Everything else lives in a sub-package named by its responsibility (session, config, data, ...)."""
    top = sorted(p.name for p in PACKAGE_ROOT.glob("*.py"))
    assert top == ["__init__.py", "cli.py", "errors.py"], top


def test_the_graph_sees_the_package() -> None:
    """Guards against a check that passes because it reads nothing."""
    graph = import_graph(PACKAGE_ROOT)
    assert {"labeltool", "labeltool.cli", "labeltool.session", "labeltool.config"} <= set(graph)
    assert "labeltool.session" in graph["labeltool.cli"]
    assert "labeltool.io.model_io" in graph["labeltool"]  # an import inside a function counts


# ---------------------------------------------------------------------------- the checks can fail
def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_cycles_through_functions_relative_imports_and_package_inits_are_found(tmp_path: Path) -> None:
    root = _write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "def f():\n    from pkg import a\n",  # function level
        "c.py": "from . import d\n",  # relative
        "d.py": "from .c import x\n",
        "config.py": "from pkg.sub.registry import R\n",  # runs pkg/sub/__init__.py first
        "sub/__init__.py": "from .propose import P\n",
        "sub/registry.py": "R = 1\n",
        "sub/propose.py": "from ..config import C\n",
        "selfish.py": "from pkg.selfish import x\n",
        "ok.py": "import os\nimport pkg.sub.registry\n",
    })
    graph = import_graph(root)
    assert graph["pkg.b"] == {"pkg.a": 2}
    assert graph["pkg.config"] == {"pkg.sub": 1, "pkg.sub.registry": 1}
    assert graph["pkg.sub.propose"] == {"pkg.config": 1}
    cycles = import_cycles(root)
    assert len(cycles) == 4, cycles
    text = "\n".join(cycles)
    for members in (["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"], ["pkg.config", "pkg.sub", "pkg.sub.propose"],
                    ["pkg.selfish"]):
        assert f"{len(members)} modules {members}" in text
    assert "pkg.a (line 1) -> pkg.b (line 2) -> pkg.a" in text
    assert "pkg.ok" not in text


def test_imports_under_type_checking_do_not_count_but_its_else_does(tmp_path: Path) -> None:
    root = _write_package(tmp_path, {
        "__init__.py": "",
        "e.py": """\
            import typing
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.f import F
            if typing.TYPE_CHECKING:
                import pkg.g
            class K:
                if TYPE_CHECKING:
                    from pkg.h import H
            """,
        "f.py": "import pkg.e\n",
        "g.py": "import pkg.e\n",
        "h.py": "import pkg.e\n",
        "i.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\nelse:\n    import pkg.j\n",
        "j.py": "import pkg.i\n",
    })
    assert import_graph(root)["pkg.e"] == {}
    assert import_cycles(root) == ["2 modules ['pkg.i', 'pkg.j']; e.g. pkg.i (line 5) -> pkg.j (line 1) -> pkg.i"]


def test_modules_below_the_session_importing_it_are_listed(tmp_path: Path) -> None:
    root = _write_package(tmp_path, {
        "__init__.py": "",
        "session.py": "class Session: ...\n",
        "cli.py": "from pkg.session import Session\n",
        "ui/__init__.py": "",
        "ui/views.py": "def page():\n    from pkg.session import Session\n",
        "io.py": "\n\nfrom . import session\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.session import Session\n",
    })
    assert session_importers(root) == ["pkg.io (line 3)", "pkg.ui.views (line 2)"]


def test_long_files_and_functions_are_listed(tmp_path: Path) -> None:
    def body(n: int) -> str:
        return "".join(f"    x{i} = {i}\n" for i in range(n))

    root = _write_package(tmp_path, {
        "__init__.py": "",
        "fits.py": "def f():\n" + body(59) + "\n" * (400 - 60),  # 60-line function, 400-line file
        "big.py": "\n" * 401,
        "funcs.py": "def long():\n" + body(60)
                    + "class C:\n    @property\n    def method(self):\n" + body(61).replace("    ", "        ")
                    + "def outer():\n    def inner():\n" + body(61).replace("    ", "        ") + "    return inner\n",
    })
    assert len((root / "fits.py").read_text().splitlines()) == 400
    assert long_files(root) == ["pkg/big.py: 401 lines"]
    assert long_functions(root) == [
        "pkg/funcs.py:1 long: 61 lines",
        "pkg/funcs.py:64 method: 62 lines",  # from the def line: decorators are not counted
        "pkg/funcs.py:126 outer: 64 lines",
        "pkg/funcs.py:127 inner: 62 lines",
    ]


@pytest.mark.parametrize("check", [import_cycles, session_importers, long_files, long_functions])
def test_a_clean_package_passes_every_check(tmp_path: Path, check: object) -> None:
    root = _write_package(tmp_path, {
        "__init__.py": "",
        "session.py": "from pkg import core\n",
        "cli.py": "from pkg.session import S\n",
        "core.py": "def f():\n    return 1\n",
    })
    assert callable(check) and check(root) == []
