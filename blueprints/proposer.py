"""The proposer: an LLM that writes one task blueprint from a sampled context, or revises one after feedback.

    refusal = is_refusal(context.seed, settings.refusal_share)
    result = await propose(model, context, settings, refusal=refusal)
    result.blueprint or result.problem or result.error

The reply is brief reasoning plus a JSON task `{instruction, actions, outputs}`. Under structured outputs
(`settings.structured`) the whole reply is one JSON object whose `actions` follow the sampled tools'
call schema; otherwise the model writes `<thought>...</thought><answer>{...}</answer>`. `parse_proposal`
reads either form, and also a bare JSON object or a fenced JSON block, since weak models drift between them.

A refusal task asks for something the policy forbids: its ground truth makes no write. Under structured
outputs its schema offers only the tools that do not write, so the model cannot break that by construction.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apigen_mt.blueprints.prompts import proposer_system_prompt, proposer_user_message
from apigen_mt.blueprints.samplers import SampledContext
from apigen_mt.simulators.chat import ChatModel, ChatRequest, Completion, SamplingParams
from apigen_mt.simulators.strict_json import StrictJSONError, loads_strict
from apigen_mt.simulators.types import Blueprint, Message, Provenance, ToolSpec
from apigen_mt.simulators.xlam import text_field_limit, tool_calls_schema

# Under a grammar a reply cut off by the token limit is broken JSON, and weak models ramble in free text until
# they hit it. Capping the free-text fields (at about three characters a token) leaves room for the actions
# within the default max_tokens; the longest shipped or tau-bench instruction has 1,422 characters.
THOUGHT_MAX_CHARS = 1200
INSTRUCTION_MAX_CHARS = 2000
# A structured proposal's lists are bounded too, so that the grammar always leaves room to close the JSON.
MAX_ACTIONS = 8
MAX_OUTPUTS = 4


class ProposerSettings(BaseModel):
    """How the proposer model is asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    structured: bool = Field(True, description="generate the reply as one JSON object under a JSON schema")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of each proposal")
    max_tokens: int = Field(
        2048, ge=1, le=2**24, description="tokens one proposal (reasoning included) may use (2^24 is above any context)"
    )
    refusal_share: float = Field(0.1, ge=0, le=1, description="share of proposals that are refusal tasks")
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="base sampling seed (32 bits), mixed with the context seed and round"
    )


class ProposalError(BaseModel):
    """Why a proposer reply could not be read as a task."""

    reason: str


class ProposalResult(BaseModel):
    """One proposer reply: the blueprint read from it, or why there is none.

    `problem` is the proposer's fault (an unreadable reply); `error` is the backend's (no reply at all).
    """

    blueprint: Blueprint | None = None
    problem: str | None = None
    error: str | None = None
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_id: str = ""


