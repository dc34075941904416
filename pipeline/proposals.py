"""One Phase-1 proposal as the run driver runs it: sample a context, run the propose-validate-review-revise loop
(`blueprints.loop`), and make the rows the blueprint shards store, one per round (`BLUEPRINT_SCHEMA`); and what
the driver needs of those shards: the proposals already done and the accepted blueprints (their funnel:
`pipeline.proposal_funnel`).

Ids and seeds. Proposal i of domain D has the blueprint id `D-p<i, 4 digits>` and its own seed, made of the
config's seed, D and i, so a rerun samples the same context (the few-shot examples aside: they are drawn from
the blueprints accepted so far). Its revisions are rows with the same id and a higher `round`.

Recombination. After the proposals, accepted blueprints of one user are joined (`blueprints.recombine`): one
item per group, one row (proposal -1, round 0, `parents` naming the parts), id `D-r<8 hex of the parents>`,
so a rerun recognises the groups it has tried.

Resume. A proposal's rows arrive together and are written one after another; `final` marks the last. A
proposal is done once its final row is stored: accepted, rejected in its last round or by decontamination or
deduplication, or failed. A run killed between two rows of a proposal leaves rounds without a final row; the
next run proposes it again from round 0, and `stored_proposals` keeps only the rows of the run that wrote the
final row (per round, the row written last, up to the final round).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from apigen_mt.blueprints.dedup import Decontaminator, Deduplicator, write_tool_names
from apigen_mt.blueprints.loop import Phase1Models, ProposalRecord, generate_blueprint
from apigen_mt.blueprints.proposer import is_refusal
from apigen_mt.blueprints.recombine import candidate_groups, recombine
from apigen_mt.blueprints.samplers import sample_context
from apigen_mt.pipeline.config import BlueprintPhase
from apigen_mt.pipeline.io import read_records
from apigen_mt.pipeline.manifest import utc_now
from apigen_mt.pipeline.openai_backend import fallbacks_in_force
from apigen_mt.pipeline.sources import LoadedSource
from apigen_mt.pipeline.trials import stable_seed
from apigen_mt.simulators.chat import ModelUnavailable
from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Blueprint


def proposal_id(domain: str, index: int) -> str:
    return f"{domain}-p{index:04d}"


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
    """What Phase 1 proposes in one run, and the tasks no blueprint may reproduce (`--exclude-tasks`)."""

    domains: tuple[PlannedDomain, ...]
    excluded: tuple[Blueprint, ...] = ()


@dataclass(frozen=True)
class ProposalItem:
    """One proposal to run. `examples`: accepted blueprints for the example sampler; `attempt` counts runs after
    engine failures (1 = first)."""

    domain: str
    index: int
    seed: int
    examples: tuple[Blueprint, ...] = ()
    attempt: int = 1

    @property
    def blueprint_id(self) -> str:
        return proposal_id(self.domain, self.index)


RECOMBINED = -1  # the `proposal` of a recombined task's row


def recombined_id(domain: str, parents: Sequence[str]) -> str:
    return f"{domain}-r{hashlib.sha256('/'.join(parents).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class RecombinationItem:
    """One group of accepted blueprints of one user to join; `attempt` as for proposals."""

    domain: str
    parts: tuple[Blueprint, ...]
    seed: int
    attempt: int = 1
    index: int = RECOMBINED

    @property
    def blueprint_id(self) -> str:
        return recombined_id(self.domain, [str(part.id) for part in self.parts])


@dataclass(frozen=True)
class ProposalOutcome:
    """The rows of one proposal, the last one final; `retry` when its engine died under it (one failed row)."""

    rows: list[dict[str, Any]]
    retry: bool = False


async def run_proposal(
    domain: Domain, db: JSON, item: ProposalItem, models: Phase1Models, settings: BlueprintPhase
) -> ProposalOutcome:
    """Sample the item's context and run the loop on it. Every outcome is rows; a dead engine asks for a retry."""
    try:
        context = sample_context(domain, db, seed=item.seed, settings=settings.sampler, accepted=item.examples)
    except ValueError as exc:  # the database cannot give this domain's writes a user: no proposal can help
        reason = f"no context could be sampled: {exc}"
        return ProposalOutcome([system_row(item, models.proposer.model_id, reason, _fallbacks(models))])
    refusal = is_refusal(item.seed, settings.proposer.refusal_share)
    try:
        records = await generate_blueprint(context, domain, db, models, settings, refusal=refusal)
    except ModelUnavailable as exc:
        return unavailable_outcome(item, models.proposer.model_id, f"engine unavailable: {exc}")
    last, fallbacks = len(records) - 1, _fallbacks(models)
    return ProposalOutcome(
        [
            _row(item, record, context.user_id, context.context_ids, final=n == last, fallbacks=fallbacks)
            for n, record in enumerate(records)
        ]
    )


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


