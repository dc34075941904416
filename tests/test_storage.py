from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apigen_mt.pipeline.store.manifest import RunManifest, package_versions, utc_now
from apigen_mt.pipeline.store.run_folder import RunFolder, StoredTrial
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import (
    RunFolderError,
    ShardWriter,
    latest_trials,
    read_rows,
    shard_paths,
    trajectory_counts,
)


def row(blueprint_id: str = "bp-0", trial: int = 0, status: str = "accepted", **changes: object) -> dict:
    messages = [
        {"role": "system", "content": "# Retail agent policy"},
        {"role": "user", "content": "Cancel my order #W0001."},
        {"role": "assistant", "content": "Done."},
    ]
    base = {
        "blueprint_id": blueprint_id,
        "domain": "retail",
        "trial": trial,
        "attempt": 1,
        "status": status,
        "reasons": [] if status == "accepted" else ["the final database differs"],
        "attribution": None if status == "accepted" else "agent",
        "reward": 1.0 if status == "accepted" else 0.0,
        "state_match": status == "accepted",
        "outputs_match": True,
        "terminated": True,
        "policy_violations": [],
        "human_errors": [],
        "termination": "user_stop",
        "messages": json.dumps(messages),
        "tools": "[]",
        "blueprint": json.dumps({"id": blueprint_id, "instruction": "cancel", "actions": [], "outputs": []}),
        "signature": f"sig-{blueprint_id}-{trial}",
        "turns": 1,
        "tool_calls": 0,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "human_prompt_tokens": 50,
        "human_completion_tokens": 5,
        "agent_model": "agent-model",
        "human_model": "human-model",
        "duration_s": 1.5,
        "turn_stats": "[]",
        "finished_at": utc_now(),
    }
    return base | changes


def test_shards_flush_by_count_and_close_writes_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "trajectories"
    writer = ShardWriter(folder, TRAJECTORY_SCHEMA, rows_per_shard=3, max_seconds=3600)
    for trial in range(4):
        writer.write(row(trial=trial))
    assert len(shard_paths(folder)) == 1
    assert pq.read_table(shard_paths(folder)[0]).num_rows == 3
    writer.close()
    shards = shard_paths(folder)
    assert [pq.read_table(path).num_rows for path in shards] == [3, 1]
    assert [path.name[:11] for path in shards] == ["part-00000-", "part-00001-"]
    assert read_rows(folder).column("trial").to_pylist() == [0, 1, 2, 3]
    assert read_rows(folder).schema.equals(TRAJECTORY_SCHEMA)


def test_shards_flush_by_time_at_the_next_write(tmp_path: Path) -> None:
    folder = tmp_path / "trajectories"
    with ShardWriter(folder, TRAJECTORY_SCHEMA, rows_per_shard=100, max_seconds=0.2) as writer:
        writer.write(row(trial=0))
        assert shard_paths(folder) == []
        time.sleep(0.3)
        writer.write(row(trial=1))
        assert [pq.read_table(path).num_rows for path in shard_paths(folder)] == [2]
        writer.write(row(trial=2))
    assert [pq.read_table(path).num_rows for path in shard_paths(folder)] == [2, 1]


def test_sequence_continues_and_stale_temps_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "trajectories"
    with ShardWriter(folder, TRAJECTORY_SCHEMA, rows_per_shard=1) as writer:
        writer.write(row(trial=0))
        writer.write(row(trial=1))
    (folder / ".apigen-0123abcd.tmp").write_bytes(b"PAR1 half a shard")
    (folder / ".apigen-89abcdef.tmp").mkdir()
    (folder / "notes.txt").write_text("kept")
    # Readers ignore anything that is not a shard.
    assert read_rows(folder).num_rows == 2
    with ShardWriter(folder, TRAJECTORY_SCHEMA, rows_per_shard=1) as writer:
        writer.write(row(trial=2))
    assert sorted(path.name for path in folder.iterdir() if not path.name.startswith("part-")) == ["notes.txt"]
    assert [path.name[:10] for path in shard_paths(folder)] == ["part-00000", "part-00001", "part-00002"]
    assert read_rows(folder, ["trial"]).column("trial").to_pylist() == [0, 1, 2]


