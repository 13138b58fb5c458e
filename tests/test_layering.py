"""The project's imports point one way (docs/architecture.md §12).

Every import of a project module counts, also one inside a function; only
``if TYPE_CHECKING:`` blocks are exempt. Migrations are left out: they name
models of other apps by string and depend on other apps' migrations by design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. An app may import from its own layer's app and from lower layers only.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"arbitrage"}),
    frozenset({"accounts"}),
    frozenset({"placement"}),
    frozenset({"storage"}),
    frozenset({"workloads"}),
    frozenset({"billing", "gateway", "fleet"}),
    frozenset({"console"}),
    frozenset({"demo"}),
)
# The program that runs on an instance (the standard library only), and the customers' client
# and CLI (installed without Django): neither uses anything else of the project.
STANDALONE = frozenset({"agent", "arbitrage_client"})
# The composition root wires every app together; nothing imports it.
ROOT_MODULES = frozenset({"arbitrage.urls", "arbitrage.asgi", "arbitrage.wsgi"})
PACKAGES = frozenset().union(*LAYERS) | STANDALONE
RANK = {app: rank for rank, layer in enumerate(LAYERS) for app in layer}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in sorted(PACKAGES):
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    exempt = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                exempt.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return exempt


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (every import, function-level too)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        exempt = _type_checking_nodes(tree)
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in exempt:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    prefix = package[: len(package) - node.level + 1]
                    base = ".".join([*prefix, *([node.module] if node.module else [])])
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            targets.update(found for name in names if (found := _resolve(name, modules)) not in (None, module))
        graph[module] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_no_module_of_the_project_imports_itself_back_through_others(graph):
    assert import_cycles(graph) == []


def test_every_import_points_down_the_layers(graph):
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module not in ROOT_MODULES and module.split(".")[0] in RANK
        for target in targets
        if target.split(".")[0] in RANK and RANK[target.split(".")[0]] > RANK[module.split(".")[0]]
    )
    assert upward == []


def test_the_agent_and_the_client_use_nothing_of_the_project_but_themselves(graph):
    outside = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] in STANDALONE
        for target in targets
        if target.split(".")[0] != module.split(".")[0]
    )
    assert outside == []


def test_nothing_imports_the_composition_root(graph):
    assert sorted(module for module, targets in graph.items() if targets & ROOT_MODULES) == []


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    package = tmp_path / "workloads"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from workloads import b\n")
    (package / "b.py").write_text("def later():\n    from workloads.a import thing\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from workloads.a import thing\n"
    )
    modules = {name: package / f"{name.split('.')[-1]}.py" for name in ("workloads.a", "workloads.b", "workloads.c")}
    modules["workloads"] = package / "__init__.py"
    graph = import_graph(modules)
    assert import_cycles(graph) == [["workloads.a", "workloads.b"]]
    assert graph["workloads.c"] == set()
