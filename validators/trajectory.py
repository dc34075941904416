"""Trajectory verification (`apigen-mt verify`, and every trial the pipeline plays): did an episode do what its
blueprint asks, within the policy, and whose fault is it when not?

The reward is tau-bench's: 1.0 exactly when all three hold.
- state: the database after the agent's tool calls (run in order on a fresh copy) equals the database after
  the ground-truth actions other than terminating tools (also on a fresh copy): equal canonical JSON, compared
  through its SHA-256 digest. The ground truth's digest is taken from the caller when given (the execution
  stage's `final_digest`), else from one replay;
- outputs: every expected output `o` appears in some agent reply, in tau-bench's way: `o.lower()` is a
  substring of `reply.lower()` with every comma removed from the reply (not from `o`);
- terminated: the last user message holds an end marker of the simulated human (tau-bench's `###STOP###`, or
  tau2-bench's `###TRANSFER###` and `###OUT-OF-SCOPE###`), or the agent called a terminating tool.
Agent replies are the contents of assistant messages without tool calls: text beside a call is not a reply,
since in tau-bench's protocol the user never sees it.

A trial is accepted only with reward 1.0, no violation of the domain's rules (run on the episode's trace,
so rules on authentication and read-before-write order apply: tau-bench's reward misses an agent that
reaches the right state by breaking them) and no error of the simulated human. Warnings do not reject:
problems of the blueprint itself (unknown ground-truth tools, failing ground-truth writes), which mean the
reward says nothing about the agent, and rule violations that only calls the environment refused cause, for
the rules where a refused attempt breaks nothing (`PolicyRule.refused_calls_count`).

A rejected trial is the human's fault when the simulated human erred: errors passed in by whoever ran it, a
###STOP### before the agent even attempted a write the ground truth needs, or an ###OUT-OF-SCOPE### (its
scenario could not answer the agent). Else it is the agent's; a ###TRANSFER### is judged like a terminating
transfer tool (the agent handed the user over). Engine failures (`system`) are the episode runner's to
attribute: a verdict only sees finished conversations.
"""

from __future__ import annotations

import json
import marshal
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from apigen_mt.simulators.domain import Domain, domains
from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.human_prompts import OUT_OF_SCOPE, STOP, TRANSFER, ending_of
from apigen_mt.simulators.state import JSON, diff_patch, state_digest
from apigen_mt.simulators.trace import ActionTrace, content_text, plain_messages, trace_conversation
from apigen_mt.simulators.types import Blueprint, Message
from apigen_mt.validators.policy import check_policy

SHOWN_CHANGES = 5  # state differences spelled out in the reason; the full list is in details


class TrajectoryInputError(ValueError):
    """The blueprint or the messages of a trajectory are not in the expected format."""


class TrajectoryVerdict(BaseModel):
    reward: float  # tau-bench's: state match and outputs match and terminated
    terminated: bool
    state_match: bool
    outputs_match: bool
    policy_violations: list[str] = Field(default_factory=list)  # "[R1] ...": the domain's rules on the episode
    human_errors: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)  # why the trial is not accepted: reward, policy, human
    warnings: list[str] = Field(default_factory=list)  # the blueprint's problems; violations only refused calls cause
    attribution: Literal["agent", "human"] | None = None  # whose fault a rejection is; None when accepted
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.reward == 1.0 and not self.policy_violations and not self.human_errors

    def record(self, index: int) -> dict[str, Any]:
        """The line `apigen-mt verify` writes (documented in docs/formats.md)."""
        return {
            "index": index,
            "reward": self.reward,
            "terminated": self.terminated,
            "state_match": self.state_match,
            "outputs_match": self.outputs_match,
            "reasons": self.reasons,
            "accepted": self.accepted,
            "attribution": self.attribution,
            "policy_violations": self.policy_violations,
            "human_errors": self.human_errors,
            "warnings": self.warnings,
        }


