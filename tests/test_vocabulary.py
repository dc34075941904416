"""One vocabulary (issue 17): Phase 2's input files are task files (`tasks:`, `trajectories --tasks`), `--limit`
counts tasks and `--proposals` Phase 1's proposals, `parse --parser` names a parser. The former names still work
for one release, each with one warning line; an old config is the same run with the same fingerprint."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from apigen_mt.pipeline import GenerateError, api
from apigen_mt.pipeline.cli import run as cli_run
from apigen_mt.pipeline.cli.main import app
from apigen_mt.pipeline.config import ConfigError, load_config
from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.pipeline.renamed import RenamedWarning
from apigen_mt.simulators.chat import ChatResponse

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "apigen-mt"
DEMO_TASKS = ROOT / "examples" / "demo_blueprints.jsonl"
SHIPPED = sorted(path.name for path in (ROOT / "configs").glob("*.yaml"))
UNTIL = "; rename it (the old name is accepted until the next release)"
CONFIG = """\
models: {m: {backend: vllm, engine: {model: "embedded:smollm2-135m-instruct", device: cpu}}}
roles: {proposer: m, reviewer: m, human: m, human_judge: m, agent: m}
tasks: [{domain: retail, path: TASKS}]
blueprint_generation: {domains: [{domain: retail, proposals: 3}]}
"""


def with_former_key(text: str) -> str:
    assert text.count("\ntasks:") == 1, text
    return text.replace("\ntasks:", "\nblueprints:")


def run_cli(*args: object, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`apigen-mt ARGS` through the installed console script, as a user runs it."""
    return subprocess.run([str(CLI), *map(str, args)], input=stdin, capture_output=True, text=True, timeout=120)


def stderr_lines(result: subprocess.CompletedProcess[str], status: int) -> list[str]:
    assert result.returncode == status and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()


# --- the config key -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_the_former_key_is_the_same_run_with_the_same_fingerprint_and_one_warning(tmp_path, name):
    current = load_config(ROOT / "configs" / name)
    old = tmp_path / name
    old.write_text(with_former_key((ROOT / "configs" / name).read_text()))
    with pytest.warns(RenamedWarning) as caught:
        former = load_config(old)
    assert [str(warning.message) for warning in caught] == [f"{old}: the config key `blueprints` is now `tasks`{UNTIL}"]
    assert former == current and former.tasks
    assert former.fingerprint() == current.fingerprint()  # tests/test_config.py pins the shipped ones


