"""Shards: the Parquet files a run folder's rows are stored in (`pipeline.store.run_folder` lays the folder out,
`pipeline.store.schemas` holds their schemas), the writer that makes them and the reader that checks them.

Shards are written whole through the output writer (temp name, then rename), so a killed process leaves
complete shards and at most a temp file, which the next writer on the folder removes. Rows waiting for
their shard are also appended, one JSON line each, to that shard's journal `.journal-<shard name>.jsonl`
the moment they arrive, so a SIGKILL loses no finished trial: the next writer on the folder turns a
journal into its shard (complete lines only; a line cut by the kill was a trial still in flight) or, when
the shard was already renamed into place, deletes it. A (blueprint_id, trial) pair stored twice (a folder
mixed with --force) counts once: the row written last wins.

A write the disk refuses (full, read-only, no permission) is an `OutputError` naming the file, the reason and the
rows kept; the run stops there. A shard that does not fit the contract (a column missing or of another type, a
null where the schema has none, a `status`, `attribution` or `failed_stage` outside its values) is refused when
read, naming the shard and the fix. Whether a row's blueprint belongs to the run is not the shards' to judge: a
folder may hold the trials of several task files played into it (`--tasks` is not part of the config's
fingerprint), so a well-formed row is read as it is.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from apigen_mt.pipeline.store.io import OutputError, atomic_file
from apigen_mt.pipeline.store.output import remove_stale_temps
from apigen_mt.pipeline.store.schemas import (
    LATER_COLUMNS,
    STATUSES,
    TRAJECTORY_SCHEMA,
    RowCheck,
    contract_problem,
)

LOCK_NAME = ".apigen-run.lock"
TRAJECTORIES_DIR = "trajectories"
BLUEPRINTS_DIR = "blueprints"
TASK_REJECTIONS_NAME = "tasks-rejected.jsonl"

_SHARD = re.compile(r"part-(\d{5,})-([0-9a-f]{8})\.parquet")
_JOURNAL = re.compile(r"\.journal-(part-\d{5,}-[0-9a-f]{8}\.parquet)\.jsonl")


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (other config, damaged shard or manifest); the message says what to do."""


def is_shard_name(name: str) -> bool:
    return _SHARD.fullmatch(name) is not None


