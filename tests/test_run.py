"""The run driver on Ray with scripted roles (tests/scripted_job.py): every trial is accounted for once, with
its status and attribution; a rerun resumes; a different config is refused; a SIGKILL loses nothing finished."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.shards import RunFolderError, read_rows
from tests.conftest import load_by_value

HERE = Path(__file__).resolve().parent


job = load_by_value("scripted_job")


def rows(out: Path) -> list[dict]:
    return read_rows(out / "trajectories").to_pylist()


def test_every_trial_is_recorded_once_with_status_and_attribution(ray_local, tmp_path):
    summary = job.run(tmp_path / "run", trials=2)
    table = rows(tmp_path / "run")
    by_pair = {(row["blueprint_id"], row["trial"]): row for row in table}
    assert len(table) == len(by_pair) == 10
    for (blueprint, _), row in by_pair.items():
        if blueprint in job.BROKEN:
            assert (row["status"], row["attribution"], row["termination"]) == ("failed", "system", "model_error")
            assert "HTTP 503" in row["reasons"][0]
        elif blueprint in job.WRONG:
            assert (row["status"], row["attribution"]) == ("rejected", "agent")
            assert not row["state_match"] and "cancel_reason" in row["reasons"][0]
        else:
            assert (row["status"], row["attribution"], row["reward"]) == ("accepted", None, 1.0)
            assert row["termination"] == "user_stop"
            messages = json.loads(row["messages"])
            assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
    # Two identical accepted trials per blueprint count once.
    assert summary.counts["trajectories"] == {
        "trials": 10,
        "accepted": 6,
        "rejected": 2,
        "failed": 2,
        "unique_accepted": 3,
    }
    manifest = RunFolder(tmp_path / "run").manifest()
    assert manifest.finished_at is not None and manifest.counts == summary.counts
    # Scripted models are no endpoint: nothing fell back (tests/test_hosted_endpoint.py has endpoints that do).
    assert [row["fallbacks"] for row in table] == [[]] * 10 and manifest.fallbacks == {}


def test_a_rerun_plays_missing_trials_and_system_failures_and_a_new_config_is_refused(ray_local, tmp_path):
    out = tmp_path / "run"
    job.run(out, trials=1)
    again = job.run(out, trials=2)
    # The second trial of each blueprint, and the first of the broken one again: it failed for a system reason.
    [broken] = job.BROKEN
    assert (again.played, again.replayed, again.skipped) == (6, 1, 4)
    assert sorted((r["blueprint_id"], r["trial"], r["attempt"]) for r in rows(out)) == sorted(
        [(blueprint["id"], trial, 1) for blueprint in job.BLUEPRINTS for trial in range(2)] + [(broken, 0, 2)]
    )
    assert again.counts["trajectories"]["trials"] == 10
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fingerprint"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="different config"):
        job.run(out, trials=2)
    mixed = job.run(out, trials=2, force=True)
    assert (mixed.played, mixed.replayed, mixed.skipped) == (2, 2, 8)


def test_sigkill_halfway_then_rerun_gives_exactly_one_row_per_trial(tmp_path):
    out = tmp_path / "run"
    # Shards of 3 rows: some are on disk when the kill comes, the rest sit in the writer's journal.
    command = [sys.executable, str(HERE / "scripted_job.py"), str(out), "--trials", "4", "--rows-per-shard", "3"]
    command_slow = command + ["--delay", "0.3"]
    process = subprocess.Popen(command_slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(rows(out) if (out / "trajectories").is_dir() else []) < 4:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = rows(out)
    assert 4 <= len(before) < 20, "the run was not killed halfway"
    assert not list((out / "trajectories").glob("*.tmp"))
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    after = rows(out)
    pairs = [(row["blueprint_id"], row["trial"]) for row in after]
    # One row per trial, but for the broken blueprint's trials the killed run finished: they failed for a system
    # reason, so the rerun played them again.
    assert len(set(pairs)) == 20
    again = [pair for pair in pairs if pairs.count(pair) > 1]
    assert {blueprint for blueprint, _ in again} <= job.BROKEN and len(again) == 2 * len(set(again))
    kept = {(row["blueprint_id"], row["trial"], row["finished_at"]) for row in before}
    assert kept <= {(row["blueprint_id"], row["trial"], row["finished_at"]) for row in after}


def test_every_accepted_trial_scores_1_with_apigen_mt_verify(ray_local, tmp_path):
    out = tmp_path / "run"
    job.run(out, trials=1)
    accepted = [row for row in rows(out) if row["status"] == "accepted"]
    assert accepted
    trajectories = tmp_path / "accepted.jsonl"
    trajectories.write_text(
        "".join(
            json.dumps({"blueprint": json.loads(row["blueprint"]), "messages": json.loads(row["messages"])}) + "\n"
            for row in accepted
        )
    )
    verdicts = tmp_path / "verdicts.jsonl"
    cli = Path(sys.executable).parent / "apigen-mt"
    result = subprocess.run(
        [str(cli), "verify", "--domain", "retail", "--input", str(trajectories), "--output", str(verdicts)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert len(lines) == len(accepted)
    assert all(line["reward"] == 1.0 and line["accepted"] and not line["warnings"] for line in lines)


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path):

    out = tmp_path / "run"
    with RunFolder(out).lock():
        with pytest.raises(RunFolderError, match=re.escape(f"in use by another apigen-mt command (pid {os.getpid()})")):
            job.run(out, trials=1)
    # Released on exit: the folder is usable again.
    with RunFolder(out).lock():
        pass
