"""Issue 18, the export's side: `apigen-mt export` under faults and hostile input, run as the installed console
script on run folders of realistic retail trials (tests/test_export.py builds them).

Class 9: the export holds the run folder's lock (refused while a run writes; a run refused while it works), turns
the rows a killed run journalled into shards instead of calling the folder empty, clears the temps a killed export
left, and swaps all its outputs in together, so a stop signal at any point leaves the previous export whole.
Class 1: a shard without rows is an empty export, exit 0 with a clear line. Class 2: the system's failures go in
no split and are counted apart. Class 11: a row of a status apigen-mt does not write goes in no split.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from apigen_mt.pipeline.export.dataset import OUTPUTS
from apigen_mt.pipeline.export.layouts import SetAside, select_rows
from apigen_mt.pipeline.store.manifest import RunManifest, package_versions, utc_now
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import LOCK_NAME, ShardWriter
from tests.conftest import load_test_module

HERE = Path(__file__).resolve().parent
DEMO_BLUEPRINTS = HERE.parent / "examples" / "demo_blueprints.jsonl"
TEMP = re.compile(r"\.apigen-[0-9a-f]{8}\.tmp")  # pipeline.store.output.temp_name


built = load_test_module("test_export")  # build_run, _row, _episode: trials with observations from the real environment
adversarial = load_test_module("test_cli_adversarial")  # run_cli, snapshot, assert_clean_failure
loopback = load_test_module("loopback_endpoint")
run_cli, snapshot, assert_clean_failure = adversarial.run_cli, adversarial.snapshot, adversarial.assert_clean_failure
CLI = adversarial.CLI


def _build(run_dir: Path) -> None:
    """test_export's run, and a trial the system failed mid-conversation (the agent's endpoint answered HTTP 500
    after the human had spoken): a conversation, but not data."""
    built.build_run(run_dir)
    opening = built._episode("Hi, I need to cancel an order.", "no longer needed", built.GOOD)[:3]
    failed = built._row("retail-cancel-3", 0, "failed", opening, "system") | {
        "termination": "model_error",
        "reasons": ["model_error: the agent model's backend failed: HTTP 500"],
    }
    with ShardWriter(run_dir / "trajectories", TRAJECTORY_SCHEMA) as writer:
        writer.write(failed)


def _outputs(run_dir: Path) -> dict[str, bytes]:
    """The bytes of every file the export writes (byte-identical from one export of a folder to the next)."""
    return {
        str(path.relative_to(run_dir)): path.read_bytes()
        for name in OUTPUTS
        for path in ([run_dir / name] if (run_dir / name).is_file() else sorted((run_dir / name).rglob("*")))
        if path.is_file()
    }


def _run_files(run_dir: Path) -> dict[Path, bytes]:
    """The run's own files: the manifest and the shards, which no export may change."""
    files = snapshot(run_dir / "manifest.json", run_dir / "trajectories")
    return {path.relative_to(run_dir): data for path, data in files.items()}


