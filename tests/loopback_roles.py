"""The roles the loopback endpoint (tests/loopback_endpoint.py, a TEST DOUBLE) plays, recognised from the requests the
way the pipeline's real prompts make them, and what each answers. Part of the test double, not of the project."""

from __future__ import annotations

import json
import re
from typing import Any

from apigen_mt.blueprints.prompts import feedback_messages, proposer_system_prompt, review_messages
from apigen_mt.blueprints.recombine import instruction_request
from apigen_mt.simulators.human_prompts import STOP, human_system_prompt, judge_messages
from apigen_mt.simulators.types import Blueprint, Verdict

HUMAN_TURNS = 3  # the human's visible ###STOP### comes in this turn (counted from 1)


# --- roles, recognised by their system prompts ------------------------------------------------------------

_BLUEPRINT = Blueprint(instruction="x", actions=[])
_HUMAN_OPENING = human_system_prompt("x", None, structured=False).split("# Your task")[0]
_JUDGE = judge_messages("x", [], "x")[0].content
_PROPOSER = {proposer_system_prompt(structured=True), proposer_system_prompt(structured=False)}
_REVIEWER = review_messages(_BLUEPRINT, [], "x", refusal=False)[0].content
_SUMMARISER = feedback_messages(_BLUEPRINT, Verdict(stage="review", passed=False))[0].content
_REWRITER = instruction_request(_BLUEPRINT, []).messages[0].content


def role_of(body: dict[str, Any]) -> str:
    """Which role of the pipeline sent this request: agent, human, judge, proposer, reviewer, summariser,
    rewriter, or other."""
    if body.get("tools"):
        return "agent"
    messages = body.get("messages") or []
    system = messages[0].get("content") or "" if messages and messages[0].get("role") == "system" else ""
    if system.startswith(_HUMAN_OPENING):
        return "human"
    prompts = {_JUDGE: "judge", _REVIEWER: "reviewer", _SUMMARISER: "summariser", _REWRITER: "rewriter"}
    if system in prompts:
        return prompts[system]
    return "proposer" if system in _PROPOSER else "other"


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ORDER_ID = re.compile(r"#W\d{7}")
_USER_ID = re.compile(r"\b[a-z]+_[a-z]+_\d{4}\b")
# The argument names a read tool may ask for, and where the agent finds their values in the conversation.
_VALUES = {"email": _EMAIL, "order_id": _ORDER_ID, "user_id": _USER_ID}


def _human_answer(messages: list[dict[str, Any]], index: int) -> str | dict[str, Any]:
    """A detail of the task a turn, visible ###STOP### in turn HUMAN_TURNS; JSON when the prompt asks for it."""
    system = messages[0]["content"]
    task = system.split("# Your task", 1)[1]
    turn = sum(1 for message in messages if message["role"] == "assistant") + 1
    email, order = _EMAIL.search(task), _ORDER_ID.search(task)
    variant = "" if index == 0 else f" (take {index + 1})"  # best-of-N candidates differ, and the judge tells which
    if turn >= HUMAN_TURNS:
        text, stop = f"Thank you, that is all I needed{variant}.", True
    elif turn == 1:
        text = f"Hi, I need help with an order{variant}. My email is {email[0] if email else 'not something I have'}."
        stop = False
    else:
        number = order[0] if order else "I do not know the number"
        text, stop = f"It is order {number}{variant}. Please go ahead.", False
    if '"stop": <true or false>' in system:
        return {"message": text, "stop": stop}
    return f"{text} {STOP}" if stop else text


def _judge_answer(messages: list[dict[str, Any]], index: int) -> dict[str, Any]:
    candidate = messages[-1]["content"].rsplit("# Candidate reply of the customer", 1)[-1]
    take = re.search(r"\(take (\d+)\)", candidate)
    return {"critique": "It keeps to the task.", "score": 9 - int(take[1]) if take else 9}


