"""tau2-bench task files as blueprints: every retail and airline task converts with its user found, the split file
selects tasks, the scenario reaches the human part by part, and `--exclude-tasks` with `--exclude-split` rejects
a Phase-1 blueprint that copies a test task while keeping one that copies a train task."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from apigen_mt.blueprints.dedup import Decontaminator, write_tool_names
from apigen_mt.blueprints.task_files import read_tasks, task_format
from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.pipeline.run.sources import SourceError, load_source, validate_source
from apigen_mt.pipeline.run.trials import TrialItem, TrialModels, TrialSettings, play_trial
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.episode import EpisodeSettings
from apigen_mt.simulators.human import HumanSettings, HumanSimulator, revealed_values
from apigen_mt.simulators.state import state_digest
from apigen_mt.simulators.types import Blueprint, Scenario
from apigen_mt.validators.execution import replay_blueprint
from tests.conftest import SHARED, TAUBENCH

TAU2 = SHARED / "tau2"
CLI = Path(sys.executable).parent / "apigen-mt"
COUNTS = {"retail": 114, "airline": 50}


@pytest.fixture(scope="module")
def tau2() -> Path:
    if not (TAU2 / "retail" / "tasks.json").is_file() or not (TAUBENCH / "retail" / "orders.json").is_file():
        pytest.skip(f"tau2-bench tasks or tau-bench data not found at {TAU2} / {TAUBENCH} (expected ../shared/)")
    return TAU2


def tasks_of(domain: str) -> list[dict]:
    return json.loads((TAU2 / domain / "tasks.json").read_text())


def split_of(domain: str) -> dict[str, list[str]]:
    return json.loads((TAU2 / domain / "split_tasks.json").read_text())


def db_of(domain: str):
    return get_domain(domain).load(TAUBENCH / domain)


# --- conversion ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_every_tau2_task_converts_with_a_user_of_the_database(tau2, domain):
    db = db_of(domain)
    tasks = tasks_of(domain)
    read = read_tasks(tasks, domain=domain, db=db)
    assert len(tasks) == len(read) == COUNTS[domain]
    assert [task.problem for task in read if task.problem] == []
    environment = get_domain(domain).environment(db)
    without_actions = 0
    for task, given in zip(read, tasks, strict=True):
        blueprint = Blueprint.model_validate(task.record)
        criteria = given["evaluation_criteria"]
        assert (blueprint.id, blueprint.domain, task.format) == (given["id"], domain, "tau2")
        assert blueprint.user_id in db["users"], blueprint.id
        # Every other sign of the user agrees with the one found: user_id arguments, lookups, records' owners.
        for action in criteria["actions"]:
            arguments = action["arguments"]
            assert arguments.get("user_id", blueprint.user_id) == blueprint.user_id, blueprint.id
            if action["name"].startswith("find_user_id_by_"):  # a lookup that fails is a try the task foresees
                looked_up = environment.step(action)
                assert looked_up.failed or looked_up.observation == blueprint.user_id, blueprint.id
            for key, table in (("order_id", "orders"), ("reservation_id", "reservations")):
                record = db.get(table, {}).get(arguments.get(key))
                if record is not None:
                    assert record["user_id"] == blueprint.user_id, blueprint.id
        without_actions += not criteria["actions"]
        assert [call.model_dump() for call in blueprint.actions] == [
            {"name": action["name"], "arguments": action["arguments"]} for action in criteria["actions"]
        ]
        scored = "COMMUNICATE" in criteria["reward_basis"]
        assert blueprint.outputs == (criteria["communicate_info"] if scored else [])
        assert task.unscored_assertions == len(criteria["nl_assertions"] or [])
        parts = given["user_scenario"]["instructions"]
        assert blueprint.scenario == Scenario.model_validate(parts)
        assert blueprint.instruction == blueprint.scenario.text()
        assert all(
            parts[key].strip() in blueprint.instruction for key in ("reason_for_call", "known_info") if parts[key]
        )
    # Tasks that touch nothing still get their user (from the scenario): airline's refusals, retail's questions.
    assert without_actions > 0


def test_the_three_formats_are_told_apart(tau2):
    assert task_format(tasks_of("retail")[0]) == "tau2"
    assert task_format({"user_id": "u", "instruction": "x", "actions": [], "outputs": []}) == "tau-bench"
    assert task_format({"id": "b1", "instruction": "x", "actions": []}) == "blueprint"
    assert task_format(["not", "a", "task"]) is None


def test_communicate_info_is_an_expected_output_only_where_tau2_scores_it(tau2):
    retail = read_tasks(tasks_of("retail"), domain="retail", db=db_of("retail"))
    airline = read_tasks(tasks_of("airline"), domain="airline", db=db_of("airline"))
    # tau2 scores retail on the database alone, though 36 retail tasks list communicate_info; airline's do count.
    assert sum(bool(task["evaluation_criteria"]["communicate_info"]) for task in tasks_of("retail")) > 0
    assert all(task.record["outputs"] == [] for task in retail)
    assert any(task.record["outputs"] for task in airline)


def test_a_tau2_task_whose_user_cannot_be_found_is_rejected_naming_why(tau2, tmp_path):
    nobody = {
        "id": "x1",
        "user_scenario": {"instructions": {"domain": "retail", "reason_for_call": "Ask about a lamp."}},
        "evaluation_criteria": {"actions": [], "reward_basis": ["DB"]},
    }
    broken = {"id": "x2", "user_scenario": {"instructions": {}}, "evaluation_criteria": {"actions": "none"}}
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([nobody, broken, tasks_of("retail")[0]]))
    source = load_source("retail", path, data_dir=TAUBENCH / "retail")
    assert [blueprint.id for blueprint in source.blueprints] == ["0"]
    assert [(record["index"], record["id"]) for record in source.rejected] == [(0, "x1"), (1, "x2")]
    assert "tau2 task 'x1': no user found" in source.rejected[0]["reasons"][0]
    assert source.rejected[1]["reasons"] == ["tau2 task 'x2': evaluation_criteria.actions must be a list or null"]
    # Without a database (decontamination) no user is needed: only user_id arguments are read.
    [read] = read_tasks([nobody], domain=None, db=None)
    assert read.problem is None and read.record["user_id"] is None and read.record["domain"] == "retail"


# --- split, policy, stage 1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_the_split_keeps_its_tasks_with_their_ids_and_tau2_s_policy(tau2, domain):
    path = TAU2 / domain / "tasks.json"
    source = load_source(domain, path, data_dir=TAUBENCH / domain, split="test")
    test = split_of(domain)["test"]
    assert sorted(blueprint.id for blueprint in source.blueprints) == sorted(test) and not source.rejected
    assert source.split == "test" and source.policy_origin == str(TAU2 / domain / "policy.md")
    assert source.policy == (TAU2 / domain / "policy.md").read_text() != (TAUBENCH / domain / "policy.md").read_text()
    counts = {task["id"]: len(task["evaluation_criteria"]["nl_assertions"] or []) for task in tasks_of(domain)}
    assert source.unscored_assertions == {task_id: counts[task_id] for task_id in test}
    # The file's index of each task is kept for tasks-rejected.jsonl; --limit counts within the split.
    assert all(tasks_of(domain)[index]["id"] == task_id for task_id, index in source.records.items())
    limited = load_source(domain, path, data_dir=TAUBENCH / domain, split="test", limit=3)
    assert [blueprint.id for blueprint in limited.blueprints] == [
        task["id"] for task in tasks_of(domain) if task["id"] in test
    ][:3]


def test_a_tau_bench_file_keeps_the_data_folder_s_policy(tau2):
    source = load_source("retail", TAUBENCH / "retail" / "tasks_dev.json", data_dir=TAUBENCH / "retail")
    assert source.policy_origin == str(TAUBENCH / "retail" / "policy.md") and source.unscored_assertions == {}
    assert load_source("retail", "examples:retail").policy_origin == "domain retail"


def test_an_unknown_split_or_no_split_file_is_one_line_naming_the_file(tau2, tmp_path):
    with pytest.raises(SourceError) as unknown:
        load_source("retail", TAU2 / "retail" / "tasks.json", data_dir=TAUBENCH / "retail", split="dev")
    assert str(unknown.value) == (
        f"{TAU2 / 'retail' / 'split_tasks.json'} has no split 'dev'; its splits: train, test, base"
    )
    with pytest.raises(SourceError) as missing:
        load_source("retail", TAUBENCH / "retail" / "tasks_dev.json", split="test")
    assert str(missing.value) == (
        f"{TAUBENCH / 'retail' / 'tasks_dev.json'} has no split file beside it "
        f"({TAUBENCH / 'retail' / 'split_tasks.json'} not found) to choose split 'test' from"
    )
    (tmp_path / "tasks.json").write_text("[]")
    (tmp_path / "split_tasks.json").write_text('{"test": "0 1"}')
    with pytest.raises(SourceError, match="split_tasks.json must be a JSON object of split name -> list of task ids"):
        load_source("retail", tmp_path / "tasks.json", split="test")


def test_stage_one_without_filter_keeps_every_task_with_its_ground_truth(tau2):
    def loaded():
        return load_source("retail", TAU2 / "retail" / "tasks.json", data_dir=TAUBENCH / "retail", split="test")

    filtered, every = loaded(), loaded()
    validate_source(filtered)
    validate_source(every, filter=False)
    refused = {record["id"] for record in filtered.rejected}
    assert refused and {record["id"] for record in every.stage_one_problems} == refused and not every.rejected
    assert len(every.blueprints) == len(split_of("retail")["test"]) == len(filtered.blueprints) + len(refused)
    assert set(every.ground_truth) == {blueprint.id for blueprint in every.blueprints}
    for blueprint in every.blueprints:
        digest = state_digest(replay_blueprint(every.domain, every.db, blueprint).final)
        assert every.ground_truth[blueprint.id] == digest


def test_validate_reads_a_tau2_file_and_its_split(tau2, tmp_path):
    out = tmp_path / "verdicts.jsonl"
    arguments = ["--domain", "retail", "--data-dir", TAUBENCH / "retail", "--input", TAU2 / "retail" / "tasks.json"]
    done = subprocess.run(
        [CLI, "validate", *arguments, "--split", "test", "--output", out], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(record["id"] for record in records) == sorted(split_of("retail")["test"])
    accepted = sum(record["accepted"] for record in records)
    assert done.stderr.strip().startswith(f"{accepted} of 40 accepted;")
    wrong = subprocess.run(
        [CLI, "validate", *arguments, "--split", "dev", "--output", out], capture_output=True, text=True, timeout=120
    )
    assert wrong.returncode == 2 and wrong.stderr.strip() == (
        f"apigen-mt: error: --split dev: {TAU2 / 'retail' / 'split_tasks.json'} has no split 'dev'; "
        "its splits: train, test, base"
    )


# --- the human ---------------------------------------------------------------------------------------------------

SCENARIO = Scenario(
    reason_for_call="You want to return the desk lamp of order #W2378156.",
    known_info="You are Yusuf Rossi in zip code 19122.",
    unknown_info="You do not remember your email address.",
    task_instructions="You are brief and polite.",
)


def test_the_human_is_told_its_scenario_part_by_part():
    human = HumanSimulator(ScriptedChatModel([]), SCENARIO.text(), settings=HumanSettings(), scenario=SCENARIO)
    prompt = human.system_prompt
    sections = ["## What you want", "## What you know", "## What you do not know", "## How to behave"]
    positions = [prompt.index(section) for section in sections]
    assert positions == sorted(positions)
    for section, text in zip(sections, SCENARIO.model_dump().values(), strict=True):
        assert prompt.index(text) > prompt.index(section)
    assert "say that you do not know it; never make it up" in prompt
    assert "Reason for call:" not in prompt  # the parts, not the joined text
    plain = HumanSimulator(ScriptedChatModel([]), "Return the lamp.", settings=HumanSettings()).system_prompt
    assert "Return the lamp." in plain and "## What you know" not in plain
    # A part the task leaves out has no section.
    partial = HumanSimulator(
        ScriptedChatModel([]), "x", settings=HumanSettings(), scenario=Scenario(reason_for_call="Return the lamp.")
    ).system_prompt
    assert "## What you want\nReturn the lamp." in partial and "## What you do not know" not in partial


def test_a_tau2_blueprint_s_scenario_reaches_the_human_of_a_trial(tau2):
    read = read_tasks(tasks_of("retail")[:1], domain="retail", db=db_of("retail"))
    blueprint = Blueprint.model_validate(read[0].record)
    human = ScriptedChatModel(["I want to exchange two items.", "Thanks ###STOP###"], model_id="scripted-human")
    models = TrialModels(
        agent=ScriptedChatModel(["Which order?", "Done."], model_id="scripted-agent"),
        human=human,
        judge=ScriptedChatModel([], model_id="scripted-judge"),
    )
    settings = TrialSettings(human=HumanSettings(max_retries=0), episode=EpisodeSettings(max_turns=4))
    retail = get_domain("retail")
    row = asyncio.run(play_trial(retail, db_of("retail"), "policy", TrialItem(blueprint, 0, None), models, settings))
    system = human.requests[0].messages[0].content
    unknown = system.index("## What you do not know")
    assert system.index("You do not remember your email address.", unknown) < system.index("## How to behave")
    assert row["blueprint_id"] == "0" and json.loads(row["blueprint"])["scenario"] == blueprint.scenario.model_dump()


def test_revealed_values_count_the_scenario_s_text_as_known(tau2):
    [read] = read_tasks([tasks_of("retail")[0]], domain="retail", db=db_of("retail"))
    instruction = Blueprint.model_validate(read.record).instruction
    agent = ["How can I help?"]
    assert revealed_values(instruction, ["It is order #W2378156, zip 19122."], agent) == []
    assert revealed_values(instruction, ["It is order #W9999999."], agent) == [
        "the user said '#W9999999' (an order id), which is in neither the instruction nor the agent's replies"
    ]
    assert instruction.startswith("Reason for call: You received your order #W2378156")


# --- decontamination by split ------------------------------------------------------------------------------------


def test_excluded_tau2_tasks_of_the_test_split_reject_copies_of_their_writes(tau2):
    from apigen_mt.pipeline.run.phase1 import load_excluded_tasks

    path = TAU2 / "retail" / "tasks.json"
    test = load_excluded_tasks(path, "test")
    everything = load_excluded_tasks(path)
    assert sorted(task.id for task in test) == sorted(split_of("retail")["test"]) and len(everything) == 114
    writes = write_tool_names(get_domain("retail"))
    by_id = {task.id: task for task in everything}
    test_task = next(task for task in test if any(call.name in writes for call in task.actions))
    train_task = by_id[TRAIN_TASK]

    # Another user, other words: only the write actions are the task's.
    def copy(task: Blueprint) -> Blueprint:
        return Blueprint(user_id="someone_else_1", instruction="Help me with my account, please.", actions=task.actions)

    reason = Decontaminator(test, writes).check(copy(test_task))
    assert (
        reason is not None
        and reason.startswith("reproduces excluded task")
        and reason.endswith("the same write actions")
    )
    assert Decontaminator(test, writes).check(copy(train_task)) is None
    assert Decontaminator(everything, writes).check(copy(train_task)) is not None
    with pytest.raises(SourceError, match="has no split 'dev'; its splits: train, test, base"):
        load_excluded_tasks(path, "dev")


TRAIN_TASK = "0"  # a train task whose text is unlike every test task's (checked below)


def test_generate_with_exclude_split_rejects_a_copy_of_a_test_task_and_keeps_a_copy_of_a_train_task(
    tau2, ray_local, tmp_path
):
    from tests.conftest import load_by_value

    phase1 = load_by_value("scripted_phase1")
    double = load_by_value("scripted_tau2")
    from apigen_mt.blueprints.samplers import sample_context
    from apigen_mt.pipeline import generate
    from apigen_mt.pipeline.config import BlueprintPhase, load_config
    from apigen_mt.pipeline.export.card_phase1 import phase1_section, phase1_statistics
    from apigen_mt.pipeline.run.phase1 import load_excluded_tasks
    from apigen_mt.pipeline.run.proposals import proposal_id
    from apigen_mt.pipeline.run.trials import stable_seed
    from apigen_mt.pipeline.store.run_folder import RunFolder

    path = TAU2 / "retail" / "tasks.json"
    texts = {task.id: task.instruction for task in load_excluded_tasks(path)}
    test_id = split_of("retail")["test"][0]
    assert TRAIN_TASK in split_of("retail")["train"]
    seed, proposals = 1, 2
    phase = BlueprintPhase.model_validate(
        {
            "domains": [{"domain": "retail", "proposals": proposals}],
            "seed": seed,
            "max_rounds": 1,
            "proposer": {"refusal_share": 0},
            "recombination": {"limit": 0},
        }
    )
    retail = get_domain("retail")
    seeded = retail.load()
    users = [
        sample_context(retail, seeded, seed=stable_seed(seed, "retail", index), settings=phase.sampler).user_id
        for index in range(proposals)
    ]
    kinds = {proposal_id("retail", index): double.kind(user) for index, user in enumerate(users)}
    assert sorted(kinds.values()) == ["test", "train"], kinds
    double.configure({"test": texts[test_id], "train": texts[TRAIN_TASK]}, {u: phase1.address_for(u) for u in users})
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "local-cpu.yaml")
    config = config.model_copy(update={"blueprint_generation": phase})
    out = tmp_path / "run"
    generate(
        config,
        out,
        phases=["blueprints"],
        export=False,
        exclude_tasks=path,
        exclude_split="test",
        progress=False,
        model_factory=double.factory,
    )
    folder = RunFolder(out)
    finals = {row["blueprint_id"]: row for row in folder.proposals().to_pylist() if row["final"]}
    assert {key: finals[key]["status"] for key in kinds} == {
        key: "rejected" if kind == "test" else "accepted" for key, kind in kinds.items()
    }
    [copied] = [finals[key] for key, kind in kinds.items() if kind == "test"]
    assert copied["failed_stage"] == "decontamination"
    assert copied["reasons"][0].startswith("too similar to excluded task") and "similarity 1.00" in copied["reasons"][0]
    manifest = folder.manifest()
    assert manifest.excluded_tasks.model_dump() == {"file": str(path), "split": "test", "tasks": 40}
    section = "\n".join(phase1_section(phase1_statistics(out)))
    assert (
        f"Decontamination: the accepted blueprints were checked against the 40 tasks of split `test` of `{path}`; "
        "1 proposals were rejected for reproducing one"
    ) in section


def test_exclude_split_errors_are_one_line(tau2, tmp_path):
    from apigen_mt.pipeline import GenerateError, generate
    from apigen_mt.pipeline.config import load_config

    config = Path(__file__).resolve().parent.parent / "configs" / "local-cpu.yaml"
    assert load_config(config).blueprint_generation is not None
    with pytest.raises(GenerateError) as alone:
        generate(config, tmp_path / "out", phases=["blueprints"], export=False, exclude_split="test")
    assert str(alone.value) == "--exclude-split test: it chooses a split of --exclude-tasks; give that file"
    path = TAU2 / "retail" / "tasks.json"
    with pytest.raises(GenerateError) as unknown:
        generate(config, tmp_path / "out", phases=["blueprints"], export=False, exclude_tasks=path, exclude_split="dev")
    assert str(unknown.value) == (
        f"--exclude-split dev: {TAU2 / 'retail' / 'split_tasks.json'} has no split 'dev'; its splits: train, test, base"
    )
    done = subprocess.run(
        [CLI, "blueprints", config, "--exclude-tasks", path, "--exclude-split", "dev", "--output", tmp_path / "out"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.strip() == f"apigen-mt: error: {unknown.value}"
    assert not (tmp_path / "out").exists()


def test_the_card_says_when_nothing_was_excluded():
    from apigen_mt.pipeline.export.card_phase1 import Phase1Statistics, decontamination_line

    line = decontamination_line(Phase1Statistics(funnel={"decontaminated": 0}, domains={}))
    assert line == (
        "Decontamination: not checked against any benchmark's tasks (the run was given no `--exclude-tasks`)."
    )
