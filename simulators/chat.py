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


ReplyFormat = Literal["text", "tool_calls"]
"""How a completion's visible text (thinking removed) is read (`simulators.completions.read_completion`):

- `text`: all of it is content; no tools are on offer. JSON a role emits under `json_schema` is text too.
- `tool_calls`: the tool-call parser splits it into calls and the remaining text.
"""


class ChatRequest(BaseModel):
    """Messages, the tools on offer, an optional JSON schema the reply must follow, and sampling settings.

    `reply_format` is `tool_calls` when tools are on offer and `text` otherwise. A JSON role constrains its
    reply with `json_schema`; an agent turn with `constrained` (the backend's grammar for its call format).
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
        None,
        description=(
            "False asks for one call at most (endpoints get parallel_tool_calls=false); None: the backend's default"
        ),
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
            raise ValueError("a request that offers tools reads its reply as tool_calls, not text")
        if self.reply_format != "text" and not self.tools:
            raise ValueError(f"reply_format {self.reply_format!r} needs tools on offer; without tools use 'text'")
        if self.constrained and not self.tools:
            raise ValueError("constrained decoding follows a tool-call format and needs tools on offer")
        if self.constrained and self.json_schema is not None:
            raise ValueError("a request is constrained either by json_schema or by the tool-call grammar, not both")
        return self


FinishReason = Literal["stop", "length", "tool_calls", "error"]


class Completion(BaseModel):
    """One sampled answer: its visible text, the tool calls read from it, the remaining content, its thinking.

    `text` is what the model wrote with its thinking removed (`simulators.completions.split_thinking`), not
    the raw output: the JSON roles (judge, proposer, reviewers) read `text` directly, and no reader may ever
    see thinking, so it is removed once, here, for all of them. The thinking is kept in `reasoning`.
    `problem` says why a reply that tried to be tool calls could not be read as such; `error` marks a
    completion the backend ended abnormally.
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
    reasoning: str | None = None  # thinking (reasoning_content, <think>...</think>), never in `text` or `content`


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
