"""From what a model returned to tool calls and content: one rule for every backend.

The vLLM actor, the OpenAI-compatible client and the scripted double all read completions here, so
a reply means the same whichever backend produced it:

0. Thinking is split off first (`split_thinking`), so that no parser and no role ever reads it: the
   `<think>...</think>` blocks, everything before a `</think>` that has no opening tag (Qwen3 templates
   open the block in the prompt), and everything after a `<think>` that never closes (cut at max_tokens).
   It joins the reasoning the server returned apart (`reasoning_content`) in `Completion.reasoning`.
1. Calls the server already extracted (`vllm serve --tool-call-parser xlam` returns them with empty
   text) are taken as they are, with the visible text the server gave next to them.
2. A `text` request (no tools on offer): the whole visible text is the content.
3. A `tool_calls` request: the named tool-call parser reads the visible text.
"""

from __future__ import annotations

from collections.abc import Sequence

from apigen_mt.simulators.chat import ChatRequest, Completion, FinishReason
from apigen_mt.simulators.tool_parsers import ParsedOutput, get_parser
from apigen_mt.simulators.types import ToolCall

THINKING = ("<think>", "</think>")


def split_thinking(text: str, thinking: tuple[str, str] = THINKING) -> tuple[str, str | None]:
    """(visible text, thinking) of one completion; the thinking is None when there is none.

    Text with no delimiter comes back unchanged; otherwise the visible parts are joined and stripped.
    A stray closing tag makes everything before it thinking, the way a prompt-opened block reads.
    """
    opening, closing = thinking
    if not opening or not closing:
        raise ValueError(f"thinking delimiters must be two non-empty strings, got {thinking!r}")
    if opening not in text and closing not in text:
        return text, None
    visible: list[str] = []
    thought: list[str] = []
    rest = text
    while rest:
        start, end = rest.find(opening), rest.find(closing)
        if end >= 0 and (start < 0 or end < start):
            thought.append(rest[:end])
            rest = rest[end + len(closing) :]
            continue
        if start < 0:
            visible.append(rest)
            break
        visible.append(rest[:start])
        block = rest[start + len(opening) :]
        end = block.find(closing)
        if end < 0:
            thought.append(block)
            break
        thought.append(block[:end])
        rest = block[end + len(closing) :]
    return "".join(visible).strip(), _joined(thought)


def _joined(parts: Sequence[str | None]) -> str | None:
    kept = [part.strip() for part in parts if part and part.strip()]
    return "\n\n".join(kept) or None


class CompletionReading(ParsedOutput):
    """A completion read: its calls, content and problem, the visible text they came from, and the thinking."""

    visible_text: str = ""
    reasoning: str | None = None


def read_completion(
    text: str,
    request: ChatRequest,
    *,
    server_calls: Sequence[ToolCall] | None = None,
    parser: str = "xlam",
    reasoning: str | None = None,
    thinking: tuple[str, str] = THINKING,
) -> CompletionReading:
    """Split one completion of `request` into thinking, tool calls and content; `problem` says what could not
    be read. `reasoning` is the thinking the server returned apart; `thinking` the model's delimiters."""
    visible, thought = split_thinking(text, thinking)
    if server_calls:
        parsed = ParsedOutput(tool_calls=list(server_calls), content=visible or None)
    elif request.reply_format == "text":
        parsed = ParsedOutput(content=visible)
    else:
        parsed = get_parser(parser).parse(visible)
    return CompletionReading(
        tool_calls=parsed.tool_calls,
        content=parsed.content,
        problem=parsed.problem,
        visible_text=visible,
        reasoning=_joined([reasoning, thought]),
    )


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
    reasoning: str | None = None,
    thinking: tuple[str, str] = THINKING,
) -> Completion:
    """A `Completion` read with `read_completion`; a normal stop that made calls is reported as `tool_calls`.

    Its `text` is the visible text (thinking removed) and its `reasoning` the thinking (see `Completion`).
    """
    reading = read_completion(
        text, request, server_calls=server_calls, parser=parser, reasoning=reasoning, thinking=thinking
    )
    if reading.tool_calls and finish_reason == "stop":
        finish_reason = "tool_calls"
    return Completion(
        text=reading.visible_text,
        content=reading.content,
        tool_calls=reading.tool_calls,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        problem=reading.problem,
        error=error,
        reasoning=reading.reasoning,
    )