def test_rows_are_checked_when_written(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, TRAJECTORY_SCHEMA)
    bad = row()
    del bad["signature"]
    with pytest.raises(ValueError, match="missing signature"):
        writer.write(bad)
    with pytest.raises(ValueError, match="unknown extra"):
        writer.write(row(extra=1))
    with pytest.raises(ValueError, match="column 'turns' must be int64"):
        writer.write(row(turns="three"))
    with pytest.raises(ValueError, match="column 'domain' is null"):
        writer.write(row(domain=None))
    writer.write(row())
    writer.close()
    assert read_rows(tmp_path).num_rows == 1


def test_finished_pairs_and_duplicates_keep_the_last_row(tmp_path: Path) -> None:
    folder = tmp_path / "trajectories"
    assert RunFolder(folder.parent).stored_trials() == {}
    assert read_rows(folder).num_rows == 0 and read_rows(folder).schema.equals(TRAJECTORY_SCHEMA)
    with ShardWriter(folder, TRAJECTORY_SCHEMA, rows_per_shard=2) as writer:
        writer.write(row("a", 0, "rejected"))
        writer.write(row("a", 1, "accepted", signature="same"))
        writer.write(row("b", 0, "failed"))
    # A second session (run with --force) stores a pair again.
    with ShardWriter(folder, TRAJECTORY_SCHEMA) as writer:
        writer.write(row("a", 0, "accepted", signature="same"))
    assert set(RunFolder(folder.parent).stored_trials()) == {("a", 0), ("a", 1), ("b", 0)}
    latest = latest_trials(read_rows(folder))
    assert list(zip(latest.column("blueprint_id").to_pylist(), latest.column("status").to_pylist(), strict=True)) == [
        ("a", "accepted"),
        ("b", "failed"),
        ("a", "accepted"),
    ]
    counts = trajectory_counts(read_rows(folder))
    assert counts == {"trials": 3, "accepted": 2, "rejected": 0, "failed": 1, "unique_accepted": 1}


