"""The run driver: every phase of a run goes through here, from blueprints to Parquet shards and manifest.

    summary = run_trajectories(config, sources, RunOptions(output=Path("runs/demo")))

Phase 2 as it runs: stage 1 validates each source's blueprints once (the ground truth's digest is kept for
every trial); the (blueprint, trial) pairs the run folder does not hold yet are fed to Ray worker actors,
at most `in_flight` at a time, the least loaded worker first; each finished trial is written through the
shard writer as it arrives. A trial whose engine died is played again once the engine is back (Ray
restarts it; the driver starts a new one when Ray gave up), at most `max_attempts` times; a worker that
dies has its trials played again the same way. Nothing else is retried: every other outcome is a row.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apigen_mt.pipeline.config import RunConfig
from apigen_mt.pipeline.engines import Engines, ModelFactory
from apigen_mt.pipeline.progress import FunnelProgress
from apigen_mt.pipeline.sources import LoadedSource, validate_source
from apigen_mt.pipeline.storage import (
    TRAJECTORY_SCHEMA,
    RunManifest,
    ShardWriter,
    check_resume,
    finished_pairs,
    package_versions,
    read_manifest,
    read_rows,
    run_folder_lock,
    trajectory_counts,
    utc_now,
    write_manifest,
)
from apigen_mt.pipeline.trials import TrialItem, needs_retry, unavailable_row
from apigen_mt.pipeline.workers import start_workers

PHASE2_ROLES = ("agent", "human", "human_judge")


@dataclass(frozen=True)
class RunOptions:
    output: Path
    force: bool = False
    trials: int | None = None  # overrides the config's trajectories.trials
    progress: bool = True
    command: tuple[str, ...] = ()


@dataclass
class RunSummary:
    output: Path
    counts: dict[str, dict[str, int]]
    played: int
    skipped: int
    wall_s: float
    restarts: list[str] = field(default_factory=list)


@contextmanager
def ray_session() -> Iterator[None]:
    """Join the cluster under `ray job submit` (RAY_ADDRESS is set), else start an embedded local Ray."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = "auto" if os.environ.get("RAY_ADDRESS") else None
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _counts(folder: Path, sources: list[LoadedSource], blueprints_in: int) -> dict[str, dict[str, int]]:
    valid = sum(len(source.blueprints) for source in sources)
    return {
        "blueprints": {"input": blueprints_in, "valid": valid, "rejected": blueprints_in - valid},
        "trajectories": trajectory_counts(read_rows(folder)),
    }


def run_trajectories(
    config: RunConfig,
    sources: list[LoadedSource],
    options: RunOptions,
    *,
    model_factory: ModelFactory | None = None,
) -> RunSummary:
    """Play every missing (blueprint, trial) of the sources into `options.output`; returns the counts."""
    with run_folder_lock(options.output):
        return _run_locked(config, sources, options, model_factory)


def _run_locked(
    config: RunConfig, sources: list[LoadedSource], options: RunOptions, model_factory: ModelFactory | None
) -> RunSummary:
    started = time.monotonic()
    out = options.output
    fingerprint = config.fingerprint()
    check_resume(out, fingerprint, force=options.force)
    blueprints_in = sum(len(source.blueprints) + len(source.rejected) for source in sources)
    for source in sources:
        validate_source(source)
    previous = read_manifest(out)
    manifest = RunManifest(
        config=config.model_dump(mode="json"),
        fingerprint=fingerprint,
        versions=package_versions(),
        data_dir=next((str(s.data_dir) for s in sources if s.data_dir is not None), None),
        started_at=previous.started_at if previous else utc_now(),
        command=list(options.command),
    )
    write_manifest(out, manifest)
    folder = out / "trajectories"
    trials = options.trials or config.trajectories.trials
    # Opening the writer first turns what a killed run left in its journals into shards, so they count as done.
    writer = ShardWriter(folder, TRAJECTORY_SCHEMA, rows_per_shard=config.trajectories.rows_per_shard)
    done = finished_pairs(folder)
    keyed = {f"s{index}": source for index, source in enumerate(sources)}
    items = [
        (key, TrialItem(blueprint, trial, source.ground_truth[str(blueprint.id)]))
        for key, source in keyed.items()
        for blueprint in source.blueprints
        for trial in range(trials)
        if (str(blueprint.id), trial) not in done
    ]
    skipped = sum(len(source.blueprints) for source in sources) * trials - len(items)
    restarts: list[str] = []
    try:
        if items:
            restarts = _play(config, keyed, items, writer, options, model_factory)
    finally:
        writer.close()
    manifest.counts = _counts(folder, sources, blueprints_in)
    manifest.finished_at = utc_now()
    write_manifest(out, manifest)
    return RunSummary(out, manifest.counts, len(items), skipped, time.monotonic() - started, restarts)