def test_the_new_key_loads_without_a_warning(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [task_file.path for task_file in load_config(config).tasks] == ["TASKS"]


def test_both_keys_at_once_are_one_error_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG + "blueprints: [{domain: airline, path: 'examples:airline'}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == f"{config}: `blueprints` is the former name of `tasks`; keep `tasks` only"
    line = stderr_lines(run_cli("generate", config, "--output", tmp_path / "run"), 2)
    assert line == [f"apigen-mt: error: {caught.value}"]


def test_the_cli_prints_the_former_key_s_warning_as_one_line(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(with_former_key(CONFIG.replace("TASKS", "missing.jsonl")))
    warning = f"apigen-mt: warning: {config}: the config key `blueprints` is now `tasks`{UNTIL}"
    error = f"apigen-mt: error: {config}: tasks[0]: input file {tmp_path / 'missing.jsonl'} does not exist"
    assert stderr_lines(run_cli("generate", config, "--output", tmp_path / "run"), 2) == [warning, error]
    # `generate --limit` looks at the config before the run loads it: still one line for the key.
    limit = (
        "apigen-mt: warning: generate: --limit limits the tasks of each task file, and the proposals per Phase 1 "
        "domain are now --proposals N; add it (until the next release --limit without it limits the proposals too)"
    )
    lines = stderr_lines(run_cli("generate", config, "--limit", "1", "--output", tmp_path / "run"), 2)
    assert lines == [limit, warning, error]
    assert not (tmp_path / "run").exists()


# --- the options ------------------------------------------------------------------------------------------------


def test_trajectories_takes_tasks_and_its_former_option_with_one_warning_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.replace("TASKS", str(DEMO_TASKS)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "x", "actions": []}\n{"instruction": NaN}\n')
    run = ("--output", tmp_path / "run")
    [error] = stderr_lines(run_cli("trajectories", config, "--tasks", broken, *run), 2)
    assert error.startswith("apigen-mt: error: ") and "broken.jsonl" in error and "line 2" in error
    lines = stderr_lines(run_cli("trajectories", config, "--blueprints", broken, *run), 2)
    assert lines == [f"apigen-mt: warning: trajectories: --blueprints is now --tasks{UNTIL}", error]
    both = stderr_lines(run_cli("trajectories", config, "--tasks", broken, "--blueprints", broken, *run), 2)
    assert both == ["apigen-mt: error: --blueprints is the former name of --tasks; give --tasks only"]
    none = stderr_lines(run_cli("trajectories", config, *run), 2)
    assert none == ["apigen-mt: error: trajectories needs the task file to play: --tasks FILE"]
    assert not (tmp_path / "run").exists()


def test_parse_takes_parser_and_its_former_option_warns_on_stderr_only():
    output = '<tool_call>{"name": "get_user_details", "arguments": {"user_id": "mia_li_3668"}}</tool_call>'
    parsed = (
        '{"tool_calls": [{"name": "get_user_details", "arguments": {"user_id": "mia_li_3668"}}], "content": null}\n'
    )
    current = run_cli("parse", "--parser", "hermes", stdin=output)
    assert (current.returncode, current.stdout, current.stderr) == (0, parsed, "")
    former = run_cli("parse", "--format", "hermes", stdin=output)
    assert former.stdout == parsed  # a script reading stdout sees what it saw before the rename
    assert stderr_lines(former, 0) == [f"apigen-mt: warning: parse: --format is now --parser{UNTIL}"]


def test_the_former_options_are_hidden_from_help():
    commands = typer.main.get_command(app).commands
    hidden = {(name, param.opts[0]) for name, command in commands.items() for param in command.params if param.hidden}
    assert hidden == {("trajectories", "--blueprints"), ("blueprints", "--limit"), ("parse", "--format")}


def recording_generate(calls: list[dict]):
    """Test double for the front door: records what the CLI asks of it, then stops the command."""

    def generate(config, output, **arguments):
        calls.append(arguments)
        raise GenerateError("stopped by the test double")

    return generate


@pytest.mark.parametrize(
    ("args", "limit", "proposals", "warned"),
    [
        (["generate", "CONFIG", "--limit", "2"], 2, 2, "generate: --limit limits the tasks of each task file"),
        (["generate", "CONFIG", "--limit", "2", "--proposals", "1"], 2, 1, None),
        (["generate", "CONFIG", "--proposals", "1"], None, 1, None),
        (["generate", "PHASE2", "--limit", "2"], 2, None, None),  # no Phase 1: --limit is about tasks only
        (["blueprints", "CONFIG", "--proposals", "1"], None, 1, None),
        (["blueprints", "CONFIG", "--limit", "1"], None, 1, "blueprints: --limit is now --proposals" + UNTIL),
        (["trajectories", "CONFIG", "--tasks", "T", "--limit", "2"], 2, None, None),
    ],
)
def test_limit_counts_tasks_and_proposals_counts_proposals(tmp_path, monkeypatch, args, limit, proposals, warned):
    (tmp_path / "run.yaml").write_text(CONFIG)
    (tmp_path / "phase2.yaml").write_text(CONFIG.split("blueprint_generation")[0])
    names = {"CONFIG": str(tmp_path / "run.yaml"), "PHASE2": str(tmp_path / "phase2.yaml")}
    calls: list[dict] = []
    monkeypatch.setattr(cli_run, "generate", recording_generate(calls))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, [names.get(arg, arg) for arg in args])
    assert str(result.exception) == "stopped by the test double"
    [call] = calls
    assert (call.get("limit"), call.get("proposals")) == (limit, proposals)
    renamed = [str(warning.message) for warning in caught if issubclass(warning.category, RenamedWarning)]
    if warned is None:
        assert renamed == []
    else:
        [message] = renamed
        assert message.startswith(warned)


def test_blueprints_refuses_limit_and_proposals_together(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    lines = stderr_lines(run_cli("blueprints", config, "--limit", "1", "--proposals", "2"), 2)
    assert lines == ["apigen-mt: error: --limit is the former name of --proposals here; give --proposals only"]


# --- limit and proposals in a run -------------------------------------------------------------------------------


def failing_models(name: str) -> ScriptedChatModel:
    """Test double: every request fails as an endpoint that is down does."""
    return ScriptedChatModel(lambda request: ChatResponse(model=name, error="HTTP 503: down"), model_id=name)


def test_a_run_takes_limit_tasks_from_each_task_file_and_proposals_per_domain(tmp_path):
    import ray
    import ray.cloudpickle

    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.replace("TASKS", str(DEMO_TASKS)))
    # The double travels to Ray's workers by value: the workers cannot import the tests folder.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ran = api.generate(
            config,
            tmp_path / "run",
            limit=2,
            proposals=1,
            trials=1,
            export=False,
            progress=False,
            model_factory=failing_models,
        )
    finally:
        ray.shutdown()
    assert ran.summary.phases == ["blueprints", "trajectories"]
    assert ran.summary.proposed == 1  # of the config's 3
    assert ran.summary.played == ran.summary.counts["trajectories"]["trials"] == 2  # of the file's 5 tasks, once each
