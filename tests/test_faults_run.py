"""Issue 18, the run side, through the installed `apigen-mt` as a user runs it: a run with nothing to play, failed
(system) trials played again on a rerun, stage-1 rejections kept where a user finds them, the data folder in the
resume check, the manifest surviving a failed or stopped rerun, a run folder that is a file, an invalid manifest
with --force. Every model role is the loopback endpoint (tests/loopback_endpoint.py, a TEST DOUBLE); no model
engine starts, and only the cases that play episodes start Ray.

Each case checks the exit status, the lines printed (no traceback), and the run folder's rows and manifest
before and after.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter, read_rows
from tests.conftest import load_test_module
from tests.test_cli_adversarial import CLI, assert_clean_failure, run_cli, snapshot

HERE = Path(__file__).resolve().parent
DEMO_TASKS = HERE.parent / "examples" / "demo_blueprints.jsonl"
# Ray's own notice when it starts (its C++ side writes it to stderr); not a line of apigen-mt's.
RAY_NOTICE = "Token authentication is enabled for this Ray cluster"
NO_SUCH_TOOL = [{"name": "no_such_tool", "arguments": {}}]


loopback = load_test_module("loopback_endpoint")


@pytest.fixture(scope="module")
def endpoint():
    with loopback.LoopbackEndpoint(models=("teacher",)) as served:
        yield served


def write_config(folder: Path, base_url: str, *, tasks: Path | None = None, proposals: int = 0) -> Path:
    """The run config: every role on the endpoint, one trial per task, short episodes; `tasks` as its task file,
    `proposals` for Phase 1."""
    config: dict[str, Any] = {
        "models": {"hosted": {"backend": "openai", "endpoint": {"base_url": base_url, "model": "teacher"}}},
        "roles": {role: "hosted" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
        "trajectories": {"trials": 1, "episode": {"max_turns": 6}},
    }
    config["models"]["hosted"]["endpoint"]["max_retries"] = 0
    if tasks is not None:
        config["tasks"] = [{"domain": "retail", "path": str(tasks)}]
    if proposals:
        config["blueprint_generation"] = {"domains": [{"domain": "retail", "proposals": proposals}]}
    path = folder / "run.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def trajectories(config: Path, tasks: Path, output: Path, *extra: Any) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "trajectories", config, "--tasks", tasks, "--domain", "retail", "--output", output, "--quiet", *extra
    )


def lines(result: subprocess.CompletedProcess[str], status: int) -> list[str]:
    """The lines apigen-mt printed on stderr, after checking the exit status and that none is a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, f"exit {result.returncode}, expected {status}: {result.stderr}"
    return [line for line in result.stderr.splitlines() if not line.startswith(RAY_NOTICE)]


def run_files(run: Path) -> dict[Path, bytes]:
    """The bytes of every file of the run folder but its lock file (which holds the pid of the last run)."""
    return {path: data for path, data in snapshot(run).items() if path.name != ".apigen-run.lock"}


def rows(run: Path) -> list[dict[str, Any]]:
    return read_rows(run / "trajectories").to_pylist()


def manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def write_tasks(path: Path, records: list[Any]) -> Path:
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def failed_run(endpoint, tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder) of two demo tasks played once while the endpoint answered HTTP 500 to every chat:
    two `failed` rows attributed to the system. Tests copy the folder."""
    folder = tmp_path_factory.mktemp("failed")
    tasks = folder / "tasks.jsonl"
    tasks.write_text("".join(DEMO_TASKS.read_text().splitlines(keepends=True)[:2]))
    config = write_config(folder, endpoint.base_url, tasks=tasks)
    endpoint.behaviours.error_storm = 10**9
    try:
        result = trajectories(config, tasks, folder / "run")
    finally:
        endpoint.behaviours.error_storm = 0
    assert lines(result, 0)[-2].startswith("2 trials played, 0 already done"), result.stderr
    assert [(row["status"], row["attribution"], row["attempt"]) for row in rows(folder / "run")] == [
        ("failed", "system", 1)
    ] * 2
    return config, folder / "run"


def copy_run(failed_run: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(failed_run[1], tmp_path / "run")
    return tmp_path / "run"


# --- class 1: a run that plays nothing ----------------------------------------------------------------------


def test_a_task_file_with_no_task_plays_nothing_and_finishes_the_manifest(endpoint, tmp_path):
    """Issue 18 class 1: `trajectories` on `[]` has nothing to do (exit 0, said plainly); `generate` on it has no
    dataset to make (one error line), and both finish the manifest with true counts."""
    empty = write_tasks(tmp_path / "empty.json", [])
    config = write_config(tmp_path, endpoint.base_url, tasks=empty)
    played = lines(trajectories(config, empty, tmp_path / "run"), 0)
    assert played[0] == "no task to play: none given"
    assert played[1].startswith("0 trials played, 0 already done; accepted 0, rejected 0, failed 0")
    written = manifest(tmp_path / "run")
    assert written["finished_at"] is not None and written["counts"]["tasks"] == {"input": 0, "valid": 0, "rejected": 0}
    assert written["counts"]["trajectories"]["trials"] == 0 and rows(tmp_path / "run") == []
    assert (tmp_path / "run" / "tasks-rejected.jsonl").read_text() == ""

    generated = lines(run_cli("generate", config, "--output", tmp_path / "generated", "--quiet"), 2)
    errors = [line for line in generated if line.startswith("apigen-mt: error:")]
    assert errors == [
        f"apigen-mt: error: the task files of {config} hold no task, so Phase 2 had nothing to play and there is "
        "nothing to export; name task files that hold tasks"
    ]
    assert manifest(tmp_path / "generated")["finished_at"] is not None
    assert not (tmp_path / "generated" / "dataset").exists()


def test_generate_whose_phase1_accepts_nothing_says_so_in_one_line(endpoint, tmp_path):
    """Issue 18 class 1: `generate` with no task file whose Phase 1 accepts nothing (the endpoint fails every
    proposal) reaches the one-line error, with the fix that helps, after finishing the manifest."""
    config = write_config(tmp_path, endpoint.base_url, proposals=2)
    endpoint.behaviours.error_storm = 10**9
    try:
        printed = lines(run_cli("generate", config, "--output", tmp_path / "run", "--quiet"), 2)
    finally:
        endpoint.behaviours.error_storm = 0
    assert [line for line in printed if line.startswith("apigen-mt: error:")] == [
        f"apigen-mt: error: Phase 1 accepted no blueprint and {config} names no task files, so Phase 2 had nothing "
        f"to play and there is nothing to export; each proposal's reasons are in {tmp_path / 'run' / 'blueprints'}: "
        "fix what the failed ones name (an endpoint down?) and run into a new --output folder"
    ]
    assert printed[-1].startswith("apigen-mt: error:")
    written = manifest(tmp_path / "run")
    assert written["finished_at"] is not None
    assert written["counts"]["proposals"]["proposals_failed"] == 2
    assert written["counts"]["trajectories"]["trials"] == 0 and rows(tmp_path / "run") == []


# --- class 4 (and 1): stage-1 rejections and ids ------------------------------------------------------------


def test_tasks_that_all_fail_stage_1_are_kept_with_their_reasons_and_said(endpoint, tmp_path):
    """Issue 18 classes 1 and 4: every task rejected at stage 1 is nothing to play (exit 0); the summary says how
    many were rejected and where the reasons are; an integer id becomes its text, any other non-string id and a
    repeated record are rejections with their reason, never silent."""
    tasks = write_tasks(
        tmp_path / "tasks.json",
        [
            {"id": 7, "instruction": "Cancel my order.", "actions": NO_SUCH_TOOL},
            {"id": 1.5, "instruction": "Cancel my order.", "actions": []},
            {"id": 7, "instruction": "Cancel my order.", "actions": NO_SUCH_TOOL},
        ],
    )
    config = write_config(tmp_path, endpoint.base_url, tasks=tasks)
    run = tmp_path / "run"
    printed = lines(trajectories(config, tasks, run), 0)
    assert printed[:2] == [
        f"stage 1 rejected 3 of 3 tasks; their reasons are in {run / 'tasks-rejected.jsonl'}",
        "no task to play: stage 1 rejected every one",
    ]
    stored = [json.loads(line) for line in (run / "tasks-rejected.jsonl").read_text().splitlines()]
    assert [(record["task_file"], record["index"], record["id"]) for record in stored] == [
        (str(tasks), 0, "7"),
        (str(tasks), 1, None),
        (str(tasks), 2, "7"),
    ]
    assert "no_such_tool" in stored[0]["reasons"][0]
    assert stored[1]["reasons"] == ["id: must be a string or an integer, not 1.5"]
    assert stored[2]["reasons"] == ["record 3 repeats record 1 (id '7'), which is played once"]
    assert manifest(run)["counts"]["tasks"] == {"input": 3, "valid": 0, "rejected": 3}


def test_two_different_tasks_with_one_id_are_one_line_naming_both_records(endpoint, tmp_path):
    """Issue 18 class 4: the second of two different tasks with one id is not dropped: the run refuses the file."""
    tasks = write_tasks(
        tmp_path / "tasks.json",
        [
            {"id": "same", "instruction": "Cancel my order.", "actions": []},
            {"id": "other", "instruction": "Return my order.", "actions": []},
            {"id": "same", "instruction": "Exchange my order.", "actions": []},
        ],
    )
    config = write_config(tmp_path, endpoint.base_url, tasks=tasks)
    line = assert_clean_failure(trajectories(config, tasks, tmp_path / "run"), snapshot=snapshot(tasks))
    assert line == (
        f"apigen-mt: error: {tasks}: records 1 and 3 are different tasks with the same id 'same'; give each its own id"
    )
    assert not (tmp_path / "run").exists()


# --- class 2: failed (system) trials are played again ----------------------------------------------------------


def test_failed_system_trials_are_played_again_on_a_rerun_up_to_the_bound(endpoint, failed_run, tmp_path):
    """Issue 18 class 2: with the endpoint back, a rerun plays the system failures again (the row's attempt goes
    on); a trial that failed so on its first play and on max_replays (3) replays stays failed, and is said."""
    config, run = failed_run[0], copy_run(failed_run, tmp_path)
    first, second = rows(run)
    # Three more system failures of the first trial, as three earlier reruns would have left them.
    with ShardWriter(run / "trajectories", TRAJECTORY_SCHEMA) as writer:
        for attempt in (2, 3, 4):
            writer.write(first | {"attempt": attempt})
    before = rows(run)
    tasks = config.parent / "tasks.jsonl"

    printed = lines(trajectories(config, tasks, run), 0)
    assert printed[0].startswith("1 trials played (1 of them again after a system failure), 1 already done;")
    assert printed[1] == (
        "1 trial left as failed: failed for a system reason on the first play and on all trajectories.max_replays "
        "replays; raise it to play again"
    )
    after = rows(run)
    assert after[: len(before)] == before  # every earlier row kept
    [replay] = after[len(before) :]
    assert (replay["blueprint_id"], replay["trial"], replay["attempt"]) == (second["blueprint_id"], 0, 2)
    assert replay["status"] != "failed"
    # The replay's row is the one counted; the trial past the bound is counted as failed, once.
    counts = manifest(run)["counts"]["trajectories"]
    assert counts["trials"] == 2 and counts["failed"] == 1 and counts[replay["status"]] == 1

    again = lines(trajectories(config, tasks, run), 0)
    assert again[0].startswith("0 trials played, 2 already done;") and again[1].startswith("1 trial left as failed")
    assert rows(run) == after


# --- class 5: the data folder is part of the resume check -----------------------------------------------------


def test_a_rerun_on_another_data_folder_is_refused_naming_both(endpoint, tmp_path):
    """Issue 18 class 5: a rerun with another --data-dir (here one where the first run had none) is refused like
    another config, and --force mixes them as the line says."""
    from apigen_mt.simulators.domain import get_domain

    data = tmp_path / "data"
    data.mkdir()
    for table, records in get_domain("retail").generate(1).items():  # a data folder in tau-bench's layout
        (data / f"{table}.json").write_text(json.dumps(records))
    empty = write_tasks(tmp_path / "empty.json", [])
    config = write_config(tmp_path, endpoint.base_url)
    run = tmp_path / "run"
    lines(trajectories(config, empty, run), 0)
    before = run_files(run)
    line = assert_clean_failure(trajectories(config, empty, run, "--data-dir", data), snapshot=before)
    assert line == (
        f"apigen-mt: error: run folder {run} was played on the domain's seeded data and this run names data folder "
        f"{data}; give the same --data-dir, a new --output folder, or --force to mix them"
    )
    lines(trajectories(config, empty, run, "--data-dir", data, "--force"), 0)
    assert manifest(run)["data_dir"] == str(data) and manifest(run)["finished_at"] is not None


# --- class 9: the manifest survives a failed or stopped rerun -------------------------------------------------


def test_a_bad_shard_during_a_resume_leaves_the_manifest_as_it_was(failed_run, tmp_path):
    """Issue 18 class 9: a damaged shard stops the resume in one line, and the finished manifest stays."""
    config, run = failed_run[0], copy_run(failed_run, tmp_path)
    [shard] = (run / "trajectories").glob("part-*.parquet")
    shard.write_bytes(b"not parquet")
    before = run_files(run)
    line = assert_clean_failure(trajectories(config, failed_run[0].parent / "tasks.jsonl", run), snapshot=before)
    assert f"shard {shard} is not readable as Parquet" in line
    assert manifest(run)["finished_at"] is not None and manifest(run)["counts"]["trajectories"]["failed"] == 2


@pytest.fixture
def immutable(tmp_path):
    """Makes a folder immutable (even root cannot create files in it) for the test, or skips."""
    chattr = shutil.which("chattr")
    made: list[Path] = []

    def make(folder: Path) -> None:
        if chattr is None or subprocess.run([chattr, "+i", folder], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder immutable here (needs chattr, CAP_LINUX_IMMUTABLE and ext4 or similar)")
        made.append(folder)

    yield make
    for folder in made:
        subprocess.run([chattr, "-i", folder], check=True)


def test_an_unwritable_run_folder_during_a_resume_leaves_the_manifest_as_it_was(endpoint, immutable, tmp_path):
    """Issue 18 class 9: a rerun that cannot write into the run folder stops in one line; the manifest stays."""
    tasks = write_tasks(tmp_path / "tasks.json", [{"instruction": "Cancel my order.", "actions": NO_SUCH_TOOL}])
    config = write_config(tmp_path, endpoint.base_url, tasks=tasks)
    run = tmp_path / "run"
    lines(trajectories(config, tasks, run), 0)
    before = run_files(run)
    immutable(run)
    line = assert_clean_failure(trajectories(config, tasks, run), snapshot=before)
    assert str(run) in line and "Operation not permitted" in line
    assert manifest(run)["counts"]["tasks"] == {"input": 1, "valid": 0, "rejected": 1}


def test_ctrl_c_during_a_resume_leaves_the_manifest_as_it_was(endpoint, failed_run, tmp_path):
    """Issue 18 class 9: Ctrl-C while a rerun plays stops it (exit 130, one line) with the manifest unchanged and
    every stored row kept."""
    config, run = failed_run[0], copy_run(failed_run, tmp_path)
    before = snapshot(run / "manifest.json")
    stored = rows(run)
    tasks = failed_run[0].parent / "tasks.jsonl"
    command = [str(CLI), "trajectories", str(config), "--tasks", str(tasks), "--domain", "retail"]
    endpoint.behaviours.delay_s = 30.0  # every chat waits: the replays are in flight when the signal comes
    seen = endpoint.counts["requests"]
    process = subprocess.Popen(
        [*command, "--output", str(run), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while endpoint.counts["requests"] == seen:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the rerun sent no chat request within 90 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        endpoint.behaviours.delay_s = 0.0
        if process.poll() is None:
            process.kill()
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert lines(result, 130) == ["apigen-mt: stopped by SIGINT; unfinished outputs were removed"]
    assert snapshot(run / "manifest.json") == before
    assert rows(run)[: len(stored)] == stored


# --- class 12: a run folder that is a file; an invalid manifest -----------------------------------------------


@pytest.mark.parametrize("command", ["trajectories", "generate"])
def test_a_run_folder_that_is_a_file_is_one_line_saying_so(endpoint, tmp_path, command):
    """Issue 18 class 12a: one message whichever command meets it."""
    empty = write_tasks(tmp_path / "empty.json", [])
    config = write_config(tmp_path, endpoint.base_url, tasks=empty)
    output = tmp_path / "notes.txt"
    output.write_text("mine\n")
    arguments = ["--tasks", empty] if command == "trajectories" else []
    result = run_cli(command, config, *arguments, "--output", output, "--quiet")
    line = assert_clean_failure(result, snapshot=snapshot(output))
    assert line == (
        f"apigen-mt: error: run folder {output} is a file, not a folder; give a folder path (a new one, or the "
        "--output of an earlier run)"
    )


def test_an_invalid_manifest_is_refused_and_replaced_with_force(failed_run, tmp_path):
    """Issue 18 class 12b: the advice to use --force is true: with it the run writes a new manifest that counts
    the rows kept."""
    run = copy_run(failed_run, tmp_path)
    (run / "manifest.json").write_text("{")
    empty = write_tasks(tmp_path / "empty.json", [])
    before = run_files(run)
    line = assert_clean_failure(trajectories(failed_run[0], empty, run), snapshot=before)
    assert line.endswith(
        "restore it, use a new --output folder, or --force to write a new one (the rows stored are kept and counted "
        "again)"
    )
    lines(trajectories(failed_run[0], empty, run, "--force"), 0)
    written = RunFolder(run).manifest()
    assert written.finished_at is not None and written.counts["trajectories"]["failed"] == 2
    assert rows(run) == rows(failed_run[1])
