"""Runs under faults, through the installed console script against the loopback endpoint (tests/loopback_endpoint.py,
a TEST DOUBLE of an OpenAI-compatible server): outputs that cannot be written (issue 18 class 3) and stop signals
once Ray is up (class 8). Each case checks the exit status, the one stderr line, no traceback, and the rows and
manifest the run folder holds before and after.

A full disk is played by a TEST DOUBLE loaded into the `apigen-mt` process only (a `sitecustomize` module put on
PYTHONPATH): `os.write` to a shard's journal, or pyarrow's Parquet write, fails with ENOSPC as the kernel fails it
on a full disk. A real full disk cannot be made here (no tmpfs mounts), and RLIMIT_FSIZE would stop Ray's object
store too, which sizes its files with ftruncate. A Ray start-up that times out is played the same way; an
unwritable folder is a real one (the immutable attribute, which holds even for root). The runs of class 3 join a
Ray cluster this module starts (they start in seconds); those of class 8 start their own, whose stop is the point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.pipeline.store.io import OutputError
from apigen_mt.pipeline.store.manifest import MANIFEST_NAME
from apigen_mt.pipeline.store.run_folder import RunFolder
from tests.conftest import load_test_module

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).parent / "apigen-mt"
DEMO_BLUEPRINTS = HERE.parent / "examples" / "demo_blueprints.jsonl"

# TEST DOUBLES of a full disk and of a Ray start-up that times out, for the `apigen-mt` process only (Ray's own
# processes run Python too, with the same environment).
SITECUSTOMIZE = """
import errno
import os
import sys

FAULT = os.environ.get("APIGEN_MT_TEST_FAULT", "")
if os.path.basename(sys.argv[0]) == "apigen-mt" and FAULT:
    kind, _, allowed = FAULT.partition(":")
    left = [int(allowed or 0)]

    def full():
        left[0] -= 1
        return left[0] < 0

    if kind == "journal":
        real_write = os.write

        def write(fd, data):
            if "/.journal-" in os.readlink(f"/proc/self/fd/{fd}") and full():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        os.write = write
    elif kind == "shard":
        import pyarrow.parquet

        real_write_table = pyarrow.parquet.write_table

        def write_table(table, where, **options):
            if full():
                raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
            return real_write_table(table, where, **options)

        pyarrow.parquet.write_table = write_table
    elif kind == "ray-start":
        import ray

        def init(*args, **options):
            raise Exception(
                "The current node timed out during startup. This could happen because some of the raylet failed "
                "to startup or the GCS has become overloaded."
            )

        ray.init = init
"""


loopback = load_test_module("loopback_endpoint")
adversarial = load_test_module("test_cli_adversarial")


@pytest.fixture(scope="module")
def endpoint():
    with loopback.LoopbackEndpoint(models=("teacher",)) as server:
        yield server


@pytest.fixture
def slow(endpoint):
    """Answers that take 0.3 s: an episode takes a few seconds, so a run is still playing when the test stops it."""
    endpoint.behaviours.delay_s = 0.3
    yield
    endpoint.behaviours.delay_s = 0.0


@pytest.fixture(scope="module")
def config(endpoint, tmp_path_factory) -> Path:
    endpoint_config = {"base_url": endpoint.base_url, "model": "teacher", "max_retries": 0, "timeout_s": 60}
    config = {
        "models": {"endpoint": {"backend": "openai", "endpoint": endpoint_config}},
        "roles": {role: "endpoint" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
        "trajectories": {"trials": 1, "rows_per_shard": 2, "episode": {"max_turns": 10}},
    }
    path = tmp_path_factory.mktemp("config") / "endpoint.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def arguments(config: Path, run: Path, *, limit: int, trials: int = 1) -> list[str]:
    """`apigen-mt trajectories` on the first `limit` demo blueprints, `trials` each, into `run`."""
    tasks = ["--tasks", str(DEMO_BLUEPRINTS), "--domain", "retail", "--limit", str(limit), "--trials", str(trials)]
    return [str(CLI), "trajectories", str(config), *tasks, "--output", str(run), "--quiet"]


def environment(tmp_path: Path, fault: str | None = None, *, cluster: str | None = None) -> dict[str, str]:
    """The CLI's environment: with `fault`, a test double in it; with `cluster`, joining that Ray cluster (a run
    then starts in seconds) instead of starting its own."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    if cluster is not None:
        env["RAY_ADDRESS"] = cluster
    if fault is not None:
        (tmp_path / "doubles").mkdir(exist_ok=True)
        (tmp_path / "doubles" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env |= {"PYTHONPATH": str(tmp_path / "doubles"), "APIGEN_MT_TEST_FAULT": fault}
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)


