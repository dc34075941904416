"""What the viewer reads of a run folder, and how: the small columns of every shard, read once per shard.

Shards are never rewritten once in place, so each one's small columns (no message, no blueprint text) are read
the first time it is seen and kept; a page asks for a `Snapshot`, made again only when the folder's shard list or
manifest changed (`RunIndex.version`). A trial's or a proposal's whole row is read from its one shard when its
page is opened, and a free-text search reads the `messages` column one shard at a time, so no page holds every
message. Every row keeps `_loc`: its shard's sequence number and its position there, to read it back.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from apigen_mt.pipeline.export.charts import CHART_COLUMNS
from apigen_mt.pipeline.store.manifest import MANIFEST_NAME, RunManifest
from apigen_mt.pipeline.store.proposal_rows import stored_proposals
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import BLUEPRINT_SCHEMA, LATER_COLUMNS, TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import RunFolderError, latest_trials, shard_paths

# What the trials table, its filters and the overview's charts read of each trial row.
TRIAL_COLUMNS = (
    *CHART_COLUMNS,
    "domain",
    "attempt",
    "reasons",
    "human_errors",
    "prompt_tokens",
    "completion_tokens",
    "human_prompt_tokens",
    "human_completion_tokens",
    "duration_s",
)
# What Phase 1's funnel (`proposal_funnel`), the blueprints list and a blueprint's page need to find its rows.
PROPOSAL_COLUMNS = ("blueprint_id", "domain", "proposal", "round", "final", "status", "failed_stage", "parents")
LOC = "_loc"  # shard sequence number << 32 | row in the shard
_SEQUENCE = re.compile(r"part-(\d+)-")
# A remote run folder's mirror is pulled at most this often: each pull lists the URI.
PULL_EVERY_S = 5.0
SEARCHES_KEPT = 8
SEARCH_BATCH_ROWS = 256


def location(path: Path, row: int) -> int:
    return _sequence(path) << 32 | row


def _sequence(path: Path) -> int:
    return int(_SEQUENCE.match(path.name)[1])


@dataclass
class Snapshot:
    """The folder as it was at `version`: the manifest, one row per trial (the last written) and the stored
    proposal rounds, each of their small columns only."""

    version: str
    manifest: RunManifest | None
    manifest_problem: str | None
    trials: pa.Table
    proposals: pa.Table
    trial_shards: dict[int, Path]
    proposal_shards: dict[int, Path]
    memo: dict[str, Any] = field(default_factory=dict)  # what pages compute once per snapshot (charts)

    @cached_property
    def frame(self) -> pl.DataFrame:
        frame = pl.from_arrow(self.trials)
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(tokens=pl.col("prompt_tokens") + pl.col("completion_tokens"))


class RunIndex:
    """The viewer's reader of one run folder (a path, or a URI's mirror pulled now and then). Thread-safe: the
    server answers requests from several threads."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self._lock = threading.Lock()
        self._shards: dict[tuple[str, str], pa.Table] = {}
        self._snapshot: Snapshot | None = None
        self._pulled_at = 0.0
        self._searches: OrderedDict[tuple[str, str], pa.Array] = OrderedDict()

    def version(self) -> str:
        """A short digest of the folder's shard names and manifest: it changes when a shard lands or the manifest
        is rewritten (the pages poll it to show new data by themselves)."""
        self._pull()
        names = [path.name for path in shard_paths(self.run.trajectories_dir)]
        names += ["blueprints", *(path.name for path in shard_paths(self.run.proposals_dir))]
        manifest = self.run.path / MANIFEST_NAME
        if manifest.exists():
            stat = manifest.stat()
            names.append(f"{stat.st_mtime_ns}:{stat.st_size}")
        return hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]

    def _pull(self) -> None:
        if self.run.remote is None or time.monotonic() - self._pulled_at < PULL_EVERY_S:
            return
        self._pulled_at = time.monotonic()
        self.run.pull()

    def snapshot(self) -> Snapshot:
        """The folder now (the one made before when nothing changed)."""
        version = self.version()
        with self._lock:
            if self._snapshot is None or self._snapshot.version != version:
                self._snapshot = self._read(version)
            return self._snapshot

    def _read(self, version: str) -> Snapshot:
        trial_paths = shard_paths(self.run.trajectories_dir)
        proposal_paths = shard_paths(self.run.proposals_dir)
        trials = self._small_columns(trial_paths, TRIAL_COLUMNS, TRAJECTORY_SCHEMA)
        proposals = self._small_columns(proposal_paths, PROPOSAL_COLUMNS, BLUEPRINT_SCHEMA)
        try:
            manifest, problem = self.run.manifest(), None
        except RunFolderError as exc:
            manifest, problem = None, str(exc)
        return Snapshot(
            version=version,
            manifest=manifest,
            manifest_problem=problem,
            trials=latest_trials(trials),
            proposals=stored_proposals(proposals),
            trial_shards={_sequence(path): path for path in trial_paths},
            proposal_shards={_sequence(path): path for path in proposal_paths},
        )

    def _small_columns(self, paths: list[Path], columns: tuple[str, ...], schema: pa.Schema) -> pa.Table:
        expected = pa.schema([*(schema.field(name) for name in columns), pa.field(LOC, pa.int64())])
        tables = []
        for path in paths:
            key = (path.parent.name, path.name)
            if key not in self._shards:
                table = read_shard(path, columns, schema)
                locations = pa.array([location(path, row) for row in range(len(table))], pa.int64())
                self._shards[key] = table.append_column(LOC, locations)
            tables.append(self._shards[key])
        return pa.concat_tables(tables) if tables else expected.empty_table()

    def trial_row(self, snapshot: Snapshot, loc: int) -> dict[str, Any]:
        """Every column of one stored trial row."""
        return _row_at(snapshot.trial_shards, loc, TRAJECTORY_SCHEMA)

    def proposal_row(self, snapshot: Snapshot, loc: int) -> dict[str, Any]:
        return _row_at(snapshot.proposal_shards, loc, BLUEPRINT_SCHEMA)

    def search(self, snapshot: Snapshot, text: str) -> pa.Array:
        """The `_loc` of every trial row whose messages hold `text` (any case), read one shard at a time; the
        last few searches are kept."""
        key = (snapshot.version, text)
        with self._lock:
            if key in self._searches:
                self._searches.move_to_end(key)
                return self._searches[key]
        found = []
        for path in snapshot.trial_shards.values():
            found += [location(path, row) for row in _rows_holding(path, text)]
        # The allocator keeps what the batches used; handed back, a search leaves the server as small as before.
        pa.default_memory_pool().release_unused()
        result = pa.array(found, pa.int64())
        with self._lock:
            self._searches[key] = result
            while len(self._searches) > SEARCHES_KEPT:
                self._searches.popitem(last=False)
        return result


