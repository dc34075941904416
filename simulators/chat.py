"""The one protocol every LLM role talks through, so the core never knows which backend serves it."""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator

from apigen_mt.simulators.types import Message, ToolCall, ToolSpec


class SamplingParams(BaseModel):
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    n: int = 1
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


ReplyFormat = Literal["text", "tool_calls", "agent_turn"]
"""How a completion's text is read (`simulators.completions.read_completion`):

- `text`: all of it is content; no tools are on offer. JSON a role emits under `json_schema` is text too.
- `tool_calls`: the tool-call parser splits it into calls and the remaining text.
- `agent_turn`: it was generated under `xlam.agent_turn_schema`: a JSON call list or `{"content": ...}`.
"""


class ChatRequest(BaseModel):
    """Messages, the tools on offer, an optional JSON schema the reply must follow, and sampling settings.

    `reply_format` defaults to `tool_calls` when tools are on offer and `text` otherwise; an agent turn
    under structured outputs says `agent_turn`, together with its schema.
    """

    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    json_schema: dict[str, Any] | None = None
    reply_format: ReplyFormat = "text"
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    constrained: bool = Field(
        False,
        description="generate under the serving backend's grammar for its tool-call format: plain text or the "
        "model's own call syntax; a backend without grammars ignores it",
    )
    parallel_tool_calls: bool | None = Field(
        None, description="False asks for one call at most (endpoints get parallel_tool_calls=false); None: the backend's default"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_reply_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and "reply_format" not in data and data.get("tools"):
            return {**data, "reply_format": "tool_calls"}
        return data

    @model_validator(mode="after")
    def _format_fits_the_request(self) -> ChatRequest:
        if self.reply_format == "text" and self.tools:
            raise ValueError("a request that offers tools reads its reply as tool_calls or agent_turn, not text")
        if self.reply_format != "text" and not self.tools:
            raise ValueError(f"reply_format {self.reply_format!r} needs tools on offer; without tools use 'text'")
        if self.reply_format == "agent_turn" and self.json_schema is None:
            raise ValueError(
                "reply_format 'agent_turn' needs json_schema=agent_turn_schema(tools) to constrain the reply"
            )
        return self


FinishReason = Literal["stop", "length", "tool_calls", "error"]


class Completion(BaseModel):
    """One sampled answer: raw text, the tool calls read from it, the remaining text content.

    `problem` says why a reply that tried to be tool calls (or an agent turn) could not be read as
    such; `error` marks a completion the backend ended abnormally.
    """

    text: str
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of the prompt, served from the backend's prefix cache; 0 when it does not say
    completion_tokens: int = 0
    problem: str | None = None
    error: str | None = None
    reasoning: str | None = None  # thinking text (reasoning_content, <think>...</think>), never part of `content`


class ChatResponse(BaseModel):
    """All `n` completions of one request, or an error that belongs to this request only."""

    completions: list[Completion] = Field(default_factory=list)
    model: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.completions)


class ModelUnavailable(RuntimeError):
    """The model's engine is gone or restarting; the request may be retried later."""


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers chat requests asynchronously: a vLLM actor, an HTTP endpoint, a scripted double.

    `chat` answers every request it can: whatever goes wrong with one request (a prompt over the
    context, a rejected schema, a timeout, an endpoint still failing after retries) comes back as
    `ChatResponse(error=...)`. It raises `ModelUnavailable` only when the engine itself is dead or
    restarting, so that the caller can retry the whole episode once the engine is back.
    """

    model_id: str

    async def chat(self, request: ChatRequest) -> ChatResponse: ...
