"""Phase 1 as the driver runs it: the proposals a run folder lacks sent to proposal workers, each accepted
blueprint checked as it arrives, the rows written to the folder; then the recombinations.

One item per (domain, proposal index), then one per group of accepted blueprints of one user to join. An
accepted blueprint is checked here, in arrival order, against the excluded tasks and then against every
blueprint kept so far (`BlueprintGate`); a rejection rewrites the final row: `rejected` at stage
`decontamination` or `dedup`. The worker's side of a proposal is `pipeline.proposals`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from apigen_mt.blueprints.loop import Phase1Models
from apigen_mt.pipeline.config import BlueprintPhase, RunConfig
from apigen_mt.pipeline.drive import RaySession, drive
from apigen_mt.pipeline.engines import Engines
from apigen_mt.pipeline.progress import FunnelProgress
from apigen_mt.pipeline.proposal_rows import accepted_blueprints, final_rows
from apigen_mt.pipeline.proposals import (
    BlueprintGate,
    ProposalItem,
    ProposalOutcome,
    ProposalPlan,
    RecombinationItem,
    example_draw,
    proposal_id,
    recombination_items,
    unavailable_outcome,
)
from apigen_mt.pipeline.run_folder import RunFolder
from apigen_mt.pipeline.sources import LoadedSource
from apigen_mt.pipeline.trials import stable_seed
from apigen_mt.pipeline.workers import ProposalWorker, WorkerPool, source_specs
from apigen_mt.simulators.types import Blueprint


def run_phase1(
    config: RunConfig, plan: ProposalPlan, folder: RunFolder, session: RaySession, *, progress: bool
) -> tuple[int, int]:
    """Run the plan's proposals the folder lacks, then the recombinations; (proposals run, skipped)."""
    phase = config.blueprint_generation
    if phase is None:
        raise ValueError("Phase 1 needs the config's blueprint_generation section")
    with folder.proposal_writer(phase.rows_per_shard) as writer:
        stored = folder.proposals()
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
            bar.finished(final["status"])

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
                    specs = source_specs((key, planned.source) for key, planned in keyed.items())
                    pool = WorkerPool(
                        ProposalWorker, phase.workers, lambda: _phase1_models(engines), phase, specs, figures.per_worker
                    )
                model_id = engines.model("proposer").model_id
                with FunnelProgress(count, enabled=progress, label=label) as bar:
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
                        progress=bar,
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


def accepted_sources(plan: ProposalPlan, folder: RunFolder) -> list[LoadedSource]:
    """Each planned domain's source holding its accepted blueprints of this plan's proposals and of their
    recombinations, in id order: what `generate` gives Phase 2."""
    wanted = {
        proposal_id(planned.source.domain.name, index) for planned in plan.domains for index in range(planned.proposals)
    }

    def in_plan(blueprint: Blueprint) -> bool:
        parents = blueprint.provenance.parents
        return blueprint.id in wanted or (bool(parents) and wanted.issuperset(parents))

    kept = sorted(filter(in_plan, folder.accepted_blueprints()), key=lambda b: str(b.id))
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
