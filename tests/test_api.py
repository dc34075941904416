"""The front door, `apigen_mt.pipeline.generate`: README's "Python API" example run as written (scripted models
in place of the engine, on Ray), the phases named explicitly, a run whose export has nothing to export, bad
arguments refused in one line before any work; and the CLI's help saying what each command plays. (That the
CLI's modules import each other without a circle is tests/test_packaging.py's check of every module.)"""

from __future__ import annotations

import json
import re
import sys
from functools import partial
from pathlib import Path

import pytest
import typer

import apigen_mt.pipeline
from apigen_mt.pipeline import GenerateError, api
from apigen_mt.pipeline.config import RunConfig
from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.simulators.chat import ChatRequest, ChatResponse
from apigen_mt.simulators.human_prompts import STOP
from tests.conftest import load_by_value

ROOT = Path(__file__).resolve().parents[1]
job = load_by_value("scripted_job")


def readme_example() -> str:
    """The first Python block of README.md's "Python API" section, as a reader copies it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def scripted_models_for_local_cpu(name: str) -> ScriptedChatModel:
    """Test double: tests/scripted_job.py's roles, the human answering in the JSON turn that local-cpu.yaml's
    structured human is asked for (the agent's calls are read by its parser, as the engine's text would be)."""

    def script(request: ChatRequest):
        if request.tools:
            return job.scripted_agent(request)
        said = job.scripted_human(request)
        return json.dumps({"message": said.removesuffix(STOP).strip(), "stop": said.endswith(STOP)})

    return ScriptedChatModel(script, model_id=f"scripted-{name}")


def failing_models(name: str) -> ScriptedChatModel:
    """Test double: every request fails as an endpoint that is down does."""
    return ScriptedChatModel(lambda request: ChatResponse(model=name, error="HTTP 503: down"), model_id=name)


@pytest.fixture(scope="module")
def ray_local():
    import ray
    import ray.cloudpickle

    # The doubles above travel to Ray's workers by value: the workers cannot import the tests folder.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_the_readme_example_runs_as_written(ray_local, tmp_path, monkeypatch, capsys):
    # The example's paths are relative to the checkout; its run folder must land in the test's folder.
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    on_scripted_models = partial(api.generate, model_factory=scripted_models_for_local_cpu)
    monkeypatch.setattr(apigen_mt.pipeline, "generate", on_scripted_models)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)

    # The five demo blueprints once each: one played wrong (rejected), one on a failing endpoint (failed).
    counts = {"trials": 5, "accepted": 3, "rejected": 1, "failed": 1, "unique_accepted": 3}
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(counts)
    result = namespace["result"]
    assert result.summary.phases == ["trajectories"] and result.summary.played == 5
    assert RunFolder(tmp_path / "runs" / "notebook").manifest().counts["trajectories"] == counts
    assert printed[1] == str(result.export.datasets) and set(result.export.datasets) == {"sharegpt", "openai"}
    from datasets import load_from_disk

    train = load_from_disk(str(tmp_path / result.export.datasets["sharegpt"]))["train"]
    assert train.num_rows == 3 and result.export.card.is_file()


def test_an_export_with_nothing_to_export_is_one_line_carrying_what_the_run_did(ray_local, tmp_path):
    config = RunConfig.model_validate(
        {
            "models": {"m": {"backend": "vllm", "engine": {"model": "embedded:smollm2-135m-instruct"}}},
            "roles": {role: "m" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
            "blueprint_generation": {"domains": [{"domain": "retail", "proposals": 2}]},
        }
    )
    nothing = "Phase 1 accepted no blueprint and the run config names no task files"
    with pytest.raises(GenerateError, match=nothing) as caught:
        api.generate(config, tmp_path / "run", progress=False, model_factory=failing_models)
    ran = caught.value.ran
    assert ran.summary.phases == ["blueprints", "trajectories"] and ran.export is None
    assert ran.summary.counts["blueprints"]["proposals_failed"] == 2
    assert ran.summary.counts["trajectories"]["trials"] == 0
    assert not (tmp_path / "run" / "dataset").exists()
    # Phase 1 alone, without the export, is what `apigen-mt blueprints` runs: a rerun finds both proposals done.
    again = api.generate(
        config, tmp_path / "run", phases=["blueprints"], export=False, progress=False, model_factory=failing_models
    )
    assert again.summary.phases == ["blueprints"] and again.summary.proposals_skipped == 2 and again.export is None


CONFIG = """\
models: {m: {backend: vllm, engine: {model: "embedded:smollm2-135m-instruct", device: cpu}}}
roles: {proposer: m, reviewer: m, human: m, human_judge: m, agent: m}
tasks: [{domain: retail, path: 'examples:retail'}]
"""


@pytest.mark.parametrize(
    ("extra", "arguments", "wording"),
    [
        ("", {"phases": ["export"]}, "phases ['export']: name one or both of blueprints, trajectories"),
        ("", {"phases": "trajectories"}, "phases 'trajectories': name one or both"),
        ("", {"phases": []}, "phases []: name one or both"),
        ("", {"phases": ["blueprints"], "export": False}, "run.yaml has no blueprint_generation section"),
        ("", {"phases": ["blueprints"]}, "export=True needs the trajectories phase"),
        ("", {"data_dir": "data"}, "data_dir is task_file's data folder; give the file too"),
        ("", {"domain": "retail"}, "domain chooses Phase 1's domain or names task_file's; this run has neither"),
        ("", {"exclude_tasks": "tasks.json"}, "--exclude-tasks filters Phase 1's blueprints, and"),
        (
            "blueprint_generation: {domains: [{domain: retail, proposals: 2}]}\n",
            {"phases": ["trajectories"], "exclude_tasks": "tasks.json"},
            "this run leaves Phase 1 out",
        ),
        ("", {"task_file": "missing.jsonl"}, "missing.jsonl"),
    ],
)
def test_bad_arguments_are_one_line_before_any_work(tmp_path, extra, arguments, wording):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG + extra)
    with pytest.raises(GenerateError, match=re.escape(wording)):
        api.generate(config, tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_data_folders_a_config_names_are_relative_to_its_file(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "run.yaml"
    monkeypatch.chdir(tmp_path)  # a folder the config's relative paths must not be read from
    expected = tmp_path / "configs" / "../nowhere"
    config.write_text(CONFIG.replace("'examples:retail'}", "'examples:retail', data_dir: ../nowhere}"))
    with pytest.raises(GenerateError, match=re.escape(f"tasks[0]: data folder {expected} does not exist")):
        api.generate(config, tmp_path / "out")
    phase1 = "blueprint_generation: {domains: [{domain: retail, proposals: 2, data_dir: ../nowhere}]}\n"
    config.write_text(CONFIG + phase1)
    with pytest.raises(GenerateError, match=re.escape(f"blueprint_generation (retail): data folder {expected} does")):
        api.generate(config, tmp_path / "out", phases=["blueprints"], export=False)


def test_the_main_job_s_help_says_what_each_command_plays():
    from apigen_mt.pipeline.cli.main import app

    commands = typer.main.get_command(app).commands
    assert "on the config's task files" in commands["generate"].help
    assert "else" not in commands["generate"].help

    def option_help(command: str, name: str) -> str:
        return next(param.help for param in commands[command].params if param.name == name)

    # --limit is about task files only; Phase 1's proposals have --proposals (tests/test_vocabulary.py).
    assert option_help("trajectories", "limit") == "Take at most N tasks from the file."
    assert option_help("generate", "limit") == "Take at most N tasks from each of the config's task files."
    for command in ("blueprints", "generate"):
        assert option_help(command, "proposals") == "Propose at most N blueprints per domain (default: the config's)."