def test_a_damaged_shard_is_named(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, TRAJECTORY_SCHEMA) as writer:
        writer.write(row())
    (tmp_path / "part-00007-deadbeef.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RunFolderError, match=r"part-00007-deadbeef\.parquet is not readable as Parquet.*move it out"):
        read_rows(tmp_path)
    (tmp_path / "part-00007-deadbeef.parquet").unlink()
    pq.write_table(
        pa.table({"blueprint_id": ["x"], "trial": pa.array([1], pa.int32())}), tmp_path / "part-00008-deadbeef.parquet"
    )
    with pytest.raises(RunFolderError, match=r"column 'trial' is int32, expected int64"):
        read_rows(tmp_path, ["blueprint_id", "trial"])


def test_fallbacks_are_stored_and_null_where_a_row_or_an_older_shard_has_none(tmp_path: Path) -> None:
    said = ["tiny at http://127.0.0.1:8000/v1: n -> single requests"]
    with ShardWriter(tmp_path, TRAJECTORY_SCHEMA) as writer:
        writer.write(row("bp-0", fallbacks=said))
        writer.write(row("bp-1", fallbacks=[]))
        writer.write(row("bp-2"))  # a row made without the column
    # A shard written before the column existed.
    before = TRAJECTORY_SCHEMA.remove(TRAJECTORY_SCHEMA.get_field_index("fallbacks"))
    older = pa.Table.from_pylist([row("bp-3")], schema=before)
    pq.write_table(older, tmp_path / "part-00009-0123abcd.parquet")
    table = read_rows(tmp_path)
    assert table.schema == TRAJECTORY_SCHEMA
    assert table.column("fallbacks").to_pylist() == [said, [], None, None]
    selected = read_rows(tmp_path, ["trial", "fallbacks", "status"])
    assert selected.column_names == ["trial", "fallbacks", "status"]
    assert selected.column("fallbacks").to_pylist() == [said, [], None, None]
    # The column is still checked like any other.
    with pytest.raises(ValueError, match="column 'fallbacks' must be list<item: string>"):
        ShardWriter(tmp_path / "other", TRAJECTORY_SCHEMA).write(row(fallbacks=[{"n": "single requests"}]))


def test_manifest_round_trip_and_resume_refusal(tmp_path: Path) -> None:
    assert RunFolder(tmp_path).manifest() is None
    RunFolder(tmp_path).check_resume("a" * 64, None, force=False)  # a new folder is fine
    manifest = RunManifest(
        config={"trajectories": {"trials": 3}},
        fingerprint="a" * 64,
        versions=package_versions(),
        started_at=utc_now(),
        counts={"trajectories": {"accepted": 2, "rejected": 1, "failed": 0}},
        command=["apigen-mt", "generate"],
        fallbacks={"tiny at http://127.0.0.1:8000/v1": ["n -> single requests"]},
    )
    RunFolder(tmp_path).save_manifest(manifest)
    assert RunFolder(tmp_path).manifest() == manifest
    # A manifest written before the fallbacks section existed still reads, with none.
    older = json.loads((tmp_path / "manifest.json").read_text())
    del older["fallbacks"]
    (tmp_path / "manifest.json").write_text(json.dumps(older))
    assert RunFolder(tmp_path).manifest() == manifest.model_copy(update={"fallbacks": {}})
    assert {"python", "apigen-mt", "pyarrow", "datasets"} <= set(manifest.versions)
    RunFolder(tmp_path).check_resume("a" * 64, None, force=False)
    with pytest.raises(RunFolderError) as refused:
        RunFolder(tmp_path).check_resume("b" * 64, None, force=False)
    assert str(refused.value) == (
        f"run folder {tmp_path} was made with a different config (fingerprint aaaaaaaaaaaa… vs bbbbbbbbbbbb…); "
        "use a new --output folder or --force to mix them"
    )
    RunFolder(tmp_path).check_resume("b" * 64, None, force=True)


def test_another_data_folder_is_refused_unless_force_and_an_invalid_manifest_gives_way_to_force(tmp_path: Path) -> None:
    manifest = RunManifest(
        config={}, fingerprint="a" * 64, versions={}, data_dir="data/a", started_at=utc_now(), finished_at=utc_now()
    )
    RunFolder(tmp_path).save_manifest(manifest)
    assert (
        RunFolder(tmp_path).check_resume("a" * 64, "data/b/../a", force=False) == manifest
    )  # one folder, spelled two ways
    with pytest.raises(RunFolderError) as refused:
        RunFolder(tmp_path).check_resume("a" * 64, None, force=False)
    assert str(refused.value) == (
        f"run folder {tmp_path} was played on data folder data/a and this run names the domain's seeded data; give "
        "the same --data-dir, a new --output folder, or --force to mix them"
    )
    assert RunFolder(tmp_path).check_resume("a" * 64, "data/b", force=True) == manifest
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(RunFolderError, match="or --force to write a new one"):
        RunFolder(tmp_path).check_resume("a" * 64, "data/a", force=False)
    assert RunFolder(tmp_path).check_resume("a" * 64, "data/a", force=True) is None


def test_stored_trials_count_system_failures_and_keep_the_last_attempt(tmp_path: Path) -> None:
    def failed(trial: int, attempt: int, attribution: str = "system") -> dict:
        return row("a", trial, "failed", attempt=attempt, attribution=attribution)

    with ShardWriter(tmp_path / "trajectories", TRAJECTORY_SCHEMA) as writer:
        for written in (
            failed(0, 1),
            failed(0, 2),
            row("a", 1, "rejected"),
            failed(2, 1),
            row("a", 2),
            failed(3, 1, "agent"),
        ):
            writer.write(written)
    stored = RunFolder(tmp_path).stored_trials()
    assert stored == {
        ("a", 0): StoredTrial(attempt=2, failed_by_system=True, system_failures=2),
        ("a", 1): StoredTrial(attempt=1, failed_by_system=False, system_failures=0),
        ("a", 2): StoredTrial(attempt=1, failed_by_system=False, system_failures=1),
        ("a", 3): StoredTrial(attempt=1, failed_by_system=False, system_failures=0),
    }


def test_shards_without_a_manifest_are_not_mixed_silently(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "trajectories", TRAJECTORY_SCHEMA) as writer:
        writer.write(row())
    with pytest.raises(RunFolderError, match="no manifest.json"):
        RunFolder(tmp_path).check_resume("a" * 64, None, force=False)
    RunFolder(tmp_path).check_resume("a" * 64, None, force=True)


def test_a_damaged_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"config": {}}')
    with pytest.raises(
        RunFolderError, match=r"manifest.json is not a valid run manifest \(fingerprint: Field required\)"
    ):
        RunFolder(tmp_path).manifest()


