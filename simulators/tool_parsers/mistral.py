"""The Mistral format: `[TOOL_CALLS]` followed by a JSON list of calls.

    [TOOL_CALLS][{"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}]

Reproduces vLLM's `mistral` parser (non-streaming `extract_tool_calls`) on the branch it takes for a
tokenizer without the `[ARGS]` token: a non-Mistral (Hugging Face) tokenizer that has `[TOOL_CALLS]`, as
Mistral models before tokenizer v11 have (Mistral 7B Instruct v0.3, Mixtral 8x22B Instruct), and
Mistral tokenizers before v11. (Tokenizers from v11 on write `[TOOL_CALLS]name[ARGS]{...}` and take vLLM's
other branch, which this parser does not read.) The output is read as under `tool_choice="auto"`, which
is how the agent asks. Its oddities:
  1. Content is the text before the first `[TOOL_CALLS]`, unstripped, or None when it is blank. The
     JSON read is the first non-blank stretch between markers, stripped; any text after that JSON,
     and every later stretch, is dropped.
  2. The first JSON value of that stretch is read (trailing text ignored); when it is not valid JSON,
     the span from its first `[{` to its last `}]` is tried instead.
  3. A single call object counts as a list of one; any other JSON value gives no call. Items that are
     not objects with `name` or `arguments` are skipped. With no call, content is that stripped
     stretch (possibly ""), not the whole output: the text before `[TOOL_CALLS]` disappears.
  4. A missing or non-string name becomes "" and the call is kept. Missing or null arguments become
     {}; string arguments are passed on as they are (`base.arguments_from_text`), any other JSON
     value re-encoded with `json.dumps` (`base.arguments_from_value`).
  5. JSON that Python cannot decode at all (an integer longer than the int-conversion digit limit,
     nesting deeper than the recursion limit) makes vLLM's parser raise, so its server answers with an
     error; here the whole output is read as text, with the problem said.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from apigen_mt.simulators.tool_parsers import grammar
from apigen_mt.simulators.tool_parsers.base import (
    ParsedOutput,
    ToolCallParser,
    arguments_from_text,
    arguments_from_value,
    dropped,
    joined,
    json_kind,
    looks_like_calls,
)
from apigen_mt.simulators.types import ToolCall, ToolSpec

_MARKER = "[TOOL_CALLS]"
_DECODER = json.JSONDecoder()


class _NoJSON(Exception):
    """No JSON value could be read after the marker: vLLM makes no call, the stretch is the content."""


def _first_json(payload: str) -> tuple[Any, str]:
    """The JSON value read from `payload` and its text (vLLM quirk 2). Errors other than syntax errors
    propagate (vLLM quirk 5)."""
    try:
        value, end = _DECODER.raw_decode(payload)
        return value, payload[:end]
    except json.JSONDecodeError as exc:
        error = str(exc)
    first, last = payload.find("[{"), payload.rfind("}]")
    if first < 0 or last < first + 2:
        raise _NoJSON(error)
    span = payload[first : last + 2]
    try:
        return json.loads(span), span
    except json.JSONDecodeError as exc:
        raise _NoJSON(f"{error}; nor is its [{{...}}] span: {exc}") from None


def _calls(value: Any, problems: list[str]) -> list[ToolCall]:
    items = [value] if isinstance(value, dict) else value if isinstance(value, list) else []  # vLLM quirk 3
    calls: list[ToolCall] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not ("name" in item or "arguments" in item):
            problems.append(f"item {index} after {_MARKER} is not an object with 'name' and 'arguments'; skipped")
            continue
        where = f"call {index} after {_MARKER}"
        name, arguments = item.get("name"), item.get("arguments")
        if not isinstance(name, str):  # vLLM quirk 4
            problems.append(f"{where}: name is a JSON {json_kind(name)}, not a string; read as ''")
            name = ""
        if arguments is None:
            decoded = {}
        elif isinstance(arguments, str):
            decoded = arguments_from_text(arguments, where, problems)
        else:
            decoded = arguments_from_value(arguments, where, problems)
        calls.append(ToolCall(name=name, arguments=decoded))
    return calls


class MistralParser(ToolCallParser):
    """Mistral output: text, then optionally `[TOOL_CALLS]` and a JSON list of calls."""

    name = "mistral"
    needs_special_tokens = True

    def parse(self, text: str) -> ParsedOutput:
        if _MARKER not in text:
            problem = f"JSON calls without {_MARKER} are read as text" if looks_like_calls(text.strip()) else None
            return ParsedOutput(content=text, problem=problem)
        before, *stretches = text.split(_MARKER)
        payload = next((stretch.strip() for stretch in stretches if stretch.strip()), "")
        problems: list[str] = []
        try:
            value, json_text = _first_json(payload)
            calls = _calls(value, problems)
        except _NoJSON as exc:
            return ParsedOutput(content=payload, problem=f"the text after {_MARKER} is not valid JSON ({exc})")
        except (ValueError, RecursionError) as exc:  # vLLM quirk 5
            return ParsedOutput(
                content=text,
                problem=f"the JSON after {_MARKER} cannot be decoded ({exc}); the whole output is read as text",
            )
        if not calls:
            problems.append(f"the JSON after {_MARKER} is a {json_kind(value)} without calls")
            return ParsedOutput(content=payload, problem=joined(problems))
        after = text[len(before) + len(_MARKER) :].replace(json_text, " ", 1).replace(_MARKER, " ")
        if lost := dropped(after, "text after the calls"):  # vLLM quirk 1
            problems.append(lost)
        return ParsedOutput(tool_calls=calls, content=before if before.strip() else None, problem=joined(problems))

    def structural_tag(self, tools: Sequence[ToolSpec], max_calls: int | None) -> dict[str, Any]:
        """Text, then optionally `[TOOL_CALLS]`, an optional space and the call list; nothing after it."""
        grammar.check_request(tools, max_calls)
        calls = grammar.sequence(
            grammar.const(_MARKER),
            grammar.optional(grammar.const(" ")),
            grammar.json_value(grammar.call_list_schema(tools, max_calls)),
        )
        return grammar.structural_tag(grammar.sequence(grammar.text(excludes=[_MARKER]), grammar.optional(calls)))
