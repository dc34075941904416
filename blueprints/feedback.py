"""Feedback: turn a rejection into an improvement plan that the proposer's next round follows.

    plan = await summarise_feedback(model, blueprint, failed_verdict)
    await propose(..., feedback=plan, previous=blueprint, round=round + 1)

The summariser reads the rejected task and the failing check's reasons (for the review stage, each
reviewer's votes and reflection) and writes a few numbered steps inside `<plan>`. Stage-1 reasons (format,
execution, policy) are exact (an argument, an error message, a rule id), so they are appended to the plan
word for word, where a summary could blur them; and when the summariser fails, the plan is those reasons
alone (`reasons_plan`), which for stage 1 loses little and for a review still carries every reflection.
"""

from __future__ import annotations

import re

from apigen_mt.blueprints.prompts import feedback_messages
from apigen_mt.simulators.chat import ChatModel, ChatRequest, SamplingParams
from apigen_mt.simulators.types import Blueprint, Verdict

# A plan is a few steps; greedy, so that the same rejection gets the same plan.
FEEDBACK_SAMPLING = SamplingParams(temperature=0.0, max_tokens=384)

_EXACT_STAGES = frozenset({"format", "execution", "policy"})
_PLAN = re.compile(r"<plan>(.*?)(?:</plan>|\Z)", re.DOTALL | re.IGNORECASE)  # a cut-off plan still counts


def feedback_request(blueprint: Blueprint, failed: Verdict) -> ChatRequest:
    return ChatRequest(messages=feedback_messages(blueprint, failed), sampling=FEEDBACK_SAMPLING)


def reasons_plan(failed: Verdict) -> str:
    """A plan made of the failing check's reasons, numbered, without any model."""
    steps = "\n".join(f"{number}. {reason}" for number, reason in enumerate(failed.reasons, start=1))
    return f"The {failed.stage} check rejected the task. Fix each of these points:\n{steps}"


async def summarise_feedback(model: ChatModel, blueprint: Blueprint, failed: Verdict) -> str:
    """The improvement plan for `blueprint`, rejected by `failed`. A dead engine (`ModelUnavailable`) propagates;
    any other failure of the summariser falls back to `reasons_plan`."""
    response = await model.chat(feedback_request(blueprint, failed))
    if not response.ok or response.completions[0].error is not None:
        return reasons_plan(failed)
    text = response.completions[0].text
    sections = _PLAN.findall(text)
    plan = (sections[-1] if sections else text).strip()
    if not plan:
        return reasons_plan(failed)
    if failed.stage in _EXACT_STAGES:
        return f"{plan}\n\n{reasons_plan(failed)}"
    return plan
