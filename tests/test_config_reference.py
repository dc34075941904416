"""docs/config.md is the reference the generator makes from the config's pydantic models, current and complete."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from apigen_mt.pipeline.config import TaskFile
from apigen_mt.pipeline.config_reference import UndocumentedField, config_reference
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig
from apigen_mt.simulators.episode import EpisodeSettings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"
REGENERATE = "python -m apigen_mt.pipeline.config_reference > docs/config.md"


def test_docs_config_md_is_what_the_generator_makes_now():
    assert DOCS.read_text(encoding="utf-8") == config_reference(), f"docs/config.md is out of date: run `{REGENERATE}`"


def test_the_module_prints_the_reference():
    result = subprocess.run(
        [sys.executable, "-m", "apigen_mt.pipeline.config_reference"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == config_reference()


def test_sections_come_in_the_order_of_a_config_file():
    titles = re.findall(r"^## (.+)$", config_reference(), flags=re.MULTILINE)
    assert titles == [
        "top level",
        "models.NAME (backend: vllm)",
        "models.NAME.engine (backend: vllm)",
        "models.NAME (backend: openai)",
        "models.NAME.endpoint (backend: openai)",
        "roles",
        "tasks[]",
        "trajectories",
        "trajectories.agent",
        "trajectories.human",
        "trajectories.episode",
        "blueprint_generation",
        "blueprint_generation.proposer",
        "blueprint_generation.review",
        "blueprint_generation.domains[]",
        "blueprint_generation.sampler",
        "blueprint_generation.recombination",
        "Concurrency",
    ]


def test_every_field_has_a_row_with_its_type_default_and_description():
    text = config_reference()
    engine_rows = re.findall(r"^\| `(\w+)` \|", text.split("## models.NAME.engine")[1].split("\n## ")[0], re.MULTILINE)
    assert engine_rows == list(VllmEngineConfig.model_fields)
    assert "| `max_num_seqs` | int, ≥ 1, ≤ 100_000 | `64` | sequences decoded together in one batch; vLLM sizes" in text
    assert "| `gpu_memory_utilization` | float, > 0, ≤ 1 | `0.9` |" in text
    assert '| `device` | "cpu" or "gpu" | `"gpu"` |' in text
    assert "| `human_judge` | str or null | `null` |" in text
    assert "| `domains` | list of section | required | the domains to propose blueprints for |" in text
    assert "| `walk_length` | [int, int] | `[1, 3]` |" in text
    # Every row has four non-empty cells.
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows and all(len(re.split(r"(?<!\\)\|", row)) == 6 and "|  |" not in row for row in rows)


def test_the_concurrency_rule_is_the_function_s_docstring():
    from apigen_mt.pipeline.config import concurrency

    assert concurrency.__doc__.splitlines()[0] in config_reference().split("## Concurrency")[1]


def test_a_field_without_a_description_stops_the_generator(monkeypatch):
    monkeypatch.setattr(TaskFile.model_fields["domain"], "description", None)
    with pytest.raises(UndocumentedField, match=re.escape("tasks[]: domain: give the field a description")):
        config_reference()


def test_a_section_without_a_description_or_docstring_stops_the_generator(monkeypatch):
    monkeypatch.setattr(EpisodeSettings, "__doc__", None)
    with pytest.raises(
        UndocumentedField, match="trajectories: episode: give the field a description or EpisodeSettings"
    ):
        config_reference()
