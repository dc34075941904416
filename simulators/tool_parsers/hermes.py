"""The Hermes format (Qwen2.5, Qwen3, Hermes 2/3): calls in `<tool_call>...</tool_call>` tags.

    Let me look that up.<tool_call>
    {"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}
    </tool_call>

Reproduces vLLM's `hermes` parser (non-streaming `extract_tool_calls`), its oddities included:
  1. Content is the text before the first `<tool_call>`, unstripped, or None when there is none; text
     between and after the tags is dropped.
  2. A block runs to the nearest `</tool_call>`; a `<tool_call>` left open takes the rest of the
     output as its body (a reply cut off after complete JSON still calls). A `<tool_call>` inside a
     block's body is part of that body.
  3. One block that does not hold a JSON object with `name` and `arguments` (broken JSON, an empty
     tag, a list, a missing key, a non-string name), or JSON Python cannot decode at all, turns the
     whole output into text, valid sibling calls included.
  4. `arguments` may be any JSON value; the server re-encodes it with `json.dumps`, so a string or a
     number reaches the client as JSON text that is not an object (`base.arguments_from_value`).
  5. Key order inside a block does not matter (Hermes writes `arguments` first, Qwen `name` first).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apigen_mt.simulators.tool_parsers import grammar
from apigen_mt.simulators.tool_parsers.base import (
    ParsedOutput,
    ToolCallParser,
    arguments_from_value,
    dropped,
    joined,
    json_kind,
    looks_like_calls,
)
from apigen_mt.simulators.types import ToolCall, ToolSpec

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class _Block:
    start: int  # index of its <tool_call>
    body: str
    closed: bool
    end: int  # index just after the block, its closing tag included


def _blocks(text: str) -> list[_Block]:
    """The `<tool_call>` blocks in order (vLLM quirk 2)."""
    blocks: list[_Block] = []
    start = text.find(_OPEN)
    while start >= 0:
        body_start = start + len(_OPEN)
        close = text.find(_CLOSE, body_start)
        if close < 0:
            blocks.append(_Block(start, text[body_start:], closed=False, end=len(text)))
            break
        blocks.append(_Block(start, text[body_start:close], closed=True, end=close + len(_CLOSE)))
        start = text.find(_OPEN, close + len(_CLOSE))
    return blocks


class _WholeOutputIsText(Exception):
    """vLLM's parser ends in its catch-all, which returns the whole output as content and no call."""


def _call(block: _Block, where: str, problems: list[str]) -> ToolCall:
    try:
        value = json.loads(block.body)
    except (ValueError, RecursionError) as exc:
        unclosed = " and has no </tool_call>" if not block.closed else ""
        raise _WholeOutputIsText(f"{where} is not valid JSON ({exc}){unclosed}") from None
    if not isinstance(value, dict):
        raise _WholeOutputIsText(f"{where} holds a JSON {json_kind(value)}, not an object with 'name' and 'arguments'")
    missing = [key for key in ("name", "arguments") if key not in value]
    if missing:
        raise _WholeOutputIsText(f"{where} has no {' or '.join(repr(key) for key in missing)}")
    if not isinstance(value["name"], str):
        raise _WholeOutputIsText(f"{where}: name is a JSON {json_kind(value['name'])}, not a string")
    try:
        arguments = arguments_from_value(value["arguments"], where, problems)  # vLLM quirk 4
    except RecursionError:
        raise _WholeOutputIsText(f"{where}: arguments are nested too deeply to encode") from None
    return ToolCall(name=value["name"], arguments=arguments)


class HermesParser(ToolCallParser):
    """Qwen / Hermes output: text, then optionally `<tool_call>` blocks each holding one JSON call."""

    name = "hermes"
    needs_special_tokens = True

    def parse(self, text: str) -> ParsedOutput:
        first = text.find(_OPEN)
        if first < 0:
            problem = "a JSON call without <tool_call> tags is read as text" if looks_like_calls(text.strip()) else None
            return ParsedOutput(content=text, problem=problem)
        blocks = _blocks(text)
        problems: list[str] = []
        try:
            calls = [_call(block, f"<tool_call> block {index + 1}", problems) for index, block in enumerate(blocks)]
        except _WholeOutputIsText as exc:  # vLLM quirk 3
            return ParsedOutput(content=text, problem=f"{exc}; the whole output is read as text")
        gap_ends = [block.start for block in blocks[1:]] + [len(text)]
        gaps = " ".join(text[block.end : gap_end] for block, gap_end in zip(blocks, gap_ends))
        if lost := dropped(gaps, "text after the first <tool_call>"):  # vLLM quirk 1
            problems.append(lost)
        return ParsedOutput(tool_calls=calls, content=text[:first] or None, problem=joined(problems))

    def structural_tag(self, tools: Sequence[ToolSpec], max_calls: int | None) -> dict[str, Any]:
        """Text, then optionally calls, each `<tool_call>\\n{...}\\n</tool_call>` as Qwen writes them, separated
        by a newline (Qwen) or a space and a newline (the Hermes template); `name` may come first (Qwen) or
        `arguments` (Hermes). After the last call only the space the Hermes template writes may follow:
        the parser would drop anything else."""
        grammar.check_request(tools, max_calls)
        # Two schemas rather than one anyOf: xgrammar treats objects that differ only in key order as one.
        call = grammar.either(
            *(grammar.json_value(grammar.any_call_schema(tools, name_first=first)) for first in (True, False))
        )
        block = grammar.sequence(grammar.const(_OPEN + "\n"), call, grammar.const("\n" + _CLOSE))
        calls = grammar.sequence(
            grammar.repeated(block, grammar.regex(r" ?\n"), max_calls), grammar.optional(grammar.const(" "))
        )
        return grammar.structural_tag(grammar.sequence(grammar.text(excludes=[_OPEN]), grammar.optional(calls)))