def stored(run_folder: Path) -> list[tuple[str, int]]:
    """(blueprint_id, trial) of every row in the trajectory shards."""
    table = RunFolder(run_folder).trajectories(["blueprint_id", "trial"])
    return sorted(zip(table.column("blueprint_id").to_pylist(), table.column("trial").to_pylist(), strict=True))


def journalled(run_folder: Path) -> list[tuple[str, int]]:
    """(blueprint_id, trial) of every whole line in the trajectory journals."""
    pairs = []
    for journal in (run_folder / "trajectories").glob(".journal-*.jsonl"):
        for line in journal.read_bytes().split(b"\n"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            pairs.append((row["blueprint_id"], row["trial"]))
    return sorted(pairs)


def manifest(run_folder: Path) -> dict[str, Any]:
    return json.loads((run_folder / MANIFEST_NAME).read_text())


@pytest.fixture(scope="module")
def cluster(ray_local) -> str:
    """The address of a Ray cluster in this process, for runs whose stop is not the point of the test."""
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="module")
def finished(config, cluster, tmp_path_factory) -> Path:
    """A run folder holding a finished run: two blueprints, one trial each, in one shard."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    done = run(arguments(config, folder, limit=2), environment(folder.parent, cluster=cluster))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(stored(folder)) == 2
    return folder


def copy_of(finished: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    return folder


def unfinished(run_folder: Path) -> list[Path]:
    """Temp files of the output writer left in the shard folder."""
    return adversarial.temp_files(run_folder / "trajectories")


# ---------------------------------------------------------------------------------- class 3: write failures


def test_an_unwritable_trajectories_folder_is_one_line_and_the_rows_stay(config, finished, cluster, tmp_path):
    """issue 18 class 3: the episodes are played, the first row cannot be journalled (EPERM): exit 2, one line
    naming the file, the reason and what is kept; the folder's rows and manifest as they were."""
    folder = copy_of(finished, tmp_path)
    rows, before = stored(folder), adversarial.snapshot(folder / MANIFEST_NAME)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", folder / "trajectories"], capture_output=True).returncode:
        pytest.skip("cannot make a folder immutable here (needs chattr, CAP_LINUX_IMMUTABLE and ext4 or similar)")
    try:
        result = run(arguments(config, folder, limit=2, trials=2), environment(tmp_path, cluster=cluster))
    finally:
        subprocess.run([chattr, "-i", folder / "trajectories"], check=True)
    line = adversarial.assert_clean_failure(result, snapshot=before)
    assert line.startswith(f"apigen-mt: error: cannot write {folder}/trajectories/.journal-part-00001-"), line
    assert line.endswith(
        ".jsonl: Operation not permitted; the run stopped; every row stored so far is kept (0 from this run); free "
        "space or fix the permissions, then rerun the same command to do the rest"
    ), line
    assert stored(folder) == rows and journalled(folder) == [] and unfinished(folder) == []


def test_a_full_disk_at_the_journal_is_one_line_and_keeps_the_rows_written(config, finished, cluster, tmp_path):
    """issue 18 class 3: ENOSPC at the second journal write: exit 2, one line naming the journal; the first row is
    in a shard beside the earlier ones, the manifest as it was."""
    folder = copy_of(finished, tmp_path)
    rows, before = stored(folder), adversarial.snapshot(folder / MANIFEST_NAME)
    result = run(arguments(config, folder, limit=2, trials=2), environment(tmp_path, "journal:1", cluster=cluster))
    line = adversarial.assert_clean_failure(result, snapshot=before)
    assert line.startswith(f"apigen-mt: error: cannot write {folder}/trajectories/.journal-part-00001-"), line
    assert ".jsonl: No space left on device; the run stopped; every row stored so far is kept (1 from this run)" in line
    after = stored(folder)
    assert len(after) == 3 and set(rows) < set(after) and journalled(folder) == [] and unfinished(folder) == []


def test_a_full_disk_at_the_shard_is_one_line_and_the_journal_keeps_its_rows(config, finished, cluster, tmp_path):
    """issue 18 class 3: ENOSPC when the shard of two new rows is written: exit 2, one line naming the shard; both
    rows stay in its journal, which the next writer on the folder turns into the shard; the manifest as it was."""
    folder = copy_of(finished, tmp_path)
    rows, before = stored(folder), adversarial.snapshot(folder / MANIFEST_NAME)
    result = run(arguments(config, folder, limit=2, trials=2), environment(tmp_path, "shard:0", cluster=cluster))
    line = adversarial.assert_clean_failure(result, snapshot=before)
    assert line.startswith(f"apigen-mt: error: cannot write {folder}/trajectories/part-00001-"), line
    assert (
        ".parquet: Error writing bytes to file. Detail: [errno 28] No space left on device; the run stopped; every "
        "row stored so far is kept (2 from this run, 2 of them in the journal of that shard, which the next run "
        "turns into it)" in line
    ), line
    assert stored(folder) == rows and len(journalled(folder)) == 2 and unfinished(folder) == []
    with RunFolder(folder).trajectory_writer(rows_per_shard=64):
        pass  # opening the writer recovers the journal
    assert len(set(stored(folder))) == 4 and journalled(folder) == []