async def run_recombination(
    domain: Domain, db: JSON, item: RecombinationItem, models: Phase1Models, settings: BlueprintPhase
) -> ProposalOutcome:
    """Join the item's parts, re-check, rewrite the instruction and review: one final row."""
    try:
        [record] = await recombine(item.parts, domain, db, models, settings)
    except ModelUnavailable as exc:
        return unavailable_outcome(item, models.proposer.model_id, f"engine unavailable: {exc}")
    context_ids = record.blueprint.provenance.context_ids if record.blueprint else []
    row = _row(item, record, item.parts[0].user_id, context_ids, final=True, fallbacks=_fallbacks(models))
    return ProposalOutcome([row])


def unavailable_outcome(item: ProposalItem | RecombinationItem, model_id: str, reason: str) -> ProposalOutcome:
    """A proposal its engine or worker could not finish: run again while attempts remain, else stored as failed."""
    return ProposalOutcome([system_row(item, model_id, f"{reason} (attempt {item.attempt})")], retry=True)


def _row(
    item: ProposalItem | RecombinationItem,
    record: ProposalRecord,
    user_id: str | None,
    context_ids: Sequence[str],
    *,
    final: bool,
    fallbacks: list[str],
) -> dict[str, Any]:
    blueprint = record.blueprint.model_copy(update={"id": item.blueprint_id}) if record.blueprint else None
    return {
        **_identity(item, final=final),
        "round": record.round,
        "status": record.status,
        "failed_stage": record.failed_stage,
        "reasons": list(record.reasons),
        "parents": list(blueprint.provenance.parents) if blueprint else [],
        "blueprint": json.dumps(blueprint.model_dump(mode="json") if blueprint else None),
        "diff_patch": json.dumps(record.diff_patch),
        "votes": json.dumps(record.votes, allow_nan=False),
        "refusal": record.refusal,
        "feedback": record.feedback,
        "text": record.text,
        "user_id": user_id,
        "context_ids": list(context_ids),
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "proposer_model": record.model_id,
        "fallbacks": fallbacks,
    }


def _fallbacks(models: Phase1Models) -> list[str]:
    """The `fallbacks` column: what the endpoints of the proposal's models work around, as its rows are made."""
    return fallbacks_in_force([models.proposer, *models.reviewers, models.summariser])


def system_row(
    item: ProposalItem | RecombinationItem, model_id: str, reason: str, fallbacks: list[str] | None = None
) -> dict[str, Any]:
    """The final row of a proposal the system could not run (no context, no engine): failed before any stage.
    `fallbacks` None: not known (the worker that ran it died)."""
    return {
        **_identity(item, final=True),
        "round": 0,
        "status": "failed",
        "failed_stage": None,
        "reasons": [reason],
        "parents": [],
        "blueprint": "null",
        "diff_patch": "null",
        "votes": "null",
        "refusal": False,
        "feedback": None,
        "text": "",
        "user_id": None,
        "context_ids": [],
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "proposer_model": model_id,
        "fallbacks": fallbacks,
    }


def _identity(item: ProposalItem | RecombinationItem, *, final: bool) -> dict[str, Any]:
    return {
        "blueprint_id": item.blueprint_id,
        "domain": item.domain,
        "proposal": item.index,
        "final": final,
        "attempt": item.attempt,
        "seed": item.seed,
        "finished_at": utc_now(),
    }


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


def load_excluded_tasks(path: Path) -> tuple[Blueprint, ...]:
    """The tasks of a file `validate` reads (JSON Lines or a JSON array, e.g. tau-bench's tasks_test.json).

    Raises InputError for an unreadable file and ValueError naming the first record that is not a task."""
    tasks = []
    for number, record in enumerate(read_records(path), start=1):
        try:
            tasks.append(Blueprint.model_validate(record))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            raise ValueError(
                f"{path}: record {number} is not a task ({where}: {first['msg']}); a task is "
                '{"user_id", "instruction", "actions": [{"name", "arguments" or "kwargs"}], "outputs"}'
            ) from None
    return tuple(tasks)