def verify_trajectory(
    domain: Domain,
    db: JSON,
    blueprint: Blueprint | Mapping[str, Any],
    messages: Sequence[Mapping[str, Any] | Message],
    *,
    ground_truth_digest: str | None = None,
    human_errors: Sequence[str] = (),
) -> TrajectoryVerdict:
    """Verify one episode against its blueprint on `db` (left untouched).

    `ground_truth_digest`: the digest of the database after the blueprint's actions (the execution stage's
    `final_digest`); without it the ground truth is replayed once. `human_errors`: what the simulated human
    did wrong, as found by whoever ran it (such as values it revealed that the instruction does not hold).
    """
    blueprint = _parse_blueprint(blueprint)
    plain = _parse_messages(messages)
    tools = domain.toolkit.tools()
    trace = trace_conversation(domain, db, plain, user_id=blueprint.user_id)
    warnings = _unknown_tool_warnings(domain, blueprint)

    agent_digest = state_digest(trace.final)
    ground_truth: Environment | None = None
    if ground_truth_digest is None:
        ground_truth = _replay_ground_truth(domain, db, blueprint)
        ground_truth_digest = _digest_reusing(ground_truth.db, trace.final, agent_digest)
        warnings += _failing_write_warnings(domain, blueprint, ground_truth)
    state_match = agent_digest == ground_truth_digest
    changes: list[dict[str, Any]] = []
    reasons = []
    if not state_match:
        # A given digest spares the replay only when the states match; a mismatch is worth spelling out.
        ground_truth = ground_truth or _replay_ground_truth(domain, db, blueprint)
        changes = diff_patch(ground_truth.db, trace.final)
        reasons.append(_state_reason(changes, agent_digest, ground_truth_digest))

    replies = [content_text(m) for m in plain if m.get("role") == "assistant" and not m.get("tool_calls")]
    flattened = [reply_form(reply) for reply in replies]
    found = {output: any(output.lower() in reply for reply in flattened) for output in blueprint.outputs}
    for output, ok in found.items():
        if not ok:
            hint = (
                " (it contains a comma, and commas are removed from replies, so it can never match)"
                if "," in output
                else ""
            )
            reasons.append(f"expected output {output!r} appears in none of the agent's {len(replies)} replies{hint}")
    outputs_match = all(found.values())

    user_messages = [m for m in plain if m.get("role") == "user"]
    ending = ending_of(content_text(user_messages[-1])) if user_messages else None
    # A user transferred by the agent says so with ###TRANSFER###: the agent ended it, as with a transfer tool.
    ended_by_agent = ending == "transfer" or any(c.name in tools and tools[c.name].spec.terminates for c in trace.calls)
    terminated = ending is not None or ended_by_agent
    if not terminated:
        enders = ", ".join(name for name, bound in tools.items() if bound.spec.terminates) or "none in this domain"
        reasons.append(
            f"the episode did not end: the last user message has no {STOP}, {TRANSFER} or {OUT_OF_SCOPE} "
            f"and no terminating tool ({enders}) was called"
        )

    policy = check_policy(domain, trace)
    policy_violations = policy.reasons
    warnings += policy.details["warnings"]
    errors = list(human_errors)
    if ending == "stop" and not ended_by_agent and not (state_match and outputs_match):
        if not any(m.get("role") == "assistant" for m in plain):
            # The agent never had a turn: whatever it missed, the user gave it no chance.
            errors.append("the user ended the conversation before the agent's first turn")
        elif not state_match:
            errors += _premature_stop(domain, blueprint, trace)
    reward = 1.0 if state_match and outputs_match and terminated else 0.0
    if ending == "out_of_scope" and not ended_by_agent and (reward < 1.0 or policy_violations):
        errors.append(f"the user ended the conversation with {OUT_OF_SCOPE}: its scenario could not answer the agent")
    rejected = reward < 1.0 or bool(policy_violations) or bool(errors)
    return TrajectoryVerdict(
        reward=reward,
        terminated=terminated,
        state_match=state_match,
        outputs_match=outputs_match,
        policy_violations=policy_violations,
        human_errors=errors,
        reasons=reasons + policy_violations + errors,
        warnings=warnings,
        attribution=("human" if errors else "agent") if rejected else None,
        details={
            "state_diff": changes,
            "agent_digest": agent_digest,
            "ground_truth_digest": ground_truth_digest,
            "outputs": found,
            "agent_calls": [
                {"name": c.name, "arguments": c.arguments, "observation": c.observation, "failed": c.failed}
                for c in trace.calls
            ],
        },
    )


def reply_form(text: str) -> str:
    """An agent reply as the outputs check reads it (tau-bench's): lowercased, every comma removed."""
    return text.lower().replace(",", "")