def read_shard(path: Path, columns: tuple[str, ...] | None, schema: pa.Schema) -> pa.Table:
    """These columns of one shard (all of the schema's for None); a column added to the schema later is null in
    a shard written before it. RunFolderError naming the shard when it cannot be read as one."""
    names = list(schema.names if columns is None else columns)
    try:
        present = set(pq.read_schema(path).names)
        missing = [name for name in names if name not in present and name not in LATER_COLUMNS]
        if missing:
            raise RunFolderError(f"shard {path} has no column {', '.join(missing)} (written by another version?)")
        table = pq.read_table(path, columns=[name for name in names if name in present])
        for name in names:
            if name not in present:
                table = table.append_column(name, pa.nulls(len(table), schema.field(name).type))
        return table.select(names).cast(pa.schema([schema.field(name) for name in names]))
    except (pa.ArrowException, OSError) as exc:
        raise RunFolderError(f"shard {path} is not readable as Parquet ({exc})") from None


def _rows_holding(path: Path, text: str) -> list[int]:
    """The rows of one trial shard whose messages hold `text` (any case), read a few hundred rows at a time: a
    shard's messages whole would cost the server as much again as its index."""
    rows, offset = [], 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=SEARCH_BATCH_ROWS, columns=["messages"]):
            hits = pc.indices_nonzero(pc.match_substring(batch.column(0), text, ignore_case=True))
            rows += [offset + row for row in hits.to_pylist()]
            offset += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise RunFolderError(f"shard {path} is not readable as Parquet ({exc})") from None
    return rows


def _row_at(shards: dict[int, Path], loc: int, schema: pa.Schema) -> dict[str, Any]:
    path = shards[loc >> 32]
    row = read_shard(path, None, schema).slice(loc & 0xFFFFFFFF, 1).to_pylist()[0]
    pa.default_memory_pool().release_unused()  # the whole shard was decoded for one row: give it back
    return row
