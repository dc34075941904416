"""`apigen-mt trajectories` and `apigen-mt blueprints` through the installed console script, every role on an
OpenAI-compatible endpoint that behaves as hosted APIs do: the loopback test double (tests/loopback_endpoint.py)
with every hosted behaviour on (json_schema, json_object, n > 1, max_tokens and parallel_tool_calls refused; two
calls per message, Qwen-style in the text, with text beside them; <think> blocks and reasoning_content; a storm
of HTTP 500; slow answers).

The runs must finish with no row failed for a missing endpoint feature, no thinking text in anything stored, no
episode ended by a ###STOP### written only in a thinking block, and the fallbacks named in the manifest and card.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.pipeline.export.card import _fallbacks_section
from apigen_mt.pipeline.store.manifest import RunManifest, utc_now
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import BLUEPRINT_SCHEMA
from apigen_mt.pipeline.store.shards import read_rows
from apigen_mt.simulators.human_prompts import STOP
from tests.conftest import load_test_module

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).parent / "apigen-mt"
DEMO_BLUEPRINTS = HERE.parent / "examples" / "demo_blueprints.jsonl"
BLUEPRINTS, TRIALS, PROPOSALS = 3, 2, 2


loopback = load_test_module("loopback_endpoint")

# Every thought the loopback writes starts with one of these; none may reach a stored content.
THOUGHTS = ("<think>", "</think>", "I answer as the", "Perhaps I can end the chat already", "first. ###STOP###")


def run_cli(*args: Any, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def write_config(folder: Path, base_url: str) -> Path:
    endpoint = {
        "base_url": base_url,
        "model": "teacher",
        "max_concurrency": 8,
        "timeout_s": 30,
        "max_retries": 4,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.1,
        "tool_parser": "hermes",  # the endpoint writes Qwen-style <tool_call> blocks in the text
    }
    config = {
        "models": {"hosted": {"backend": "openai", "endpoint": endpoint}},
        "roles": {role: "hosted" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
        "trajectories": {
            "trials": TRIALS,
            "agent": {"temperature": 0.0, "max_tokens": 256},
            # Best-of-2 sends n = 2 and has the judge answer under a JSON schema.
            "human": {"best_of_n": 2, "temperature": 1.0, "max_tokens": 128},
            "episode": {"max_turns": 10},
        },
        "blueprint_generation": {"domains": [{"domain": "retail", "proposals": PROPOSALS}], "review": {"reviewers": 2}},
    }
    path = folder / "hosted.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both phases against one hosted-like endpoint, then the export of the trajectories run."""
    folder = tmp_path_factory.mktemp("hosted")
    with loopback.LoopbackEndpoint(models=("teacher",), behaviours=loopback.Behaviours.hosted()) as endpoint:
        config = write_config(folder, endpoint.base_url)
        trajectories = run_cli(
            "trajectories",
            config,
            "--tasks",
            DEMO_BLUEPRINTS,
            "--domain",
            "retail",
            "--limit",
            BLUEPRINTS,
            "--output",
            folder / "phase2",
            "--quiet",
        )
        phase2_counts = dict(endpoint.counts)
        blueprints = run_cli("blueprints", config, "--output", folder / "phase1", "--quiet")
        exported = run_cli("export", folder / "phase2") if trajectories.returncode == 0 else None
    return {
        "folder": folder,
        "endpoint": endpoint,
        "phase2_counts": phase2_counts,
        "trajectories": trajectories,
        "blueprints": blueprints,
        "export": exported,
    }


def test_both_runs_finish_with_every_hosted_behaviour_on(runs):
    for name in ("trajectories", "blueprints"):
        done = runs[name]
        assert done.returncode == 0, f"{name} exited {done.returncode}: {done.stderr[-3000:]}"
    counts = runs["endpoint"].counts
    # Every behaviour really happened: each feature was refused once per client process at least.
    for refused in ("json_schema", "json_object", "n", "max_tokens", "parallel_tool_calls"):
        assert counts[f"refused {refused}"] >= 1, (refused, counts)
    assert counts["500"] == 3
    for role in ("agent", "human", "judge", "proposer", "reviewer"):
        assert counts[f"role={role}"] >= 1, (role, counts)
    assert runs["endpoint"].off_schema == []  # the double's own answers fit the schemas it was sent
    # The run's closing summary names what fell back, for the endpoint it concerns.
    summary = [line for line in runs["trajectories"].stderr.splitlines() if line.startswith("endpoint fallbacks of ")]
    assert len(summary) == 1 and "structured_outputs" in summary[0] and "n" in summary[0], runs["trajectories"].stderr[
        -2000:
    ]


