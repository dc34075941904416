"""ScriptedChatModel: a deterministic test double that answers from a script. Never a default backend.

A script is a list of replies, answered in order, or a function of the request. A reply is
- a `str`: what the model wrote, read as `RawText` is (so `<think>...</think>` becomes thinking),
- a `ToolCall` or a list of them: a completion that calls those tools, its text in xLAM's JSON-list form,
- a `RawText`: what a model literally wrote, read against the request exactly as the real backends
  read it (`simulators.completions`), so broken calls come back with their `problem` and thinking
  blocks are split off,
- a `ServerReply`: what an OpenAI-compatible server returns when it extracts calls and reasoning itself:
  content (text beside the calls), several calls, `reasoning_content`, read as the endpoint client reads it,
- a `Completion`: used as it is,
- a `ChatResponse`: the whole answer to one request, e.g. to script an endpoint error,
- a `ModelUnavailable`: raised, as a backend whose engine died raises it.
A request asking for `n` completions takes `n` replies, unless the first is a `ChatResponse` or a
`ModelUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from apigen_mt.simulators.chat import ChatRequest, ChatResponse, Completion, FinishReason, ModelUnavailable
from apigen_mt.simulators.completions import build_completion
from apigen_mt.simulators.types import ToolCall
from apigen_mt.simulators.xlam import calls_text


@dataclass(frozen=True)
class RawText:
    """A model's raw output, to be read like a real backend's (`finish_reason="length"` for one cut short)."""

    text: str
    finish_reason: FinishReason = "stop"


@dataclass(frozen=True)
class ServerReply:
    """A server's answer with the calls and the reasoning already extracted, read like the endpoint client's."""

    content: str = ""
    calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    finish_reason: FinishReason = "stop"


Reply = str | ToolCall | list[ToolCall] | RawText | ServerReply | Completion | ChatResponse | ModelUnavailable


class ScriptExhausted(AssertionError):
    """The code under test asked for more replies than its script holds."""


class ScriptedChatModel:
    """Answers chat requests from a script and records every request it received."""

    def __init__(self, script: Sequence[Reply] | Callable[[ChatRequest], Reply], model_id: str = "scripted") -> None:
        self.model_id = model_id
        self.requests: list[ChatRequest] = []
        self._respond = script if callable(script) else None
        self._replies = [] if callable(script) else list(script)
        self._drawn = 0

    def __repr__(self) -> str:
        if self._respond is not None:
            return f"ScriptedChatModel({self.model_id!r}, function={getattr(self._respond, '__name__', self._respond)})"
        return f"ScriptedChatModel({self.model_id!r}, {self.remaining} of {len(self._replies)} replies left)"

    @property
    def remaining(self) -> int:
        """Replies not yet used (0 for a function script)."""
        return 0 if self._respond is not None else len(self._replies) - self._drawn

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        first = self._draw(request)
        if isinstance(first, ModelUnavailable):
            raise first
        if isinstance(first, ChatResponse):
            return first
        completions = [_completion(first, request)]
        for _ in range(request.sampling.n - 1):
            reply = self._draw(request)
            if isinstance(reply, (ChatResponse, ModelUnavailable)):
                raise TypeError(
                    f"{self!r}: request #{len(self.requests)} asked for n={request.sampling.n} completions and "
                    f"reply #{self._drawn} is a whole {type(reply).__name__}; it may only answer a request by itself"
                )
            completions.append(_completion(reply, request))
        return ChatResponse(completions=completions, model=self.model_id)

    def _draw(self, request: ChatRequest) -> Reply:
        if self._respond is not None:
            self._drawn += 1
            return self._respond(request)
        if self._drawn >= len(self._replies):
            last_message = request.messages[-1].content if request.messages else None
            raise ScriptExhausted(
                f"ScriptedChatModel {self.model_id!r} has no reply left for request #{len(self.requests)}: "
                f"its script held {len(self._replies)} replies, all used; the request's last message was "
                f"{_shorten(last_message)!r}. Add replies to the script or check why the code asked again."
            )
        reply = self._replies[self._drawn]
        self._drawn += 1
        return reply


def _completion(reply: Reply, request: ChatRequest) -> Completion:
    if isinstance(reply, Completion):
        return reply
    if isinstance(reply, str):
        reply = RawText(reply)
    if isinstance(reply, RawText):
        return build_completion(
            reply.text, request, finish_reason=reply.finish_reason, prompt_tokens=0, completion_tokens=0
        )
    if isinstance(reply, ServerReply):
        return build_completion(
            reply.content,
            request,
            finish_reason=reply.finish_reason,
            prompt_tokens=0,
            completion_tokens=0,
            server_calls=reply.calls,
            reasoning=reply.reasoning,
        )
    calls = [reply] if isinstance(reply, ToolCall) else reply
    if isinstance(calls, list) and all(isinstance(call, ToolCall) for call in calls):
        return Completion(text=calls_text(calls), content=None, tool_calls=list(calls), finish_reason="tool_calls")
    raise TypeError(
        "a scripted reply must be a str, ToolCall, list of ToolCall, RawText, ServerReply, Completion, ChatResponse or "
        f"ModelUnavailable, got {reply!r}"
    )


def _shorten(text: str | None, limit: int = 120) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "..."
