"""The Phase-1 loop for one sampled context: propose, validate in three stages, and revise after feedback.

    records = await generate_blueprint(context, domain, db, models, settings, refusal=...)
    records[-1].status == "accepted"  ->  records[-1].blueprint goes on to Phase 2

Each round is one proposal (round 0) or revision (rounds 1..max_rounds) and gives one `ProposalRecord`:
1. Stage 1, action validation: the reply must parse; the task must fit its kind (at least one call; a refusal
   makes no write; any other task writes or expects an output, or no agent could fail it); then the validators'
   `stage_one` runs format, execution and policy as `apigen-mt validate` does. A refusal must also leave the
   database as it was.
2. Stage 2, the review committee votes on the blueprint and its `diff_patch`.
3. Stage 3: accepted when the voted score reaches the threshold. Otherwise the failing stage's reasons (or
   the reviewers' reflections) become an improvement plan, and the proposer revises the blueprint.
The loop ends at the first acceptance, at a `failed` record, or after `max_rounds` revisions.

`rejected` is the proposer's fault and earns a revision; `failed` is the system's (a backend error, or a
committee none of whose reviews could be read) and ends the loop, since a revision would not help. A dead
engine (`ModelUnavailable`) propagates from every role, so that the driver can retry the whole context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apigen_mt.blueprints.dedup import write_tool_names
from apigen_mt.blueprints.feedback import reasons_plan, summarise_feedback
from apigen_mt.blueprints.prompts import touched_records
from apigen_mt.blueprints.proposer import ProposerSettings, propose
from apigen_mt.blueprints.review import ReviewSettings, review
from apigen_mt.blueprints.samplers import SampledContext
from apigen_mt.simulators.chat import ChatModel
from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Blueprint, Verdict
from apigen_mt.validators import execution
from apigen_mt.validators import format as format_stage
from apigen_mt.validators.blueprint import stage_one

# Reflection rounds after the first proposal, as in the paper; a domain not listed gets the smaller number.
DEFAULT_MAX_ROUNDS = {"retail": 3, "airline": 5}
FALLBACK_MAX_ROUNDS = 3

Status = Literal["accepted", "rejected", "failed"]
FailedStage = Literal["format", "execution", "policy", "review"]


@dataclass(frozen=True)
class Phase1Models:
    """The models of the Phase-1 roles; the committee's K reviewers take `reviewers` in turn."""

    proposer: ChatModel
    reviewers: Sequence[ChatModel]
    summariser: ChatModel


