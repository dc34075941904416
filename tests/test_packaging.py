"""The one-namespace layout: every package folder is installed under `apigen_mt`, nothing at top level."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"pipeline": "apigen_mt.pipeline", "simulators": "apigen_mt.simulators", "validators": "apigen_mt.validators", "blueprints": "apigen_mt.blueprints"}


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


def test_the_layers_import_only_downwards():
    """architecture.md section 3: simulators <- blueprints <- validators <- pipeline (arrows at what is imported)."""
    import ast

    order = ["simulators", "blueprints", "validators", "pipeline"]
    root = Path(__file__).resolve().parents[1]
    wrong = []
    for rank, layer in enumerate(order):
        for path in sorted((root / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "apigen_mt" and len(parts) > 1 and parts[1] in order[rank + 1 :]:
                        wrong.append(f"{path.relative_to(root)} imports {name}")
    assert wrong == []