def _proposer_answer(messages: list[dict[str, Any]], index: int) -> str | dict[str, Any]:
    """A look-up task for the customer of the context: a read tool filled from their records, and a fact of a
    record as its output."""
    context = messages[-1]["content"]
    user_id = re.search(r"^user id: (\S+)", context, re.MULTILINE)[1]
    records = [
        (table, key, json.loads(record))
        for table, key, record in re.findall(r"^(\w+) (\S+): (\{.*\})$", context, re.MULTILINE)
    ]
    tools = [json.loads(line) for line in context.split("# Tools\n", 1)[1].split("\n\n", 1)[0].splitlines()]
    action, output = {"name": tools[0]["name"], "arguments": {}}, None
    for tool in tools:
        required = tool["parameters"].get("required", [])
        for table, key, record in records:
            arguments = {
                name: user_id if name == "user_id" else _record_value(name, table, key, record) for name in required
            }
            if required and None not in arguments.values():
                action = {"name": tool["name"], "arguments": arguments}
                output = next((str(value) for value in record.values() if isinstance(value, str)), None)
                break
        if output is not None:
            break
    task = {
        "thought": f"The customer can ask about a record through {action['name']}.",
        "instruction": f"You are the customer with user id {user_id}. Ask about your {action['name']} details.",
        "actions": [action],
        "outputs": [output] if output is not None else [],
    }
    if "<answer>" in messages[0]["content"]:
        thought = task.pop("thought")
        return f"<thought>{thought}</thought><answer>{json.dumps(task)}</answer>"
    return task


def _record_value(name: str, table: str, key: str, record: dict[str, Any]) -> Any:
    if name in record and isinstance(record[name], str):
        return record[name]
    return key if name == f"{table.rstrip('s')}_id" else None


def _reviewer_answer(messages: list[dict[str, Any]], index: int) -> dict[str, Any]:
    return {
        "reflection": "The calls do what the instruction asks.",
        "correctness": 1,
        "completeness": 1,
        "satisfaction": 1,
        "creativity": 1,
    }


def _summariser_answer(messages: list[dict[str, Any]], index: int) -> str:
    return "<plan>1. Give the customer every detail the calls need.</plan>"


def _rewriter_answer(messages: list[dict[str, Any]], index: int) -> dict[str, Any]:
    parts = re.findall(r'"instruction": ("(?:[^"\\]|\\.)*")', messages[-1]["content"])
    return {"instruction": " Then: ".join(json.loads(part) for part in parts) or "Ask for help."}


def _other_answer(messages: list[dict[str, Any]], index: int) -> str:
    return "Hello from the loopback endpoint."


ROLE_ANSWERS = {
    "human": _human_answer,
    "judge": _judge_answer,
    "proposer": _proposer_answer,
    "reviewer": _reviewer_answer,
    "summariser": _summariser_answer,
    "rewriter": _rewriter_answer,
    "other": _other_answer,
}


def next_calls(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read-tool calls the conversation can fill (every required argument found in it) and the agent has not made
    yet, in the tools' order."""
    said = "\n".join(str(message.get("content") or "") for message in messages[1:])
    made = [
        (call["function"]["name"], json.loads(call["function"]["arguments"]))
        for message in messages
        for call in message.get("tool_calls") or []
    ]
    calls = []
    for tool in tools:
        function = tool["function"]
        required = function["parameters"].get("required", [])
        if not required or not set(required) <= _VALUES.keys():
            continue
        found = {name: _VALUES[name].findall(said) for name in required}
        if all(found.values()):
            arguments = {name: values[-1] for name, values in found.items()}
            if (function["name"], arguments) not in made:
                calls.append({"name": function["name"], "arguments": arguments})
    return calls


def agent_reply(messages: list[dict[str, Any]]) -> str:
    if messages[-1]["role"] == "tool":
        return f"I found this: {str(messages[-1].get('content'))[:80]}. What else can I check for you?"
    return "Could you give me your email address and the order number?"
