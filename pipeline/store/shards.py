"""Shards: the Parquet files a run folder's rows are stored in (`pipeline.store.run_folder` lays the folder out),
their schemas, the writer that makes them and the reader that checks them.

Shards are written whole through the output writer (temp name, then rename), so a killed process leaves
complete shards and at most a temp file, which the next writer on the folder removes. Rows waiting for
their shard are also appended, one JSON line each, to that shard's journal `.journal-<shard name>.jsonl`
the moment they arrive, so a SIGKILL loses no finished trial: the next writer on the folder turns a
journal into its shard (complete lines only; a line cut by the kill was a trial still in flight) or, when
the shard was already renamed into place, deletes it. A (blueprint_id, trial) pair stored twice (a folder
mixed with --force) counts once: the row written last wins.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from apigen_mt.pipeline.store.io import OutputError, atomic_file

LOCK_NAME = ".apigen-run.lock"
TRAJECTORIES_DIR = "trajectories"
BLUEPRINTS_DIR = "blueprints"
STATUSES = ("accepted", "rejected", "failed")

TRAJECTORY_SCHEMA = pa.schema(
    [
        pa.field("blueprint_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("trial", pa.int64(), nullable=False),
        pa.field("attempt", pa.int64(), nullable=False),  # 1 + replays after engine failures
        pa.field("status", pa.string(), nullable=False),  # accepted | rejected | failed
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("attribution", pa.string()),  # null when accepted, else agent | human | system
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("state_match", pa.bool_(), nullable=False),
        pa.field("outputs_match", pa.bool_(), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("policy_violations", pa.list_(pa.string()), nullable=False),
        pa.field("human_errors", pa.list_(pa.string()), nullable=False),
        pa.field("termination", pa.string(), nullable=False),
        pa.field("messages", pa.string(), nullable=False),  # JSON: OpenAI messages, system prompt first
        pa.field("tools", pa.string(), nullable=False),  # JSON: OpenAI tools list
        pa.field("blueprint", pa.string(), nullable=False),  # JSON
        pa.field("signature", pa.string(), nullable=False),  # validators.sampling.trajectory_signature
        pa.field("turns", pa.int64(), nullable=False),  # agent turns
        pa.field("tool_calls", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),  # the agent's, summed over the episode
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("human_prompt_tokens", pa.int64(), nullable=False),
        pa.field("human_completion_tokens", pa.int64(), nullable=False),
        pa.field("agent_model", pa.string(), nullable=False),
        pa.field("human_model", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("turn_stats", pa.string(), nullable=False),  # JSON list per turn: role, tokens, latency_s
        pa.field("finished_at", pa.string(), nullable=False),  # ISO time
        # Endpoint fallbacks its models had in force when it finished (pipeline.engines.endpoint_features.describe_fallback)
        pa.field("fallbacks", pa.list_(pa.string())),
        # What the episode changed in the agent's turns before storing them (simulators.agent.repair_turn):
        # calls after the first dropped, text beside a call removed; each names its turn.
        pa.field("repairs", pa.list_(pa.string())),
        # The verifier's warnings: violations only refused calls caused, problems of the blueprint itself.
        pa.field("warnings", pa.list_(pa.string())),
    ]
)

# Phase 1: a proposal's rounds share its blueprint_id; `final` marks its last round, which resume looks for.
BLUEPRINT_SCHEMA = pa.schema(
    [
        pa.field("blueprint_id", pa.string(), nullable=False),  # DOMAIN-pNNNN: the domain and the proposal index
        pa.field("domain", pa.string(), nullable=False),
        pa.field("proposal", pa.int64(), nullable=False),
        pa.field("round", pa.int64(), nullable=False),  # 0: the proposal, 1..: revisions after feedback
        pa.field("final", pa.bool_(), nullable=False),
        pa.field("attempt", pa.int64(), nullable=False),  # 1 + reruns of the proposal after engine failures
        pa.field("status", pa.string(), nullable=False),  # accepted | rejected | failed
        # format | execution | policy | review | dedup | decontamination; null when accepted or the backend failed
        pa.field("failed_stage", pa.string()),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("parents", pa.list_(pa.string()), nullable=False),  # blueprint ids a recombined task joins
        # JSON texts; the JSON `null` where there is nothing: no task could be read, the actions were not run,
        # the committee did not vote.
        pa.field("blueprint", pa.string(), nullable=False),  # in `validate`'s input form, id = blueprint_id
        pa.field("diff_patch", pa.string(), nullable=False),
        pa.field("votes", pa.string(), nullable=False),  # ballots, decision, score, threshold
        pa.field("refusal", pa.bool_(), nullable=False),
        pa.field("feedback", pa.string()),  # the improvement plan this round answered; null in round 0
        pa.field("text", pa.string(), nullable=False),  # the proposer's raw reply
        pa.field("user_id", pa.string()),  # the sampled user; null when no context could be sampled
        pa.field("context_ids", pa.list_(pa.string()), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),  # the proposer's and the committee's
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("proposer_model", pa.string(), nullable=False),
        pa.field("finished_at", pa.string(), nullable=False),  # ISO time
        pa.field("fallbacks", pa.list_(pa.string())),  # as for trajectories, of the proposer's and reviewers' models
    ]
)
LATER_COLUMNS = frozenset(
    {"fallbacks", "repairs", "warnings"}
)  # nullable, added later: a shard or row without one has it null

_SHARD = re.compile(r"part-(\d{5,})-([0-9a-f]{8})\.parquet")
_JOURNAL = re.compile(r"\.journal-(part-\d{5,}-[0-9a-f]{8}\.parquet)\.jsonl")
# The temp names of pipeline.store.output (`.apigen-<8 hex>.tmp`): what a killed writer leaves behind.
_STALE_TEMP = re.compile(r"\.apigen-[0-9a-f]{8}\.tmp")


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
        self._check = _RowCheck(schema)
        self._later = {name: None for name in LATER_COLUMNS if name in schema.names}
        self._buffer: list[dict[str, Any]] = []
        self._first_buffered: float | None = None
        self._journal: int | None = None  # file descriptor of the pending shard's journal
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the shard folder {folder}: {exc.strerror or exc}") from None
        _remove_stale_temps(folder)
        self._recover_journals()
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
        line = (json.dumps(row, allow_nan=False) + "\n").encode()
        if self._journal is None:
            path = self.folder / f".journal-{self._pending_name}.jsonl"
            self._journal = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._journal, line)  # one write per line: a kill leaves whole lines and at most one cut one
        self._buffer.append(row)
        if self._first_buffered is None:
            self._first_buffered = time.monotonic()
        if len(self._buffer) >= self.rows_per_shard or time.monotonic() - self._first_buffered >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard (nothing when the buffer is empty)."""
        if not self._buffer:
            return
        self._write_shard(self._pending_name, pa.Table.from_pylist(self._buffer, schema=self.schema))
        self._next_sequence += 1
        self._pending_name = self._shard_name()
        self._buffer.clear()
        self._first_buffered = None

    def _write_shard(self, name: str, table: pa.Table) -> None:
        with atomic_file(self.folder / name) as tmp:
            pq.write_table(table, tmp, compression="zstd")
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

    def __exit__(self, *exc_info: object) -> None:
        # Buffered rows are finished trials: keep them even when the run stops on an error.
        self.close()


