"""What the simulated human and its judge are told, and how their replies are read back.

The human model plays the customer, so the dialogue is shown to it with the roles flipped: the agent's
replies are its user turns and its own earlier messages are its assistant turns. It never sees the
agent's policy, tool calls or tool results, only what a customer in a chat window would see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from apigen_mt.simulators.strict_json import StrictJSONError, loads_strict
from apigen_mt.simulators.types import Message

STOP = "###STOP###"

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

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["score"],
    "additionalProperties": False,
}

MAX_SCORE = 10

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
own as your message to end the chat."""

_STRUCTURED_ENDING = """\
- Answer with a JSON object {"message": "<what you write>", "stop": <true or false>}. Once everything \
you wanted is done, or the agent cannot take it any further, set "stop" to true to end the chat (the \
message may then be a short goodbye or empty); otherwise "stop" is false."""

_JUDGE_PROMPT = f"""\
You check the replies of a simulated customer in a customer-service chat. The customer was given a \
task and must play it faithfully. Rate the candidate reply from 0 to {MAX_SCORE}.

- {MAX_SCORE}: every detail it gives (names, emails, ids, items and their options, addresses, payment \
methods, amounts, decisions) agrees with the task, and it carries the conversation on naturally. \
Short answers, clarifying questions, confirmations, and ending the chat with {STOP} once the task is \
done are all good replies.
- Lower: a detail that contradicts the task, more of the task given away at once than the agent asked \
for, sentences copied from the task, or ending the chat before the task is done.
- 0 to 2: claiming not to know or remember something the task states, inventing information the task \
does not contain, or writing as the agent (offering help, claiming to be an assistant, calling tools).

Answer with a JSON object {{"score": <integer from 0 to {MAX_SCORE}>}}."""


def human_system_prompt(instruction: str, persona: str | None, *, structured: bool) -> str:
    persona_block = f"\n# Your persona\n{persona.strip()}\n" if persona and persona.strip() else ""
    ending = _STRUCTURED_ENDING if structured else _PLAIN_ENDING
    return _HUMAN_PROMPT.format(instruction=instruction.strip(), persona=persona_block, ending=ending)


def human_view(conversation: Sequence[Message]) -> list[Message]:
    """The dialogue as the human model sees it, after the greeting and without a system prompt.

    `conversation` is the episode as the agent sees it. The agent's text replies become user turns,
    the human's own messages assistant turns; the system prompt, tool calls (with any text beside
    them, which the agent addressed to itself) and tool results are left out. Neighbouring turns of
    one side are joined, because chat templates expect the two sides to alternate.
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
    """The judge's score: `{"score": n}`, or a `<score>n</score>` tag in free text; None if neither
    holds a number from 0 to 10."""
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
