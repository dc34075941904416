"""`apigen-mt envs new`: the package it writes passes its own tests and loads by its module path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import apigen_mt.pipeline.cli.data  # noqa: F401  (registers the commands on `app`, as `main()` does)
import apigen_mt.simulators.domain as domain_module
from apigen_mt.pipeline.cli.main import app
from apigen_mt.pipeline.scaffold import ScaffoldError, scaffold

CLI = Path(sys.executable).parent / "apigen-mt"
FILES = [
    "__init__.py",
    "data.py",
    "example_tasks.json",
    "needs.py",
    "policy.md",
    "rules.py",
    "test_demo_env.py",
    "tools.py",
]


@pytest.fixture
def fresh_imports(tmp_path, monkeypatch):
    """A private registry, and the modules imported from tmp_path forgotten after the test."""
    domain_module.domains()
    monkeypatch.setattr(domain_module, "_REGISTRY", dict(domain_module._REGISTRY))
    yield
    for name in [name for name in sys.modules if name.split(".")[0] in ("demo_env", tmp_path.name)]:
        del sys.modules[name]


def test_a_new_domain_passes_its_own_tests_and_loads_by_module_path(tmp_path, monkeypatch, fresh_imports):
    created = CliRunner().invoke(app, ["envs", "new", "demo_env", "--dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    assert sorted(path.name for path in (tmp_path / "demo_env").iterdir()) == FILES
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "demo_env"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0 and "6 passed" in tests.stdout, tests.stdout + tests.stderr
    # Its folder is a namespace package on sys.path, so `<folder>.demo_env` is a dotted module path.
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    domain = domain_module.get_domain(f"{tmp_path.name}.demo_env")
    assert domain.name == "demo_env" and domain_module.get_domain("demo_env") is domain  # registered on import
    assert [spec.name for spec in domain.toolkit.specs() if spec.writes] == ["close_ticket"]
    assert [rule.id for rule in domain.rules] == ["P1"] and domain.api_graph and "tickets" in domain.load()
    assert list(domain.write_needs) == ["close_ticket"]


def test_an_occupied_folder_is_refused_with_status_2_and_one_line(tmp_path):
    (tmp_path / "demo_env").mkdir()
    (tmp_path / "demo_env" / "notes.txt").write_text("mine", encoding="utf-8")
    result = subprocess.run(
        [str(CLI), "envs", "new", "demo_env", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert (
        result.stderr
        == f"apigen-mt: error: {tmp_path / 'demo_env'} already exists and is not empty; choose another --dir or name\n"
    )
    assert [path.name for path in (tmp_path / "demo_env").iterdir()] == ["notes.txt"]  # nothing was added


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Demo", "domain name 'Demo' must be a lowercase Python identifier, such as 'my_shop'"),
        ("class", "domain name 'class' must be a lowercase Python identifier, such as 'my_shop'"),
        ("retail", "domain name 'retail' is taken by a built-in domain; choose another"),
        ("json", "a module named 'json' already exists ("),
        ("taken", "taken exists and is not a folder; choose another --dir or name"),
    ],
)
def test_bad_names_and_places_are_refused(tmp_path, name, message):
    (tmp_path / "taken").write_text("mine", encoding="utf-8")
    with pytest.raises(ScaffoldError) as refused:
        scaffold(name, tmp_path)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_empty_target_folder_is_used(tmp_path, fresh_imports):
    (tmp_path / "demo_env").mkdir()
    assert CliRunner().invoke(app, ["envs", "new", "demo_env", "--dir", str(tmp_path)]).exit_code == 0
    assert sorted(path.name for path in (tmp_path / "demo_env").iterdir()) == FILES
