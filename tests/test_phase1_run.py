"""Phase 1 through the run driver (tests/scripted_phase1.py on Ray): one row per proposal round with its status
and stage, engine-death retries, decontamination and dedup as rows arrive, the manifest's funnel, resume,
`generate` chaining into Phase 2, the card's Phase-1 section; and the CLI's one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from apigen_mt.blueprints.dedup import write_tool_names
from apigen_mt.blueprints.samplers import sample_context
from apigen_mt.pipeline.config import BlueprintPhase, load_config
from apigen_mt.pipeline.run.phase1 import ProposalPlan, planned_domain
from apigen_mt.pipeline.run.proposals import (
    ProposalItem,
    proposal_id,
    system_row,
)
from apigen_mt.pipeline.run.trials import stable_seed
from apigen_mt.pipeline.store.proposal_rows import proposal_funnel, stored_proposals
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import BLUEPRINT_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter, read_rows
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.types import Blueprint
from apigen_mt.validators.blueprint import validate_blueprint
from tests.conftest import load_by_value

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "local-cpu.yaml"
CLI = Path(sys.executable).parent / "apigen-mt"
RETAIL = get_domain("retail")
SEED, PROPOSALS, MAX_ROUNDS = 2, 12, 1  # seed 2 gives every scripted kind among 12 proposals


scripted = load_by_value("scripted_phase1")


def config():
    base = load_config(CONFIG)
    phase = BlueprintPhase.model_validate(
        {
            "domains": [{"domain": "retail", "proposals": PROPOSALS}],
            "seed": SEED,
            "max_rounds": MAX_ROUNDS,
            "proposer": {"refusal_share": 0},
            "in_flight": 4,
            "rows_per_shard": 5,
        }
    )
    # The scripted human answers in plain text, not in the structured form the embedded model is asked for.
    human = base.trajectories.human.model_copy(update={"structured": False})
    trajectories = base.trajectories.model_copy(update={"human": human, "trials": 1})
    return base.model_copy(update={"blueprint_generation": phase, "trajectories": trajectories})


DB = RETAIL.load()
SAMPLER = config().blueprint_generation.sampler
USERS = [
    sample_context(RETAIL, DB, seed=stable_seed(SEED, "retail", index), settings=SAMPLER).user_id
    for index in range(PROPOSALS)
]
KINDS = {proposal_id("retail", index): scripted.kind(user) for index, user in enumerate(USERS)}
IDS = {kind: [blueprint_id for blueprint_id, k in KINDS.items() if k == kind] for kind in scripted.KINDS}
EXCLUDED_ID = IDS["good"][0]  # an excluded task makes this one's writes


def excluded_task() -> Blueprint:
    user = USERS[int(EXCLUDED_ID.rsplit("p", 1)[1])]
    call = {"name": "modify_user_address", "arguments": {"user_id": user, **scripted.address_for(user)}}
    return Blueprint(user_id=user, instruction="Please update the home address we have on file.", actions=[call])


def plan(proposals: int = PROPOSALS, excluded: tuple[Blueprint, ...] = ()) -> ProposalPlan:
    return ProposalPlan((planned_domain("retail", None, proposals),), excluded)


def options(out: Path, **extra):
    from apigen_mt.pipeline.run.driver import RunOptions

    return RunOptions(RunFolder(out), progress=False, **extra)


def rows_by_id(out: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in RunFolder(out).proposals().to_pylist():
        found.setdefault(row["blueprint_id"], []).append(row)
    return found


def test_seeds_are_those_of_runs_made_before_trial_and_proposal_seeds_were_one_function():
    # Values of the two former functions (`trial_seed`, `proposal_seed`): a rerun must sample as the first run did.
    assert stable_seed("retail-p0003", 2) == 504600964  # trial 2 of a blueprint
    assert stable_seed(7, "retail", 3) == 357146259  # proposal 3 of retail under config seed 7
    assert stable_seed(7, "airline", -1) == 21305809  # a recombination of airline's under config seed 7


def test_the_scripted_kinds_cover_every_outcome():
    assert all(len(IDS[kind]) >= 1 for kind in scripted.KINDS) and len(IDS["twin"]) >= 2, IDS


def test_stored_proposals_keep_only_the_rows_of_the_run_that_finished_each_proposal(tmp_path):
    def row(index: int, round: int, final: bool, status: str) -> dict:
        base = system_row(ProposalItem("retail", index, seed=index), "m", "r")
        return base | {"round": round, "final": final, "status": status, "failed_stage": None}

    written = [
        row(0, 0, False, "rejected"),
        row(0, 1, False, "rejected"),  # a killed run's rounds of proposal 0
        row(1, 0, True, "accepted"),
        row(0, 0, True, "accepted"),  # proposal 0 again, accepted in round 0
        row(2, 0, False, "rejected"),  # proposal 2 not finished: proposed again by the next run
    ]
    with ShardWriter(tmp_path, BLUEPRINT_SCHEMA, rows_per_shard=2) as writer:
        for one in written:
            writer.write(one)
    stored = stored_proposals(read_rows(tmp_path, schema=BLUEPRINT_SCHEMA))
    assert [(r["blueprint_id"], r["round"], r["status"]) for r in stored.to_pylist()] == [
        ("retail-p0001", 0, "accepted"),
        ("retail-p0000", 0, "accepted"),
    ]
    funnel = proposal_funnel(stored)
    assert (funnel["proposals"], funnel["proposed"], funnel["accepted_by_round"]) == (2, 2, {"0": 2})


# --- Ray: the driver ---------------------------------------------------------------------------------------


def test_every_round_is_a_row_with_its_status_stage_and_reasons(ray_local, tmp_path):
    from apigen_mt.pipeline.run.driver import run_blueprints

    out = tmp_path / "run"
    summary = run_blueprints(config(), plan(excluded=(excluded_task(),)), options(out), model_factory=scripted.factory)
    assert (summary.proposed, summary.proposals_skipped, summary.phases) == (PROPOSALS, 0, ["blueprints"])
    rows = rows_by_id(out)
    assert set(rows) == set(KINDS)
    for blueprint_id, kind in KINDS.items():
        shape = [(row["round"], row["status"], row["failed_stage"], row["final"]) for row in rows[blueprint_id]]
        if blueprint_id == EXCLUDED_ID:
            assert shape == [(0, "rejected", "decontamination", True)]
            assert rows[blueprint_id][0]["reasons"] == [
                "reproduces excluded task 0 ('Please update the home address we have on ...'): the same write actions"
            ]
        elif kind == "good":
            assert shape == [(0, "accepted", None, True)]
        elif kind == "revised":  # the engine died under the first attempt: run again, both rounds attempt 2
            assert shape == [(0, "rejected", "format", False), (1, "accepted", None, True)]
            assert [row["attempt"] for row in rows[blueprint_id]] == [2, 2]
            assert "'note' was unexpected" in rows[blueprint_id][0]["reasons"][0]
            assert rows[blueprint_id][1]["feedback"].startswith("1. Fix what the check names.")
        elif kind == "hopeless":
            assert shape == [(0, "rejected", "format", False), (1, "rejected", "format", True)]
        elif kind == "disliked":
            assert shape == [(0, "rejected", "review", False), (1, "rejected", "review", True)]
            votes = json.loads(rows[blueprint_id][1]["votes"])
            assert votes["decision"]["correctness"] == 0 and votes["score"] == 0.5
        elif kind == "broken":
            assert shape == [(0, "failed", None, True)]
            reason = "the proposer's backend failed: HTTP 503: the scripted proposer is down"
            assert rows[blueprint_id][0]["reasons"] == [reason]
            assert json.loads(rows[blueprint_id][0]["blueprint"]) is None
    twins = {blueprint_id: rows[blueprint_id][-1] for blueprint_id in IDS["twin"]}
    [kept] = [blueprint_id for blueprint_id, row in twins.items() if row["status"] == "accepted"]
    for blueprint_id, row in twins.items():
        if blueprint_id != kept:
            assert (row["status"], row["failed_stage"], row["round"], row["final"]) == ("rejected", "dedup", 0, True)
            assert row["reasons"][0].startswith(f"near-duplicate of kept blueprint {kept}: instruction similarity")
    # Every accepted blueprint is in `validate`'s input form and passes it again, under its blueprint id.
    accepted = [row for row in (r[-1] for r in rows.values()) if row["status"] == "accepted"]
    assert len(accepted) == len(IDS["good"]) - 1 + len(IDS["revised"]) + 1
    for row in accepted:
        blueprint = json.loads(row["blueprint"])
        assert blueprint["id"] == row["blueprint_id"] and blueprint["user_id"] == row["user_id"]
        assert all(verdict.passed for verdict in validate_blueprint(RETAIL, DB, blueprint))
        assert json.loads(row["diff_patch"]) and row["context_ids"][1] == f"user:{row['user_id']}"
    funnel = RunFolder(out).manifest().counts["blueprints"]
    rounds = sum(len(r) for r in rows.values())
    stage_one_rejected = 2 * len(IDS["hopeless"]) + len(IDS["revised"])
    assert funnel == {
        "proposals": PROPOSALS,
        "proposed": rounds,
        "passed_format": rounds - len(IDS["broken"]) - stage_one_rejected,
        "passed_execution": rounds - len(IDS["broken"]) - stage_one_rejected,
        "passed_policy": rounds - len(IDS["broken"]) - stage_one_rejected,
        "passed_review": rounds - len(IDS["broken"]) - stage_one_rejected - 2 * len(IDS["disliked"]),
        "decontaminated": 1,
        "deduplicated": len(IDS["twin"]) - 1,
        "accepted_by_round": {"0": len(IDS["good"]), "1": len(IDS["revised"])},  # one good out, one twin in
        "recombinations": 0,  # no two accepted blueprints share a user
        "recombined": 0,
        "proposals_accepted": len(accepted),
        "proposals_rejected": PROPOSALS - len(accepted) - len(IDS["broken"]),
        "proposals_failed": len(IDS["broken"]),
    }
    assert summary.counts["blueprints"] == funnel and "trajectories" not in summary.counts


def test_a_rerun_runs_only_missing_proposals_and_drops_a_killed_run_s_partial_rows(ray_local, tmp_path):
    from apigen_mt.pipeline.run.driver import run_blueprints

    out = tmp_path / "run"
    first = run_blueprints(config(), plan(6), options(out), model_factory=scripted.factory)
    assert (first.proposed, first.proposals_skipped) == (6, 0)
    # A run killed between two rows of proposal 7 left its round 0 without the final row.
    stale = rows_by_id(out)[proposal_id("retail", 0)][0] | {
        "blueprint_id": proposal_id("retail", 7),
        "proposal": 7,
        "final": False,
        "status": "rejected",
        "failed_stage": "format",
        "reasons": ["stale"],
    }
    with ShardWriter(out / "blueprints", BLUEPRINT_SCHEMA) as writer:
        writer.write(stale)
    second = run_blueprints(config(), plan(), options(out), model_factory=scripted.factory)
    assert (second.proposed, second.proposals_skipped) == (PROPOSALS - 6, 6)
    assert run_blueprints(config(), plan(), options(out), model_factory=scripted.factory).proposed == 0
    rows = rows_by_id(out)
    assert set(rows) == set(KINDS)
    assert all(row["reasons"] != ["stale"] for row in rows[proposal_id("retail", 7)])
    for blueprint_rows in rows.values():
        assert [row["round"] for row in blueprint_rows] == list(range(len(blueprint_rows)))
        assert [row["final"] for row in blueprint_rows] == [False] * (len(blueprint_rows) - 1) + [True]
    # Twins split over the two runs still dedup: the later run remembers what the earlier one kept.
    assert sum(1 for blueprint_id in IDS["twin"] if rows[blueprint_id][-1]["status"] == "accepted") == 1
    stored = RunFolder(out).proposals()
    assert RunFolder(out).manifest().counts["blueprints"] == proposal_funnel(stored)
    # Scripted models are no endpoint: nothing fell back.
    assert {tuple(row["fallbacks"]) for row in stored.to_pylist()} == {()} and RunFolder(out).manifest().fallbacks == {}


def test_generate_chains_accepted_blueprints_into_phase2_and_the_card_shows_phase1(ray_local, tmp_path):
    from apigen_mt.pipeline.export.dataset import export_run
    from apigen_mt.pipeline.run.driver import run_generate

    out = tmp_path / "run"
    summary = run_generate(config(), plan(), options(out), model_factory=scripted.factory)
    assert summary.phases == ["blueprints", "trajectories"]
    accepted = sorted(
        blueprint_id for blueprint_id, rows in rows_by_id(out).items() if rows[-1]["status"] == "accepted"
    )
    trials = read_rows(out / "trajectories").to_pylist()
    assert sorted(row["blueprint_id"] for row in trials) == accepted
    assert all(row["status"] == "accepted" for row in trials), [row["reasons"] for row in trials]
    counts = RunFolder(out).manifest().counts
    assert counts["blueprints"]["input"] == counts["blueprints"]["valid"] == counts["blueprints"]["proposals_accepted"]
    assert counts["blueprints"]["rejected"] == 0  # Phase 2's stage 1 finds every accepted blueprint valid
    assert counts["trajectories"]["accepted"] == len(accepted)
    again = run_generate(config(), plan(), options(out), model_factory=scripted.factory)
    assert (again.proposed, again.played, again.skipped) == (0, 0, len(accepted))

    export_run(out)
    card = (out / "README.md").read_text()
    assert "## Phase 1: blueprints" in card
    assert f"| proposals (sampled contexts) | {PROPOSALS} |" in card
    assert f"| rejected as duplicates | {len(IDS['twin']) - 1} |" in card
    assert f"| accepted in round 1 | {len(IDS['revised'])} |" in card
    users = len({USERS[int(blueprint_id.rsplit("p", 1)[1])] for blueprint_id in accepted})
    # Every accepted blueprint calls modify_user_address alone: one tool sequence, one write tool.
    writes = len(write_tool_names(RETAIL))
    assert f"| retail | {PROPOSALS} | {len(accepted)} | 1 | {users} | 1 of {writes} (`modify_user_address`) |" in card
    assert f"| accepted blueprints | {counts['proposals']['proposals_accepted']} |" in card  # Phase 1's funnel


def accepted_row(index: int, blueprint: Blueprint) -> dict:
    stored = blueprint.model_copy(update={"id": proposal_id("retail", index), "domain": "retail"})
    return system_row(ProposalItem("retail", index, seed=index), "m", "r") | {
        "status": "accepted",
        "reasons": [],
        "blueprint": stored.model_dump_json(),
        "user_id": blueprint.user_id,
    }


def test_accepted_blueprints_of_one_user_are_recombined_once_and_played(ray_local, tmp_path):
    from apigen_mt.pipeline.run.driver import run_blueprints, run_generate

    user = USERS[0]
    moves = [
        {"address1": "7 Elm Street", "address2": "", "city": "Austin", "state": "TX", "country": "USA", "zip": "73301"},
        {
            "address1": "9 Oak Road",
            "address2": "Apt 2",
            "city": "Boise",
            "state": "ID",
            "country": "USA",
            "zip": "83702",
        },
    ]
    parts = [
        Blueprint(
            user_id=user,
            instruction=f"You are user {user}, email {DB['users'][user]['email']}. "
            f"Move your default address to {move['address1']}, {move['zip']}.",
            actions=[{"name": "modify_user_address", "arguments": {"user_id": user, **move}}],
        )
        for move in moves
    ]
    out = tmp_path / "run"
    with ShardWriter(out / "blueprints", BLUEPRINT_SCHEMA) as writer:
        for index, part in enumerate(parts):
            writer.write(accepted_row(index, part))
    # force: the folder holds the two accepted rows written above but no manifest yet
    summary = run_blueprints(config(), plan(2), options(out, force=True), model_factory=scripted.factory)
    assert summary.proposed == 0 and summary.proposals_skipped == 2
    joined = [rows for rows in rows_by_id(out).values() if rows[-1]["parents"]]
    assert len(joined) == 1, rows_by_id(out)
    [row] = joined[0]
    assert row["status"] == "accepted", row["reasons"]
    assert sorted(row["parents"]) == [proposal_id("retail", 0), proposal_id("retail", 1)]
    assert row["proposal"] == -1 and row["blueprint_id"].startswith("retail-r") and row["user_id"] == user
    combined = Blueprint.model_validate_json(row["blueprint"])
    zips = [move["zip"] for move in moves]
    assert [call.arguments["zip"] for call in combined.actions] in (zips, zips[::-1])
    assert all(move["address1"] in combined.instruction for move in moves)
    assert all(verdict.passed for verdict in validate_blueprint(RETAIL, DB, combined))
    funnel = RunFolder(out).manifest().counts["blueprints"]
    assert (funnel["proposals"], funnel["recombinations"], funnel["recombined"]) == (2, 1, 1)
    # A rerun tries no group twice; Phase 2 plays the parts and the combination.
    assert run_blueprints(config(), plan(2), options(out), model_factory=scripted.factory).counts == summary.counts
    assert len([rows for rows in rows_by_id(out).values() if rows[-1]["parents"]]) == 1
    played = run_generate(config(), plan(2), options(out), model_factory=scripted.factory)
    assert played.played == 3
    trials = read_rows(out / "trajectories").to_pylist()
    assert sorted(row["blueprint_id"] for row in trials) == sorted([*row["parents"], row["blueprint_id"]])


def test_recombination_limit_zero_joins_nothing(ray_local, tmp_path):
    from apigen_mt.pipeline.run.driver import run_blueprints

    user = USERS[0]
    out = tmp_path / "run"
    with ShardWriter(out / "blueprints", BLUEPRINT_SCHEMA) as writer:
        for index, zip_code in enumerate(("73301", "83702")):
            move = {
                "address1": f"{index} Elm",
                "address2": "",
                "city": "X",
                "state": "TX",
                "country": "USA",
                "zip": zip_code,
            }
            part = Blueprint(
                user_id=user,
                instruction=f"Move to {index} Elm, {zip_code}.",
                actions=[{"name": "modify_user_address", "arguments": {"user_id": user, **move}}],
            )
            writer.write(accepted_row(index, part))
    phase = BlueprintPhase.model_validate(
        config().blueprint_generation.model_dump() | {"recombination": {"size": 2, "limit": 0}}
    )
    run_blueprints(
        config().model_copy(update={"blueprint_generation": phase}),
        plan(2),
        options(out, force=True),
        model_factory=scripted.factory,
    )
    assert not [rows for rows in rows_by_id(out).values() if rows[-1]["parents"]]


# --- the CLI: one line before any work -----------------------------------------------------------------------

CLI_CONFIG = """\
models: {m: {backend: vllm, engine: {model: "embedded:smollm2-135m-instruct", device: cpu}}}
roles: {proposer: m, reviewer: m, human: m, human_judge: m, agent: m}
blueprint_generation: {domains: [{domain: retail, proposals: 2}]}
"""


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("apigen-mt: error: ")
    return line


@pytest.mark.parametrize(
    ("content", "wording"),
    [
        (None, "--exclude-tasks: input file"),
        ('{"instruction": "x", "actions": []}\n{"instruction": NaN}\n', "line 2"),
        ('[{"instruction": "x", "actions": [{"name": "a", "arguments": []}]}]', "record 1 is not a task (actions.0"),
    ],
)
def test_a_bad_exclude_tasks_file_is_one_line_naming_it(tmp_path, content, wording):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(CLI_CONFIG)
    tasks = tmp_path / "tasks.json"
    if content is not None:
        tasks.write_text(content)
    for command in ("blueprints", "generate"):
        line = one_line(cli(command, config_path, "--exclude-tasks", tasks, "--output", tmp_path / "out"))
        assert wording in line and "tasks.json" in line
    assert not (tmp_path / "out").exists()


def test_an_unknown_domain_or_a_config_without_phase1_is_one_line(tmp_path):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(CLI_CONFIG)
    line = one_line(cli("blueprints", config_path, "--domain", "airline", "--output", tmp_path / "out"))
    assert "--domain airline" in line and "proposes blueprints for retail only" in line
    bare = tmp_path / "bare.yaml"
    files = "tasks: [{domain: retail, path: 'examples:retail'}]\n"
    bare.write_text(CLI_CONFIG.rsplit("blueprint_generation", 1)[0] + files)
    assert "has no blueprint_generation section" in one_line(cli("blueprints", bare, "--output", tmp_path / "out"))
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[{"instruction": "x", "actions": []}]')
    line = one_line(cli("generate", bare, "--exclude-tasks", tasks, "--output", tmp_path / "out"))
    assert "--exclude-tasks filters Phase 1's blueprints" in line
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(CLI_CONFIG.replace("domain: retail", "domain: banking"))
    line = one_line(cli("blueprints", unknown, "--output", tmp_path / "out"))
    assert "blueprint_generation.domains.0.domain" in line and "unknown domain 'banking'" in line
    assert not (tmp_path / "out").exists()


def test_the_phase1_section_is_checked_and_raising_proposals_keeps_the_fingerprint(tmp_path):
    from apigen_mt.pipeline.config import ConfigError

    twice = tmp_path / "twice.yaml"
    entry = "{domain: retail, proposals: 2}"
    twice.write_text(CLI_CONFIG.replace(f"[{entry}]", f"[{entry}, {entry}]"))
    with pytest.raises(ConfigError, match="twice.yaml: blueprint_generation: .*domain retail is listed more than once"):
        load_config(twice)
    small, large, other = (tmp_path / f"{name}.yaml" for name in ("small", "large", "other"))
    small.write_text(CLI_CONFIG)
    large.write_text(CLI_CONFIG.replace("proposals: 2", "proposals: 50"))
    other.write_text(CLI_CONFIG.replace("proposals: 2}]", "proposals: 2}], seed: 7"))
    assert load_config(small).fingerprint() == load_config(large).fingerprint() != load_config(other).fingerprint()
