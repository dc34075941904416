"""Trajectory verification (`apigen-mt verify`): did an episode do what its blueprint asks?

A trajectory is kept only if all three hold, as in tau-bench's reward:
- state: the database after the agent's tool calls (run in order on a fresh copy) equals the database after
  the ground-truth actions other than terminating tools (also on a fresh copy): equal canonical JSON, compared
  through its SHA-256 digest, which the verdict also reports;
- outputs: every expected output `o` appears in some agent reply, in tau-bench's way: `o.lower()` is a
  substring of `reply.lower()` with every comma removed from the reply (not from `o`);
- terminated: the last user message contains `###STOP###`, or the agent called a terminating tool.
Agent replies are the contents of assistant messages without tool calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.state import JSON, diff_patch, state_digest
from apigen_mt.simulators.trace import content_text, plain_messages, tool_calls_of
from apigen_mt.simulators.types import Blueprint, Message, ToolCall

STOP = "###STOP###"
SHOWN_CHANGES = 5  # state differences spelled out in the reason; the full list is in details


class TrajectoryInputError(ValueError):
    """The blueprint or the messages of a trajectory are not in the expected format."""


class TrajectoryVerdict(BaseModel):
    reward: float
    terminated: bool
    state_match: bool
    outputs_match: bool
    reasons: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    def record(self, index: int) -> dict[str, Any]:
        """The line `apigen-mt verify` writes: `{index, reward, terminated, state_match, outputs_match, reasons}`."""
        return {"index": index, **self.model_dump(exclude={"details"})}


def verify_trajectory(
    domain: Domain, db: JSON, blueprint: Blueprint | Mapping[str, Any], messages: Sequence[Mapping[str, Any] | Message]
) -> TrajectoryVerdict:
    blueprint = _parse_blueprint(blueprint)
    plain = _parse_messages(messages)
    tools = domain.toolkit.tools()

    agent_calls = [c for m in plain if m.get("role") == "assistant" for c in tool_calls_of(m)]
    agent = _run(domain, db, agent_calls)
    ground_truth = _run(domain, db, [a for a in blueprint.actions if not (a.name in tools and tools[a.name].spec.terminates)])

    reasons = []
    agent_digest, ground_truth_digest = state_digest(agent.db), state_digest(ground_truth.db)
    state_match = agent_digest == ground_truth_digest
    changes = [] if state_match else diff_patch(ground_truth.db, agent.db)
    if not state_match:
        reasons.append(_state_reason(changes))

    replies = [content_text(m) for m in plain if m.get("role") == "assistant" and not m.get("tool_calls")]
    flattened = [reply.lower().replace(",", "") for reply in replies]
    found = {output: any(output.lower() in reply for reply in flattened) for output in blueprint.outputs}
    for output, ok in found.items():
        if not ok:
            hint = " (it contains a comma, and commas are removed from replies, so it can never match)" if "," in output else ""
            reasons.append(f"expected output {output!r} appears in none of the agent's {len(replies)} replies{hint}")
    outputs_match = all(found.values())

    user_messages = [m for m in plain if m.get("role") == "user"]
    stopped = bool(user_messages) and STOP in content_text(user_messages[-1])
    terminating = [c.name for c in agent_calls if c.name in tools and tools[c.name].spec.terminates]
    terminated = stopped or bool(terminating)
    if not terminated:
        enders = ", ".join(name for name, bound in tools.items() if bound.spec.terminates) or "none in this domain"
        reasons.append(f"the episode did not end: the last user message has no {STOP} and no terminating tool ({enders}) was called")

    return TrajectoryVerdict(
        reward=1.0 if state_match and outputs_match and terminated else 0.0,
        terminated=terminated,
        state_match=state_match,
        outputs_match=outputs_match,
        reasons=reasons,
        details={
            "state_diff": changes,
            "agent_digest": agent_digest,
            "ground_truth_digest": ground_truth_digest,
            "outputs": found,
            "agent_calls": [
                {"name": c.name, "arguments": c.arguments, "observation": result.observation} for c, result in agent.log
            ],
        },
    )


def _run(domain: Domain, db: JSON, calls: list[ToolCall]) -> Environment:
    """A fresh environment on a copy of `db` after running `calls` in order."""
    env = domain.environment(db)
    for call in calls:
        env.step(call)
    return env


def _parse_blueprint(blueprint: Blueprint | Mapping[str, Any]) -> Blueprint:
    if isinstance(blueprint, Blueprint):
        return blueprint
    try:
        return Blueprint.model_validate(blueprint)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'blueprint'}: {e['msg']}" for e in exc.errors())
        raise TrajectoryInputError(f"the trajectory's blueprint is malformed: {problems}") from None


def _parse_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise TrajectoryInputError("messages must be a list of OpenAI chat messages")
    for position, message in enumerate(messages):
        if not isinstance(message, (Mapping, Message)):
            raise TrajectoryInputError(f"message {position} must be an object, got {type(message).__name__}")
    plain = plain_messages(messages)
    for position, message in enumerate(plain):
        if message.get("role") not in ("system", "user", "assistant", "tool"):
            raise TrajectoryInputError(f"message {position} has role {message.get('role')!r}; expected system, user, assistant or tool")
        if message.get("tool_calls") is not None and not isinstance(message["tool_calls"], list):
            raise TrajectoryInputError(f"message {position}: tool_calls must be a list")
    return plain


def _state_reason(changes: list[dict[str, Any]]) -> str:
    shown = "; ".join(_describe(change) for change in changes[:SHOWN_CHANGES])
    more = f"; and {len(changes) - SHOWN_CHANGES} more" if len(changes) > SHOWN_CHANGES else ""
    return f"the final database differs from the ground truth's in {len(changes)} place(s): {shown}{more}"


def _describe(change: dict[str, Any]) -> str:
    path = change["path"]
    if change["op"] == "replace":
        return f"{path} is {_short(change['value'])} but the ground truth has {_short(change['old'])}"
    if change["op"] == "add":
        return f"{path} = {_short(change['value'])} exists only in the agent's database"
    return f"{path} = {_short(change['old'])} exists only in the ground truth's database"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
