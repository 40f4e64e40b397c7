"""The package's layout keeps its promises (docs/architecture.md): no import cycle (imports inside
functions counted), no private name of one module used by another, no module over 400 lines or
function over 60, and the reward model's kind (SCORER) looked at in one module."""

import ast
import os
import re

import pytest

from t5_helpers import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, "rso_jax")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules() -> dict[str, str]:
    """Dotted module name -> path, for every module of the package."""
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path[:-3], REPO_ROOT).replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = modules()
TREES = {name: ast.parse(open(path).read(), path) for name, path in MODULES.items()}


def imported_modules(tree: ast.AST) -> set[str]:
    """The package's modules a module imports, anywhere in it (`from a import b` counts b when
    b is a module, else a)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    found.add(full)
                elif node.module in MODULES:
                    found.add(node.module)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = {name: imported_modules(tree) - {name} for name, tree in TREES.items()}
    assert cycles(graph) == []


def test_no_private_name_of_another_module_is_used():
    used = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                used += [f"{name}: from {node.module} import {alias.name}" for alias in node.names
                         if re.match(r"_[^_]", alias.name)]
            elif (isinstance(node, ast.Attribute) and re.match(r"_[^_]", node.attr)
                  and isinstance(node.value, ast.Name)
                  and node.value.id not in ("self", "cls", "os")):  # os._exit is public API
                used.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert used == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_are_short(name):
    source = open(MODULES[name]).read()
    assert source.count("\n") <= MAX_MODULE_LINES
    long_functions = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
                      for node in ast.walk(TREES[name])
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long_functions == []


def test_the_reward_models_kind_is_looked_at_in_one_module():
    """Only experiment/scorers.py names a SCORER value (config gives its default)."""
    naming = set()
    for name, path in MODULES.items():
        for number, line in enumerate(open(path), 1):
            if re.search(r"""["'](pairwise|pointwise)["']""", line):
                naming.add(name if not line.strip().startswith("scorer: str =") else "default")
    assert naming == {"rso_jax.experiment.scorers", "default"}
