"""The run driver: every phase of a run goes through here, from proposals and blueprints to shards and manifest.

    summary = run_trajectories(config, sources, RunOptions(output=Path("runs/demo")))
    summary = run_blueprints(config, plan, options)        # Phase 1 only
    summary = run_generate(config, plan, options)          # Phase 1, then Phase 2 on its accepted blueprints

Both phases run the same way (`pipeline.drive`): the items the run folder does not hold yet are fed to Ray
worker actors, at most `in_flight` at a time, the least loaded worker first, and each finished item's rows
are written through the shard writer as they arrive. An item whose engine or worker died is run again, a
bounded number of times; every other outcome is a row.

Phase 1 (`pipeline.proposals`): one item per (domain, proposal index); the loop's rows of an accepted
blueprint are checked here, as they arrive, against the excluded tasks and then against every blueprint kept
so far (a rejection rewrites the final row: `rejected` at stage `decontamination` or `dedup`).
Phase 2: stage 1 validates each source's blueprints once (the ground truth's digest is kept for every
trial); one item per (blueprint, trial). `generate` with a Phase-1 plan gives Phase 2 the blueprints Phase 1
accepted (this run's and earlier ones' within the plan) and the config's blueprint files, in the same Ray
session and on the same engines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from apigen_mt.blueprints.loop import Phase1Models
from apigen_mt.pipeline.config import PHASE1_ROLES, PHASE2_ROLES, BlueprintPhase, RunConfig
from apigen_mt.pipeline.drive import RaySession, drive
from apigen_mt.pipeline.endpoint_features import fallbacks_by_endpoint
from apigen_mt.pipeline.engines import Engines, ModelFactory
from apigen_mt.pipeline.manifest import (
    MANIFEST_NAME,
    RunManifest,
    check_resume,
    package_versions,
    read_manifest,
    utc_now,
    write_manifest,
)
from apigen_mt.pipeline.progress import FunnelProgress
from apigen_mt.pipeline.proposal_funnel import proposal_funnel
from apigen_mt.pipeline.proposals import (
    BlueprintGate,
    ProposalItem,
    ProposalOutcome,
    ProposalPlan,
    RecombinationItem,
    accepted_blueprints,
    example_draw,
    final_rows,
    proposal_id,
    recombination_items,
    stored_proposals,
    unavailable_outcome,
)
from apigen_mt.pipeline.remote import RemoteRun
from apigen_mt.pipeline.sources import LoadedSource, validate_source
from apigen_mt.pipeline.storage import (
    BLUEPRINT_SCHEMA,
    BLUEPRINTS_DIR,
    COUNTED_COLUMNS,
    TRAJECTORIES_DIR,
    TRAJECTORY_SCHEMA,
    ShardWriter,
    finished_pairs,
    read_rows,
    run_folder_lock,
    shard_paths,
    trajectory_counts,
)
from apigen_mt.pipeline.trials import TrialItem, needs_retry, stable_seed, unavailable_row
from apigen_mt.pipeline.workers import ProposalWorker, SourceSpec, TrialWorker, WorkerPool
from apigen_mt.simulators.types import Blueprint


@dataclass(frozen=True)
class RunOptions:
    output: Path  # the run folder; for a URI --output, the local staging folder of `remote`
    force: bool = False
    trials: int | None = None  # overrides the config's trajectories.trials
    progress: bool = True
    command: tuple[str, ...] = ()
    remote: RemoteRun | None = None  # the URI mirrored from `output`


@dataclass
class RunSummary:
    output: Path
    counts: dict[str, dict[str, Any]]
    played: int  # trials
    skipped: int
    wall_s: float
    restarts: list[str] = field(default_factory=list)
    proposed: int = 0  # proposals run (each with its revisions)
    proposals_skipped: int = 0
    phases: list[str] = field(default_factory=list)  # what this run did: "blueprints", "trajectories"
    fallbacks: dict[str, list[str]] = field(default_factory=dict)  # per endpoint, as the manifest has them


def run_trajectories(
    config: RunConfig, sources: list[LoadedSource], options: RunOptions, *, model_factory: ModelFactory | None = None
) -> RunSummary:
    """Play every missing (blueprint, trial) of the sources into `options.output`; returns the counts."""
    with run_folder_lock(options.output):
        return _run_locked(config, options, model_factory, plan=None, sources=sources)


def run_blueprints(
    config: RunConfig, plan: ProposalPlan, options: RunOptions, *, model_factory: ModelFactory | None = None
) -> RunSummary:
    """Run every proposal of the plan that `options.output` does not hold yet; returns the counts."""
    with run_folder_lock(options.output):
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
    files, played beside them); returns the counts."""
    with run_folder_lock(options.output):
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
    out = options.output
    roles = PHASE1_ROLES if plan is not None else ()
    roles += PHASE2_ROLES if sources is not None or chain else ()
    for role in roles:
        config.roles.models_of(role)  # a role the config lacks stops the run here, before Ray starts
    if options.remote is not None:
        options.remote.pull()
    fingerprint = config.fingerprint()
    check_resume(out, fingerprint, force=options.force)
    previous = read_manifest(out)
    planned = [] if plan is None else [domain.source for domain in plan.domains]
    manifest = RunManifest(
        config=config.model_dump(mode="json"),
        fingerprint=fingerprint,
        versions=package_versions(),
        data_dir=next((str(s.data_dir) for s in [*planned, *(sources or [])] if s.data_dir is not None), None),
        started_at=previous.started_at if previous else utc_now(),
        command=list(options.command),
    )
    _save_manifest(options, manifest)
    summary = RunSummary(out, {}, 0, 0, 0.0)
    stage1: dict[str, int] | None = None
    with ExitStack() as stack:
        session = RaySession(config, roles, model_factory, stack)
        if plan is not None:
            summary.proposed, summary.proposals_skipped = _phase1(config, plan, options, session)
            summary.phases.append("blueprints")
        if chain:
            assert plan is not None and sources is not None
            sources = _accepted_sources(plan, out) + sources
        if sources is not None:
            stage1 = _stage1(sources)
            summary.played, summary.skipped = _phase2(config, sources, options, session)
            summary.phases.append("trajectories")
        summary.restarts = session.restarts
    manifest.counts = _counts(out, previous.counts if previous else {}, stage1)
    manifest.fallbacks = _fallbacks(out)
    manifest.finished_at = utc_now()
    write_manifest(out, manifest)
    if options.remote is not None:
        options.remote.push_run()
    summary.counts, summary.wall_s = manifest.counts, time.monotonic() - started
    summary.fallbacks = manifest.fallbacks
    return summary


