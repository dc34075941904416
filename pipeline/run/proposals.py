"""One Phase-1 proposal as a worker runs it, the twin of `pipeline.run.trials`: sample a context, run the
propose-validate-review-revise loop (`blueprints.loop`), and make the rows the run folder stores, one per round
(`BLUEPRINT_SCHEMA`); a recombination likewise, one row. The driver's side is `pipeline.run.phase1`; reading the
rows back, `pipeline.store.proposal_rows`.

Ids and seeds. Proposal i of domain D has the blueprint id `D-p<i, 4 digits>` and its own seed, made of the
config's seed, D and i, so a rerun samples the same context (the few-shot examples aside: they are drawn from
the blueprints accepted so far). Its revisions are rows with the same id and a higher `round`. A recombined
task's id is `D-r<8 hex of its parents' ids>` and its `proposal` -1.

Resume. A proposal's rows arrive together and are written one after another; `final` marks the last. A
proposal is done once its final row is stored: accepted, rejected in its last round or by decontamination or
deduplication, or failed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apigen_mt.blueprints.loop import Phase1Models, ProposalRecord, generate_blueprint
from apigen_mt.blueprints.proposer import is_refusal
from apigen_mt.blueprints.recombine import recombine
from apigen_mt.blueprints.samplers import sample_context
from apigen_mt.pipeline.config import BlueprintPhase
from apigen_mt.pipeline.engines.openai_backend import fallbacks_in_force
from apigen_mt.pipeline.store.manifest import utc_now
from apigen_mt.simulators.chat import ModelUnavailable
from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Blueprint


def proposal_id(domain: str, index: int) -> str:
    return f"{domain}-p{index:04d}"


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
