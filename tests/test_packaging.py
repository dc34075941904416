"""The one-namespace layout (every package folder is installed under `apigen_mt`, nothing at top level) and the
import graph of the project's modules: the layers import only downwards, and no module imports one that imports
it back."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {
    "pipeline": "apigen_mt.pipeline",
    "simulators": "apigen_mt.simulators",
    "validators": "apigen_mt.validators",
    "blueprints": "apigen_mt.blueprints",
}


def test_every_package_folder_is_listed_under_apigen_mt():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {folder: name for name, folder in config["package-dir"].items()} == MAPPED
    on_disk = {
        ".".join([MAPPED[init.relative_to(ROOT).parts[0]], *init.relative_to(ROOT).parts[1:-1]])
        for top in MAPPED
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk == set(config["packages"])


def test_no_top_level_pipeline_or_validators_module_is_importable_from_the_install():
    import importlib.util

    import apigen_mt.validators

    assert Path(apigen_mt.validators.__file__).parent == ROOT / "validators"
    spec = importlib.util.find_spec("validators")
    assert spec is None or Path(spec.origin or "").parent != ROOT / "validators"


# Lowest first; a module imports only from its own layer and those before it (arrows point at what is imported).
# Stage 1 of Phase 1 is the validators', so blueprints sit above validators.
LAYERS = ("simulators", "validators", "blueprints", "pipeline")


@dataclass(frozen=True)
class Module:
    name: str  # the import name: `apigen_mt.simulators.domains.retail` for that package's __init__.py
    path: Path
    is_package: bool


def project_modules(root: Path, folders: Iterable[str]) -> dict[str, Module]:
    """Every module under the folders, subpackages included, by its import name."""
    modules = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(["apigen_mt", *(parts[:-1] if is_package else parts)])
            modules[name] = Module(name, path, is_package)
    return modules


def imported_names(node: ast.Import | ast.ImportFrom, module: Module, known: Mapping[str, Module]) -> list[str]:
    """The absolute names an import statement brings in; `from a import b` names `a.b` when that is a module
    (a submodule import), else `a`. Relative imports are resolved against the importing module's package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def runtime_imports(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs: at module level, or inside a function when it is called (both circles issue 17
    names were closed by such imports); not one under `if TYPE_CHECKING:`, which only a type checker reads."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from runtime_imports(node.orelse)
        else:
            yield from runtime_imports(ast.iter_child_nodes(node))


def import_graph(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    """Module -> the project modules it imports when run."""
    graph = {}
    for name, module in modules.items():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        graph[name] = {
            target
            for node in runtime_imports(tree.body)
            for target in imported_names(node, module, modules)
            if target in modules
        }
    return graph


def import_circles(graph: Mapping[str, set[str]]) -> dict[frozenset[str], str]:
    """Each group of modules that import one another in a circle (a strongly connected component), with one
    circle through it spelled out: `a -> b -> a`."""
    groups = [group for group in _connected_groups(graph) if len(group) > 1 or group[0] in graph[group[0]]]
    return {frozenset(group): " -> ".join(_circle_through(min(group), set(group), graph)) for group in groups}


def _connected_groups(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (the graph's depth is not bounded by Python's stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while not group or group[-1] != node:
                        group.append(stack.pop())
                        on_stack.discard(group[-1])
                    groups.append(group)
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return groups


def _circle_through(start: str, group: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """The shortest way from `start` back to itself inside its group (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in no circle")


def test_the_layers_import_only_downwards():
    """Every import, wherever it is (a function's, a type checker's), of every module of every package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = project_modules(ROOT, LAYERS)
    assert {name for name, module in modules.items() if module.is_package} == set(config["packages"])
    wrong = []
    for module in modules.values():
        rank = LAYERS.index(module.name.split(".")[1])
        for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in imported_names(node, module, modules):
                    parts = name.split(".")
                    if parts[0] == "apigen_mt" and len(parts) > 1 and parts[1] in LAYERS[rank + 1 :]:
                        wrong.append(f"{module.path.relative_to(ROOT)} imports {name}")
    assert wrong == []


# Inside pipeline, its subpackages from the files up, by the same rule. Its top-level modules are not ranked:
# `config` is read by every subpackage and made of the engines' settings; `api` is the front door the CLI calls.
PIPELINE_LAYERS = ("store", "engines", "run", "rl", "export", "eval", "view", "cli")


def test_the_pipeline_subpackages_import_only_downwards():
    modules = project_modules(ROOT, ["pipeline"])
    ranked = {name.split(".")[2] for name, module in modules.items() if module.is_package and name.count(".") == 2}
    assert ranked == set(PIPELINE_LAYERS)
    wrong = []
    for module in modules.values():
        parts = module.name.split(".")
        if len(parts) < 4 and not (module.is_package and len(parts) == 3):
            continue  # a top-level module of pipeline
        rank = PIPELINE_LAYERS.index(parts[2])
        for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in imported_names(node, module, modules):
                    target = name.split(".")
                    if (
                        target[:2] == ["apigen_mt", "pipeline"]
                        and len(target) > 2
                        and target[2] in PIPELINE_LAYERS[rank + 1 :]
                    ):
                        wrong.append(f"{module.path.relative_to(ROOT)} imports {name}")
    assert wrong == []


def test_no_module_imports_one_that_imports_it_back():
    circles = import_circles(import_graph(project_modules(ROOT, LAYERS)))
    assert sorted(circles.values()) == []


def test_a_circle_closed_inside_a_function_is_found_and_named(tmp_path):
    package = tmp_path / "simulators"
    (package / "inner").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "a.py": "from apigen_mt.simulators import b\n",
        "b.py": "def later():\n    from .inner import c\n",
        "inner/__init__.py": "",
        "inner/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..d import D\n"
        "else:\n    import apigen_mt.simulators.a\n",
        "d.py": "from apigen_mt.simulators.inner import c\n",
        "e.py": "from . import e\n",
    }
    for name, text in sources.items():
        (package / name).write_text(text, encoding="utf-8")
    circles = import_circles(import_graph(project_modules(tmp_path, ["simulators"])))
    assert circles == {
        frozenset({"apigen_mt.simulators.a", "apigen_mt.simulators.b", "apigen_mt.simulators.inner.c"}): (
            "apigen_mt.simulators.a -> apigen_mt.simulators.b -> apigen_mt.simulators.inner.c -> apigen_mt.simulators.a"
        ),
        frozenset({"apigen_mt.simulators.e"}): "apigen_mt.simulators.e -> apigen_mt.simulators.e",
    }  # d imports c, but c imports d only for the type checker


def test_no_shell_module_is_over_400_lines():
    """A module past about 400 lines does several jobs; the shell is split by responsibility instead."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / "pipeline").rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}
