"""The import graph of app/ and engine/, read from the source (ast, nothing imported): no cycle, every arrow down.

Layers, lowest first: the shared core (errors, events, audio, the KV cache, Whisper's tokenizer, spoken-language
codes, text rules); the model families (engine/models, then engine/mt, which builds on models); the Backend seam with Whisper's
offline decoding (waiting to move into models/); the rest of engine/ (engine/streaming; a new engine module
lands here until it is classified); app/. A module may import its own layer and the ones below. Imports under
`if TYPE_CHECKING:` never run, so they cannot close a cycle; they still may not point up, except that a model family
may name the Backend Protocol it implements in annotations.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "engine")
CORE = frozenset({"engine", "engine.errors", "engine.events", "engine.audio", "engine.kv_cache", "engine.tokenizer",
                  "engine.languages", "engine.text"})
SEAM = "engine.backend"
SEAM_LAYER = frozenset({SEAM, "engine.decoding", "engine.transcribe"})


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
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


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


def _layer(module: str) -> str:
    if module in CORE:
        return "core"
    if module in SEAM_LAYER:
        return "seam"
    for prefix in ("engine.models", "engine.mt"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return "streaming" if module.split(".")[0] == "engine" else "app"


LAYERS = ("core", "engine.models", "engine.mt", "seam", "streaming", "app")
ALLOWED = {layer: set(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)}  # a layer and the ones below it


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


def test_the_graph_is_read() -> None:
    """The reader finds relative, absolute, function-level and annotation-only imports (a guard for the checks)."""
    edges = {(e.source, e.target, e.type_only) for e in _graph()}
    assert ("engine.models.loading", "engine.models.checkpoint", False) in edges  # from .checkpoint import ...
    assert ("engine.mt.model", "engine.models.seq2seq", False) in edges  # from ..models.seq2seq import ...
    assert ("app.commands.file", "engine.models.loading", False) in edges  # inside run()
    assert ("engine.models.s2t2_decoding", "engine.backend", True) in edges  # under TYPE_CHECKING


def test_no_import_cycles() -> None:
    """No set of modules imports itself round in a circle (imports that run: TYPE_CHECKING ones never do)."""
    edges = [e for e in _graph() if not e.type_only]
    cycles = _cycles(edges)
    detail = [f"{e.source} -> {e.target} (line {e.line})" for e in edges
              if any(e.source in c and e.target in c for c in cycles)]
    assert not cycles, f"import cycles {cycles}:\n" + "\n".join(detail)


def test_every_import_points_down() -> None:
    """engine/ never imports app/; the seam never imports streaming; the model families import only the core and
    themselves (models never mt/); the core imports only the core."""
    upward = []
    for e in _graph():
        source, target = _layer(e.source), _layer(e.target)
        if target in ALLOWED[source]:
            continue
        if e.type_only and source in ("engine.models", "engine.mt") and e.target == SEAM:
            continue  # the Backend Protocol, named in annotations by the families that implement it
        upward.append(f"{e.source} ({source}) -> {e.target} ({target}), line {e.line}")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)