def _is_text(value: Any) -> bool:
    # Arrow strings are UTF-8: a lone surrogate (json.loads lets one through) cannot be stored.
    try:
        return type(value) is str and (value.isascii() or bool(value.encode()))
    except UnicodeEncodeError:
        return False


# Quick tests for the plain Python values a column type certainly takes; a type not here is always converted.
_QUICK: dict[pa.DataType, Callable[[Any], bool]] = {
    pa.string(): _is_text,
    pa.int64(): lambda value: type(value) is int and -(2**63) <= value < 2**63,
    pa.float64(): lambda value: type(value) is float,
    pa.bool_(): lambda value: type(value) is bool,
    pa.list_(pa.string()): lambda value: type(value) is list and all(map(_is_text, value)),
}


class _RowCheck:
    """Raises ValueError for a row that does not fit the schema.

    Converting a row to Arrow costs a few hundred microseconds, too much for every row of a large run: a
    row of plain values passes quick type tests, and only one they are unsure of is converted (which
    accepts exactly what Arrow accepts and says what is wrong).
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.names = set(schema.names)
        self.columns = [(field.name, field.nullable, _QUICK.get(field.type, lambda value: False)) for field in schema]

    def __call__(self, row: Mapping[str, Any]) -> None:
        if row.keys() == self.names and all(
            check(value) if (value := row[name]) is not None else nullable for name, nullable, check in self.columns
        ):
            return
        _convert_row(row, self.schema)


def _convert_row(row: Mapping[str, Any], schema: pa.Schema) -> None:
    item = f"round {row.get('round')!r}" if "round" in schema.names else f"trial {row.get('trial')!r}"
    where = f"row for blueprint {row.get('blueprint_id')!r} {item}"
    missing = [name for name in schema.names if name not in row]
    unknown = sorted(set(row) - set(schema.names))
    if missing or unknown:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise ValueError(f"{where} does not match the shard schema: {'; '.join(problems)}")
    for field in schema:
        try:
            column = pa.array([row[field.name]], type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{where}: column {field.name!r} must be {field.type}: {exc}") from None
        if not field.nullable and column.null_count:
            raise ValueError(f"{where}: column {field.name!r} is null; it must be {field.type}")


def _remove_stale_temps(folder: Path) -> None:
    for path in folder.iterdir():
        if _STALE_TEMP.fullmatch(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


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
                    f"shard {path}: column {field.name!r} is {actual.field(index).type}, expected {field.type}; {remedy}"
                )
        table = pq.read_table(path, columns=[name for name in expected.names if name not in absent])
        for name in absent:
            nulls = pa.nulls(len(table), expected.field(name).type)
            table = table.add_column(expected.get_field_index(name), name, nulls)
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
