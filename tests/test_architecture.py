"""The package's import structure: data flows one way (no upward import between layers) and no
module imports itself through others (no cycles), lazy imports inside functions included; no
module over ~600 lines unless it is one cohesive job named below; test modules share helpers
through tests/helpers.py and tests/conftest.py, never by importing each other."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.helpers import REPO

PKG = REPO / "curriculum_search"

#: Layers from the bottom up; a module may import its own layer and the layers below it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "utils", "_version"}),
    frozenset({"data"}),
    frozenset({"models"}),
    frozenset({"distill"}),
    frozenset({"engine"}),
    frozenset({"curriculum"}),
    frozenset({"search"}),
    frozenset({"dashboard"}),
    frozenset({"api", "cli", "init_space", "predict", "__main__", "zoo", "<root>"}),
)


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _imports(*, runtime_only: bool = False) -> dict[str, set[str]]:
    """Every curriculum_search module and the curriculum_search modules it imports anywhere in it
    (function-level imports included; ``TYPE_CHECKING`` imports unless ``runtime_only``)."""
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in modules]  # `from pkg import submodule`
                if len(targets) < len(subs):
                    targets.append(node.module)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    edges[name].add(t)
    return {m: edges.get(m, set()) for m in modules}


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "<root>"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module}: its package {top!r} is in no layer of tests/test_architecture.py")


def test_no_upward_imports():
    bad = [
        f"{a} imports {b}"
        for a, targets in _imports().items()
        for b in targets
        if _layer(b) > _layer(a) and not (a == "curriculum_search" and b.startswith("curriculum_search."))
    ]
    assert not bad, "upward imports (a lower layer must not know a higher one):\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _imports(runtime_only=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_layer_table_knows_every_package():
    for module in _imports():
        _layer(module)


#: Lines a module may have; over it only if it is one cohesive job, named here in five words or fewer.
MAX_LINES = 600
LONG_MODULES = {
    "cli.py": "the command-line interface",
    "curriculum/trainer.py": "the progressive curriculum trainer",
    "distill/cache.py": "the teacher-output cache",
    "data/coco.py": "COCO-format detection datasets",
}


def test_no_module_over_600_lines_unless_it_is_one_named_job():
    lines = {str(p.relative_to(PKG)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    too_long = [
        f"{m}: {n} lines" for m, n in sorted(lines.items()) if n > MAX_LINES and m not in LONG_MODULES
    ]
    assert not too_long, "split these modules by job (or name their one job in LONG_MODULES):\n" + "\n".join(
        too_long
    )
    assert all(len(job.split()) <= 5 for job in LONG_MODULES.values())
    assert set(LONG_MODULES) <= set(lines), "LONG_MODULES names a module that does not exist"


def _test_modules_imported(tree: ast.AST) -> set[str]:
    """The ``tests/test_*.py`` modules a piece of code imports (absolute or relative imports)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            modules = [base, *(f"{base}.{a.name}" for a in node.names)]  # `from tests import test_x`
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        for module in modules:
            last = module.rsplit(".", 1)[-1]
            if last.startswith("test_") and (REPO / "tests" / f"{last}.py").exists():
                found.add(last)
    return found


def test_test_modules_do_not_import_each_other():
    """Helpers shared by test modules live in tests/helpers.py (functions, constants, test doubles)
    and tests/conftest.py (fixtures), never in a test module another one imports. Code in a string
    (a ``sitecustomize.py`` a test writes for its subprocesses) is checked too."""
    bad = []
    for path in sorted((REPO / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        snippets: list[ast.AST] = [tree]
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
                try:
                    snippets.append(ast.parse(node.value))
                except SyntaxError:
                    continue
        for snippet in snippets:
            bad += [f"{path.name} imports {m}" for m in sorted(_test_modules_imported(snippet))]
    assert not bad, "test modules importing other test modules (move the helper):\n" + "\n".join(bad)
