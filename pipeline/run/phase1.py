"""Phase 1 as the driver runs it: the proposals a run folder lacks sent to proposal workers, each accepted
blueprint checked as it arrives, the rows written to the folder; then the recombinations.

One item per (domain, proposal index), then one per group of accepted blueprints of one user to join. An
accepted blueprint is checked here, in arrival order, against the excluded tasks and then against every
blueprint kept so far (`BlueprintGate`); a rejection rewrites the final row: `rejected` at stage
`decontamination` or `dedup`. The worker's side of a proposal is `pipeline.run.proposals`.

Recombination. After the proposals, accepted blueprints of one user are joined (`blueprints.recombine`): one
item per group, one row (proposal -1, round 0, `parents` naming the parts), id `D-r<8 hex of the parents>`,
so a rerun recognises the groups it has tried.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from apigen_mt.blueprints.dedup import Decontaminator, Deduplicator, write_tool_names
from apigen_mt.blueprints.loop import Phase1Models
from apigen_mt.blueprints.recombine import candidate_groups
from apigen_mt.blueprints.task_files import read_tasks
from apigen_mt.pipeline.config import BlueprintPhase, RunConfig
from apigen_mt.pipeline.engines.pool import Engines
from apigen_mt.pipeline.run.drive import RaySession, drive
from apigen_mt.pipeline.run.progress import FunnelProgress
from apigen_mt.pipeline.run.proposals import (
    RECOMBINED,
    ProposalItem,
    ProposalOutcome,
    RecombinationItem,
    proposal_id,
    unavailable_outcome,
)
from apigen_mt.pipeline.run.sources import LoadedSource, read_split_ids
from apigen_mt.pipeline.run.trials import stable_seed
from apigen_mt.pipeline.run.workers import ProposalWorker, WorkerPool, source_specs
from apigen_mt.pipeline.store.io import read_records
from apigen_mt.pipeline.store.manifest import ExcludedTasks
from apigen_mt.pipeline.store.proposal_rows import accepted_blueprints, final_rows
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.shards import BLUEPRINTS_DIR
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.types import Blueprint


@dataclass(frozen=True)
class PlannedDomain:
    """A domain's database and policy (a source without blueprints), and the number of proposals this run makes
    for it: indices 0 .. proposals - 1."""

    source: LoadedSource
    proposals: int


def planned_domain(name: str, data_dir: Path | None, proposals: int) -> PlannedDomain:
    """A domain's database and policy loaded for Phase 1. Raises KeyError (unknown domain), DataError (bad folder)."""
    domain = get_domain(name)
    source = LoadedSource(domain, data_dir, domain.load(data_dir), domain.policy_text(data_dir), [])
    return PlannedDomain(source, proposals)


@dataclass(frozen=True)
class ProposalPlan:
    """What Phase 1 proposes in one run, and the tasks no blueprint may reproduce (`--exclude-tasks`), with what the
    manifest says of them."""

    domains: tuple[PlannedDomain, ...]
    excluded: tuple[Blueprint, ...] = ()
    exclusion: ExcludedTasks | None = None


def recombination_items(
    accepted: Mapping[str, Sequence[Blueprint]], settings: BlueprintPhase, done: set[str]
) -> list[RecombinationItem]:
    """The groups to join, per domain: disjoint groups of the accepted blueprints (recombined ones excluded) that
    share a user, in the seeded order, the first `recombination.limit` of them, less those `done`."""
    items = []
    for domain in sorted(accepted):
        singles = [blueprint for blueprint in accepted[domain] if not blueprint.provenance.parents]
        groups = candidate_groups(singles, size=settings.recombination.size, seed=settings.seed)
        if settings.recombination.limit is not None:
            groups = groups[: settings.recombination.limit]
        for group in groups:
            item = RecombinationItem(domain, group, stable_seed(settings.seed, domain, RECOMBINED))
            if item.blueprint_id not in done:
                items.append(item)
    return items


def example_draw(accepted: Sequence[Blueprint], item_seed: int, count: int) -> tuple[Blueprint, ...]:
    """Up to `count` of the accepted blueprints, drawn with the proposal's seed: the example sampler's pool."""
    rng = random.Random(f"{item_seed}:accepted-examples")
    return tuple(rng.sample(list(accepted), min(count, len(accepted))))


class BlueprintGate:
    """Decontamination, then deduplication, of the blueprints the loop accepted, per domain, in arrival order."""

    def __init__(self, excluded: Sequence[Blueprint], settings: BlueprintPhase) -> None:
        self.excluded = list(excluded)
        self.settings = settings
        self._checks: dict[str, tuple[Decontaminator | None, Deduplicator]] = {}

    def _for(self, domain: str) -> tuple[Decontaminator | None, Deduplicator]:
        if domain not in self._checks:
            writes = write_tool_names(get_domain(domain))
            threshold = self.settings.decontamination_threshold
            decontaminator = Decontaminator(self.excluded, writes, threshold=threshold) if self.excluded else None
            self._checks[domain] = (decontaminator, Deduplicator(writes, threshold=self.settings.dedup_threshold))
        return self._checks[domain]

    def remember(self, blueprint: Blueprint) -> None:
        """Keep an earlier run's accepted blueprint, so that new ones are compared with it."""
        self._for(str(blueprint.domain))[1].check(blueprint)

    def check(self, blueprint: Blueprint) -> tuple[str, str] | None:
        """(stage, reason) when `blueprint` reproduces an excluded task or duplicates a kept one; else None, and
        it is kept."""
        decontaminator, deduplicator = self._for(str(blueprint.domain))
        if decontaminator is not None and (reason := decontaminator.check(blueprint)) is not None:
            return "decontamination", reason
        if (reason := deduplicator.check(blueprint)) is not None:
            return "dedup", reason
        return None


def load_excluded_tasks(path: Path, split: str | None = None) -> tuple[Blueprint, ...]:
    """The tasks of a file `validate` reads (JSON Lines or a JSON array: tau-bench's tasks_test.json, tau2-bench's
    tasks.json, blueprints), only those of `split` when given (tau2's split file beside it).

    Raises InputError for an unreadable file and ValueError (SourceError for the split) naming the first record
    that is not a task. tau2 tasks are read without a database: decontamination compares writes and instructions,
    not users."""
    split_ids = None if split is None else read_split_ids(path, split)
    tasks = []
    for task in read_tasks(read_records(path), domain=None, db=None, split_ids=split_ids):
        number = task.index + 1
        if task.problem is not None:
            raise ValueError(f"{path}: record {number} is not a task: {task.problem}")
        try:
            tasks.append(Blueprint.model_validate(task.record))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            raise ValueError(
                f"{path}: record {number} is not a task ({where}: {first['msg']}); a task is "
                '{"user_id", "instruction", "actions": [{"name", "arguments" or "kwargs"}], "outputs"} '
                'or a tau2-bench task {"id", "user_scenario", "evaluation_criteria"}'
            ) from None
    if split is not None and not tasks:
        raise ValueError(f"{path}: no task is in split {split!r}")
    return tuple(tasks)


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
            origin=f"Phase 1 ({BLUEPRINTS_DIR}/)",
        )
        for planned in plan.domains
    ]
