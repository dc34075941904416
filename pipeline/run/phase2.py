"""Phase 2 as the driver runs it: stage 1 on each source's blueprints, then every (blueprint, trial) the run
folder lacks sent to trial workers, each finished trial's row written to the folder as it arrives.

Stage 1 validates each source's blueprints once (the ground truth's digest is kept for every trial). The
worker's side of a trial is `pipeline.run.trials`.
"""

from __future__ import annotations

from typing import Any

from apigen_mt.pipeline.config import RunConfig
from apigen_mt.pipeline.engines.pool import Engines
from apigen_mt.pipeline.run.drive import RaySession, drive
from apigen_mt.pipeline.run.progress import FunnelProgress
from apigen_mt.pipeline.run.sources import LoadedSource, validate_source
from apigen_mt.pipeline.run.trials import TrialItem, TrialModels, needs_retry, unavailable_row
from apigen_mt.pipeline.run.workers import TrialWorker, WorkerPool, source_specs
from apigen_mt.pipeline.store.run_folder import RunFolder


def stage_one(sources: list[LoadedSource]) -> dict[str, int]:
    """Stage 1 on every source; the counts of blueprints in, valid and rejected."""
    given = sum(len(source.blueprints) + len(source.rejected) for source in sources)
    for source in sources:
        validate_source(source)
    valid = sum(len(source.blueprints) for source in sources)
    return {"input": given, "valid": valid, "rejected": given - valid}


def run_phase2(
    config: RunConfig,
    sources: list[LoadedSource],
    folder: RunFolder,
    session: RaySession,
    *,
    trials: int | None,
    progress: bool,
) -> tuple[int, int]:
    """Play the sources' (blueprint, trial) pairs the folder lacks, `trials` per blueprint (default: the
    config's); (played, skipped)."""
    phase = config.trajectories
    trials = trials or phase.trials
    with folder.trajectory_writer(phase.rows_per_shard) as writer:
        done = folder.finished_trials()
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
    return len(items), skipped


def _trial_models(engines: Engines) -> TrialModels:
    return TrialModels(agent=engines.model("agent"), human=engines.model("human"), judge=engines.model("human_judge"))
