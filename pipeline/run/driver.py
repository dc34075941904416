"""The run driver: every phase of a run goes through here, from the run folder's lock to its final manifest.

    folder = RunFolder.at("runs/demo")                                 # or a filesystem URI, mirrored
    summary = run_trajectories(config, sources, RunOptions(folder))     # Phase 2 on the sources
    summary = run_blueprints(config, plan, options)                     # Phase 1 only
    summary = run_generate(config, plan, options)                       # Phase 1, then Phase 2 on what it accepted

Both phases run the same way (`pipeline.run.drive`): the items the run folder does not hold yet are fed to Ray
worker actors, at most `in_flight` at a time, the least loaded worker first, and each finished item's rows
are written through the folder's shard writer as they arrive. An item whose engine or worker died is run
again, a bounded number of times; every other outcome is a row. Phase 1: `pipeline.run.phase1`; Phase 2:
`pipeline.run.phase2`. The manifest is written only with what is true (`RunFolder`): a new folder's at the
start, and the final one when the run ends. `generate` with a Phase-1 plan gives Phase 2 the blueprints Phase 1
accepted (this run's and earlier ones' within the plan) and the config's task files, in the same Ray session
and on the same engines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apigen_mt.pipeline.config import PHASE1_ROLES, PHASE2_ROLES, RunConfig
from apigen_mt.pipeline.engines.endpoint_features import fallbacks_by_endpoint
from apigen_mt.pipeline.engines.pool import ModelFactory
from apigen_mt.pipeline.run.drive import RaySession
from apigen_mt.pipeline.run.phase1 import ProposalPlan, accepted_sources, run_phase1
from apigen_mt.pipeline.run.phase2 import run_phase2, stage_one
from apigen_mt.pipeline.run.sources import LoadedSource
from apigen_mt.pipeline.store.manifest import RunManifest, package_versions, utc_now
from apigen_mt.pipeline.store.remote import redacted_command
from apigen_mt.pipeline.store.run_folder import RunFolder


@dataclass(frozen=True)
class RunOptions:
    folder: RunFolder
    force: bool = False
    trials: int | None = None  # overrides the config's trajectories.trials
    progress: bool = True
    command: tuple[str, ...] = ()
    every_task: bool = False  # eval: stage 1 drops no task (each is played and scored; its problems are kept)


@dataclass
class RunSummary:
    output: Path  # the run folder (for a URI output, its local staging folder)
    counts: dict[str, dict[str, Any]]
    played: int  # trials
    skipped: int
    wall_s: float
    restarts: list[str] = field(default_factory=list)
    proposed: int = 0  # proposals run (each with its revisions)
    proposals_skipped: int = 0
    phases: list[str] = field(default_factory=list)  # what this run did: "blueprints", "trajectories"
    fallbacks: dict[str, list[str]] = field(default_factory=dict)  # per endpoint, as the manifest has them
    replayed: int = 0  # of `played`, trials played again after a system failure
    left_failed: int = 0  # of `skipped`, system failures past trajectories.max_replays
    task_rejections: Path | None = None  # the stored reasons of this run's stage-1 rejections, when it ran stage 1


def run_trajectories(
    config: RunConfig, sources: list[LoadedSource], options: RunOptions, *, model_factory: ModelFactory | None = None
) -> RunSummary:
    """Play every missing (blueprint, trial) of the sources into the run folder; returns the counts."""
    with options.folder.lock():
        return _run_locked(config, options, model_factory, plan=None, sources=sources)


def run_blueprints(
    config: RunConfig, plan: ProposalPlan, options: RunOptions, *, model_factory: ModelFactory | None = None
) -> RunSummary:
    """Run every proposal of the plan that the run folder does not hold yet; returns the counts."""
    with options.folder.lock():
        return _run_locked(config, options, model_factory, plan=plan, sources=None)


def run_generate(
    config: RunConfig,
    plan: ProposalPlan,
    options: RunOptions,
    *,
    sources: Sequence[LoadedSource] = (),
    model_factory: ModelFactory | None = None,
) -> RunSummary:
    """Phase 1 on the plan, then Phase 2 on the blueprints it accepted and on `sources` (the config's blueprint
    task files, played beside them); returns the counts."""
    with options.folder.lock():
        return _run_locked(config, options, model_factory, plan=plan, sources=list(sources), chain=True)


def _run_locked(
    config: RunConfig,
    options: RunOptions,
    model_factory: ModelFactory | None,
    *,
    plan: ProposalPlan | None,
    sources: list[LoadedSource] | None,
    chain: bool = False,
) -> RunSummary:
    started = time.monotonic()
    folder = options.folder
    roles = PHASE1_ROLES if plan is not None else ()
    roles += PHASE2_ROLES if sources is not None or chain else ()
    for role in roles:
        config.roles.models_of(role)  # a role the config lacks stops the run here, before Ray starts
    folder.pull()
    fingerprint = config.fingerprint()
    planned = [] if plan is None else [domain.source for domain in plan.domains]
    data_dir = next((str(s.data_dir) for s in [*planned, *(sources or [])] if s.data_dir is not None), None)
    previous = folder.check_resume(fingerprint, data_dir, force=options.force)
    manifest = RunManifest(
        config=config.model_dump(mode="json"),
        fingerprint=fingerprint,
        versions=package_versions(),
        data_dir=data_dir,
        started_at=previous.started_at if previous else utc_now(),
        command=redacted_command(options.command),  # a URI's credentials never reach a file
        # What this run's Phase 1 was checked against; a run without Phase 1 keeps what an earlier one said.
        excluded_tasks=plan.exclusion if plan is not None else previous.excluded_tasks if previous else None,
    )
    if previous is None:
        # A new folder names its config at once, so that a run killed before its end can be resumed; an earlier
        # run's manifest stays as it is until this run ends.
        folder.save_manifest(manifest)
    summary = RunSummary(folder.path, {}, 0, 0, 0.0)
    stage1: dict[str, int] | None = None
    rejections: list[dict[str, Any]] | None = None
    with ExitStack() as stack:
        session = RaySession(config, roles, model_factory, stack)
        if plan is not None:
            summary.proposed, summary.proposals_skipped = run_phase1(
                config, plan, folder, session, progress=options.progress
            )
            summary.phases.append("blueprints")
        if chain:
            assert plan is not None and sources is not None
            sources = accepted_sources(plan, folder) + sources
        if sources is not None:
            stage1 = stage_one(sources, every_task=options.every_task)
            rejections = [
                {"task_file": source.origin, **record}
                for source in sources
                for record in sorted(source.rejected, key=lambda record: record["index"])
            ]
            played = run_phase2(config, sources, folder, session, trials=options.trials, progress=options.progress)
            summary.played, summary.skipped = len(played.items), played.skipped
            summary.replayed, summary.left_failed = played.replayed, played.left_failed
            summary.phases.append("trajectories")
        summary.restarts = session.restarts
    manifest.counts = folder.counts(previous.counts if previous else {}, stage1)
    manifest.fallbacks = fallbacks_by_endpoint(folder.fallback_notes())
    manifest.finished_at = utc_now()
    folder.finish(manifest, rejections)
    summary.counts, summary.wall_s = manifest.counts, time.monotonic() - started
    summary.fallbacks = manifest.fallbacks
    summary.task_rejections = None if rejections is None else folder.task_rejections_path
    return summary
