"""The RL example scripts name only what exists: every import of their `__main__` block resolves, so a renamed
adapter function breaks this test rather than a user's first training run (running them needs a model to train
and a human endpoint; tests/test_rl_trl.py and test_rl_verifiers.py train through the same functions)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main_block_imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert len(guards) == 1, f"{path.name} has no `if __name__ == '__main__':` block"
    return [
        (node.module, [alias.name for alias in node.names])
        for node in ast.walk(guards[0])
        if isinstance(node, ast.ImportFrom) and node.module
    ]


@pytest.mark.parametrize(("script", "extra"), [("train_trl.py", "trl"), ("train_verifiers.py", "verifiers")])
def test_every_name_an_example_imports_exists(script: str, extra: str) -> None:
    pytest.importorskip(extra, reason=f"the `{extra}` extra is not installed (pip install 'apigen-mt[{extra}]')")
    imports = main_block_imports(EXAMPLES / script)
    assert any(module.startswith("apigen_mt.pipeline.rl") for module, _ in imports)
    missing = [
        f"{module}.{name}"
        for module, names in imports
        for name in names
        if not hasattr(importlib.import_module(module), name)
    ]
    assert missing == [], f"{script} imports names that do not exist"
