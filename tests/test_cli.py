"""The LLM-free commands `validate`, `verify`, `replay` and `envs`, through the CLI (formats.md section 3).

Bad-input cases run the installed `apigen-mt` script as a subprocess, because only its `main()` turns a
CliError into one line on stderr and exit status 2. Successful runs go in-process through typer's CliRunner,
which saves an interpreter start per call. The tau-bench train split is the exception: one real subprocess,
shared by the module because replaying its 500 tasks takes about a minute on two busy cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from apigen_mt.pipeline.cli.main import app  # every command registered, as the console script has them
from apigen_mt.simulators.domain import domains, get_domain
from apigen_mt.simulators.domains import airline, retail

CLI = Path(sys.executable).parent / "apigen-mt"
EXAMPLE_TASKS = {
    "retail": Path(retail.__file__).parent / "example_tasks.json",
    "airline": Path(airline.__file__).parent / "example_tasks.json",
}
EXAMPLE_TRAJECTORIES = Path(__file__).resolve().parents[1] / "examples" / "retail_trajectories.jsonl"
VERDICT_KEYS = {"index", "id", "accepted", "failed_stage", "reasons", "diff_patch"}
TAUBENCH_RETAIL_TOOLS = {
    "calculate",
    "cancel_pending_order",
    "exchange_delivered_order_items",
    "find_user_id_by_email",
    "find_user_id_by_name_zip",
    "get_order_details",
    "get_product_details",
    "get_user_details",
    "list_all_product_types",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
    "think",
    "transfer_to_human_agents",
}


def run_cli(*args: Any, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real console script, as a user runs it."""
    assert CLI.is_file(), f"console script {CLI} is missing; reinstall the project with `pip install -e .`"
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def invoke(*args: Any) -> Result:
    """An in-process run that must succeed."""
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, (
        f"apigen-mt {' '.join(map(str, args))} exited {result.exit_code}: {result.stderr} {result.exception!r}"
    )
    return result


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ validate: tau-bench tasks


@pytest.fixture(scope="module")
def train_tasks(taubench_tasks) -> list[dict[str, Any]]:
    return taubench_tasks("retail", "train")


