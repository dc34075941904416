"""The agent role: one request per turn, its completion read back as tool calls or a reply.

Each request carries the domain policy as the system prompt, the domain's tools and the conversation
so far. With `constrained` on (the default) the reply is generated under `agent_turn_schema`, so it
is always a valid call list or `{"content": ...}`; the domain policies allow one tool call per turn
(retail R5, airline A2), so the schema then admits exactly one call. Backends read the completion
with `simulators.completions.read_completion`; the agent only adds what is wrong with the turn.

    agent = Agent(model, domain.policy, domain.toolkit.specs(), AgentSettings(seed=7))
    turn = await agent.act(conversation)          # conversation without the system message
    messages.append(assistant_message(turn, ["call_0"] if turn.tool_calls else []))
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from apigen_mt.simulators.chat import ChatModel, ChatRequest, Completion, FinishReason, SamplingParams
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec
from apigen_mt.simulators.xlam import agent_turn_schema, text_field_limit


class AgentSettings(BaseModel):
    """How the agent model is asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    constrained: bool = Field(
        True,
        description="generate every turn under agent_turn_schema (structured outputs); turn off for a backend "
        "without them, whose replies are then read with the tool-call parser",
    )
    one_call_per_turn: bool = Field(
        True,
        description="the constrained schema admits one call per turn, as the domain policies require; "
        "unconstrained, only the policy's own words ask for it",
    )
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(512, ge=1, description="tokens one turn may use")
    seed: int | None = Field(None, description="sampling seed; None leaves sampling unseeded")


def build_agent_request(
    policy: str, tools: Sequence[ToolSpec], messages: Sequence[Message], settings: AgentSettings
) -> ChatRequest:
    """The request for the agent's next turn; `messages` is the conversation so far, without a system message."""
    if any(message.role == "system" for message in messages):
        raise ValueError("the agent's system prompt is the policy; pass the conversation without a system message")
    conversation = [Message(role="system", content=policy), *messages]
    sampling = SamplingParams(temperature=settings.temperature, max_tokens=settings.max_tokens, seed=settings.seed)
    if not tools:
        return ChatRequest(messages=conversation, sampling=sampling)
    if not settings.constrained:
        return ChatRequest(messages=conversation, tools=list(tools), reply_format="tool_calls", sampling=sampling)
    return ChatRequest(
        messages=conversation,
        tools=list(tools),
        json_schema=agent_turn_schema(
            tools,
            max_calls=1 if settings.one_call_per_turn else None,
            max_text_chars=text_field_limit(settings.max_tokens),
        ),
        reply_format="agent_turn",
        sampling=sampling,
    )


class AgentTurn(BaseModel):
    """One agent turn: the calls to run in order, or a reply to the user.

    `error` is the backend's failure of this request (no calls, no content then); `problem` says what is
    wrong with a reply that did come back: unreadable calls, cut off by the token limit, or empty.
    """

    tool_calls: list[ToolCall] = Field(default_factory=list)
    content: str | None = None
    problem: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model_id: str = ""
    finish_reason: FinishReason | None = None  # None when no completion came back


class Agent:
    """The agent role over any `ChatModel`. Raises `ModelUnavailable` from the model (a dead engine) unchanged."""

    def __init__(
        self, model: ChatModel, policy: str, tools: Sequence[ToolSpec], settings: AgentSettings | None = None
    ) -> None:
        self.model = model
        self.policy = policy
        self.tools = list(tools)
        self.settings = settings or AgentSettings()

    def __repr__(self) -> str:
        return f"Agent({self.model!r}, {len(self.tools)} tools, {self.settings!r})"

    async def act(self, messages: Sequence[Message]) -> AgentTurn:
        """The agent's next turn after `messages` (the conversation without the system message)."""
        request = build_agent_request(self.policy, self.tools, messages, self.settings)
        started = time.perf_counter()
        response = await self.model.chat(request)
        latency_s = time.perf_counter() - started
        model_id = response.model or self.model.model_id
        if not response.ok:
            error = response.error or "the backend answered without a completion"
            return AgentTurn(error=error, latency_s=latency_s, model_id=model_id)
        completion = response.completions[0]
        return AgentTurn(
            tool_calls=completion.tool_calls,
            content=completion.content,
            problem=_problem(completion, self.settings.max_tokens),
            error=completion.error,
            prompt_tokens=completion.prompt_tokens,
            cached_prompt_tokens=completion.cached_prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_s=latency_s,
            model_id=model_id,
            finish_reason=completion.finish_reason,
        )


def _problem(completion: Completion, max_tokens: int) -> str | None:
    problems = [completion.problem] if completion.problem else []
    if completion.finish_reason == "length":
        problems.append(f"the reply was cut off at max_tokens={max_tokens}; raise the agent's max_tokens")
    elif not completion.tool_calls and not (completion.content or "").strip():
        problems.append("the reply has neither tool calls nor text")
    return "; ".join(problems) or None


def assistant_message(turn: AgentTurn, call_ids: Sequence[str]) -> Message:
    """The OpenAI assistant message of a turn: its calls under these ids, or its text."""
    if turn.error is not None:
        raise ValueError(f"a failed agent turn has no assistant message; record its error instead: {turn.error}")
    if len(call_ids) != len(turn.tool_calls):
        raise ValueError(f"the turn made {len(turn.tool_calls)} tool call(s) and got {len(call_ids)} call id(s)")
    if not turn.tool_calls:
        return Message(role="assistant", content=turn.content or "")
    calls = [OpenAIToolCall.of(call, call_id) for call, call_id in zip(turn.tool_calls, call_ids)]
    # Text next to calls is kept (an endpoint may return both); blank text is no content.
    content = turn.content if turn.content and turn.content.strip() else None
    return Message(role="assistant", content=content, tool_calls=calls)
