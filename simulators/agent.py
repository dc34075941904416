"""The agent role: one request per turn, its completion read back as tool calls or a reply.

Each request carries the domain policy as the system prompt, the domain's tools and the conversation
so far. Real models decode freely and the backend's tool-call parser reads their own call syntax; with
`constrained` on, the backend generates under its parser's grammar (plain text or the model's call
syntax), which keeps a small model in the format. Backends read the completion with
`simulators.completions.read_completion`; the agent only adds what is wrong with the turn. The episode
runs and stores a turn as `repair_turn` settles it (one call per turn, text beside calls).

    agent = Agent(model, domain.policy, domain.toolkit.specs(), AgentSettings(seed=7))
    turn = await agent.act(conversation)          # conversation without the system message
    messages.append(assistant_message(turn, ["call_0"] if turn.tool_calls else []))
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from apigen_mt.simulators.chat import ChatModel, ChatRequest, Completion, FinishReason, SamplingParams
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec


class AgentSettings(BaseModel):
    """How the agent model is asked, and how its turns are stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    constrained: bool = Field(
        False,
        description="generate every turn under the serving backend's grammar for its tool-call format (plain "
        "text or the model's own call syntax); for small models that drift out of the format. Real models "
        "decode freely and the backend's parser reads them",
    )
    one_call_per_turn: bool = Field(
        True,
        description="one tool call per turn, as the domain policies require and tau-bench plays it: the request "
        "asks for no parallel calls, and of a message with several calls only the first runs (the others are "
        "dropped and recorded as a repair); false runs every call, in order",
    )
    text_beside_calls: Literal["remove", "keep"] = Field(
        "remove",
        description="text the agent wrote beside a tool call: the simulated human never sees it (tau-bench's "
        "protocol), so 'remove' stores the turn as the call alone and records the repair; a model trained on "
        "the stored conversation then never learns to address a user who cannot read it, and the policies' "
        "words (no tool call together with a reply) hold in the data. 'keep' stores it as it happened",
    )
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the first trial of a blueprint")
    later_trial_temperature: float | None = Field(
        None,
        ge=0,
        description="sampling temperature of every trial after the first, so that trials differ (a greedy "
        "first trial and sampled retries); None keeps `temperature`",
    )
    max_tokens: int = Field(512, ge=1, le=2**24, description="tokens one turn may use (2^24 is above any context)")
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="sampling seed (32 bits); None leaves sampling unseeded"
    )

    def for_trial(self, trial: int) -> AgentSettings:
        """The settings of trial `trial` (0 is the first) of a blueprint."""
        if trial == 0 or self.later_trial_temperature is None:
            return self
        return self.model_copy(update={"temperature": self.later_trial_temperature})


def build_agent_request(
    policy: str, tools: Sequence[ToolSpec], messages: Sequence[Message], settings: AgentSettings
) -> ChatRequest:
    """The request for the agent's next turn; `messages` is the conversation so far, without a system message.

    Thinking stored on the messages is left out: the human's is not the agent's to see, and endpoints of
    reasoning models refuse earlier turns that carry `reasoning_content`.
    """
    if any(message.role == "system" for message in messages):
        raise ValueError("the agent's system prompt is the policy; pass the conversation without a system message")
    shown = [message.model_copy(update={"reasoning_content": None}) for message in messages]
    conversation = [Message(role="system", content=policy), *shown]
    sampling = SamplingParams(temperature=settings.temperature, max_tokens=settings.max_tokens, seed=settings.seed)
    if not tools:
        return ChatRequest(messages=conversation, sampling=sampling)
    return ChatRequest(
        messages=conversation,
        tools=list(tools),
        reply_format="tool_calls",
        sampling=sampling,
        constrained=settings.constrained,
        parallel_tool_calls=False if settings.one_call_per_turn else None,
    )


class AgentTurn(BaseModel):
    """One agent turn: the calls to run in order, or a reply to the user.

    `error` is the backend's failure of this request (no calls, no content then); `problem` says what is
    wrong with a reply that did come back: unreadable calls, cut off by the token limit, or empty.
    `reasoning` is its thinking.
    """

    tool_calls: list[ToolCall] = Field(default_factory=list)
    content: str | None = None
    reasoning: str | None = None
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
        """The agent's next turn after `messages` (the conversation without the system message), as it came."""
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
            reasoning=completion.reasoning,
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
        only_thinking = " (only thinking)" if completion.reasoning else ""
        problems.append(f"the reply has neither tool calls nor text{only_thinking}")
    return "; ".join(problems) or None


def repair_turn(turn: AgentTurn, settings: AgentSettings) -> tuple[AgentTurn, list[str]]:
    """The turn as the episode runs and stores it, and what was changed to make it so.

    With `one_call_per_turn`, calls after the first are dropped (tau-bench runs only the first); with
    `text_beside_calls="remove"`, text beside a call is removed (the human never sees it).
    """
    calls, content, repairs = turn.tool_calls, turn.content, []
    if settings.one_call_per_turn and len(calls) > 1:
        dropped = ", ".join(call.name for call in calls[1:])
        repairs.append(f"dropped {len(calls) - 1} call(s) after the first, one call per turn: {dropped}")
        calls = calls[:1]
    if calls and content and content.strip() and settings.text_beside_calls == "remove":
        repairs.append(f"removed the text beside its tool call: {_shortened(content)!r}")
        content = None
    if not repairs:
        return turn, []
    return turn.model_copy(update={"tool_calls": calls, "content": content}), repairs


def _shortened(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def assistant_message(turn: AgentTurn, call_ids: Sequence[str]) -> Message:
    """The OpenAI assistant message of a turn: its calls under these ids, or its text; its thinking apart."""
    if turn.error is not None:
        raise ValueError(f"a failed agent turn has no assistant message; record its error instead: {turn.error}")
    if len(call_ids) != len(turn.tool_calls):
        raise ValueError(f"the turn made {len(turn.tool_calls)} tool call(s) and got {len(call_ids)} call id(s)")
    if not turn.tool_calls:
        return Message(role="assistant", content=turn.content or "", reasoning_content=turn.reasoning)
    calls = [OpenAIToolCall.of(call, call_id) for call, call_id in zip(turn.tool_calls, call_ids)]
    # Blank text beside calls is no content.
    content = turn.content if turn.content and turn.content.strip() else None
    return Message(role="assistant", content=content, tool_calls=calls, reasoning_content=turn.reasoning)