def shard_paths(folder: Path) -> list[Path]:
    """The folder's shards in the order they were written; any other file is ignored."""
    if not folder.is_dir():
        return []
    found = [(int(match[1]), path) for path in folder.iterdir() if (match := _SHARD.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


class ShardWriter:
    """Buffers rows and writes them as Parquet shards of one schema. One writer per folder, one thread.

    A shard is written when `rows_per_shard` rows are buffered or, at the next `write`, when the oldest
    buffered row has waited `max_seconds`; `close` (or leaving the `with` block) writes the rest. A row is
    kept as given (a shallow copy) until its shard is written: do not change its lists after `write`.
    `on_shard` is called with each shard's path once it is in place (the remote mirror uploads it).
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        *,
        rows_per_shard: int = 64,
        max_seconds: float = 30.0,
        on_shard: Callable[[Path], None] | None = None,
    ) -> None:
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
        self.folder = folder
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.max_seconds = max_seconds
        self.on_shard = on_shard
        self._check = RowCheck(schema)
        self._later = {name: None for name in LATER_COLUMNS if name in schema.names}
        self._buffer: list[dict[str, Any]] = []
        self._first_buffered: float | None = None
        self._journal: int | None = None  # file descriptor of the pending shard's journal
        self._kept = 0  # rows this writer has in shards or journals: what a failed write leaves stored
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the shard folder {folder}: {exc.strerror or exc}") from None
        try:
            remove_stale_temps(folder)  # one writer per folder: what is left there is a killed writer's
            self._recover_journals()
        except OSError as exc:  # what a killed writer left cannot be read or removed
            raise OutputError(
                f"cannot tidy the shard folder {folder} ({exc.filename or folder}: {exc.strerror or exc}); fix its "
                "permissions and rerun the same command"
            ) from None
        existing = shard_paths(folder)
        self._next_sequence = int(_SHARD.fullmatch(existing[-1].name)[1]) + 1 if existing else 0
        self._pending_name = self._shard_name()

    def _shard_name(self) -> str:
        return f"part-{self._next_sequence:05d}-{secrets.token_hex(4)}.parquet"

    def write(self, row: Mapping[str, Any]) -> None:
        """Buffer one row (checked against the schema now, so a bad row never spoils a shard; a `LATER_COLUMNS`
        column it leaves out is null) and journal it."""
        row = self._later | dict(row)
        self._check(row)
        self._journal_line((json.dumps(row, allow_nan=False) + "\n").encode())
        self._buffer.append(row)
        self._kept += 1
        if self._first_buffered is None:
            self._first_buffered = time.monotonic()
        if len(self._buffer) >= self.rows_per_shard or time.monotonic() - self._first_buffered >= self.max_seconds:
            self.flush()

    def _journal_line(self, line: bytes) -> None:
        path = self.folder / f".journal-{self._pending_name}.jsonl"
        try:
            if self._journal is None:
                self._journal = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            # One write per line, so a kill leaves whole lines and at most one cut one; a write the disk cut
            # short is finished (or fails) before the next line starts.
            written = 0
            while written < len(line):
                written += os.write(self._journal, line[written:])
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}; {self._kept_note()}") from None

    def _kept_note(self, journalled: int = 0) -> str:
        """What a failed write leaves stored, and what to do."""
        in_journal = (
            f", {journalled} of them in the journal of that shard, which the next run turns into it"
            if journalled
            else ""
        )
        return (
            f"the run stopped; every row stored so far is kept ({self._kept} from this run{in_journal}); free space "
            "or fix the permissions, then rerun the same command to do the rest"
        )

    def flush(self) -> None:
        """Write the buffered rows as one shard (nothing when the buffer is empty)."""
        if not self._buffer:
            return
        try:
            self._write_shard(self._pending_name, pa.Table.from_pylist(self._buffer, schema=self.schema))
        except OutputError as exc:
            raise OutputError(f"{exc}; {self._kept_note(len(self._buffer))}") from None
        self._next_sequence += 1
        self._pending_name = self._shard_name()
        self._buffer.clear()
        self._first_buffered = None

    def _write_shard(self, name: str, table: pa.Table) -> None:
        with atomic_file(self.folder / name) as tmp:
            try:
                pq.write_table(table, tmp, compression="zstd")
            except OSError as exc:  # pyarrow's errors of the disk (ENOSPC, EIO) are OSErrors
                raise OutputError(f"cannot write {self.folder / name}: {exc.strerror or exc}") from None
        # Only now is the journal redundant: a kill before this line leaves both, and recovery keeps the shard.
        if self._journal is not None and name == self._pending_name:
            os.close(self._journal)
            self._journal = None
        (self.folder / f".journal-{name}.jsonl").unlink(missing_ok=True)
        if self.on_shard is not None:
            self.on_shard(self.folder / name)

    def _recover_journals(self) -> None:
        """Turn the journals a killed writer left into their shards (or drop those whose shard exists)."""
        for path in sorted(self.folder.iterdir()):
            match = _JOURNAL.fullmatch(path.name)
            if match is None:
                continue
            if not (self.folder / match[1]).exists():
                rows = []
                for line in path.read_bytes().split(b"\n"):
                    try:
                        row = self._later | json.loads(line)
                        self._check(row)
                    except ValueError:  # the line a kill cut short (or nothing after the last newline)
                        continue
                    rows.append(row)
                if rows:
                    self._write_shard(match[1], pa.Table.from_pylist(rows, schema=self.schema))
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        # Buffered rows are finished trials: keep them even when the run stops on an error. When that error is a
        # write the disk refused, this shard may fail too; its rows are in its journal, and the first error is
        # the one to report.
        try:
            self.close()
        except OutputError:
            if kind is None:
                raise


def read_rows(folder: Path, columns: list[str] | None = None, *, schema: pa.Schema = TRAJECTORY_SCHEMA) -> pa.Table:
    """All rows of the folder's shards in the order written (an empty table of the schema when there are none)."""
    if columns is None:
        expected = schema
    else:
        unknown = [name for name in columns if name not in schema.names]
        if unknown:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}; the shards have {', '.join(schema.names)}")
        expected = pa.schema([schema.field(name) for name in columns])
    tables = [_read_shard(path, expected) for path in shard_paths(folder)]
    return pa.concat_tables(tables) if tables else expected.empty_table()


def _read_shard(path: Path, expected: pa.Schema) -> pa.Table:
    remedy = f"move it out of {path.parent} (its trials or proposals are then run again on resume) or restore it"
    try:
        actual = pq.read_schema(path)
        absent = [name for name in expected.names if name in LATER_COLUMNS and actual.get_field_index(name) < 0]
        for field in (field for field in expected if field.name not in absent):
            index = actual.get_field_index(field.name)
            if index < 0:
                raise RunFolderError(
                    f"shard {path} has no column {field.name!r} (written by another version?); {remedy}"
                )
            if actual.field(index).type != field.type:
                raise RunFolderError(
                    f"shard {path}: column {field.name!r} is {actual.field(index).type}, expected {field.type}; "
                    f"{remedy}"
                )
        table = pq.read_table(path, columns=[name for name in expected.names if name not in absent])
        for name in absent:
            nulls = pa.nulls(len(table), expected.field(name).type)
            table = table.add_column(expected.get_field_index(name), name, nulls)
        problem = contract_problem(table, expected)
        if problem is not None:
            raise RunFolderError(f"shard {path} does not fit the run folder's contract: {problem}; {remedy}")
        return table.cast(expected)
    except (pa.ArrowException, OSError) as exc:
        raise RunFolderError(f"shard {path} is not readable as Parquet ({exc}); {remedy}") from None


def latest_trials(table: pa.Table) -> pa.Table:
    """One row per (blueprint_id, trial): the one written last, in the order of those last writes."""
    keys = zip(table.column("blueprint_id").to_pylist(), table.column("trial").to_pylist(), strict=True)
    last = {key: index for index, key in enumerate(keys)}
    # Typed: an empty list would be an array of nulls, which `take` refuses (a run whose Phase 2 had nothing to play).
    return table.take(pa.array(sorted(last.values()), pa.int64()))


# What trajectory_counts reads: a large run's counts need not load its messages.
COUNTED_COLUMNS = ("blueprint_id", "trial", "status", "signature")


def trajectory_counts(table: pa.Table) -> dict[str, int]:
    """Trials per status and unique accepted trajectories, each (blueprint_id, trial) counted once."""
    trials = latest_trials(table.select(list(COUNTED_COLUMNS)))
    statuses = trials.column("status").to_pylist()
    counts = {"trials": len(statuses)} | {status: statuses.count(status) for status in STATUSES}
    accepted = {
        (blueprint, signature)
        for blueprint, status, signature in zip(
            trials.column("blueprint_id").to_pylist(), statuses, trials.column("signature").to_pylist(), strict=True
        )
        if status == "accepted"
    }
    counts["unique_accepted"] = len(accepted)
    return counts