@pytest.fixture(scope="module")
def train_verdicts(taubench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    output = tmp_path_factory.mktemp("train") / "verdicts.jsonl"
    tasks = taubench_dir / "retail" / "tasks_train.json"
    done = run_cli(
        "validate",
        "--domain",
        "retail",
        "--data-dir",
        taubench_dir / "retail",
        "--input",
        tasks,
        "--output",
        output,
        "--stages",
        "format,execution",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return read_jsonl(output)


def test_train_verdicts_are_one_line_per_task_in_input_order(train_verdicts, train_tasks):
    assert len(train_verdicts) == len(train_tasks) == 500
    for position, (verdict, task) in enumerate(zip(train_verdicts, train_tasks, strict=True)):
        assert set(verdict) == VERDICT_KEYS
        assert verdict["index"] == position
        assert verdict["id"] is None  # tau-bench tasks carry no id
        # Each line describes its own task: every change touches that task's user or one of its orders.
        touched = {task["user_id"]} | {action["kwargs"].get("order_id") for action in task["actions"]}
        for change in verdict["diff_patch"]:
            assert change["path"].split("/")[2] in touched, (position, change["path"])


def test_train_rejects_exactly_the_19_tasks_whose_gift_card_cannot_pay(train_verdicts, train_tasks):
    rejected = [verdict for verdict in train_verdicts if not verdict["accepted"]]
    accepted = [verdict for verdict in train_verdicts if verdict["accepted"]]
    assert len(rejected) == 19
    assert len(accepted) == 481
    assert all(verdict["failed_stage"] is None and verdict["reasons"] == [] for verdict in accepted)
    for verdict in rejected:
        assert verdict["failed_stage"] == "execution"
        assert verdict["reasons"], verdict
        actions = train_tasks[verdict["index"]]["actions"]
        for reason in verdict["reasons"]:
            match = re.match(r"action (\d+) \((\w+)\) failed: Error: insufficient gift card balance", reason)
            assert match, reason
            # The reason points at the action that failed: a write paying with a gift card.
            action = actions[int(match.group(1))]
            assert action["name"] == match.group(2)
            assert action["kwargs"]["payment_method_id"].startswith("gift_card_")


@pytest.mark.parametrize(("domain", "split", "count"), [("retail", "dev", 20), ("airline", "sample", 25)])
def test_other_taubench_task_files_pass_format_and_execution(taubench_dir, tmp_path, domain, split, count):
    output = tmp_path / "verdicts.jsonl"
    tasks = taubench_dir / domain / f"tasks_{split}.json"
    invoke(
        "validate",
        "--domain",
        domain,
        "--data-dir",
        taubench_dir / domain,
        "--input",
        tasks,
        "--output",
        output,
        "--stages",
        "format,execution",
    )
    verdicts = read_jsonl(output)
    assert [verdict["index"] for verdict in verdicts] == list(range(count))
    assert [verdict for verdict in verdicts if not verdict["accepted"]] == []


# ---------------------------------------------------------------------------------- validate: JSON Lines input

CANCEL = {"order_id": "#W1077442", "reason": "ordered by mistake"}  # a pending order of christine_king_9954 (seed 0)


@pytest.fixture
def blueprints_jsonl(tmp_path: Path) -> Path:
    def blueprint(blueprint_id: str, user_id: str, action: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": blueprint_id,
            "user_id": user_id,
            "instruction": "Cancel my order.",
            "actions": [action],
            "outputs": [],
        }

    return write_jsonl(
        tmp_path / "blueprints.jsonl",
        [
            blueprint("by-kwargs", "christine_king_9954", {"name": "cancel_pending_order", "kwargs": CANCEL}),
            blueprint("by-arguments", "christine_king_9954", {"name": "cancel_pending_order", "arguments": CANCEL}),
            # Executes fine, but the order belongs to someone else than the blueprint's user: policy rule R3.
            blueprint("other-user", "mariano_murakami_4217", {"name": "cancel_pending_order", "arguments": CANCEL}),
            blueprint(
                "no-such-order",
                "christine_king_9954",
                {"name": "cancel_pending_order", "arguments": {"order_id": "#W0000000", "reason": "no longer needed"}},
            ),
        ],
    )


def test_jsonl_blueprints_with_kwargs_or_arguments_and_ids(blueprints_jsonl, tmp_path):
    output = tmp_path / "verdicts.jsonl"
    invoke("validate", "--domain", "retail", "--input", blueprints_jsonl, "--output", output)
    by_kwargs, by_arguments, other_user, no_such_order = read_jsonl(output)

    ids = [by_kwargs["id"], by_arguments["id"], other_user["id"], no_such_order["id"]]
    assert ids == ["by-kwargs", "by-arguments", "other-user", "no-such-order"]
    assert by_kwargs["accepted"] and by_arguments["accepted"]
    assert by_kwargs["diff_patch"] == by_arguments["diff_patch"]
    assert {"op": "replace", "path": "/orders/#W1077442/status", "old": "pending", "value": "cancelled"} in by_kwargs[
        "diff_patch"
    ]

    assert no_such_order["failed_stage"] == "execution"
    assert no_such_order["reasons"] == ["action 0 (cancel_pending_order) failed: Error: order not found"]


def test_policy_is_a_default_stage(blueprints_jsonl, tmp_path):
    with_policy, without_policy = tmp_path / "default.jsonl", tmp_path / "no-policy.jsonl"
    invoke("validate", "--domain", "retail", "--input", blueprints_jsonl, "--output", with_policy)
    invoke(
        "validate",
        "--domain",
        "retail",
        "--input",
        blueprints_jsonl,
        "--output",
        without_policy,
        "--stages",
        "execution,format",
    )

    other_user = read_jsonl(with_policy)[2]
    assert other_user["failed_stage"] == "policy"
    assert len(other_user["reasons"]) == 1 and other_user["reasons"][0].startswith("[R3] ")
    assert "mariano_murakami_4217" in other_user["reasons"][0]
    assert read_jsonl(without_policy)[2]["accepted"] is True


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_domain_example_tasks_pass_every_stage_on_the_default_data(domain, tmp_path):
    output = tmp_path / "verdicts.jsonl"
    invoke("validate", "--domain", domain, "--input", EXAMPLE_TASKS[domain], "--output", output)
    verdicts = read_jsonl(output)
    assert len(verdicts) == len(json.loads(EXAMPLE_TASKS[domain].read_text())) > 0
    assert [(verdict["index"], verdict["reasons"]) for verdict in verdicts if not verdict["accepted"]] == []


# ----------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Input files for the bad-input cases, and an empty folder that must stay empty."""
    partial = tmp_path / "partial-data"
    partial.mkdir()
    for table in ("users", "products"):
        (partial / f"{table}.json").write_text("{}", encoding="utf-8")
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text(
        '{"instruction": "a", "actions": []}\n\n{"instruction": "b", "actions": []}\n{"instruction": "c",\n'
    )
    actions_object = tmp_path / "actions.json"
    actions_object.write_text(json.dumps({"name": "get_user_details", "arguments": {"user_id": "x"}}))
    first_trajectory = read_jsonl(EXAMPLE_TRAJECTORIES)[0]
    no_messages = write_jsonl(
        tmp_path / "no-messages.jsonl", [first_trajectory, {"blueprint": first_trajectory["blueprint"]}]
    )
    out = tmp_path / "out"
    out.mkdir()
    return {
        "examples": EXAMPLE_TASKS["retail"],
        "partial": partial,
        "malformed": malformed,
        "actions_object": actions_object,
        "no_messages": no_messages,
        "nowhere": tmp_path / "nowhere",
        "out": out,
    }


# Each case: the arguments (with {name} standing for a path of `inputs`) and fragments the one error line must hold.
BAD_INPUT = {
    "unknown-domain-validate": (
        "validate --domain shop --input {examples} --output {out}/v.jsonl",
        ["unknown domain 'shop'", "airline", "retail"],
    ),
    "unknown-domain-verify": (
        "verify --domain shop --input {no_messages} --output {out}/v.jsonl",
        ["unknown domain 'shop'", "airline", "retail"],
    ),
    "unknown-domain-replay": (
        "replay --domain shop --input {actions_object} --output {out}/state.json",
        ["unknown domain 'shop'", "airline", "retail"],
    ),
    "unknown-domain-generate": (
        "envs generate-data shop --seed 1 --output {out}/data",
        ["unknown domain 'shop'", "airline, retail"],
    ),
    "unknown-domain-show": ("envs show shop", ["unknown domain 'shop'", "airline, retail"]),
    "missing-data-folder": (
        "validate --domain retail --data-dir {nowhere} --input {examples} --output {out}/v.jsonl",
        ["{nowhere}", "does not exist"],
    ),
    "data-folder-without-orders": (
        "validate --domain retail --data-dir {partial} --input {examples} --output {out}/v.jsonl",
        ["{partial}", "missing orders.json"],
    ),
    "malformed-jsonl-line": (
        "validate --domain retail --input {malformed} --output {out}/v.jsonl",
        ["{malformed}", "line 4 is not valid JSON"],
    ),
    "unknown-stage": (
        "validate --domain retail --input {examples} --output {out}/v.jsonl --stages format,review",
        ["--stages", "review", "format, execution, policy"],
    ),
    "missing-input": (
        "validate --domain retail --input {nowhere} --output {out}/v.jsonl",
        ["{nowhere}", "does not exist"],
    ),
    "replay-non-array": (
        "replay --domain retail --input {actions_object} --output {out}/state.json",
        ["{actions_object}", "expected a JSON array of actions"],
    ),
    "verify-without-messages": (
        "verify --domain retail --input {no_messages} --output {out}/v.jsonl",
        ["{no_messages}", "record 2", "`messages`"],
    ),
}


def expand(template: str, paths: dict[str, Path]) -> list[str]:
    return [part.format(**paths) for part in template.split()]


@pytest.mark.parametrize(("arguments", "fragments"), list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_gives_one_error_line_and_no_output(inputs, arguments, fragments):
    done = run_cli(*expand(arguments, inputs))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("apigen-mt: error: ")
    for fragment in fragments:
        assert fragment.format(**inputs) in lines[0]
    assert done.stdout == ""
    # Nothing written, not even a temp file or a half-generated data folder.
    assert list(inputs["out"].iterdir()) == []


@pytest.mark.parametrize("case", ["verify-without-messages", "malformed-jsonl-line", "unknown-stage"])
def test_failed_run_leaves_an_existing_output_untouched(inputs, case):
    arguments, _ = BAD_INPUT[case]
    previous = inputs["out"] / "v.jsonl"
    previous.write_text('{"from": "an earlier run"}\n', encoding="utf-8")
    done = run_cli(*expand(arguments, inputs))
    assert done.returncode == 2, done.stderr
    assert previous.read_text(encoding="utf-8") == '{"from": "an earlier run"}\n'
    assert list(inputs["out"].iterdir()) == [previous]


def test_output_naming_a_folder_is_a_clear_error(inputs):
    done = run_cli("validate", "--domain", "retail", "--input", inputs["examples"], "--output", inputs["out"])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert str(inputs["out"]) in done.stderr
    assert list(inputs["out"].iterdir()) == []


def test_output_file_permissions_follow_the_umask(tmp_path):
    output = tmp_path / "verdicts.jsonl"
    invoke("validate", "--domain", "retail", "--input", EXAMPLE_TASKS["retail"], "--output", output)
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask


def test_summary_line_names_the_output_file_exactly(tmp_path):
    output = tmp_path / "run[red]" / "verdicts.jsonl"
    done = run_cli("validate", "--domain", "retail", "--input", EXAMPLE_TASKS["retail"], "--output", output)
    assert done.returncode == 0, done.stderr
    assert output.is_file()
    assert done.stderr.strip().splitlines() == [f"11 of 11 accepted; rejected: none -> {output}"]


# ---------------------------------------------------------------------------------------------------- replay


def test_replay_writes_the_observations_and_the_final_state_of_the_environment(tmp_path):
    example = json.loads(EXAMPLE_TASKS["retail"].read_text())[1]  # lookups, then modify_pending_order_items
    actions = [
        {"name": action["name"], ("kwargs" if position % 2 else "arguments"): action["arguments"]}
        for position, action in enumerate(example["actions"])
    ]
    actions += [{"name": "no_such_tool", "kwargs": {}}, {"name": "get_user_details", "kwargs": {"user_id": 5}}]
    actions_file = tmp_path / "actions.json"
    actions_file.write_text(json.dumps(actions), encoding="utf-8")
    output = tmp_path / "state.json"
    invoke("replay", "--domain", "retail", "--input", actions_file, "--output", output)
    replayed = json.loads(output.read_text(encoding="utf-8"))

    domain = get_domain("retail")
    initial = domain.load()
    env = domain.environment(initial)
    expected = [env.step(action).observation for action in actions]
    assert set(replayed) == {"observations", "state"}
    assert replayed["observations"] == expected
    assert replayed["state"] == json.loads(json.dumps(env.db))
    # The calls really ran (kwargs included): reads answered, the item change applied, bad calls reported.
    assert not any(observation.startswith("Error") for observation in expected[: len(example["actions"])])
    assert expected[-2] == "Unknown action no_such_tool"
    assert expected[-1].startswith("Error: ")
    order = example["actions"][-1]["arguments"]["order_id"]
    assert initial["orders"][order]["status"] == "pending"
    assert replayed["state"]["orders"][order]["status"] == "pending (item modified)"


# ---------------------------------------------------------------------------------------------------- verify


def test_verify_example_trajectories(tmp_path):
    output = tmp_path / "verdicts.jsonl"
    invoke("verify", "--domain", "retail", "--input", EXAMPLE_TRAJECTORIES, "--output", output)
    verdicts = read_jsonl(output)
    assert all(
        list(verdict)
        == [
            "index",
            "reward",
            "terminated",
            "state_match",
            "outputs_match",
            "reasons",
            "accepted",
            "attribution",
            "policy_violations",
            "human_errors",
            "warnings",
        ]
        for verdict in verdicts
    )
    assert [verdict["index"] for verdict in verdicts] == [0, 1, 2, 3]
    assert [verdict["reward"] for verdict in verdicts] == [1.0, 1.0, 0.0, 0.0]
    assert [verdict["terminated"] for verdict in verdicts] == [True, True, True, True]
    assert [verdict["state_match"] for verdict in verdicts] == [True, True, False, True]
    assert [verdict["outputs_match"] for verdict in verdicts] == [True, True, True, False]
    assert verdicts[0]["reasons"] == verdicts[1]["reasons"] == []
    # The agent never cancelled: the reason names the order's status it left behind. The user stopped before
    # the agent even tried, so the fault is the simulated human's.
    state_reason, stop = verdicts[2]["reasons"]
    assert '/orders/#W1077442/status is "pending" but the ground truth has "cancelled"' in state_reason
    assert (
        verdicts[2]["human_errors"]
        == [stop]
        == ["the user ended the conversation before the agent attempted cancel_pending_order"]
    )
    assert [verdict["attribution"] for verdict in verdicts] == [None, None, "human", "agent"]
    assert [verdict["accepted"] for verdict in verdicts] == [True, True, False, False]
    assert verdicts[3]["reasons"] == [
        "expected output '116236704961' appears in none of the agent's 1 replies",
        "expected output '150.02' appears in none of the agent's 1 replies",
    ]


# ------------------------------------------------------------------------------------------------------ envs


def test_envs_list_names_every_domain_with_its_tool_count():
    rows = [line.split("\t") for line in invoke("envs", "list").stdout.splitlines()]
    assert [row[0] for row in rows] == sorted(domains()) == ["airline", "retail", "telecom"]
    for name, tools, description in rows:
        assert tools == f"{len(get_domain(name).toolkit.specs())} tools"
        assert description == get_domain(name).description
    assert dict(row[:2] for row in rows)["retail"] == "16 tools"


def test_envs_show_lists_tools_tables_and_rules():
    shown = invoke("envs", "show", "retail").stdout
    assert "tables: orders, products, users" in shown
    for name in TAUBENCH_RETAIL_TOOLS:
        assert name in shown
    for rule in get_domain("retail").rules:
        assert f" {rule.id} " in shown


def test_envs_show_json_gives_tools_rules_and_graph():
    shown = json.loads(invoke("envs", "show", "retail", "--json").stdout)
    assert shown["name"] == "retail"
    assert shown["tables"] == ["orders", "products", "users"]
    tool_names = [tool["name"] for tool in shown["tools"]]
    assert len(tool_names) == 16 and set(tool_names) == TAUBENCH_RETAIL_TOOLS
    assert all(tool["parameters"]["type"] == "object" for tool in shown["tools"])
    assert [tool["name"] for tool in shown["tools"] if tool["terminates"]] == ["transfer_to_human_agents"]
    rule_ids = [rule["id"] for rule in shown["rules"]]
    assert rule_ids and len(set(rule_ids)) == len(rule_ids)
    assert rule_ids == [rule.id for rule in get_domain("retail").rules]
    assert all(rule["summary"] for rule in shown["rules"])
    assert shown["api_graph"]
    for source, target, carries in shown["api_graph"]:
        assert source in TAUBENCH_RETAIL_TOOLS and target in TAUBENCH_RETAIL_TOOLS and carries
    assert ["find_user_id_by_email", "get_user_details", "user_id"] in shown["api_graph"]


def test_generate_data_is_deterministic_per_seed_and_loads_as_data_dir(tmp_path):
    seeds = {"seed3-a": 3, "seed3-b": 3, "seed4": 4, "seed0": 0}
    folders = {label: tmp_path / label for label in seeds}
    for label, folder in folders.items():
        invoke("envs", "generate-data", "retail", "--seed", seeds[label], "--output", folder)

    files = sorted(path.name for path in folders["seed3-a"].iterdir())
    assert files == ["orders.json", "policy.md", "products.json", "users.json"]
    assert sorted(path.name for path in folders["seed3-b"].iterdir()) == files
    for name in files:
        assert (folders["seed3-a"] / name).read_bytes() == (folders["seed3-b"] / name).read_bytes(), name
    for table in ("orders.json", "users.json"):
        assert (folders["seed3-a"] / table).read_bytes() != (folders["seed4"] / table).read_bytes(), table

    # Seed 0 is the domain's default database, which the example tasks are written against.
    retail_domain = get_domain("retail")
    assert retail_domain.load(folders["seed0"]) == retail_domain.load()
    output = tmp_path / "verdicts.jsonl"
    invoke(
        "validate",
        "--domain",
        "retail",
        "--data-dir",
        folders["seed0"],
        "--input",
        EXAMPLE_TASKS["retail"],
        "--output",
        output,
    )
    verdicts = read_jsonl(output)
    assert verdicts and all(verdict["accepted"] for verdict in verdicts)


def test_help_lists_the_main_job_first_then_the_checks_then_the_set_up():
    text = CliRunner().invoke(app, ["--help"], terminal_width=120).output
    panels = [
        text.index(title) for title in ("The main job", "Checks and replays (no model)", "Environments and models")
    ]
    assert panels == sorted(panels), text
    listed = re.findall(r"^│ (\w+) ", text, flags=re.MULTILINE)
    assert listed == [
        "generate",
        "trajectories",
        "eval",
        "blueprints",
        "export",
        "view",
        "replay",
        "validate",
        "verify",
        "parse",
        "envs",
        "models",
    ]
