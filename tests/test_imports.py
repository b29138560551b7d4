"""The import graph of app/ and engine/, read from the source (ast, nothing imported): no cycle, every arrow down.

The layers, lowest first, are the LAYERS table below: the shared core (errors, events, audio, the KV cache, language
codes, the Backend seam and family registry); what the model families share (engine/models: checkpoint I/O,
placement, decoder plumbing, search); the families side by side (engine/models/whisper, engine/models/s2t2), which
never import each other; load_model(), which knows every family; text MT (engine/mt, built on models); streaming
(engine/streaming and every other engine module); app/. A module may import its own layer and the ones below.
Imports under `if TYPE_CHECKING:` never run, so they cannot close a cycle; they still may not point up.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tests import REPO

PACKAGES = ("app", "engine")
# Lowest first. A module belongs to the layer of the most specific pattern naming it: its exact name, else the
# longest `package.*` (the package and everything under it), so a module that moves keeps its rule.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core",
        (
            "engine",
            "engine.errors",
            "engine.events",
            "engine.audio",
            "engine.kv_cache",
            "engine.languages",
            "engine.text",
            "engine.backend",
        ),
    ),
    ("models", ("engine.models.*",)),
    ("family", ("engine.models.whisper.*", "engine.models.s2t2.*")),
    ("loading", ("engine.models.loading",)),
    ("mt", ("engine.mt.*",)),
    ("streaming", ("engine.streaming.*", "engine.*")),
    ("app", ("app.*",)),
)
FAMILIES = LAYERS[2][1]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a name imported from a package counts as its submodule when it is one)
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for file in sorted((REPO / package).rglob("*.py")):
            parts = list(file.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = file
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, file: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of a module of ours in `file`, at module level or inside functions."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def resolve(module: str) -> str | None:
        while module not in modules and "." in module:
            module = module.rpartition(".")[0]
        return module if module in modules and module != name else None

    def add(module: str, line: int, type_only: bool) -> None:
        target = resolve(module)
        if target is not None:
            found.append(Import(name, target, line, type_only))

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit_one(stmt, True)
                for stmt in child.orelse:
                    visit_one(stmt, type_only)
            else:
                visit_one(child, type_only)

    def visit_one(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, type_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                add(sub if sub in modules else module, node.lineno, type_only)
        visit(node, type_only)

    visit(ast.parse(file.read_text(), str(file)), False)
    return found


def _graph() -> list[Import]:
    modules = _modules()
    return [imp for name, file in modules.items() for imp in _imports(name, file, modules)]


def _matches(pattern: str, module: str) -> tuple[int, bool] | None:
    """How specifically `pattern` names `module` (longer first, an exact name before a package), or None."""
    if pattern.endswith(".*"):
        package = pattern[:-2]
        return (len(package), False) if module == package or module.startswith(package + ".") else None
    return (len(pattern), True) if module == pattern else None


def _layer(module: str) -> str:
    found = [(m, layer) for layer, patterns in LAYERS for p in patterns if (m := _matches(p, module)) is not None]
    assert found, f"{module} is in no layer: add it to LAYERS"
    return max(found)[1]


def _family(module: str) -> str | None:
    return next((p for p in FAMILIES if _matches(p, module) is not None), None)


NAMES = tuple(layer for layer, _ in LAYERS)
ALLOWED = {layer: set(NAMES[: i + 1]) for i, layer in enumerate(NAMES)}  # a layer and the ones below it


def _cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, list[str]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e.target)
        graph.setdefault(e.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def test_the_graph_is_read(tmp_path: Path) -> None:
    """The reader finds relative, absolute, function-level and annotation-only imports (a guard for the checks)."""
    edges = {(e.source, e.target, e.type_only) for e in _graph()}
    assert ("engine.models.loading", "engine.models.checkpoint", False) in edges  # from .checkpoint import ...
    assert ("engine.mt.model", "engine.models.seq2seq", False) in edges  # from ..models.seq2seq import ...
    assert ("engine.models.s2t2.generate", "engine.models.search", False) in edges  # from ..search import ...
    assert ("engine.models.whisper.load", "engine.errors", False) in edges  # from ...errors import ...
    assert ("app.commands.file", "engine.models.loading", False) in edges  # inside run()
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine.backend import Backend\n")
    assert _imports("engine.mod", source, {"engine.mod": source, "engine.backend": source}) == [
        Import("engine.mod", "engine.backend", 3, True)
    ]


def test_the_layer_table() -> None:
    """Modules land in the layer the table means, wherever they sit under a package prefix."""
    assert _layer("engine") == _layer("engine.backend") == "core"
    assert _layer("engine.models.checkpoint") == "models"
    assert _layer("engine.models.whisper") == _layer("engine.models.s2t2.load") == "family"
    assert _layer("engine.models.loading") == "loading"
    assert _layer("engine.streaming.session") == _layer("engine.session") == "streaming"
    assert _layer("app.server.connection") == "app"
    assert _family("engine.models.whisper.tokenizer") == "engine.models.whisper.*"
    assert _family("engine.models.search") is None


def test_no_import_cycles() -> None:
    """No set of modules imports itself round in a circle (imports that run: TYPE_CHECKING ones never do)."""
    edges = [e for e in _graph() if not e.type_only]
    cycles = _cycles(edges)
    detail = [
        f"{e.source} -> {e.target} (line {e.line})"
        for e in edges
        if any(e.source in c and e.target in c for c in cycles)
    ]
    assert not cycles, f"import cycles {cycles}:\n" + "\n".join(detail)


def test_every_import_points_down() -> None:
    """engine/ never imports app/; the model families never import load_model, mt or streaming; the core imports
    only the core; one model family never imports another."""
    upward = []
    for e in _graph():
        source, target = _layer(e.source), _layer(e.target)
        if target not in ALLOWED[source]:
            upward.append(f"{e.source} ({source}) -> {e.target} ({target}), line {e.line}")
        elif source == target == "family" and _family(e.source) != _family(e.target):
            upward.append(f"{e.source} -> {e.target}: one family importing another, line {e.line}")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_every_package_is_installed() -> None:
    """pyproject.toml lists every package of app/ and engine/ (setuptools installs only those it names)."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(f.parent.relative_to(REPO).parts) for p in PACKAGES for f in (REPO / p).rglob("__init__.py")}
    assert packages <= listed, f"missing from [tool.setuptools] packages: {sorted(packages - listed)}"


