"""The one protocol every LLM role talks through, so the core never knows which backend serves it."""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from apigen_mt.simulators.types import Message, ToolCall, ToolSpec


class SamplingParams(BaseModel):
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    n: int = 1
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """Messages, the tools on offer, an optional JSON schema the reply must follow, and sampling settings."""

    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    json_schema: dict[str, Any] | None = None
    sampling: SamplingParams = Field(default_factory=SamplingParams)


FinishReason = Literal["stop", "length", "tool_calls", "error"]


class Completion(BaseModel):
    """One sampled answer: raw text, the tool calls parsed from it, the remaining text content."""

    text: str
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class ChatResponse(BaseModel):
    """All `n` completions of one request, or an error that belongs to this request only."""

    completions: list[Completion] = Field(default_factory=list)
    model: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.completions)


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers chat requests asynchronously: a vLLM actor, an HTTP endpoint, a scripted double."""

    model_id: str

    async def chat(self, request: ChatRequest) -> ChatResponse: ...