def _save_manifest(options: RunOptions, manifest: RunManifest) -> None:
    write_manifest(options.output, manifest)
    if options.remote is not None:
        options.remote.push_file(options.output / MANIFEST_NAME)


def _shard_writer(options: RunOptions, folder: Path, schema: pa.Schema, rows_per_shard: int) -> ShardWriter:
    upload = None if options.remote is None else options.remote.streaming_upload()
    return ShardWriter(folder, schema, rows_per_shard=rows_per_shard, on_shard=upload)


def _specs(sources: Iterable[tuple[str, LoadedSource]]) -> dict[str, SourceSpec]:
    return {key: (s.domain.name, None if s.data_dir is None else str(s.data_dir)) for key, s in sources}


def _phase1(config: RunConfig, plan: ProposalPlan, options: RunOptions, session: RaySession) -> tuple[int, int]:
    """Run the plan's missing proposals; (run, skipped)."""
    phase = config.blueprint_generation
    if phase is None:
        raise ValueError("Phase 1 needs the config's blueprint_generation section")
    folder = options.output / BLUEPRINTS_DIR
    # Opening the writer first turns what a killed run left in its journals into shards, so they count as done.
    with _shard_writer(options, folder, BLUEPRINT_SCHEMA, phase.rows_per_shard) as writer:
        stored = stored_proposals(read_rows(folder, schema=BLUEPRINT_SCHEMA))
        done = {row["blueprint_id"] for row in final_rows(stored)}
        gate = BlueprintGate(plan.excluded, phase)
        accepted: dict[str, list[Blueprint]] = {planned.source.domain.name: [] for planned in plan.domains}
        for blueprint in accepted_blueprints(stored):
            gate.remember(blueprint)
            accepted.setdefault(str(blueprint.domain), []).append(blueprint)
        keyed = {f"d{index}": planned for index, planned in enumerate(plan.domains)}
        todo = [
            (key, planned.source.domain.name, index)
            for key, planned in keyed.items()
            for index in range(planned.proposals)
            if proposal_id(planned.source.domain.name, index) not in done
        ]
        skipped = sum(planned.proposals for planned in plan.domains) - len(todo)

        def items() -> Iterator[tuple[str, ProposalItem]]:
            # Drawn when the item is sent, so that the example sampler sees every blueprint accepted by then.
            for key, domain, index in todo:
                seed = stable_seed(phase.seed, domain, index)
                examples = example_draw(accepted[domain], seed, phase.sampler.examples)
                yield key, ProposalItem(domain, index, seed, examples)

        def finish(key: str, item: ProposalItem | RecombinationItem, outcome: ProposalOutcome) -> None:
            final = outcome.rows[-1]
            if final["status"] == "accepted":
                blueprint = Blueprint.model_validate_json(final["blueprint"])
                rejection = gate.check(blueprint)
                if rejection is None:
                    accepted[item.domain].append(blueprint)
                else:
                    final.update(status="rejected", failed_stage=rejection[0], reasons=[rejection[1]])
            for row in outcome.rows:
                writer.write(row)
            progress.finished(final["status"])

        keys = {planned.source.domain.name: key for key, planned in keyed.items()}
        figures = config.phase_concurrency("blueprints")
        pool: WorkerPool | None = None
        try:
            for method, label, work in (
                ("propose", "proposals", lambda: (len(todo), items())),
                ("recombine", "recombinations", lambda: _recombinations(accepted, phase, done, keys)),
            ):
                count, queue = work()
                if not count:
                    continue
                engines = session.engines()
                if pool is None:
                    specs = _specs((key, planned.source) for key, planned in keyed.items())
                    pool = WorkerPool(
                        ProposalWorker, phase.workers, lambda: _phase1_models(engines), phase, specs, figures.per_worker
                    )
                model_id = engines.model("proposer").model_id
                with FunnelProgress(count, enabled=options.progress, label=label) as progress:
                    drive(
                        pool,
                        engines,
                        queue,
                        method=method,
                        bound=figures.in_flight,
                        max_attempts=phase.max_attempts,
                        retry=lambda outcome: outcome.retry,
                        finish=finish,
                        lost=lambda key, item, reason: unavailable_outcome(item, model_id, reason),
                        progress=progress,
                    )
        finally:
            if pool is not None:
                pool.shutdown()
    return len(todo), skipped