def comparable_output(output: str) -> str:
    """An expected output in a form the check can find: without commas, which replies lose before the
    comparison ("1,234.50" could never match; "1234.50" matches a reply saying "$1,234.50"). Case is kept:
    the check lowercases outputs itself."""
    return output.replace(",", "")


def _replayed_positions(domain: Domain, blueprint: Blueprint) -> list[int]:
    """Positions of the ground-truth actions to replay: all but terminating tools, which end an episode."""
    tools = domain.toolkit.tools()
    return [i for i, a in enumerate(blueprint.actions) if not (a.name in tools and tools[a.name].spec.terminates)]


def _replay_ground_truth(domain: Domain, db: JSON, blueprint: Blueprint) -> Environment:
    # A plain environment rather than a trace: no rule reads the ground truth here, so the database is not
    # snapshotted after every write.
    env = domain.environment(db)
    for position in _replayed_positions(domain, blueprint):
        env.step(blueprint.actions[position])
    return env


def _digest_reusing(state: JSON, other: JSON, other_digest: str) -> str:
    """`state`'s digest. Equal marshal bytes mean equal keys, order, values and types, hence equal canonical
    JSON: then `other_digest` is reused, which spares hashing a whole database for a matching trajectory."""
    return other_digest if marshal.dumps(state) == marshal.dumps(other) else state_digest(state)


def _unknown_tool_warnings(domain: Domain, blueprint: Blueprint) -> list[str]:
    tools = domain.toolkit.tools()
    unknown: dict[str, list[int]] = {}
    for index, action in enumerate(blueprint.actions):
        if action.name not in tools:
            unknown.setdefault(action.name, []).append(index)
    warnings = [
        f"ground-truth action{'s' if len(indices) > 1 else ''} {', '.join(map(str, indices))}: "
        f"domain {domain.name!r} has no tool {name!r}"
        for name, indices in unknown.items()
    ]
    if unknown:
        owners = [
            other.name
            for other in sorted(domains().values(), key=lambda d: d.name)
            if other.name != domain.name and set(unknown) <= set(other.toolkit.tools())
        ]
        if owners:
            listed = " or ".join(repr(name) for name in owners)
            warnings.append(f"the blueprint's tools belong to domain {listed}, not {domain.name!r}")
    return warnings


def _failing_write_warnings(domain: Domain, blueprint: Blueprint, ground_truth: Environment) -> list[str]:
    # Unknown tools fail too, but `_unknown_tool_warnings` names them; a failing read is allowed, as in the
    # execution stage.
    tools = domain.toolkit.tools()
    return [
        f"ground-truth action {position} ({call.name}) fails: {result.observation}; "
        "the blueprint does not do what it asks"
        for position, (call, result) in zip(_replayed_positions(domain, blueprint), ground_truth.log)
        if result.failed and call.name in tools and tools[call.name].spec.writes
    ]


def _premature_stop(domain: Domain, blueprint: Blueprint, trace: ActionTrace) -> list[str]:
    """The user stopped while a write the ground truth needs was never even attempted: the human's error."""
    tools = domain.toolkit.tools()
    attempted = {call.name for call in trace.calls}
    needed = dict.fromkeys(
        a.name
        for a in blueprint.actions
        if a.name in tools and tools[a.name].spec.writes and not tools[a.name].spec.terminates
    )
    return [
        f"the user ended the conversation before the agent attempted {name}" for name in needed if name not in attempted
    ]


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
            raise TrajectoryInputError(
                f"message {position} has role {message.get('role')!r}; expected system, user, assistant or tool"
            )
        if message.get("tool_calls") is not None and not isinstance(message["tool_calls"], list):
            raise TrajectoryInputError(f"message {position}: tool_calls must be a list")
    return plain


def _state_reason(changes: list[dict[str, Any]], agent_digest: str, ground_truth_digest: str) -> str:
    if not changes:
        # Only a given digest can disagree with a fresh replay of the same actions on the same database.
        return (
            f"the final database (digest {agent_digest[:12]}) differs from the given ground-truth digest "
            f"{ground_truth_digest[:12]}, yet equals a fresh replay of the ground truth: "
            "the digest was computed on another database"
        )
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