def _play(
    config: RunConfig,
    sources: dict[str, LoadedSource],
    items: list[tuple[str, TrialItem]],
    writer: ShardWriter,
    options: RunOptions,
    model_factory: ModelFactory | None,
) -> list[str]:
    phase = config.trajectories
    bound = config.in_flight_bound()
    specs = {key: (s.domain.name, None if s.data_dir is None else str(s.data_dir)) for key, s in sources.items()}
    with ray_session():
        engines = Engines.start(config, PHASE2_ROLES, model_factory)
        try:
            per_worker = -(-bound // phase.workers)
            workers = start_workers(phase.workers, engines.trial_models(), phase, specs, max(per_worker, 1) + 8)
            progress = FunnelProgress(len(items), enabled=options.progress)
            with progress:
                _drive(sources, engines, workers, items, writer, progress, bound, phase.max_attempts, specs, phase)
            return engines.restarts
        finally:
            engines.shutdown()


def _drive(
    sources: dict[str, LoadedSource],
    engines: Engines,
    workers: list[Any],
    items: list[tuple[str, TrialItem]],
    writer: ShardWriter,
    progress: FunnelProgress,
    bound: int,
    max_attempts: int,
    specs: dict[str, Any],
    phase: Any,
) -> None:
    import ray

    queue = deque(items)
    pending: dict[Any, tuple[str, TrialItem, int]] = {}
    load = [0] * len(workers)
    while queue or pending:
        while queue and len(pending) < bound:
            key, item = queue.popleft()
            index = min(range(len(workers)), key=load.__getitem__)
            load[index] += 1
            pending[workers[index].play.remote(key, item)] = (key, item, index)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        if ready:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in ready:
            key, item, index = pending.pop(ref)
            load[index] -= 1
            try:
                row = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                workers[index] = _replace_worker(engines, phase, specs, bound, len(workers))
                reason = f"the worker playing it died ({type(exc).__name__})"
                row = unavailable_row(sources[key].domain, item, engines.trial_models(), reason, 0.0)
            if needs_retry(row) and item.attempt < max_attempts:
                if engines.ensure_alive():
                    ray.get([worker.set_models.remote(engines.trial_models()) for worker in workers])
                queue.append((key, TrialItem(item.blueprint, item.trial, item.ground_truth_digest, item.attempt + 1)))
                progress.retried()
                continue
            writer.write(row)
            progress.finished(row["status"])


def _replace_worker(engines: Engines, phase: Any, specs: dict[str, Any], bound: int, count: int) -> Any:
    [worker] = start_workers(1, engines.trial_models(), phase, specs, -(-bound // count) + 8)
    return worker


def report(summary: RunSummary) -> None:
    counts = summary.counts["trajectories"]
    print(
        f"{summary.played} trials played, {summary.skipped} already done; accepted {counts['accepted']}, "
        f"rejected {counts['rejected']}, failed {counts['failed']} ({counts['unique_accepted']} unique accepted) "
        f"in {summary.wall_s:.0f}s -> {summary.output}",
        file=sys.stderr,
    )
