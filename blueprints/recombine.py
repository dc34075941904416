"""Reverse task recombination: validated blueprints of one user joined into one longer task.

    for group in candidate_groups(accepted, size=2, seed=seed):
        [record] = await recombine(group, domain, db, models, settings)
        record.status == "accepted"  ->  record.blueprint goes on to Phase 2; its provenance names the parts

1. `combine`: the parts' actions run one after the other, their outputs are merged, the parts become parents.
2. The combination is validated again by the validators' `stage_one` (format, execution, policy) on the
   database the parts were validated on. Every part passed alone, so whatever fails now is a conflict between
   parts: a write judged on the state an earlier part left (an exchange after a return of one order, a second
   modification of an order's items). Most such writes are refused by the tool too; the rules they break are
   reported with the tool's error, and the record is rejected at stage "policy", the stage this re-check
   stands for.
3. `rewrite_instruction`: the proposer writes one coherent instruction for the whole task. It must keep each
   id-like value (order or reservation number, zip code, date) that a part's instruction gives its calls.
4. Stages 2 and 3, the review committee (`loop.review_stage`); stage 1 is not repeated.

One record per group: the actions are fixed, so a revision round could change only the wording, and a
combination the committee refuses is dropped while its parts stay accepted on their own.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from typing import Any

from apigen_mt.blueprints.dedup import write_tool_names
from apigen_mt.blueprints.loop import Phase1Models, Phase1Settings, ProposalRecord, review_stage
from apigen_mt.blueprints.prompts import task_json, touched_records
from apigen_mt.blueprints.proposer import INSTRUCTION_MAX_CHARS, ProposalResult, ProposerSettings, ask
from apigen_mt.simulators.chat import ChatModel, ChatRequest, SamplingParams
from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.strict_json import StrictJSONError, loads_strict
from apigen_mt.simulators.types import Blueprint, Message, Provenance, ToolCall
from apigen_mt.validators import execution
from apigen_mt.validators.blueprint import stage_one

INSTRUCTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"instruction": {"type": "string", "maxLength": INSTRUCTION_MAX_CHARS}},
    "required": ["instruction"],
    "additionalProperties": False,
}

DEFAULT_PROPOSER = ProposerSettings()


# --- grouping and combining ----------------------------------------------------------------------------


def candidate_groups(blueprints: Sequence[Blueprint], *, size: int = 2, seed: int) -> list[tuple[Blueprint, ...]]:
    """Disjoint groups of `size` blueprints sharing domain and user, shuffled per user by `seed`.

    Blueprints without a domain or user cannot be grouped; a blueprint listed twice (same id) is used once;
    a user's leftover blueprints (fewer than `size`) stay alone. Whether a group's writes conflict is for
    `conflicts` to say. Users come in sorted order, and each user's shuffle depends only on the seed and that
    user's blueprints (sorted by id), so the groups do not change with the input's order or other users.
    """
    if size < 2:
        raise ValueError(f"a recombined task joins at least 2 blueprints, got size={size}")
    by_user: dict[tuple[str, str], list[Blueprint]] = {}
    seen: set[str] = set()
    for blueprint in blueprints:
        if blueprint.domain is None or blueprint.user_id is None:
            continue
        if blueprint.id is not None:
            if blueprint.id in seen:
                continue
            seen.add(blueprint.id)
        by_user.setdefault((blueprint.domain, blueprint.user_id), []).append(blueprint)
    groups: list[tuple[Blueprint, ...]] = []
    for domain, user_id in sorted(by_user):
        members = sorted(by_user[domain, user_id], key=lambda blueprint: blueprint.id or "")
        random.Random(f"recombine/{seed}/{domain}/{user_id}").shuffle(members)  # a str seed is hashed stably
        groups.extend(tuple(members[start : start + size]) for start in range(0, len(members) - size + 1, size))
    return groups


def combine(group: Sequence[Blueprint], domain: Domain) -> Blueprint:
    """The parts' actions in order, their outputs merged without repeats, their ids as parents, and an interim
    instruction (the parts' instructions, one paragraph each) until `rewrite_instruction` writes the real one.

    A read the combination already made (same tool, same arguments: the user's lookup both parts start with)
    is made once: reads change no state, and a ground truth does not repeat itself. Writes all stay."""
    if len(group) < 2:
        raise ValueError(f"a recombined task joins at least 2 blueprints, got {len(group)}")
    first = group[0]
    parents: list[str] = []
    for part in group:
        if part.id is None:
            raise ValueError("every part needs an id, to be named among the combination's parents")
        if (part.domain, part.user_id) != (first.domain, first.user_id):
            raise ValueError(
                f"parts of one task share domain and user: {part.id} is ({part.domain}, {part.user_id}), "
                f"{first.id} is ({first.domain}, {first.user_id})"
            )
        parents.append(part.id)
    return Blueprint(
        domain=first.domain,
        user_id=first.user_id,
        instruction="\n\n".join(part.instruction.strip() for part in group),
        actions=_without_repeated_reads([call for part in group for call in part.actions], write_tool_names(domain)),
        outputs=list(dict.fromkeys(output for part in group for output in part.outputs)),
        provenance=Provenance(
            context_ids=list(dict.fromkeys(cid for part in group for cid in part.provenance.context_ids)),
            parents=parents,
        ),
    )


def _without_repeated_reads(calls: Sequence[ToolCall], writes: frozenset[str]) -> list[ToolCall]:
    kept: list[ToolCall] = []
    for call in calls:
        if call.name in writes or all((call.name, call.arguments) != (done.name, done.arguments) for done in kept):
            kept.append(call.model_copy(deep=True))
    return kept


def _recheck(domain: Domain, db: JSON, combined: Blueprint) -> tuple[list[str], JSON | None]:
    """Why the combination breaks the policy on `db` (the failing stage's reasons; after a write the tool
    refused, the `[RULE]` reasons too; empty when it passes), and its diff_patch (None when it did not run)."""
    verdicts = stage_one(domain, db, combined)
    executed = next((verdict for verdict in verdicts if verdict.stage == execution.STAGE), None)
    diff_patch = None if executed is None else executed.details["diff_patch"]
    failed = next((verdict for verdict in verdicts if not verdict.passed), None)
    return ([] if failed is None else list(failed.reasons)), diff_patch


# --- the new instruction --------------------------------------------------------------------------------

_REWRITE_PROMPT = """\
You write instructions for a simulated customer who chats with a customer-service agent. Several tasks of \
the same customer, each with its own instruction, tool calls and outputs, are joined into one longer \
conversation: the agent makes the calls of every part, in the order given. Write the one instruction the \
customer gets for that conversation.

- Address the customer as "you": who they are and how they identify themselves, then everything they want, \
in the order of the parts, as one visit with several requests rather than separate stories.
- Keep every detail each part's instruction gives: order or reservation numbers, items and options, \
addresses, payment methods, reasons, the answers to the agent's choices, and the questions whose answers \
are the outputs. Copy numbers and ids exactly.
- Add no request the calls do not carry out and no detail the parts do not give. Say once what the parts \
repeat, such as the customer's identification.

Answer with one JSON object {"instruction": str}."""


def instruction_request(
    combined: Blueprint, parts: Sequence[Blueprint], settings: ProposerSettings = DEFAULT_PROPOSER
) -> ChatRequest:
    """The request for the combination's instruction, sampled as the proposer is (its temperature, token
    budget, and a seed per combination when `settings.seed` is set)."""
    sections = [f"# The customer\nuser id: {combined.user_id}"]
    sections += [f"# Part {number}\n{task_json(part)}" for number, part in enumerate(parts, start=1)]
    sections.append(
        "The combined task makes all these calls in this order, and the agent tells the customer every part's "
        "outputs. Write the customer's instruction for the combined task."
    )
    messages = [
        Message(role="system", content=_REWRITE_PROMPT),
        Message(role="user", content="\n\n".join(sections)),
    ]
    sampling = SamplingParams(
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=_rewrite_seed(settings.seed, combined.provenance.parents),
    )
    schema = INSTRUCTION_SCHEMA if settings.structured else None
    return ChatRequest(messages=messages, json_schema=schema, sampling=sampling)


def _rewrite_seed(base: int | None, parents: Sequence[str]) -> int | None:
    """A seed per combination, within 31 bits for every backend."""
    if base is None:
        return None
    digest = hashlib.sha256(f"{base}/recombine/{'/'.join(parents)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_instruction(text: str) -> str | None:
    """The non-empty `instruction` of the reply's JSON object (the whole reply, else its last fenced block)."""
    fences = _FENCE.findall(text)
    for candidate in (text.strip(), *fences[-1:]):
        try:
            decoded = loads_strict(candidate.strip(), "the instruction reply")
        except StrictJSONError:
            continue
        instruction = decoded.get("instruction") if isinstance(decoded, dict) else None
        if isinstance(instruction, str) and instruction.strip():
            return instruction.strip()
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def dropped_details(instruction: str, parts: Sequence[Blueprint]) -> list[str]:
    """The id-like argument values (any with a digit: order and reservation numbers, zip codes, dates) that a
    part's instruction gives its calls and `instruction` leaves out, in order of appearance."""
    dropped: list[str] = []
    for part in parts:
        for call in part.actions:
            for value in _strings(call.arguments):
                if (
                    any(character.isdigit() for character in value)
                    and value in part.instruction
                    and value not in instruction
                    and value not in dropped
                ):
                    dropped.append(value)
    return dropped


async def rewrite_instruction(
    model: ChatModel,
    combined: Blueprint,
    parts: Sequence[Blueprint],
    settings: ProposerSettings = DEFAULT_PROPOSER,
) -> ProposalResult:
    """Ask `model` for the combination's instruction and check it. A dead engine (`ModelUnavailable`) propagates."""
    result, completion = await ask(model, instruction_request(combined, parts, settings))
    if completion is None:
        return result
    instruction = parse_instruction(completion.text)
    if instruction is None:
        cut = " (cut off at max_tokens)" if completion.finish_reason == "length" else ""
        result.problem = (
            f'the reply is not a JSON object {{"instruction": str}} with a non-empty instruction{cut}: '
            f"{completion.text[:200]!r}"
        )
        return result
    dropped = dropped_details(instruction, parts)
    if dropped:
        result.problem = f"the new instruction leaves out details the parts give: {', '.join(dropped)}"
        return result
    result.blueprint = combined.model_copy(update={"instruction": instruction})
    return result


# --- the whole step ----------------------------------------------------------------------------------------


async def recombine(
    group: Sequence[Blueprint],
    domain: Domain,
    db: JSON,
    models: Phase1Models,
    settings: Phase1Settings,
) -> list[ProposalRecord]:
    """The record of one combination (round 0, its blueprint's provenance naming the parts): rejected at
    "policy" on a conflict, at "format" when the new instruction is unusable, accepted or rejected by the
    committee otherwise; `failed` when a backend fails. The rewriter is the proposer model."""
    combined = combine(group, domain)
    if combined.domain != domain.name:
        raise ValueError(f"the parts belong to domain {combined.domain!r}, not {domain.name!r}")
    reasons, diff_patch = _recheck(domain, db, combined)
    record = ProposalRecord(round=0, status="rejected", blueprint=combined, diff_patch=diff_patch)
    if reasons:
        record.failed_stage, record.reasons = "policy", reasons
        return [record]
    result = await rewrite_instruction(models.proposer, combined, group, settings.proposer)
    record.text, record.model_id = result.text, result.model_id
    record.prompt_tokens, record.completion_tokens = result.prompt_tokens, result.completion_tokens
    if result.error is not None:
        record.status, record.reasons = "failed", [f"the rewriter's backend failed: {result.error}"]
        return [record]
    if result.blueprint is None:
        record.failed_stage, record.reasons = "format", [result.problem or "no instruction in the reply"]
        return [record]
    record.blueprint = result.blueprint
    reviewed, _ = await review_stage(
        record,
        result.blueprint,
        domain.policy,
        models.reviewers,
        settings.review,
        refusal=False,
        records=touched_records(db, result.blueprint),
    )
    return [reviewed]