def test_a_shard_folder_whose_leftovers_cannot_be_removed_is_one_output_error(tmp_path):
    """issue 18 class 3: a temp file a killed writer left, in a folder that became unwritable: the writer's opening
    is an OutputError naming the file and the fix (the CLI's one line), not a traceback."""
    folder = tmp_path / "run" / "trajectories"
    folder.mkdir(parents=True)
    (folder / ".apigen-0123abcd.tmp").write_bytes(b"half a shard")
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", folder], capture_output=True).returncode:
        pytest.skip("cannot make a folder immutable here (needs chattr, CAP_LINUX_IMMUTABLE and ext4 or similar)")
    try:
        with pytest.raises(OutputError) as refused:
            RunFolder(tmp_path / "run").trajectory_writer(rows_per_shard=64)
    finally:
        subprocess.run([chattr, "-i", folder], check=True)
    assert str(refused.value) == (
        f"cannot tidy the shard folder {folder} ({folder}/.apigen-0123abcd.tmp: Operation not permitted); fix its "
        "permissions and rerun the same command"
    )


# ---------------------------------------------------------------------------------- class 8: signals once Ray is up


def stop_after_rows(config: Path, tmp_path: Path, send) -> tuple[subprocess.CompletedProcess[str], list, Path]:
    """Start a long run, wait for its first stored rows, call `send(process)`; the finished process, the rows stored
    before the signal and the run folder."""
    folder = tmp_path / "run"
    process = subprocess.Popen(
        arguments(config, folder, limit=5, trials=8),
        env=environment(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell's job
    )
    try:
        deadline = time.monotonic() + 180
        while not (before := stored(folder) + journalled(folder)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run stored no row within 180 s"
            time.sleep(0.1)
        send(process)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), before, folder


def test_sigterm_once_ray_is_up_exits_143_in_one_line_and_keeps_every_finished_row(config, slow, tmp_path):
    """issue 18 class 8: SIGTERM mid-run: exit 143, one "stopped" line, no C-level stack dump, the rows kept."""
    result, before, folder = stop_after_rows(config, tmp_path, lambda process: process.send_signal(signal.SIGTERM))
    line = adversarial.assert_clean_failure(result, status=128 + signal.SIGTERM)
    assert line == "apigen-mt: stopped by SIGTERM; unfinished outputs were removed"
    after = stored(folder) + journalled(folder)
    assert set(before) <= set(after) and len(after) == len(set(after)) < 40 and unfinished(folder) == []
    assert manifest(folder)["finished_at"] is None


def test_three_quick_ctrl_c_exit_130_in_one_line_and_keep_every_finished_row(config, slow, tmp_path):
    """issue 18 class 8: three SIGINTs to the process group (a terminal's Ctrl-C) 0.2 s apart: exit 130, one line,
    no traceback from Ray's shutdown, the rows kept."""

    def ctrl_c_three_times(process: subprocess.Popen) -> None:
        for _ in range(3):
            os.killpg(process.pid, signal.SIGINT)
            time.sleep(0.2)

    result, before, folder = stop_after_rows(config, tmp_path, ctrl_c_three_times)
    line = adversarial.assert_clean_failure(result, status=128 + signal.SIGINT)
    assert line == "apigen-mt: stopped by SIGINT; unfinished outputs were removed"
    after = stored(folder) + journalled(folder)
    assert set(before) <= set(after) and len(after) == len(set(after)) < 40 and unfinished(folder) == []
    assert manifest(folder)["finished_at"] is None


def test_a_ray_start_up_that_times_out_is_one_line_and_the_rows_stay(config, finished, tmp_path):
    """issue 18 class 8: Ray's start-up timing out (as on a loaded machine) is exit 2 and one line saying what to do;
    the folder's rows as they were."""
    folder = copy_of(finished, tmp_path)
    before = adversarial.snapshot(folder / "trajectories", folder / MANIFEST_NAME)
    result = run(arguments(config, folder, limit=2, trials=2), environment(tmp_path, "ray-start"))
    line = adversarial.assert_clean_failure(result, snapshot=before)
    assert line == (
        "apigen-mt: error: Ray did not start (The current node timed out during startup. This could happen because "
        "some of the raylet failed to startup or the GCS has become overloaded.); if the machine is busy, rerun when "
        "the load is lower. Finished items are kept: rerun to resume."
    )
    assert unfinished(folder) == [] and journalled(folder) == []