def _recombinations(
    accepted: dict[str, list[Blueprint]], phase: BlueprintPhase, done: set[str], keys: dict[str, str]
) -> tuple[int, list[tuple[str, RecombinationItem]]]:
    """The groups of accepted blueprints left to join, keyed by their domain's source."""
    queue = [(keys[item.domain], item) for item in recombination_items(accepted, phase, done)]
    return len(queue), queue


def _phase1_models(engines: Engines) -> Phase1Models:
    reviewers = engines.models("reviewer")
    # The summariser condenses the reviewers' reflections, so the reviewer role's (first) model writes it.
    return Phase1Models(proposer=engines.model("proposer"), reviewers=reviewers, summariser=reviewers[0])


def _accepted_sources(plan: ProposalPlan, out: Path) -> list[LoadedSource]:
    """Each planned domain's source holding its accepted blueprints of this plan's proposals and of their
    recombinations, in id order."""
    stored = stored_proposals(read_rows(out / BLUEPRINTS_DIR, schema=BLUEPRINT_SCHEMA))
    wanted = {
        proposal_id(planned.source.domain.name, index) for planned in plan.domains for index in range(planned.proposals)
    }

    def in_plan(blueprint: Blueprint) -> bool:
        parents = blueprint.provenance.parents
        return blueprint.id in wanted or (bool(parents) and wanted.issuperset(parents))

    kept = sorted(filter(in_plan, accepted_blueprints(stored)), key=lambda b: str(b.id))
    return [
        # A new source per run: stage 1 fills in its ground truth and rejections; the database is shared.
        replace(
            planned.source,
            blueprints=[b for b in kept if b.domain == planned.source.domain.name],
            rejected=[],
            ground_truth={},
        )
        for planned in plan.domains
    ]