WRITER_LOOP = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from apigen_mt.pipeline.store.shards import ShardWriter
    from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA

    row, first = json.loads(sys.argv[2]), int(sys.argv[3])
    writer = ShardWriter(Path(sys.argv[1]), TRAJECTORY_SCHEMA, rows_per_shard=4)
    for trial in range(first, first + 10_000):
        # Incompressible text, so that writing a shard takes long enough for kills to land inside it.
        writer.write(row | {"trial": trial, "messages": os.urandom(100_000).hex()})
        print(trial, flush=True)  # this trial is finished: it must survive the kill
    """
)


def _assert_only_whole_shards(folder: Path) -> None:
    for path in folder.iterdir():
        assert path.name.startswith(("part-", ".apigen-", ".journal-part-")), path
    for path in shard_paths(folder):
        table = pq.read_table(path)
        assert 1 <= table.num_rows <= 4
        assert {len(text) for text in table.column("messages").to_pylist()} == {200_000}


@pytest.mark.timeout(180)
def test_sigkill_at_any_moment_loses_no_finished_trial_and_never_leaves_a_half_shard(tmp_path: Path) -> None:
    folder = tmp_path / "trajectories"
    script = tmp_path / "writer.py"
    script.write_text(WRITER_LOOP)
    finished: set[int] = set()
    for run, delay in enumerate((0.0, 0.03, 0.07, 0.13, 0.31, 0.57)):
        process = subprocess.Popen(
            [sys.executable, str(script), str(folder), json.dumps(row()), str(run * 10_000)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        finished.add(int(process.stdout.readline()))  # the first row is in: kill from now on
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        finished.update(int(line) for line in process.stdout.read().split())
        _assert_only_whole_shards(folder)
    # Opening a writer turns the journals the kills left into shards and removes the temp files.
    ShardWriter(folder, TRAJECTORY_SCHEMA).close()
    assert [path for path in folder.iterdir() if not path.name.startswith("part-")] == []
    _assert_only_whole_shards(folder)
    stored = read_rows(folder, ["trial"]).column("trial").to_pylist()
    assert len(stored) == len(set(stored))
    assert finished <= set(stored)  # at most the trial being written when the kill came is missing
    assert len(set(stored) - finished) <= 6


KILLED_INSIDE_A_WRITE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import pyarrow.parquet as pq
    from apigen_mt.pipeline.store.shards import ShardWriter
    from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA

    def half_then_hang(table, where, **options):
        Path(where).write_bytes(b"PAR1 half of a shard")
        print("inside", flush=True)
        time.sleep(600)

    writer = ShardWriter(Path(sys.argv[1]), TRAJECTORY_SCHEMA, rows_per_shard=1)
    writer.write(json.loads(sys.argv[2]))
    pq.write_table = half_then_hang
    writer.write(json.loads(sys.argv[2]) | {"trial": 1})
    """
)


@pytest.mark.timeout(60)
def test_sigkill_inside_a_shard_write_leaves_a_temp_file_and_a_journal_the_next_writer_resolves(tmp_path: Path) -> None:
    folder = tmp_path / "trajectories"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_INSIDE_A_WRITE)
    process = subprocess.Popen(
        [sys.executable, str(script), str(folder), json.dumps(row())], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "inside\n"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    left = sorted(path.name for path in folder.iterdir() if not path.name.startswith("part-"))
    assert len(left) == 2 and left[0].startswith(".apigen-") and left[1].startswith(".journal-part-00001-")
    assert set(RunFolder(folder.parent).stored_trials()) == {("bp-0", 0)}  # readers see only whole shards
    with ShardWriter(folder, TRAJECTORY_SCHEMA) as writer:
        writer.write(row(trial=2))
    assert sorted(path.name[:10] for path in folder.iterdir()) == ["part-00000", "part-00001", "part-00002"]
    assert read_rows(folder, ["trial"]).column("trial").to_pylist() == [0, 1, 2]


def test_a_journal_line_cut_by_a_kill_is_dropped_and_whole_lines_are_kept(tmp_path: Path) -> None:
    complete = json.dumps(row(trial=5)) + "\n"
    (tmp_path / ".journal-part-00000-0123abcd.parquet.jsonl").write_text(complete + complete[:200])
    ShardWriter(tmp_path, TRAJECTORY_SCHEMA).close()
    assert [path.name for path in tmp_path.iterdir()] == ["part-00000-0123abcd.parquet"]
    assert read_rows(tmp_path, ["trial"]).column("trial").to_pylist() == [5]
