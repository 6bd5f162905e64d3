"""The house's layering: every import of the project (function-level ones included) runs downward, no circles.

Units are the top-level modules and subpackages of ``dynprune`` (``dynprune.gates``, ``dynprune.config``, ...)
and ``agents``. A new module must be given a layer here: that is where a reader looks it up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lower numbers are lower floors; a unit may import its own floor and those below.
LAYERS: dict[str, int] = {
    # base: imports nothing of the project
    "dynprune.base": 0,
    "dynprune.registry": 0,
    "dynprune.solve": 0,
    # spine: configs, data, tracking; what a model is, its sites and cost; the training spine
    "dynprune.imagefolder": 1,
    "dynprune.track": 1,
    "dynprune.plots": 1,
    "dynprune.timing": 1,
    "dynprune.runtimes": 1,
    "dynprune.sites": 1,
    "dynprune.checkpoints": 1,
    "dynprune.distill": 1,
    "dynprune.runlock": 1,
    "dynprune.outputs": 1,
    "dynprune.orphans": 1,
    "dynprune.datafiles": 1,
    "dynprune.formats": 1,
    "dynprune.data": 2,
    "dynprune.loader": 2,
    "dynprune.models": 2,
    "dynprune.cost": 2,
    "dynprune.fold": 2,
    "dynprune.distributed": 2,
    "dynprune.config": 3,  # TrainConfig checks model and data-set names against their registries
    "dynprune.methods": 3,
    "dynprune.init_weights": 3,  # --init: a checkpoint's weights, cut to the run's model when it is smaller
    "dynprune.evaluation": 4,
    "dynprune.optim": 4,
    "dynprune.train_callbacks": 1,
    "dynprune.engine": 4,
    "dynprune.cli": 4,
    # methods
    "dynprune.gates": 5,
    "dynprune.prune": 5,
    # one module above the methods, and what goes through it
    "dynprune.catalog": 6,
    "dynprune.api": 7,  # the public API: every CLI builds its method through it
    "dynprune.runner": 7,
    "dynprune.rebuild": 7,
    # harness and benchmarks, CLIs
    "dynprune.compare": 8,
    "dynprune.bench": 8,
    "dynprune.train": 9,
    "dynprune.resume_args": 8,
    "dynprune.export": 9,
    "dynprune.cascade": 8,  # a CLI over finished runs (rebuild), beside the harness
    # the RL search uses dynprune; dynprune never imports it
    "agents": 10,
}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "agents":
        return "agents"
    if parts[0] == "dynprune" and len(parts) > 1:
        return ".".join(parts[:2])
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every project module this file imports, anywhere in it (absolute dotted names)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x` imports x
    return {m for m in found if m.split(".")[0] in ("dynprune", "agents")}


def _unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted([*REPO.glob("dynprune/**/*.py"), *REPO.glob("agents/**/*.py")]):
        unit = _unit(_module_name(path))
        if unit is None:
            continue
        targets = {_unit(m) for m in _imports(path)} - {None, unit}
        graph.setdefault(unit, set()).update(targets)
    return graph


def test_every_unit_has_a_layer():
    graph = _unit_graph()
    units = set(graph) | {t for targets in graph.values() for t in targets}
    assert units <= set(LAYERS), f"give these a layer in tests/test_layers.py: {sorted(units - set(LAYERS))}"


def test_imports_only_run_downward():
    upward = [
        f"{unit} (layer {LAYERS[unit]}) imports {target} (layer {LAYERS[target]})"
        for unit, targets in _unit_graph().items()
        for target in targets
        if LAYERS[target] > LAYERS[unit]
    ]
    assert not upward, "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_units():
    assert _cycle(_unit_graph()) is None


def test_no_import_circle_between_modules():
    """Inside a package too: module -> module, function-level imports included."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in [*REPO.glob("dynprune/**/*.py"), *REPO.glob("agents/**/*.py")]}
    for path in [*REPO.glob("dynprune/**/*.py"), *REPO.glob("agents/**/*.py")]:
        name = _module_name(path)
        graph[name] = {m for m in _imports(path) if m in modules and m != name and not name.startswith(m + ".")}
    assert _cycle(graph) is None


@pytest.mark.parametrize(("graph", "expected"), [({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]), ({"a": {"b"}}, None)])
def test_cycle_finder_finds_a_planted_circle(graph, expected):
    assert _cycle(graph) == expected


MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 400


def test_no_function_over_50_lines_and_no_module_over_400():
    """Small parts a newcomer can read whole: a longer function or module is split before it lands."""
    too_long = []
    for path in sorted([*(REPO / "dynprune").rglob("*.py"), *(REPO / "agents").rglob("*.py")]):
        source = path.read_text()
        name = path.relative_to(REPO)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, too_long


def test_the_one_root_finder_brackets_a_monotone_test():
    from dynprune.solve import monotone_bracket

    a, b = monotone_bracket(lambda x: x * x <= 2.0, 0.0, 2.0, 40)
    assert a * a <= 2.0 < b * b and b - a < 1e-11
    a, b = monotone_bracket(lambda r: 1.0 - r > 0.3, 0.0, 0.999, 30)  # MACs falling with a ratio
    assert a < 0.7 <= b and b - a < 1e-8