def _temps(run_dir: Path) -> list[Path]:
    """What a writer leaves when it is cut short: temp outputs and a run's journals."""
    return [path for path in run_dir.rglob("*") if TEMP.fullmatch(path.name) or path.name.startswith(".journal-")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run exported in the openai layout (the earlier export), and what the same folder's export in both layouts
    writes (the new one)."""
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    _build(run_dir)
    run_files = _run_files(run_dir)
    done = run_cli("export", run_dir, "--format", "openai")
    assert done.returncode == 0, done.stderr
    new_dir = run_dir.parent / "new" / run_dir.name  # the card is titled with the folder's name
    shutil.copytree(run_dir, new_dir)
    assert run_cli("export", new_dir, "--format", "both").returncode == 0
    return {
        "run_dir": run_dir,
        "done": done,
        "run_files": run_files,
        "old": _outputs(run_dir),
        "new": _outputs(new_dir),
    }


def _copy(exported: dict[str, Any], tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(exported["run_dir"], run_dir)
    return run_dir


def test_the_systems_failures_go_in_no_split_and_are_counted_apart(exported: dict[str, Any]) -> None:
    """issue 18 class 2 (export side)."""
    import datasets

    run_dir, done = exported["run_dir"], exported["done"]
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[:2] == [
        "exported train 2, rejected 5, preference 2 rows",
        "  left out 2 trials that failed because of the system (an endpoint or engine down or answering garbage: not "
        "data; a rerun plays them again while they have attempts left); how they ended: engine_unavailable 1, "
        "model_error 1",
    ]
    data = datasets.load_from_disk(str(run_dir / "dataset"))
    for split in ("train", "rejected"):
        assert "failed" not in list(data[split]["status"]) and "system" not in list(data[split]["attribution"])
    assert "retail-cancel-3" not in data["preference"]["blueprint_id"]
    card = (run_dir / "README.md").read_text()
    assert (
        "Left out of every split: 2 trial(s) that failed because of the system (status `failed`: an endpoint or "
        "engine that was down or answered garbage)." in card
    )
    assert "| trials played | 10 | – |" in card and "| judged | 8 | 80% |" in card  # the funnel still counts them
    assert _run_files(run_dir) == exported["run_files"]


def test_rows_of_a_status_apigen_mt_does_not_write_go_in_no_split() -> None:
    """issue 18 class 11 (export side): the shard reader refuses such rows; should one get through, the selection
    places it in no split and counts it, beside the system's failures and the trials with no conversation."""
    good = built._episode("Hi, I need to cancel an order.", "no longer needed", built.GOOD)
    wrong = built._episode("Hi, I need to cancel an order.", "ordered by mistake", built.GOOD)
    rows = [
        built._row("retail-cancel-0", 0, "accepted", good),
        built._row("retail-cancel-0", 1, "rejected", wrong, "agent"),
        built._row("retail-cancel-0", 2, "failed", wrong, "system") | {"termination": "model_error"},
        built._row("retail-cancel-0", 3, "rejected", good[:1], "human") | {"termination": "human_unusable"},
        built._row("retail-cancel-1", 0, "accepted", good) | {"status": "verified"},
        built._row("retail-cancel-1", 1, "rejected", wrong, "agent") | {"status": None},
    ]
    selection = select_rows(rows)
    assert [(row["blueprint_id"], row["trial"]) for row in selection.train] == [("retail-cancel-0", 0)]
    assert [(row["blueprint_id"], row["trial"]) for row in selection.rejected] == [("retail-cancel-0", 1)]
    assert [(chosen["trial"], rejected["trial"]) for chosen, rejected in selection.pairs] == [(0, 1)]
    assert selection.set_aside() == SetAside(
        no_conversation={"human_unusable": 1},
        system_failures={"model_error": 1},
        unknown_status={"verified": 1, "None": 1},
    )


# A stand-in for a run's writing side: the run folder's lock and shard writer, as a run holds them; finished rows
# go to the journal, and the process waits there to be killed.
RUN_STAND_IN = """
import importlib.util, sys, time
from pathlib import Path
from apigen_mt.pipeline.store.manifest import RunManifest, package_versions, utc_now
from apigen_mt.pipeline.store.run_folder import RunFolder
from tests.conftest import load_test_module

spec = importlib.util.spec_from_file_location("test_export", sys.argv[1])
built = importlib.util.module_from_spec(spec)
spec.loader.exec_module(built)
folder = RunFolder(Path(sys.argv[2]))
with folder.lock():
    folder.save_manifest(RunManifest(config={}, fingerprint="f" * 64, versions=package_versions(),
                                     started_at=utc_now(), finished_at=None, counts={}, command=["apigen-mt"]))
    writer = folder.trajectory_writer(64)
    good = built._episode("Hi, I need to cancel an order.", "no longer needed", built.GOOD)
    other = built._episode("Hi, I need to cancel an order.", "no longer needed", "Done: the order is cancelled.")
    wrong = built._episode("Hi, I need to cancel an order.", "ordered by mistake", built.GOOD)
    writer.write(built._row("retail-cancel-0", 0, "accepted", good))
    writer.write(built._row("retail-cancel-0", 1, "rejected", wrong, "agent"))
    writer.write(built._row("retail-cancel-1", 0, "accepted", other))
    print("journalled", flush=True)
    time.sleep(600)
"""


def test_an_export_while_a_run_writes_is_refused_and_after_a_kill_exports_the_journalled_rows(tmp_path: Path) -> None:
    """issue 18 class 9: the lock, and finished rows a killed run left in its journal."""
    import datasets

    run_dir = tmp_path / "run"
    writer = subprocess.Popen(
        [sys.executable, "-c", RUN_STAND_IN, str(HERE / "test_export.py"), str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline() == "journalled\n", writer.stderr.read()
        before = snapshot(run_dir)
        line = assert_clean_failure(run_cli("export", run_dir), snapshot=before)
        assert f"run folder {run_dir} is in use" in line and f"(pid {writer.pid})" in line
        assert snapshot(run_dir) == before  # nothing written, nothing taken over
    finally:
        writer.kill()  # SIGKILL: the journal stays, the kernel drops the lock
        writer.wait()
    manifest = (run_dir / "manifest.json").read_bytes()
    assert [path.name[:9] for path in (run_dir / "trajectories").iterdir()] == [".journal-"]

    done = run_cli("export", run_dir)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[0] == "exported train 2, rejected 1, preference 1 rows"
    data = datasets.load_from_disk(str(run_dir / "dataset"))
    assert data["train"]["id"] == ["retail-cancel-0-trial0", "retail-cancel-1-trial0"]
    assert data["rejected"]["id"] == ["retail-cancel-0-trial1"]
    shards = sorted(path.name for path in (run_dir / "trajectories").iterdir())
    assert len(shards) == 1 and shards[0].startswith("part-00000-")  # the journal became the shard a resume makes
    assert pq.read_table(run_dir / "trajectories" / shards[0]).num_rows == 3
    assert (run_dir / "manifest.json").read_bytes() == manifest
    assert "finished (not finished)" in (run_dir / "README.md").read_text()
    assert _temps(run_dir) == []


def test_a_run_does_not_start_while_an_export_holds_the_folder(exported: dict[str, Any], tmp_path: Path) -> None:
    """issue 18 class 9: the export's lock keeps a run out of the folder it reads."""
    run_dir = _copy(exported, tmp_path)
    export = subprocess.Popen([str(CLI), "export", str(run_dir)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while (run_dir / LOCK_NAME).read_text() != str(export.pid):
            assert export.poll() is None and time.monotonic() < deadline, "the export never took the lock"
            time.sleep(0.005)
        export.send_signal(signal.SIGSTOP)  # held inside the export, lock taken
        before = snapshot(run_dir)
        with loopback.LoopbackEndpoint(models=("teacher",)) as endpoint:
            config = tmp_path / "run.yaml"
            config.write_text(
                json.dumps(
                    {
                        "models": {
                            "m": {"backend": "openai", "endpoint": {"base_url": endpoint.base_url, "model": "teacher"}}
                        },
                        "roles": {role: "m" for role in ("human", "human_judge", "agent")},
                    }
                )
            )
            args = ("--tasks", DEMO_BLUEPRINTS, "--domain", "retail", "--limit", 1, "--output", run_dir)
            line = assert_clean_failure(run_cli("trajectories", config, *args), snapshot=before)
        assert f"run folder {run_dir} is in use" in line and f"(pid {export.pid})" in line
        assert snapshot(run_dir) == before
    finally:
        export.send_signal(signal.SIGCONT)
    assert export.wait(timeout=120) == 0, export.stderr.read()
    assert _outputs(run_dir) == exported["new"]


def _export_until(run_dir: Path, entry: str) -> subprocess.Popen[str]:
    """`apigen-mt export RUN --format both`, returned once its temp folder holds `entry` (it is writing past it)."""
    export = subprocess.Popen([str(CLI), "export", str(run_dir), "--format", "both"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    staging = None
    while staging is None or not (staging / entry).exists():
        if staging is None:  # the first temp folder is the export's own; a later one holds the outputs it replaces
            staging = next((path for path in run_dir.glob(".apigen-*.tmp") if path.is_dir()), None)
        if export.poll() is not None or time.monotonic() > deadline:
            export.kill()
            pytest.fail(f"the export never wrote {entry} in its temp folder: {export.communicate()[1]}")
        time.sleep(0.002)
    return export


@pytest.mark.parametrize(
    ("entry", "signum"), [("data", signal.SIGINT), ("dataset", signal.SIGTERM), ("plots", signal.SIGHUP)]
)
def test_a_stop_signal_during_an_export_leaves_the_previous_export_whole(
    exported: dict[str, Any], tmp_path: Path, entry: str, signum: int
) -> None:
    """issue 18 class 9: every output is built in one temp folder and all are swapped in together, so a stop while
    the Parquet files, the dataset folders or the card are written leaves the earlier export as it was (a stop
    during the swap waits for its end: tests/test_io.py)."""
    run_dir = _copy(exported, tmp_path)
    export = _export_until(run_dir, entry)
    export.send_signal(signum)
    _, stderr = export.communicate(timeout=60)
    assert export.returncode == 128 + signum, stderr
    assert stderr == f"apigen-mt: stopped by {signal.Signals(signum).name}; unfinished outputs were removed\n"
    assert _outputs(run_dir) == exported["old"]
    assert _temps(run_dir) == [] and _run_files(run_dir) == exported["run_files"]


def test_a_killed_export_leaves_a_temp_folder_that_the_next_export_clears(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    """issue 18 class 9: SIGKILL runs no cleanup; the next export (holding the lock, so no writer is at work)
    removes what it left."""
    run_dir = _copy(exported, tmp_path)
    export = _export_until(run_dir, "dataset")
    export.kill()
    export.communicate(timeout=60)
    assert len([path for path in run_dir.iterdir() if TEMP.fullmatch(path.name) and path.is_dir()]) == 1
    assert _outputs(run_dir) == exported["old"]
    done = run_cli("export", run_dir, "--format", "both")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert _temps(run_dir) == [] and _outputs(run_dir) == exported["new"]
    assert _run_files(run_dir) == exported["run_files"]


def _manifest(counts: dict[str, Any]) -> RunManifest:
    return RunManifest(
        config={},
        fingerprint="f" * 64,
        versions=package_versions(),
        started_at=utc_now(),
        finished_at=utc_now(),
        counts=counts,
        command=["apigen-mt", "trajectories"],
    )


def test_a_run_without_trials_exports_empty_splits_with_a_clear_line(tmp_path: Path) -> None:
    """issue 18 class 1: a shard with the schema and no rows, and a run whose manifest counts no trials and which
    stored no shard (a task file of []), are an empty export: exit 0, no traceback, no warning."""
    import datasets

    empty_shard = tmp_path / "empty-shard"
    (empty_shard / "trajectories").mkdir(parents=True)
    pq.write_table(TRAJECTORY_SCHEMA.empty_table(), empty_shard / "trajectories" / "part-00000-0123abcd.parquet")
    no_shard = tmp_path / "no-shard"
    (no_shard / "trajectories").mkdir(parents=True)
    counts = {"tasks": {"input": 0, "valid": 0, "rejected": 0}, "trajectories": {"trials": 0, "accepted": 0}}
    RunFolder(no_shard).save_manifest(_manifest(counts))
    for run_dir in (empty_shard, no_shard):
        before = snapshot(run_dir)
        done = run_cli("export", run_dir)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == [
            "exported train 0, rejected 0, preference 0 rows",
            f"  {run_dir} holds no trials (its run played none), so every split is empty",
            f"  sharegpt: {run_dir / 'dataset'} (load_from_disk), {run_dir / 'data' / 'sharegpt'} (Parquet)",
            f"  openai: {run_dir / 'dataset-openai'} (load_from_disk), {run_dir / 'data' / 'openai'} (Parquet)",
            f"  card: {run_dir / 'README.md'}",
        ]
        assert {path: data for path, data in snapshot(run_dir).items() if path in before} == before
        assert dict(datasets.load_from_disk(str(run_dir / "dataset"))) == {}
        card = (run_dir / "README.md").read_text()
        assert "The run holds no trials (it played none), so every split is empty." in card
        assert yaml.safe_load(card.split("---\n")[1])["configs"] == []
