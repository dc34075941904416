"""One trial as a person reads it: the chat (each tool call with its answer), the agent's calls against the
blueprint's ground truth, and the reasons it was rejected, each linked to the part of the chat it is about.

Anchors: `m<i>` is message i of the stored messages (the system prompt is 0), `call<n>` the agent's n-th tool call
(from 0, the numbering the policy rules' "action n (name)" uses).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    anchor: str
    name: str
    arguments: Any  # decoded when the stored text is JSON, else the text
    answer: str | None = None  # the tool's answer, None when it never came


@dataclass
class Bubble:
    anchor: str
    role: str  # system | user | assistant | tool (a tool answer whose call is not in the chat)
    text: str
    thinking: str | None = None
    calls: list[Call] = field(default_factory=list)
    turn: int | None = None  # the agent's turn number, from 1


@dataclass(frozen=True)
class Reason:
    text: str
    anchor: str | None  # the part of the chat it is about, when one can be found


@dataclass(frozen=True)
class ActionRow:
    agent: str | None  # "name(arguments)"
    truth: str | None
    agent_anchor: str | None
    same: bool


def decode(text: str | None) -> Any:
    """A JSON column's value (None for JSON null or no text); the text itself when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def chat(messages: list[dict[str, Any]]) -> list[Bubble]:
    """The messages as chat bubbles, each tool answer under the call it answers."""
    bubbles: list[Bubble] = []
    calls_by_id: dict[str, Call] = {}
    number = 0
    turn = 0
    for position, message in enumerate(messages):
        role = str(message.get("role"))
        text = _text(message.get("content"))
        if role == "tool":
            call = calls_by_id.get(str(message.get("tool_call_id")))
            if call is not None and call.answer is None:
                call.answer = text
                continue
        bubble = Bubble(f"m{position}", role, text, thinking=message.get("reasoning_content") or None)
        if role == "assistant":
            turn += 1
            bubble.turn = turn
            for raw in message.get("tool_calls") or []:
                function = raw.get("function") or {}
                call = Call(f"call{number}", str(function.get("name")), _arguments(function.get("arguments")))
                number += 1
                bubble.calls.append(call)
                calls_by_id[str(raw.get("id"))] = call
        bubbles.append(bubble)
    return bubbles


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _arguments(arguments: Any) -> Any:
    return decode(arguments) if isinstance(arguments, str) else arguments


def call_text(name: str, arguments: Any) -> str:
    return f"{name}({json.dumps(arguments, sort_keys=True, ensure_ascii=False)})"


def agent_calls(bubbles: list[Bubble]) -> list[Call]:
    return [call for bubble in bubbles for call in bubble.calls]


def actions_against_truth(bubbles: list[Bubble], truth: list[dict[str, Any]]) -> list[ActionRow]:
    """The agent's calls beside the ground truth's actions, aligned where they are the same call (difflib); a
    call that differs sits beside the ground-truth action it replaced."""
    calls = agent_calls(bubbles)
    ours = [call_text(call.name, call.arguments) for call in calls]
    theirs = [call_text(str(action.get("name")), action.get("arguments", {})) for action in truth]
    rows = []
    for tag, a0, a1, b0, b1 in difflib.SequenceMatcher(None, ours, theirs, autojunk=False).get_opcodes():
        width = max(a1 - a0, b1 - b0)
        for offset in range(width):
            mine = a0 + offset if a0 + offset < a1 else None
            other = b0 + offset if b0 + offset < b1 else None
            rows.append(
                ActionRow(
                    agent=ours[mine] if mine is not None else None,
                    truth=theirs[other] if other is not None else None,
                    agent_anchor=calls[mine].anchor if mine is not None else None,
                    same=tag == "equal",
                )
            )
    return rows


_ACTION = re.compile(r"\baction (\d+) \(")
_TURN = re.compile(r"\bagent turn (\d+)\b")
_PLACE_SPLIT = re.compile(r"; (?=/)")
_DIFF = re.compile(r"the final database differs from the ground truth's in \d+ place\(s\): (.*)$", re.S)


def database_difference(reasons: list[str]) -> list[str]:
    """The places where the final database differs from the ground truth's, one per item, from the state reason."""
    for reason in reasons:
        match = _DIFF.search(reason)
        if match:
            return _PLACE_SPLIT.split(match[1])
    return []


def linked_reasons(reasons: list[str], bubbles: list[Bubble]) -> list[Reason]:
    """Each reason with the anchor of what it is about: the call an "action n" names, the agent turn it names,
    the last call that touched a record of a database difference, the user's last message for a conversation the
    user ended, the agent's last reply for an output it never said."""
    calls = agent_calls(bubbles)
    linked = []
    for reason in reasons:
        linked.append(Reason(reason, _anchor(reason, bubbles, calls)))
    return linked


def _anchor(reason: str, bubbles: list[Bubble], calls: list[Call]) -> str | None:
    if (match := _ACTION.search(reason)) and int(match[1]) < len(calls):
        return calls[int(match[1])].anchor
    if match := _TURN.search(reason):
        turns = [bubble for bubble in bubbles if bubble.turn == int(match[1])]
        return turns[0].anchor if turns else None
    if places := database_difference([reason]):
        for call in reversed(calls):
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            if any(f'"{part}"' in arguments for place in places for part in place.split(" ", 1)[0].split("/")[1:]):
                return call.anchor
        return None
    if "ended the conversation" in reason:
        return _last(bubbles, "user")
    if reason.startswith("expected output"):
        return _last(bubbles, "assistant")
    return None


def _last(bubbles: list[Bubble], role: str) -> str | None:
    found = [bubble.anchor for bubble in bubbles if bubble.role == role]
    return found[-1] if found else None