def _stage1(sources: list[LoadedSource]) -> dict[str, int]:
    """Stage 1 on every source; the counts of blueprints in, valid and rejected."""
    given = sum(len(source.blueprints) + len(source.rejected) for source in sources)
    for source in sources:
        validate_source(source)
    valid = sum(len(source.blueprints) for source in sources)
    return {"input": given, "valid": valid, "rejected": given - valid}


def _phase2(
    config: RunConfig, sources: list[LoadedSource], options: RunOptions, session: RaySession
) -> tuple[int, int]:
    """Play the sources' missing (blueprint, trial) pairs; (played, skipped)."""
    phase = config.trajectories
    folder = options.output / TRAJECTORIES_DIR
    trials = options.trials or phase.trials
    with _shard_writer(options, folder, TRAJECTORY_SCHEMA, phase.rows_per_shard) as writer:
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
        if not items:
            return 0, skipped

        def finish(key: str, item: TrialItem, row: dict[str, Any]) -> None:
            writer.write(row)
            progress.finished(row["status"])

        engines = session.engines()
        figures = config.phase_concurrency("trajectories")
        pool = WorkerPool(
            TrialWorker, phase.workers, engines.trial_models, phase, _specs(keyed.items()), figures.per_worker
        )

        def lost(key: str, item: TrialItem, reason: str) -> dict[str, Any]:
            return unavailable_row(keyed[key].domain, item, engines.trial_models(), reason, 0.0)

        try:
            with FunnelProgress(len(items), enabled=options.progress) as progress:
                drive(
                    pool,
                    engines,
                    items,
                    method="play",
                    bound=figures.in_flight,
                    max_attempts=phase.max_attempts,
                    lost=lost,
                    retry=needs_retry,
                    finish=finish,
                    progress=progress,
                )
        finally:
            pool.shutdown()
    return len(items), skipped


def _counts(out: Path, previous: dict[str, dict[str, Any]], stage1: dict[str, int] | None) -> dict[str, dict[str, Any]]:
    """The manifest's counts: Phase 1's funnel and Phase 2's trials recounted from the shards, the stage-1
    counts of this run's Phase 2; what this run did not touch stays as the previous manifest has it."""
    counts = {stage: dict(values) for stage, values in previous.items()}
    blueprints = counts.get("blueprints", {})
    if stage1 is not None:
        blueprints.update(stage1)
    if shard_paths(out / BLUEPRINTS_DIR):
        blueprints.update(proposal_funnel(stored_proposals(read_rows(out / BLUEPRINTS_DIR, schema=BLUEPRINT_SCHEMA))))
    if blueprints:
        counts["blueprints"] = blueprints
    if stage1 is not None or shard_paths(out / TRAJECTORIES_DIR):
        counts["trajectories"] = trajectory_counts(read_rows(out / TRAJECTORIES_DIR, list(COUNTED_COLUMNS)))
    return counts


def _fallbacks(out: Path) -> dict[str, list[str]]:
    """The manifest's fallbacks: those of every stored row of both phases, per endpoint."""
    described = [
        text
        for folder, schema in ((BLUEPRINTS_DIR, BLUEPRINT_SCHEMA), (TRAJECTORIES_DIR, TRAJECTORY_SCHEMA))
        for texts in read_rows(out / folder, ["fallbacks"], schema=schema).column("fallbacks").to_pylist()
        for text in texts or []
    ]
    return fallbacks_by_endpoint(described)
