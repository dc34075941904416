"""From what a model returned to tool calls and content: one rule for every backend.

The vLLM actor, the OpenAI-compatible client and the scripted double all read completions here, so
a reply means the same whichever backend produced it:

1. Calls the server already extracted (`vllm serve --tool-call-parser xlam` returns them with empty
   text) are taken as they are, with the content the server gave next to them.
2. A `text` request (no tools on offer): the whole text is the content.
3. An `agent_turn` request (generated under `xlam.agent_turn_schema`): `xlam.parse_agent_turn`.
4. A `tool_calls` request: the named tool-call parser.
"""

from __future__ import annotations

from collections.abc import Sequence

from apigen_mt.simulators.chat import ChatRequest, Completion, FinishReason
from apigen_mt.simulators.tool_parsers import ParsedOutput, get_parser
from apigen_mt.simulators.types import ToolCall
from apigen_mt.simulators.xlam import parse_agent_turn


def read_completion(
    text: str, request: ChatRequest, *, server_calls: Sequence[ToolCall] | None = None, parser: str = "xlam"
) -> ParsedOutput:
    """Split one completion of `request` into tool calls and content; `problem` says what could not be read."""
    if server_calls:
        return ParsedOutput(tool_calls=list(server_calls), content=text or None)
    if request.reply_format == "text":
        return ParsedOutput(content=text)
    if request.reply_format == "agent_turn":
        return parse_agent_turn(text)
    return get_parser(parser).parse(text)


def build_completion(
    text: str,
    request: ChatRequest,
    *,
    finish_reason: FinishReason,
    prompt_tokens: int,
    completion_tokens: int,
    error: str | None = None,
    server_calls: Sequence[ToolCall] | None = None,
    parser: str = "xlam",
) -> Completion:
    """A `Completion` read with `read_completion`; a normal stop that made calls is reported as `tool_calls`."""
    parsed = read_completion(text, request, server_calls=server_calls, parser=parser)
    if parsed.tool_calls and finish_reason == "stop":
        finish_reason = "tool_calls"
    return Completion(
        text=text,
        content=parsed.content,
        tool_calls=parsed.tool_calls,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        problem=parsed.problem,
        error=error,
    )