def is_refusal(seed: int, share: float) -> bool:
    """Whether the task for this context seed is a refusal task: a draw from the seed alone, so a rerun agrees."""
    if not 0 <= share <= 1:
        raise ValueError(f"refusal share must be between 0 and 1, got {share}")
    digest = hashlib.sha256(f"refusal/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def proposal_schema(tools: list[ToolSpec], *, refusal: bool, max_tokens: int = 2048) -> dict[str, Any]:
    """The JSON Schema of a structured proposal; a refusal task may call only the tools that do not write.

    The free-text fields share what a reply of `max_tokens` can close (`text_field_limit`): a model that
    rambles is stopped by the grammar inside a field, not cut off by the token limit in broken JSON.
    """
    callable_tools = [tool for tool in tools if not tool.writes] if refusal else tools
    budget = text_field_limit(max_tokens)
    # A quarter for the reasoning, half for the instruction, the rest for arguments and outputs.
    argument_chars = max(16, budget // 32)
    # At least one call, as stage 1 asks of a generated task (`task_kind_problems`): without the grammar's
    # floor, an empty list was the weak proposer's favourite way out.
    actions = (
        tool_calls_schema(callable_tools, MAX_ACTIONS, argument_chars)
        if callable_tools
        else {"type": "array", "maxItems": 0}  # a refusal in a domain without reads: stage 1 says why it fails
    )
    return {
        "type": "object",
        "properties": {  # thought first: the model reasons before it commits to the task
            "thought": {"type": "string", "maxLength": min(THOUGHT_MAX_CHARS, budget // 4)},
            "instruction": {"type": "string", "maxLength": min(INSTRUCTION_MAX_CHARS, budget // 2)},
            "actions": actions,
            "outputs": {
                "type": "array",
                "items": {"type": "string", "maxLength": argument_chars},
                "maxItems": MAX_OUTPUTS,
            },
        },
        "required": ["thought", "instruction", "actions", "outputs"],
        "additionalProperties": False,
    }


def proposer_request(
    context: SampledContext,
    settings: ProposerSettings,
    *,
    refusal: bool,
    feedback: str | None = None,
    previous: Blueprint | None = None,
    round: int = 0,
) -> ChatRequest:
    """The request for a new task (round 0), or for a revision following `feedback` of `previous`.

    No tools are offered: the proposer writes calls as data, described in the prompt, not to run them.
    """
    messages = [
        Message(role="system", content=proposer_system_prompt(structured=settings.structured)),
        Message(
            role="user", content=proposer_user_message(context, refusal=refusal, feedback=feedback, previous=previous)
        ),
    ]
    sampling = SamplingParams(
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=_sampling_seed(settings.seed, context.seed, round),
    )
    schema = (
        proposal_schema(context.tools, refusal=refusal, max_tokens=settings.max_tokens) if settings.structured else None
    )
    return ChatRequest(messages=messages, json_schema=schema, reply_format="text", sampling=sampling)


def _sampling_seed(base: int | None, context_seed: int, round: int) -> int | None:
    """A seed per context and round (a revision must not repeat the draft), within 31 bits for every backend."""
    if base is None:
        return None
    digest = hashlib.sha256(f"{base}/{context_seed}/{round}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_proposal(text: str, context: SampledContext, *, round: int = 0) -> Blueprint | ProposalError:
    """The blueprint in a proposer reply, with domain, user and provenance from `context`; or why there is none.

    Read in this order: the whole reply as a JSON object (structured outputs), the last `<answer>` section,
    the last fenced JSON block. The task's own fields are checked for shape only; whether its calls fit the
    domain's tools is the format stage's question.
    """
    task = _task_object(text)
    if isinstance(task, ProposalError):
        return task
    problems = []
    instruction = task.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        problems.append("the task has no instruction (a non-empty string)")
    if "actions" not in task:
        problems.append('the task has no "actions" list (the tool calls a correct agent makes)')
    if problems:
        return ProposalError(reason="; ".join(problems))
    raw = {
        "domain": context.domain,
        "user_id": context.user_id,
        "instruction": instruction,
        "actions": task["actions"],
        "outputs": task.get("outputs") if task.get("outputs") is not None else [],
        "provenance": Provenance(context_ids=list(context.context_ids), seed=context.seed, round=round),
    }
    try:
        return Blueprint.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()]
        return ProposalError(reason="; ".join(problems))


def _task_object(text: str) -> dict[str, Any] | ProposalError:
    stripped = text.strip()
    if not stripped:
        return ProposalError(reason="the reply is empty")
    whole = _json_object(stripped, "the reply")
    if isinstance(whole, dict):
        return whole
    answers = _ANSWER.findall(text)
    if answers:
        body = answers[-1].strip()
        fenced = _FENCE.search(body)
        found = _json_object(fenced.group(1).strip() if fenced else body, "the <answer> section")
        return found if isinstance(found, dict) else ProposalError(reason=found)
    if re.search(r"<answer>", text, re.IGNORECASE):
        return ProposalError(reason="the <answer> section is never closed with </answer>")
    fences = _FENCE.findall(text)
    if fences:
        found = _json_object(fences[-1].strip(), "the fenced JSON block")
        return found if isinstance(found, dict) else ProposalError(reason=found)
    if stripped.startswith(("{", "[")):  # meant as JSON (structured outputs), so say what breaks it
        return ProposalError(reason=whole)
    return ProposalError(reason="the reply holds neither a JSON object nor an <answer>...</answer> section with one")


def _json_object(text: str, where: str) -> dict[str, Any] | str:
    """The JSON object `text` holds, or what is wrong with it, naming it as `where`."""
    try:
        decoded = loads_strict(text, where)
    except StrictJSONError as exc:
        return str(exc)
    if not isinstance(decoded, dict):
        return f"{where} is JSON but not an object {{instruction, actions, outputs}}"
    return decoded


async def ask(model: ChatModel, request: ChatRequest) -> tuple[ProposalResult, Completion | None]:
    """Send a Phase-1 request: the result with the reply's text and tokens, and the completion to read; no
    completion when the backend failed (`result.error` says why). A dead engine (`ModelUnavailable`) propagates."""
    response = await model.chat(request)
    result = ProposalResult(model_id=response.model or model.model_id)
    if not response.ok:
        result.error = response.error or "the backend answered without a completion"
        return result, None
    completion = response.completions[0]
    result.text = completion.text
    result.prompt_tokens, result.completion_tokens = completion.prompt_tokens, completion.completion_tokens
    if completion.error is not None:
        result.error = f"the backend ended the reply abnormally: {completion.error}"
        return result, None
    return result, completion


async def propose(
    model: ChatModel,
    context: SampledContext,
    settings: ProposerSettings,
    *,
    refusal: bool,
    feedback: str | None = None,
    previous: Blueprint | None = None,
    round: int = 0,
) -> ProposalResult:
    """Ask `model` for a task (or a revision) and read it. A dead engine (`ModelUnavailable`) propagates."""
    request = proposer_request(context, settings, refusal=refusal, feedback=feedback, previous=previous, round=round)
    result, completion = await ask(model, request)
    if completion is None:
        return result
    parsed = parse_proposal(completion.text, context, round=round)
    if isinstance(parsed, ProposalError):
        cut = (
            f" (the reply was cut off at max_tokens={settings.max_tokens})"
            if completion.finish_reason == "length"
            else ""
        )
        result.problem = parsed.reason + cut
    else:
        result.blueprint = parsed
    return result