# app/, bottom to top: what the server and the commands both use (captions; the asyncio engine they drive); the
# server (app/server/); the CLI, its commands and their helpers (mic, terminal, translation, scale/)
APP_BASE = frozenset({"app", "app.captions", "app.runtime"})


def _app_layer(module: str) -> int:
    if module in APP_BASE:
        return 0
    return 1 if module == "app.server" or module.startswith("app.server.") else 2


def test_the_server_never_imports_the_commands() -> None:
    """app/server/ imports engine/, itself and app's shared base; never the CLI, its commands or their helpers
    (what the server needs from them is handed in: a ServerConfig, a ServerTranslation)."""
    upward = [
        f"{e.source} -> {e.target}, line {e.line}"
        for e in _graph()
        if e.source.startswith("app") and e.target.startswith("app") and _app_layer(e.target) > _app_layer(e.source)
    ]
    assert not upward, "imports pointing up in app/:\n" + "\n".join(upward)


def test_app_has_no_cycle_even_through_annotations() -> None:
    """No app module names another that names it back, not even under TYPE_CHECKING: a connection does not know
    the application that runs it (it knows the hub), an API adapter does not know the server."""
    edges = [e for e in _graph() if e.source.startswith("app") and e.target.startswith("app")]
    cycles = _cycles(edges)
    assert not cycles, f"import cycles in app/ {cycles}"
