"""Phase 2 as the driver runs it: stage 1 on each source's blueprints, then every (blueprint, trial) the run
folder lacks sent to trial workers, each finished trial's row written to the folder as it arrives.

Stage 1 validates each source's blueprints once (the ground truth's digest is kept for every trial). A trial
whose last stored row failed for a system reason (an endpoint down, replies nothing could read) is no data: a
rerun plays it again, its row's attempt number going on, while at most `trajectories.max_replays` of its rows
are such failures. The worker's side of a trial is `pipeline.run.trials`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apigen_mt.pipeline.config import RunConfig
from apigen_mt.pipeline.engines.pool import Engines
from apigen_mt.pipeline.run.drive import RaySession, drive
from apigen_mt.pipeline.run.progress import FunnelProgress
from apigen_mt.pipeline.run.sources import LoadedSource, validate_source
from apigen_mt.pipeline.run.trials import TrialItem, TrialModels, needs_retry, unavailable_row
from apigen_mt.pipeline.run.workers import TrialWorker, WorkerPool, source_specs
from apigen_mt.pipeline.store.run_folder import RunFolder, StoredTrial


def stage_one(sources: list[LoadedSource], *, every_task: bool = False) -> dict[str, int]:
    """Stage 1 on every source; the counts of blueprints in, kept to play ("valid") and rejected. With `every_task`
    (eval) a task stage 1 finds fault with is still played, its problems kept in `source.stage_one_problems`: a
    benchmark is scored on all its tasks."""
    given = sum(len(source.blueprints) + len(source.rejected) for source in sources)
    for source in sources:
        validate_source(source, filter=not every_task)
    valid = sum(len(source.blueprints) for source in sources)
    return {"input": given, "valid": valid, "rejected": given - valid}


@dataclass(frozen=True)
class TrialPlan:
    """The (blueprint, trial) pairs a run plays, keyed by their source, and what it leaves as stored."""

    items: list[tuple[str, TrialItem]]
    skipped: int  # stored with a final row (accepted, rejected, or failed past the replay bound)
    replayed: int  # of `items`, those played again after a system failure
    left_failed: int  # of `skipped`, system failures past the bound


def plan_trials(
    keyed: Mapping[str, LoadedSource], trials: int, stored: Mapping[tuple[str, int], StoredTrial], max_replays: int
) -> TrialPlan:
    """Every (blueprint, trial) of the sources to play: those not stored, and those whose last row is a system
    failure while at most `max_replays` of their rows are (played again, the attempt numbers going on)."""
    items, skipped, replayed, left = [], 0, 0, 0
    for key, source in keyed.items():
        for blueprint in source.blueprints:
            for trial in range(trials):
                previous = stored.get((str(blueprint.id), trial))
                if previous is not None and not previous.failed_by_system:
                    skipped += 1
                    continue
                if previous is not None and previous.system_failures > max_replays:
                    skipped, left = skipped + 1, left + 1
                    continue
                earlier = 0 if previous is None else previous.attempt
                replayed += previous is not None
                digest = source.ground_truth[str(blueprint.id)]
                items.append((key, TrialItem(blueprint, trial, digest, earlier_attempts=earlier)))
    return TrialPlan(items, skipped, replayed, left)


def run_phase2(
    config: RunConfig,
    sources: Sequence[LoadedSource],
    folder: RunFolder,
    session: RaySession,
    *,
    trials: int | None,
    progress: bool,
) -> TrialPlan:
    """Play the sources' (blueprint, trial) pairs the folder lacks or holds as system failures to replay,
    `trials` per blueprint (default: the config's); what was played and left."""
    phase = config.trajectories
    trials = trials or phase.trials
    with folder.trajectory_writer(phase.rows_per_shard) as writer:
        keyed = {f"s{index}": source for index, source in enumerate(sources)}
        plan = plan_trials(keyed, trials, folder.stored_trials(), phase.max_replays)
        items = plan.items
        if not items:
            return plan

        def finish(key: str, item: TrialItem, row: dict[str, Any]) -> None:
            writer.write(row)
            bar.finished(row["status"])

        engines = session.engines()
        figures = config.phase_concurrency("trajectories")
        pool = WorkerPool(
            TrialWorker,
            phase.workers,
            lambda: _trial_models(engines),
            phase,
            source_specs(keyed.items()),
            figures.per_worker,
        )

        def lost(key: str, item: TrialItem, reason: str) -> dict[str, Any]:
            return unavailable_row(keyed[key].domain, item, _trial_models(engines), reason, 0.0)

        try:
            with FunnelProgress(len(items), enabled=progress) as bar:
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
                    progress=bar,
                )
        finally:
            pool.shutdown()
    return plan


def _trial_models(engines: Engines) -> TrialModels:
    return TrialModels(agent=engines.model("agent"), human=engines.model("human"), judge=engines.model("human_judge"))
