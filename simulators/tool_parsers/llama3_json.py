"""The Llama 3.1-3.3 JSON format: each call a JSON object `{"name": ..., "parameters": {...}}`.

    {"name": "get_order_details", "parameters": {"order_id": "#W0000001"}}

Reproduces vLLM's `llama3_json` parser (non-streaming `extract_tool_calls`), its oddities included:
  1. Every `{` outside an object already read starts a JSON object, wherever it stands: text around
     the objects is allowed, and dropped. With any call, content is None; without one, the whole output.
     `<|python_tag|>` is neither needed nor removed.
  2. A `{` directly after an object's closing `}` counts as inside that object and is skipped, so in
     `{...}{...}` the second object is not read as a whole: the first `{` nested in it is. Calls are
     meant to be separated (`; ` is what vLLM documents).
  3. One `{` that does not start valid JSON, or an object without `name`, or without both `arguments`
     and `parameters`, or with a non-string name, turns the whole output into text, valid calls
     included. So does JSON Python cannot decode at all (a huge integer, deep nesting).
  4. `arguments` is taken when present, else `parameters`; either may be any JSON value, re-encoded by
     the server with `json.dumps` (`base.arguments_from_value`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from apigen_mt.simulators.tool_parsers import grammar
from apigen_mt.simulators.tool_parsers.base import (
    ParsedOutput,
    ToolCallParser,
    arguments_from_value,
    dropped,
    joined,
    json_kind,
)
from apigen_mt.simulators.types import ToolCall, ToolSpec

_PYTHON_TAG = "<|python_tag|>"
_DECODER = json.JSONDecoder()
# Output that reads as an attempted call when it ends up as text.
_CALL_LIKE = re.compile(r'<\|python_tag\|>|\{\s*"(?:name|parameters|arguments)"\s*:')


class _WholeOutputIsText(Exception):
    """vLLM's parser returns the whole output as content and no call."""


def _call(value: dict[str, Any], where: str, problems: list[str]) -> ToolCall:
    if "name" not in value:
        raise _WholeOutputIsText(f"{where} has no 'name'")
    key = "arguments" if "arguments" in value else "parameters"  # vLLM quirk 4
    if key not in value:
        raise _WholeOutputIsText(f"{where} has neither 'parameters' nor 'arguments'")
    if not isinstance(value["name"], str):
        raise _WholeOutputIsText(f"{where}: name is a JSON {json_kind(value['name'])}, not a string")
    try:
        arguments = arguments_from_value(value[key], where, problems)
    except RecursionError:
        raise _WholeOutputIsText(f"{where}: {key} are nested too deeply to encode") from None
    return ToolCall(name=value["name"], arguments=arguments)


class Llama3JSONParser(ToolCallParser):
    """Llama 3.x output: JSON call objects (optionally after `<|python_tag|>`), or plain text."""

    name = "llama3_json"

    def parse(self, text: str) -> ParsedOutput:
        if _PYTHON_TAG not in text and "{" not in text:
            return ParsedOutput(content=text)
        calls: list[ToolCall] = []
        spans: list[tuple[int, int]] = []
        problems: list[str] = []
        end = -1
        try:
            for brace in re.finditer(r"\{", text):
                start = brace.start()
                if start <= end:  # vLLM quirk 2
                    continue
                where = f"the JSON object at character {start}"
                try:
                    value, end = _DECODER.raw_decode(text, start)
                except (ValueError, RecursionError) as exc:
                    raise _WholeOutputIsText(
                        f"the '{{' at character {start} does not start valid JSON ({exc})"
                    ) from None
                calls.append(_call(value, where, problems))
                spans.append((start, end))
        except _WholeOutputIsText as exc:  # vLLM quirk 3
            attempted = text.lstrip().startswith("{") or _CALL_LIKE.search(text)
            return ParsedOutput(content=text, problem=f"{exc}; the whole output is read as text" if attempted else None)
        if not calls:
            return ParsedOutput(content=text)
        kept = [0] + [index for span in spans for index in span] + [len(text)]
        beside = " ".join(text[kept[i] : kept[i + 1]] for i in range(0, len(kept), 2))
        if lost := dropped(beside.replace(_PYTHON_TAG, " ").replace(";", " "), "text beside the calls"):  # vLLM quirk 1
            problems.append(lost)
        return ParsedOutput(tool_calls=calls, content=None, problem=joined(problems))

    def structural_tag(self, tools: Sequence[ToolSpec], max_calls: int | None) -> dict[str, Any]:
        """Either calls alone, `{"name": ..., "parameters": {...}}` as the Llama 3.1 template writes them,
        optionally after `<|python_tag|>`, separated by `; `; or text without `{` (which the parser
        would read as the start of a call)."""
        grammar.check_request(tools, max_calls)
        call = grammar.json_value(grammar.any_call_schema(tools, arguments_key="parameters"))
        calls = grammar.sequence(
            grammar.optional(grammar.const(_PYTHON_TAG)), grammar.repeated(call, grammar.const("; "), max_calls)
        )
        return grammar.structural_tag(grammar.either(calls, grammar.text(excludes=["{", _PYTHON_TAG])))
