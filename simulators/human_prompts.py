"""What the simulated human and its judge are told, and how their replies are read back.

The human model plays the customer, so the dialogue is shown to it with the roles flipped: the agent's
replies are its user turns and its own earlier messages are its assistant turns. It never sees the
agent's policy, tool calls or tool results, only what a customer in a chat window would see.

The human ends the chat with one of tau2-bench's markers: ###STOP### (done, or the agent can go no
further), ###TRANSFER### (the agent handed it to a human agent), ###OUT-OF-SCOPE### (the chat cannot go
on without something its task does not cover).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from apigen_mt.simulators.strict_json import StrictJSONError, loads_strict
from apigen_mt.simulators.types import Message, Scenario
from apigen_mt.simulators.xlam import text_field_limit

STOP = "###STOP###"
TRANSFER = "###TRANSFER###"  # tau2-bench's: the agent transferred the customer to a human agent
OUT_OF_SCOPE = "###OUT-OF-SCOPE###"  # tau2-bench's: the chat cannot go on without what the task does not cover

HumanEnding = Literal["stop", "transfer", "out_of_scope"]

# Checked in this order: a message naming a transfer or a dead end says more than a plain stop.
_ENDINGS: tuple[tuple[str, HumanEnding], ...] = ((TRANSFER, "transfer"), (OUT_OF_SCOPE, "out_of_scope"), (STOP, "stop"))


def ending_of(text: str) -> HumanEnding | None:
    """How a human message ends the chat: the first of its end markers by precedence; None when it goes on."""
    return next((ending for marker, ending in _ENDINGS if marker in text), None)


def without_markers(text: str) -> str:
    """What a human message says besides its end markers."""
    for marker, _ in _ENDINGS:
        text = text.replace(marker, "")
    return text.strip()


# The agent never sends this; it opens the human model's dialogue so that the first human turn answers
# an agent, as every later one does.
AGENT_GREETING = "Hi! How can I help you today?"


def human_turn_schema(max_chars: int) -> dict[str, Any]:
    """`{"message": str, "stop": bool}`, the message short enough for the grammar to close it within the token limit."""
    return {
        "type": "object",
        "properties": {"message": {"type": "string", "maxLength": max_chars}, "stop": {"type": "boolean"}},
        "required": ["message", "stop"],
        "additionalProperties": False,
    }


# The judge writes a short critique, then its score. The critique is capped at what a reply of
# JUDGE_MAX_TOKENS can close (`text_field_limit`) with about 20 tokens left for the score, so that a grammar
# never cuts the JSON before the score.
JUDGE_MAX_TOKENS = 160
MAX_SCORE = 10
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {  # critique first: the judge reasons before it scores
        "critique": {"type": "string", "maxLength": text_field_limit(JUDGE_MAX_TOKENS) - 64},
        "score": {"type": "integer", "minimum": 0, "maximum": MAX_SCORE},
    },
    "required": ["critique", "score"],
    "additionalProperties": False,
}

_HUMAN_PROMPT = """\
You are a customer writing to a company's customer-service agent in a chat window. All you know about \
your situation and what you want is in your task below. You know nothing about the company's systems, \
rules or tools.

# Your task
{instruction}
{persona}
# How you talk
- Write one short message per turn, the way people type in a chat.
- Let the agent lead. Give a detail (name, email, order or reservation number, address, payment \
method, ...) only when the agent asks for it or when the conversation cannot move on without it. \
Never lay out the whole task in one message.
- Use only facts your task states. If the agent asks for something your task does not say, answer \
that you do not have that information; never make up names, numbers, ids, addresses or amounts.
- When the agent asks for something your task does state, give it; do not claim to have forgotten it.
- Say things in your own words instead of copying sentences of the task.
- Accept, refuse or choose exactly as your task says.
- Stay in character from start to end. You are the customer: never offer help, never write the \
agent's part, never call tools, and never say that you are an AI or that you were given a task.
{ending}"""

_PLAIN_ENDING = f"""\
- Once everything you wanted is done, or the agent cannot take it any further, send {STOP} on its \
own as your message to end the chat.
- If the agent transfers you to a human agent, send {TRANSFER} on its own as your message.
- If the agent keeps needing something your task does not cover, so that the chat cannot go on without \
making it up, send {OUT_OF_SCOPE} on its own as your message."""

_STRUCTURED_ENDING = f"""\
- Answer with a JSON object {{"message": "<what you write>", "stop": <true or false>}}. Once everything \
you wanted is done, or the agent cannot take it any further, set "stop" to true to end the chat (the \
message may then be a short goodbye or empty); otherwise "stop" is false.
- If the agent transfers you to a human agent, write {TRANSFER} as the message and set "stop" to true.
- If the agent keeps needing something your task does not cover, so that the chat cannot go on without \
making it up, write {OUT_OF_SCOPE} as the message and set "stop" to true."""

_JUDGE_PROMPT = f"""\
You check the replies of a simulated customer in a customer-service chat. The customer was given a \
task and must play it faithfully. Rate the candidate reply from 0 to {MAX_SCORE}.

