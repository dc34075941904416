"""The calls of one blueprint or one episode, as executed: what policy rules look at.

A trace holds each call with its observation and the database it ran on, so a rule can ask "what was this
order's status when the agent cancelled it" without replaying anything. Two kinds exist:

- a blueprint's trace (`episode=False`): its ground-truth actions. Those usually leave out the reads an agent
  makes on the way (tau-bench's never list `find_user_id_*` or `get_order_details`), and the task's `user_id`
  stands for the user the agent will have identified. Rules about the order of reads and writes do not apply.
- an episode's trace (`episode=True`): every call the agent made, optionally with the conversation, so
  authentication and read-before-write order are judged on what actually happened.

A call is `refused` when the environment answered it with an error and the database is as it was: the agent
tried something and nothing happened. Which rules such an attempt can still break is each rule's decision
(`PolicyRule.refused_calls_count`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from apigen_mt.simulators.state import JSON, copy_state
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall

if TYPE_CHECKING:
    from apigen_mt.simulators.domain import Domain


@dataclass(frozen=True)
class TracedCall:
    """One executed call. `before` is the database the call ran on: read it, never change it."""

    index: int
    call: ToolCall
    observation: str
    failed: bool
    writes: bool
    before: JSON
    message_index: int | None = None  # the assistant message that made the call, for episodes with messages
    refused: bool = False  # an error observation and the database unchanged (a failed write may still change it)

    @property
    def name(self) -> str:
        return self.call.name

    @property
    def arguments(self) -> dict[str, Any]:
        return self.call.arguments

    def label(self) -> str:
        return f"action {self.index} ({self.name})"


def lookup(table: Any, key: Any) -> Any:
    """`table[key]` when `table` is a dict and `key` a string, else None: rules read ids an agent made up."""
    return table.get(key) if isinstance(table, dict) and isinstance(key, str) else None


@dataclass(frozen=True)
class ActionTrace:
    """Executed calls of a blueprint or an episode. `initial` and every `before` are read-only."""

    calls: tuple[TracedCall, ...]
    initial: JSON
    final: JSON
    user_id: str | None = None
    episode: bool = False
    messages: tuple[dict[str, Any], ...] | None = None

    def earlier(self, call: TracedCall) -> tuple[TracedCall, ...]:
        # By index, not position: a trace without its refused calls keeps the indices the calls were made with.
        return tuple(other for other in self.calls if other.index < call.index)

    def without_refused(self) -> ActionTrace:
        """The same trace as if the refused calls had not been made (indices and labels kept)."""
        return replace(self, calls=tuple(call for call in self.calls if not call.refused))

    def calls_of(self, name: str) -> list[TracedCall]:
        return [call for call in self.calls if call.name == name]

    def succeeded_before(self, call: TracedCall, name: str, **arguments: Any) -> bool:
        """Whether a call of `name` with these argument values returned a non-error observation before `call`."""
        return any(
            earlier.name == name
            and not earlier.failed
            and all(earlier.arguments.get(k) == v for k, v in arguments.items())
            for earlier in self.earlier(call)
        )


def trace_calls(
    domain: Domain,
    db: JSON,
    calls: Sequence[ToolCall],
    *,
    user_id: str | None = None,
    episode: bool = False,
    messages: Sequence[Mapping[str, Any]] | None = None,
    message_indices: Sequence[int] | None = None,
) -> ActionTrace:
    """Run `calls` in order on a fresh copy of `db` (which stays untouched) and record what each one met."""
    env = domain.environment(db)
    tools = domain.toolkit.tools()
    before = db
    traced = []
    for index, call in enumerate(calls):
        result = env.step(call)
        bound = tools.get(call.name)
        writes = bound is not None and bound.spec.writes
        # Only a failed write needs comparing: reads never change the database.
        refused = result.failed and not (writes and env.db != before)
        traced.append(
            TracedCall(
                index=index,
                call=call,
                observation=result.observation,
                failed=result.failed,
                writes=writes,
                before=before,
                message_index=None if message_indices is None else message_indices[index],
                refused=refused,
            )
        )
        # Only writes change the database (a failed booking can still delete a certificate), so reads share
        # one snapshot and no copy is made after the last call.
        if writes and index < len(calls) - 1:
            before = copy_state(env.db)
    return ActionTrace(
        calls=tuple(traced),
        initial=db,
        final=env.db,
        user_id=user_id,
        episode=episode,
        messages=None if messages is None else tuple(messages),
    )


def plain_messages(messages: Sequence[Mapping[str, Any] | Message]) -> list[dict[str, Any]]:
    """OpenAI chat messages as plain dicts, whether given as dicts or as `Message` models."""
    return [message.openai() if isinstance(message, Message) else dict(message) for message in messages]


def content_text(message: Mapping[str, Any]) -> str:
    """A message's text: its `content` string, or the text parts of a content-part list."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def tool_calls_of(message: Mapping[str, Any]) -> list[ToolCall]:
    """The calls in one assistant message; argument text that is not a JSON object is kept under `__raw__`."""
    calls = []
    for entry in message.get("tool_calls") or []:
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict):
            calls.append(ToolCall(name="", arguments={"__raw__": entry}))
            continue
        calls.append(OpenAIToolCall(id=str(entry.get("id") or ""), function=function).call())
    return calls


def trace_conversation(
    domain: Domain, db: JSON, messages: Sequence[Mapping[str, Any] | Message], *, user_id: str | None = None
) -> ActionTrace:
    """An episode's trace: the tool calls of the assistant messages, in order, executed on a fresh copy of `db`."""
    plain = plain_messages(messages)
    calls: list[ToolCall] = []
    origins: list[int] = []
    for position, message in enumerate(plain):
        if message.get("role") == "assistant":
            for call in tool_calls_of(message):
                calls.append(call)
                origins.append(position)
    return trace_calls(domain, db, calls, user_id=user_id, episode=True, messages=plain, message_indices=origins)


def one_call_per_turn(trace: ActionTrace) -> list[str]:
    """One tool call per assistant turn (needs the messages).

    Text beside a call breaks nothing: in tau-bench's protocol the user never sees it (only the call runs), so
    the turn is a call, and the text is neither a reply nor an expected output."""
    if trace.messages is None:
        return []
    return [
        f"message {position} makes {count} tool calls in one turn; make one call at a time"
        for position, message in enumerate(trace.messages)
        if message.get("role") == "assistant" and (count := len(message.get("tool_calls") or [])) > 1
    ]


def calls_on_records(
    trace: ActionTrace, names: frozenset[str] | set[str], table: str, id_argument: str
) -> list[tuple[TracedCall, str, dict[str, Any]]]:
    """(call, record id, record as the call found it) for each call of `names` on an existing record of `table`."""
    found = []
    for call in trace.calls:
        if call.name in names:
            record = lookup(call.before.get(table), call.arguments.get(id_argument))
            if record is not None:
                found.append((call, call.arguments[id_argument], record))
    return found
