"""A run folder: its layout, and every read and write of one goes through `RunFolder`.

```
RUN/manifest.json                   what made the run and what it holds (`pipeline.store.manifest.RunManifest`)
RUN/blueprints/part-*.parquet       Phase 1: one row per proposal round (`BLUEPRINT_SCHEMA`)
RUN/trajectories/part-*.parquet     Phase 2: one row per trial (`TRAJECTORY_SCHEMA`)
RUN/tasks-rejected.jsonl            the tasks the last Phase 2 rejected at stage 1, with their reasons
RUN/.apigen-run.lock                held while a run writes
```

A run opens its folder (`RunFolder.at`: a path, or a filesystem URI worked on in a local staging folder and
mirrored there), takes the lock, pulls the mirror, checks the manifest against its config and data folder,
writes rows through the folder's shard writers (each shard uploaded as it lands), counts what the folder holds
into the final manifest and pushes it. The manifest is written whole, only with what is true: a new folder's
at the start (its config, nothing counted, unfinished: so a killed first run can be resumed), and then only at
the end of a run, so a failed or stopped rerun leaves the previous one as it was. Readers (the driver on
resume, the export, the card, benchmarks) ask the folder for what they need: Phase 1's proposals as stored,
its accepted blueprints and funnel, Phase 2's trials (the last row of each), what each stored trial's rows
say, the counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pyarrow as pa
from pydantic import ValidationError

from apigen_mt.pipeline.store.io import atomic_output, dumps_strict
from apigen_mt.pipeline.store.manifest import MANIFEST_NAME, RunManifest
from apigen_mt.pipeline.store.proposal_rows import (
    Funnel,
    accepted_blueprints,
    final_rows,
    proposal_funnel,
    stored_proposals,
)
from apigen_mt.pipeline.store.remote import RemoteRun, is_uri
from apigen_mt.pipeline.store.schemas import BLUEPRINT_SCHEMA, TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import (
    BLUEPRINTS_DIR,
    COUNTED_COLUMNS,
    LOCK_NAME,
    TASK_REJECTIONS_NAME,
    TRAJECTORIES_DIR,
    RunFolderError,
    ShardWriter,
    latest_trials,
    read_rows,
    shard_paths,
    trajectory_counts,
)
from apigen_mt.simulators.types import Blueprint

# The counts of Phase 2's stage 1 (the task files' blueprints in, valid, rejected), before `tasks` had its key.
_STAGE_ONE = ("input", "valid", "rejected")


@dataclass(frozen=True)
class StoredTrial:
    """What the stored rows of one (blueprint_id, trial) say: its last row's attempt and whether that row is a
    failure of the system (not the agent's or the human's), and how many of its rows are."""

    attempt: int
    failed_by_system: bool
    system_failures: int


class RunFolder:
    """A run folder at `path`; with `remote`, the local staging folder of that URI, mirrored to it."""

    def __init__(self, path: Path, remote: RemoteRun | None = None) -> None:
        self.path = path
        self.remote = remote

    @classmethod
    def at(cls, output: str | Path) -> RunFolder:
        """The folder `output` names: a local path, or a filesystem URI (RemoteError when pyarrow cannot use it)."""
        if is_uri(str(output)):
            remote = RemoteRun(str(output))
            return cls(remote.local, remote)
        if str(output).startswith("file://"):  # a local folder by another name; Path() would keep "file:" in it
            return cls(Path(url2pathname(urlsplit(str(output)).path)))
        return cls(Path(output))

    def __str__(self) -> str:
        return str(self.remote) if self.remote is not None else str(self.path)

    @property
    def proposals_dir(self) -> Path:
        return self.path / BLUEPRINTS_DIR  # the folder keeps its name: the storage contract

    @property
    def trajectories_dir(self) -> Path:
        return self.path / TRAJECTORIES_DIR

    @property
    def task_rejections_path(self) -> Path:
        return self.path / TASK_REJECTIONS_NAME

    # The run's side: the lock, the mirror, the manifest, the shard writers.

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one run at a time: two writers on one folder would interleave their shards.

        An advisory lock on `RUN/.apigen-run.lock`; the kernel drops it when the holder dies, even by SIGKILL.
        """
        self.refuse_a_file()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFolderError(f"cannot use {self.path} as a run folder: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(
                f"run folder {self.path} is in use by another apigen-mt command (pid {holder}); wait for it to "
                "end, or give another folder"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def refuse_a_file(self) -> None:
        """RunFolderError when the path is an existing file (no run folder can be made or read there)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(
                f"run folder {self.path} is a file, not a folder; give a folder path (a new one, or the --output of an "
                "earlier run)"
            )

    def pull(self) -> None:
        """Bring the mirror's manifest and shards into the staging folder (nothing for a local folder)."""
        if self.remote is not None:
            self.remote.pull()

    def manifest(self) -> RunManifest | None:
        """The folder's manifest, or None when it has none; RunFolderError when it is not a valid one."""
        path = self.path / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            return RunManifest.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "manifest"
            raise RunFolderError(
                f"{path} is not a valid run manifest ({where}: {problem['msg']}); restore it, use a new --output "
                "folder, or --force to write a new one (the rows stored are kept and counted again)"
            ) from None

    def save_manifest(self, manifest: RunManifest) -> None:
        """Write the manifest whole, and upload it to the mirror."""
        self._write_manifest(manifest)
        if self.remote is not None:
            self.remote.push_file(self.path / MANIFEST_NAME)

    def finish(self, manifest: RunManifest, task_rejections: Sequence[dict[str, Any]] | None) -> None:
        """Write the run's final manifest, after the rejections of its stage 1 when it ran one (one JSON line each,
        the file replaced whole); the mirror gets those rejections and every shard it lacks, then the manifest."""
        if task_rejections is not None:
            with atomic_output(self.task_rejections_path) as out:
                out.writelines(dumps_strict(record) + "\n" for record in task_rejections)
        self._write_manifest(manifest)
        if self.remote is not None:
            if task_rejections is not None:
                self.remote.push_file(self.task_rejections_path)
            self.remote.push_run()

    def _write_manifest(self, manifest: RunManifest) -> None:
        with atomic_output(self.path / MANIFEST_NAME) as out:
            out.write(manifest.model_dump_json(indent=2) + "\n")

    def check_resume(self, fingerprint: str, data_dir: str | None, *, force: bool) -> RunManifest | None:
        """The folder's manifest (None when it has none, or with `force` an invalid one). Refuses to add rows made
        with one config, or on one data folder, to a folder made with another, unless `force`."""
        if force:
            try:
                return self.manifest()
            except RunFolderError:
                return None
        manifest = self.manifest()
        if manifest is None:
            for kind in (BLUEPRINTS_DIR, TRAJECTORIES_DIR):
                if shard_paths(self.path / kind):
                    raise RunFolderError(
                        f"run folder {self.path} holds {kind} shards but no {MANIFEST_NAME}, so its config cannot be "
                        "checked; use a new --output folder or --force to mix them"
                    )
            return None
        if manifest.fingerprint != fingerprint:
            raise RunFolderError(
                f"run folder {self.path} was made with a different config (fingerprint {manifest.fingerprint[:12]}… "
                f"vs {fingerprint[:12]}…); use a new --output folder or --force to mix them"
            )
        if not _same_folder(manifest.data_dir, data_dir):
            raise RunFolderError(
                f"run folder {self.path} was played on {_data_named(manifest.data_dir)} and this run names "
                f"{_data_named(data_dir)}; give the same --data-dir, a new --output folder, or --force to mix them"
            )
        return manifest

    def proposal_writer(self, rows_per_shard: int) -> ShardWriter:
        """The writer of Phase 1's rows. Opening it first turns what a killed run left in its journals into
        shards, so that they count as done."""
        return self._writer(self.proposals_dir, BLUEPRINT_SCHEMA, rows_per_shard)

    def trajectory_writer(self, rows_per_shard: int) -> ShardWriter:
        """The writer of Phase 2's rows; opened before reading what is done, as `proposal_writer`."""
        return self._writer(self.trajectories_dir, TRAJECTORY_SCHEMA, rows_per_shard)

    def _writer(self, folder: Path, schema: pa.Schema, rows_per_shard: int) -> ShardWriter:
        upload = None if self.remote is None else self.remote.streaming_upload()
        return ShardWriter(folder, schema, rows_per_shard=rows_per_shard, on_shard=upload)

    def push_export(self) -> None:
        """Make the mirror's export outputs those of the staging folder (nothing for a local folder)."""
        if self.remote is not None:
            self.remote.push_export()

    # The readers.

    def has_proposals(self) -> bool:
        return bool(shard_paths(self.proposals_dir))

    def has_trajectories(self) -> bool:
        return bool(shard_paths(self.trajectories_dir))

    def proposals(self) -> pa.Table:
        """Phase 1's rows of every proposal whose final row is stored, as the run that wrote that row left them."""
        return stored_proposals(read_rows(self.proposals_dir, schema=BLUEPRINT_SCHEMA))

    def final_proposals(self) -> list[dict[str, Any]]:
        """The final row of each stored proposal, in the order written."""
        return final_rows(self.proposals())

    def accepted_blueprints(self) -> list[Blueprint]:
        """The blueprints Phase 1 accepted (after decontamination and dedup), in the order stored."""
        return accepted_blueprints(self.proposals())

    def funnel(self) -> Funnel:
        """How far the stored proposals got, stage by stage."""
        return proposal_funnel(self.proposals())

    def trajectories(self, columns: list[str] | None = None) -> pa.Table:
        """Every stored trial row (a trial stored twice appears twice), in the order written."""
        return read_rows(self.trajectories_dir, columns)

    def trials(self, columns: list[str] | None = None) -> pa.Table:
        """One row per (blueprint_id, trial): the one written last. `columns` must include those two."""
        return latest_trials(self.trajectories(columns))

    def stored_trials(self) -> dict[tuple[str, int], StoredTrial]:
        """(blueprint_id, trial) -> what its stored rows say, for every stored trial: what a resumed run skips or
        plays again."""
        table = self.trajectories(["blueprint_id", "trial", "attempt", "status", "attribution"])
        stored: dict[tuple[str, int], StoredTrial] = {}
        for blueprint, trial, attempt, status, attribution in zip(*table.to_pydict().values(), strict=True):
            failed = (status, attribution) == ("failed", "system")
            earlier = stored.get((blueprint, trial))
            failures = (0 if earlier is None else earlier.system_failures) + failed
            stored[(blueprint, trial)] = StoredTrial(attempt, failed, failures)
        return stored

    def counts(self, previous: dict[str, dict[str, Any]], stage1: dict[str, int] | None) -> dict[str, dict[str, Any]]:
        """The manifest's counts: `proposals` (Phase 1's funnel) and `trajectories` (Phase 2's trials) counted from
        the shards, `tasks` (stage 1 of the task files this run's Phase 2 played); what this run did not touch
        stays as `previous` has it. `blueprints`, the key that mixed Phase 1's funnel with stage 1 before they
        had their own, is kept as before for readers of older manifests."""
        counts = {stage: dict(values) for stage, values in previous.items()}
        if "tasks" not in counts and (old := counts.get("blueprints")) and "input" in old:
            counts["tasks"] = {name: old[name] for name in _STAGE_ONE if name in old}
        if stage1 is not None:
            counts["tasks"] = dict(stage1)
        if self.has_proposals():
            counts["proposals"] = dict(self.funnel())
        merged = counts.get("tasks", {}) | counts.get("proposals", {})
        if merged:
            counts["blueprints"] = merged
        if stage1 is not None or self.has_trajectories():
            counts["trajectories"] = trajectory_counts(self.trajectories(list(COUNTED_COLUMNS)))
        return counts

    def fallback_notes(self) -> list[str]:
        """The `fallbacks` column of every stored row of both phases, in one list (the driver groups them per
        endpoint for the manifest)."""
        return [
            text
            for folder, schema in ((self.proposals_dir, BLUEPRINT_SCHEMA), (self.trajectories_dir, TRAJECTORY_SCHEMA))
            for texts in read_rows(folder, ["fallbacks"], schema=schema).column("fallbacks").to_pylist()
            for text in texts or []
        ]


def _same_folder(stored: str | None, given: str | None) -> bool:
    if stored is None or given is None:
        return stored == given
    return Path(stored).resolve() == Path(given).resolve()


def _data_named(data_dir: str | None) -> str:
    return "the domain's seeded data" if data_dir is None else f"data folder {data_dir}"