class Phase1Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    proposer: ProposerSettings = Field(default_factory=ProposerSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    max_rounds: int | None = Field(
        None, ge=0, le=100, description="revisions after the first proposal; None: 3 for retail, 5 for airline"
    )

    def rounds_for(self, domain: str) -> int:
        if self.max_rounds is not None:
            return self.max_rounds
        return DEFAULT_MAX_ROUNDS.get(domain, FALLBACK_MAX_ROUNDS)


class ProposalRecord(BaseModel):
    """One proposal or revision and what became of it: a row of the blueprints shards.

    `feedback` is the improvement plan this round answered (None in round 0). Tokens count the proposer's
    request and the committee's; `model_id` is the proposer's.
    """

    round: int
    status: Status
    failed_stage: FailedStage | None = None
    reasons: list[str] = Field(default_factory=list)
    blueprint: Blueprint | None = None
    diff_patch: list[dict[str, Any]] | None = None
    votes: dict[str, Any] | None = None
    refusal: bool = False
    feedback: str | None = None
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_id: str = ""


async def generate_blueprint(
    context: SampledContext,
    domain: Domain,
    db: JSON,
    models: Phase1Models,
    settings: Phase1Settings,
    *,
    refusal: bool,
) -> list[ProposalRecord]:
    """Every round's record for this context, the last one accepted, failed, or the final rejection."""
    if context.domain != domain.name:
        raise ValueError(f"the context was sampled for domain {context.domain!r}, not {domain.name!r}")
    writes = write_tool_names(domain)
    records: list[ProposalRecord] = []
    feedback: str | None = None
    previous: Blueprint | None = None
    last_round = settings.rounds_for(domain.name)
    for round in range(last_round + 1):
        record, failed = await _attempt(
            context,
            domain,
            db,
            models,
            settings,
            writes,
            refusal=refusal,
            round=round,
            feedback=feedback,
            previous=previous,
        )
        records.append(record)
        if failed is None or round == last_round:
            break
        if record.blueprint is None:  # nothing readable to reflect on: the parse problem is the plan
            feedback = reasons_plan(failed)
        else:
            feedback = await summarise_feedback(models.summariser, record.blueprint, failed)
            previous = record.blueprint
    return records


async def _attempt(
    context: SampledContext,
    domain: Domain,
    db: JSON,
    models: Phase1Models,
    settings: Phase1Settings,
    writes: frozenset[str],
    *,
    refusal: bool,
    round: int,
    feedback: str | None,
    previous: Blueprint | None,
) -> tuple[ProposalRecord, Verdict | None]:
    """One round's record, and the failed verdict to revise from when it is `rejected` (None otherwise)."""
    result = await propose(
        models.proposer, context, settings.proposer, refusal=refusal, feedback=feedback, previous=previous, round=round
    )
    record = ProposalRecord(
        round=round,
        status="rejected",
        refusal=refusal,
        feedback=feedback,
        text=result.text,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        model_id=result.model_id,
    )
    if result.error is not None:
        record.status, record.reasons = "failed", [f"the proposer's backend failed: {result.error}"]
        return record, None
    if result.blueprint is None:
        unparsed = Verdict(stage=format_stage.STAGE, passed=False, reasons=[result.problem or "no task in the reply"])
        return _reject(record, unparsed)
    blueprint = record.blueprint = result.blueprint
    kind_problems = task_kind_problems(blueprint, writes, refusal=refusal)
    if kind_problems:
        return _reject(record, Verdict(stage=format_stage.STAGE, passed=False, reasons=kind_problems))
    verdicts = stage_one(domain, db, blueprint)
    executed = next((verdict for verdict in verdicts if verdict.stage == execution.STAGE), None)
    record.diff_patch = None if executed is None else executed.details["diff_patch"]
    failed = next((verdict for verdict in verdicts if not verdict.passed), None)
    if failed is not None:
        return _reject(record, failed)
    if refusal and record.diff_patch:  # reads never change the database; this guards the tools' contract
        reason = (
            f"a refusal task must leave the database unchanged, but its actions make {len(record.diff_patch)} change(s)"
        )
        return _reject(record, Verdict(stage=execution.STAGE, passed=False, reasons=[reason]))
    # Reviewers judge against the policy: the whole of it when the policy sampler left the excerpt out.
    policy = context.policy_excerpt or domain.policy
    records = touched_records(db, blueprint)
    return await review_stage(
        record, blueprint, policy, models.reviewers, settings.review, refusal=refusal, records=records
    )


async def review_stage(
    record: ProposalRecord,
    blueprint: Blueprint,
    policy: str,
    reviewers: Sequence[ChatModel],
    settings: ReviewSettings,
    *,
    refusal: bool,
    records: dict[str, Any] | None = None,
) -> tuple[ProposalRecord, Verdict | None]:
    """Stages 2 and 3 for `blueprint`, which passed stage 1 and whose `diff_patch` the record holds: the committee
    votes, its tokens add to the record's, and the record ends accepted, rejected (with the failing verdict
    returned) or failed."""
    committee = await review(
        reviewers, blueprint, record.diff_patch, policy, settings, refusal=refusal, records=records
    )
    record.votes = committee.votes
    record.prompt_tokens += sum(ballot.prompt_tokens for ballot in committee.ballots)
    record.completion_tokens += sum(ballot.completion_tokens for ballot in committee.ballots)
    verdict = committee.as_verdict()
    if committee.score is None:
        record.status, record.failed_stage, record.reasons = "failed", "review", verdict.reasons
        return record, None
    if committee.passed:
        record.status = "accepted"
        return record, None
    return _reject(record, verdict)


def _reject(record: ProposalRecord, failed: Verdict) -> tuple[ProposalRecord, Verdict]:
    record.status, record.failed_stage, record.reasons = "rejected", failed.stage, list(failed.reasons)
    return record, failed


def task_kind_problems(blueprint: Blueprint, writes: frozenset[str], *, refusal: bool) -> list[str]:
    """Why the blueprint does not fit its kind: a refusal that writes, or another task that no agent could fail."""
    written = [(index, call.name) for index, call in enumerate(blueprint.actions) if call.name in writes]
    if refusal:
        problems = [
            f"action {index} ({name}) changes the database, but in a refusal task the agent declines and "
            "changes nothing"
            for index, name in written
        ]
        if not blueprint.actions:
            # Without a single lookup the agent could decline blindly and pass: the ground truth must show the
            # reads (the user's identity, the record in question) that make the refusal an informed one.
            problems.append(
                "a refusal task needs the lookups that show why the request is refused (the user's identity, the "
                "record it concerns); it has no actions"
            )
        return problems
    if not blueprint.actions:
        # The facts a customer asks for come from the records: the ground truth must show the reads that give them.
        return [
            "the task has no actions; add the write calls the customer's request needs, or the look-ups that "
            "give the facts it expects as outputs"
        ]
    if not written and not blueprint.outputs:
        reason = (
            "the task neither changes the database nor expects an output, so no agent could fail it; add the "
            "write calls the customer's request needs, or the facts they ask for as outputs"
        )
        return [reason]
    return []