def test_trials_fail_for_no_missing_feature_and_store_no_thinking(runs):
    table = read_rows(runs["folder"] / "phase2" / "trajectories").to_pylist()
    assert len(table) == BLUEPRINTS * TRIALS
    # No trial failed at all, so none for a feature the endpoint lacks (the reasons show any that did).
    assert [(row["blueprint_id"], row["reasons"]) for row in table if row["status"] == "failed"] == []
    for row in table:
        # The Qwen-style calls in the text were read (the hermes parser), one per turn of the two sent.
        assert row["tool_calls"] >= 1, row["reasons"]
        messages = json.loads(row["messages"])
        assert all(len(message.get("tool_calls") or []) <= 1 for message in messages)
        for message in messages:
            content = message.get("content") or ""
            assert not [thought for thought in THOUGHTS if thought in content], (row["blueprint_id"], message)


def test_no_episode_ends_on_a_stop_inside_thinking(runs):
    human_turns = loopback.HUMAN_TURNS
    for row in read_rows(runs["folder"] / "phase2" / "trajectories").to_pylist():
        said = [message["content"] for message in json.loads(row["messages"]) if message["role"] == "user"]
        # The human thinks ###STOP### in every turn but writes it only in its last: the episode ends there.
        assert row["termination"] == "user_stop", (row["blueprint_id"], row["termination"], row["reasons"])
        assert len(said) == human_turns and STOP in said[-1]
        assert not [text for text in said[:-1] if STOP in text]


def test_thinking_is_kept_apart_on_the_messages(runs):
    thoughts = [
        message["reasoning_content"]
        for row in read_rows(runs["folder"] / "phase2" / "trajectories").to_pylist()
        for message in json.loads(row["messages"])
        if message.get("reasoning_content")
    ]
    assert any(STOP in thought for thought in thoughts)


def test_proposals_fail_for_no_missing_feature_and_store_no_thinking(runs):
    table = read_rows(runs["folder"] / "phase1" / "blueprints", schema=BLUEPRINT_SCHEMA).to_pylist()
    finals = [row for row in table if row["final"]]
    assert len(finals) >= PROPOSALS
    assert [row["reasons"] for row in table if row["status"] == "failed"] == []
    for row in table:
        assert not [thought for thought in THOUGHTS if thought in row["text"]], row["text"]
    # The structured proposal reached review: the JSON the prompt describes was read without a schema.
    assert [row for row in table if row["failed_stage"] != "format"], [row["reasons"] for row in table]


def test_manifests_rows_and_card_name_the_fallbacks(runs):
    base_url = runs["endpoint"].base_url
    endpoint = f"teacher at {base_url}"
    phase2 = RunFolder(runs["folder"] / "phase2").manifest()
    assert phase2.fallbacks == {
        endpoint: [
            "max_tokens -> max_completion_tokens",
            "n -> single requests",
            "parallel_tool_calls -> left out",
            "structured_outputs -> prompt only",
        ]
    }
    phase1 = RunFolder(runs["folder"] / "phase1").manifest()
    assert phase1.fallbacks == {endpoint: ["max_tokens -> max_completion_tokens", "structured_outputs -> prompt only"]}
    # Each row names what was in force when it finished: the last rows of a worker name them all.
    trials = read_rows(runs["folder"] / "phase2" / "trajectories").to_pylist()
    assert f"{endpoint}: n -> single requests" in trials[-1]["fallbacks"]
    proposals = read_rows(runs["folder"] / "phase1" / "blueprints", schema=BLUEPRINT_SCHEMA).to_pylist()
    assert f"{endpoint}: structured_outputs -> prompt only" in proposals[-1]["fallbacks"]

    assert runs["export"] is not None and runs["export"].returncode == 0, runs["export"].stderr[-3000:]
    card = (runs["folder"] / "phase2" / "README.md").read_text()
    section = card.split("## Endpoint fallbacks", 1)[1].split("\n## ", 1)[0]
    assert f"| {endpoint} | max_tokens -> max_completion_tokens; n -> single requests; parallel_tool_calls -> " in (
        section
    )


def test_the_card_says_none_when_nothing_fell_back():
    manifest = RunManifest(config={}, fingerprint="f", versions={}, started_at=utc_now())
    assert _fallbacks_section(manifest)[2].startswith("none: ")
    named = manifest.model_copy(update={"fallbacks": {"m at http://h/v1": ["n -> single requests"]}})
    assert "| m at http://h/v1 | n -> single requests |" in _fallbacks_section(named)
    assert _fallbacks_section(None)[2].startswith("Not known")


def test_the_exported_rows_render_through_the_real_templates(runs, tmp_path):
    from tests.test_export_templates import _load, conversations, shared_templates, template_problems

    templates = shared_templates()
    for loader in ("load_from_disk", "load_dataset"):
        found = conversations(_load(runs["folder"] / "phase2", loader, tmp_path / loader))
        calls = [call for _, messages, _ in found for message in messages for call in message.get("tool_calls") or []]
        assert found and calls, "the hosted run exported no conversation with calls"
        assert all(isinstance(call["function"]["arguments"], dict) for call in calls)
        assert template_problems(found, templates) == []