- {MAX_SCORE}: every detail it gives (names, emails, ids, items and their options, addresses, payment \
methods, amounts, decisions) agrees with the task, and it carries the conversation on naturally. \
Short answers, clarifying questions, confirmations, and ending the chat with {STOP} once the task is \
done are all good replies, as are {TRANSFER} after the agent transferred the customer to a human agent \
and {OUT_OF_SCOPE} when the chat cannot go on without something the task does not cover.
- Lower: a detail that contradicts the task, more of the task given away at once than the agent asked \
for, sentences copied from the task, or ending the chat before the task is done.
- 0 to 2: claiming not to know or remember something the task states, inventing information the task \
does not contain, or writing as the agent (offering help, claiming to be an assistant, calling tools).

First write a short critique (one or two sentences: what in the reply agrees with the task and what does \
not), then the score. Answer with a JSON object \
{{"critique": "<your critique>", "score": <integer from 0 to {MAX_SCORE}>}}."""


# A tau2-bench task's user scenario, given part by part: each heading says how the human is to use its part.
_SCENARIO_PARTS = (
    ("reason_for_call", "## What you want"),
    ("known_info", "## What you know\nGive these facts when the agent asks for them."),
    (
        "unknown_info",
        "## What you do not know\nIf the agent asks for any of this, say that you do not know it; never make it up.",
    ),
    ("task_instructions", "## How to behave"),
)


def scenario_task(scenario: Scenario) -> str:
    """The task block of a human whose blueprint has a scenario: what it wants, knows, does not know, how to act."""
    given = scenario.model_dump()
    return "\n\n".join(
        f"{heading}\n{given[part].strip()}" for part, heading in _SCENARIO_PARTS if given[part] and given[part].strip()
    )


def human_system_prompt(
    instruction: str, persona: str | None, *, structured: bool, scenario: Scenario | None = None
) -> str:
    """The human's system prompt: its task (the scenario's parts when there is one, else the instruction), persona
    and how to end the chat."""
    persona_block = f"\n# Your persona\n{persona.strip()}\n" if persona and persona.strip() else ""
    ending = _STRUCTURED_ENDING if structured else _PLAIN_ENDING
    task = instruction.strip() if scenario is None else scenario_task(scenario)
    return _HUMAN_PROMPT.format(instruction=task, persona=persona_block, ending=ending)


def human_view(conversation: Sequence[Message]) -> list[Message]:
    """The dialogue as the human model sees it, after the greeting and without a system prompt.

    `conversation` is the episode as the agent sees it. The agent's text replies become user turns,
    the human's own messages assistant turns; the system prompt, tool calls (with any text beside
    them: in tau-bench's protocol the user never sees it) and tool results are left out, and so is
    every message's thinking (`reasoning_content`). Neighbouring turns of one side are joined, because
    chat templates expect the two sides to alternate.
    """
    turns = [Message(role="user", content=AGENT_GREETING)]
    for message in conversation:
        if message.role == "user":
            role = "assistant"
        elif message.role == "assistant" and not message.tool_calls:
            role = "user"
        else:
            continue
        text = message.content or ""
        if turns[-1].role == role:
            turns[-1] = Message(role=role, content=f"{turns[-1].content}\n\n{text}")
        else:
            turns.append(Message(role=role, content=text))
    return turns


def judge_messages(instruction: str, dialogue: Sequence[Message], candidate: str) -> list[Message]:
    """The judge's request for one candidate; `dialogue` is the human's view (`human_view`)."""
    speaker = {"user": "Agent", "assistant": "Customer"}
    transcript = "\n".join(f"{speaker[turn.role]}: {turn.content}" for turn in dialogue)
    body = (
        f"# The customer's task\n{instruction.strip()}\n\n"
        f"# The conversation so far\n{transcript}\n\n"
        f"# Candidate reply of the customer\n{candidate}"
    )
    return [Message(role="system", content=_JUDGE_PROMPT), Message(role="user", content=body)]


_SCORE_TAG = re.compile(r"<score>\s*(\d+(?:\.\d+)?)\s*</score>", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    """The judge's score: `{"critique": ..., "score": n}` (the critique is not needed), or a `<score>n</score>`
    tag in free text; None if neither holds a number from 0 to 10."""
    score: Any = None
    try:
        decoded = loads_strict(text, "the judge's reply")
    except StrictJSONError:
        decoded = None
    if isinstance(decoded, dict):
        score = decoded.get("score")
    else:
        tags = _SCORE_TAG.findall(text)
        score = float(tags[-1]) if tags else None  # a judge that reasons first states its verdict last
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= MAX_SCORE:
        return None
    return float(score)


def decode_structured_turn(text: str) -> tuple[str, bool] | None:
    """`(message, stop)` from a reply under `human_turn_schema`; None when it does not follow it."""
    try:
        decoded = loads_strict(text, "the human's reply")
    except StrictJSONError:
        return None
    if not isinstance(decoded, dict) or set(decoded) != {"message", "stop"}:
        return None
    message, stop = decoded["message"], decoded["stop"]
    if not isinstance(message, str) or not isinstance(stop, bool):
        return None
    return message, stop
