"""xLAM-2's format: a JSON list of calls `[{"name": ..., "arguments": {...}}, ...]`, or plain text.

Reproduces vLLM's `xlam` parser (non-streaming `extract_tool_calls`) exactly, its oddities included,
because the same model output must give the same calls whether vLLM's server or this code reads it.
The oddities, each marked "vLLM quirk" below:
  1. After `</think>` only the JSON is kept: content is the text up to and including `</think>`, and
     any other text after it is dropped.
  2. After `</think>` any JSON value is accepted; one that is not a list yields no call and the
     content is again only the thinking part, so the JSON text disappears.
  3. Wrappers are tried kind by kind (fence, `[TOOL_CALLS]`, `<tool_call>`); the first wrapper whose
     body is valid JSON wins, its siblings are ignored, and every wrapper of that kind is cut from the
     content, including ones with broken JSON.
  4. A fence may be tagged `json` (lower case) or nothing; any other tag is read as part of the body.
     The whitespace after the fence is Unicode White_Space (vLLM's `regex` module), not Python's `\\s`.
  5. `[TOOL_CALLS]` takes only the rest of its own line.
  6. A valid list without a single valid call leaves content as it was computed: None for a bare
     list, so `[1, 2]` or `[]` vanishes entirely, "" or the surrounding text for a wrapper.
  7. A JSON value that is not a list (a single call object) is no call; content is the text around
     the wrapper, or the whole output when nothing else remains.
  8. Items that are not objects with both `name` and `arguments` are skipped, but one call with a
     non-string name, or arguments that are neither an object nor a string, turns the whole output
     into text, valid sibling calls included.
  9. Arguments given as a string are passed on as that string (decoded by `base.arguments_from_text`).
 10. JSON that Python's decoder rejects with something other than a syntax error (an integer longer
     than the int-conversion digit limit, nesting deeper than the recursion limit) turns the whole
     output into text.
 11. Content left after cutting a wrapper is stripped and may be "", not None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apigen_mt.simulators.tool_parsers import grammar
from apigen_mt.simulators.tool_parsers.base import (
    ParsedOutput,
    ToolCallParser,
    arguments_from_text,
    joined,
    json_kind,
)
from apigen_mt.simulators.types import ToolCall, ToolSpec

# Unicode White_Space, which is what `\s` means to the `regex` module vLLM uses; Python's `re` would
# also take the separators \x1c-\x1f.
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

_THINK_END = "</think>"


@dataclass(frozen=True)
class _Wrapper:
    label: str
    pattern: re.Pattern[str]  # group 1 is the body to read as JSON
    always_an_attempt: bool  # else only a body that looks like JSON counts as a tried tool call


_WRAPPERS = (
    _Wrapper("``` block", re.compile(rf"```(?:json)?[{_WHITE_SPACE}]*(.*?)```", re.DOTALL), False),
    _Wrapper("[TOOL_CALLS] line", re.compile(r"\[TOOL_CALLS\]([^\n]*)"), True),
    _Wrapper("<tool_call> tag", re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL), True),
)


# Where this parser looks for calls inside text (vLLM quirks 1, 3 and 5).
_CALL_MARKERS = ("```", "[TOOL_CALLS]", "<tool_call>", _THINK_END)


class _WholeOutputIsText(Exception):
    """vLLM's parser ends in its catch-all, which returns the whole output as content and no call."""


@dataclass(frozen=True)
class _Decoded:
    ok: bool
    value: Any = None
    error: str = ""


def _decode(fragment: str) -> _Decoded:
    try:
        return _Decoded(ok=True, value=json.loads(fragment))
    except json.JSONDecodeError as exc:
        return _Decoded(ok=False, error=str(exc))
    except (ValueError, RecursionError) as exc:  # vLLM quirk 10
        raise _WholeOutputIsText(f"the tool-call JSON cannot be decoded: {exc}") from None


# A fence body that opens like JSON, possibly after a language tag vLLM does not accept (```python).
_JSON_LIKE_BODY = re.compile(r"\s*(?:\w+\s+)?[\[{]")


def _calls(value: Any, content: str | None, text: str, source: str, problems: list[str]) -> ParsedOutput:
    """The calls in a decoded JSON value, with the content vLLM returns next to them."""
    if not isinstance(value, list):  # vLLM quirks 2 and 7
        problems.append(f"{source} is a JSON {json_kind(value)}, not a list of calls")
        return ParsedOutput(content=content or text, problem=joined(problems))
    calls: list[ToolCall] = []
    skipped: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or "name" not in item or "arguments" not in item:
            skipped.append(str(index))
            continue
        name, arguments = item["name"], item["arguments"]
        where = f"call {index} of {source}"
        if not isinstance(name, str):  # vLLM quirk 8
            raise _WholeOutputIsText(f"{where}: name is a JSON {json_kind(name)}, not a string")
        if isinstance(arguments, str):
            arguments = arguments_from_text(arguments, where, problems)  # vLLM quirk 9
        elif not isinstance(arguments, dict):  # vLLM quirk 8
            raise _WholeOutputIsText(f"{where}: arguments are a JSON {json_kind(arguments)}, not an object")
        calls.append(ToolCall(name=name, arguments=arguments))
    if skipped:
        items = (
            f"item {skipped[0]} of {source} is not an object"
            if len(skipped) == 1
            else f"items {', '.join(skipped)} of {source} are not objects"
        )
        problems.append(f"{items} with 'name' and 'arguments'")
    elif not calls:
        problems.append(f"{source} is an empty list")
    return ParsedOutput(tool_calls=calls, content=content, problem=joined(problems))


class XLAMParser(ToolCallParser):
    """xLAM-2 output: a JSON list `[{"name": ..., "arguments": {...}}, ...]`, or plain text.

    Accepted, in this order: the JSON after a `</think>` (bare or in a wrapper), a fenced ```json block,
    a `[TOOL_CALLS]` line, a `<tool_call>...</tool_call>` tag, and finally text that starts with `[`.
    """

    name = "xlam"

    def structural_tag(self, tools: Sequence[ToolSpec], max_calls: int | None) -> dict[str, Any]:
        """The bare call list alone, or text. Text that this parser would read as calls (a leading `[`, a
        fence, a `[TOOL_CALLS]` line, a `<tool_call>` tag, JSON after `</think>`) is kept out of the text
        branch, so every call passes the schema; for the same reason a reply cannot start with whitespace.
        Nor may text hold `{"name"`: a call list after text would be read as text, the call lost."""
        grammar.check_request(tools, max_calls)
        calls = grammar.json_value(grammar.call_list_schema(tools, max_calls))
        plain = grammar.sequence(grammar.regex(r"[^\[\s]"), grammar.text(excludes=[*_CALL_MARKERS, '{"name"']))
        return grammar.structural_tag(grammar.either(calls, plain))

    def parse(self, text: str) -> ParsedOutput:
        try:
            return self._parse(text)
        except _WholeOutputIsText as exc:
            return ParsedOutput(content=text, problem=f"{exc}; the whole output is read as text")

    def _parse(self, text: str) -> ParsedOutput:
        problems: list[str] = []
        think_end = text.find(_THINK_END)
        if think_end >= 0:
            split = think_end + len(_THINK_END)
            thinking, answer = text[:split].strip(), text[split:].strip()  # vLLM quirk 1
            decoded = _decode(answer)
            if decoded.ok:
                return _calls(decoded.value, thinking, text, "the JSON after </think>", problems)
            for wrapper in _WRAPPERS:
                for match in wrapper.pattern.finditer(answer):
                    decoded = _decode(match.group(1))
                    if decoded.ok:
                        if answer != match.group(0):  # vLLM quirk 1
                            problems.append(f"text after </think> other than the {wrapper.label} is dropped")
                        return _calls(decoded.value, thinking, text, f"the {wrapper.label} after </think>", problems)
            # No JSON after </think>: vLLM goes on with the whole output, thinking part included.
        for wrapper in _WRAPPERS:
            for match in wrapper.pattern.finditer(text):
                decoded = _decode(match.group(1))
                if decoded.ok:  # vLLM quirk 3
                    rest, cut = wrapper.pattern.subn("", text)
                    if cut > 1:
                        problems.append(
                            f"{cut - 1} other {wrapper.label}(s) were cut unread; put all calls in one list"
                        )
                    rest = rest.strip()  # vLLM quirk 11
                    return _calls(decoded.value, rest, text, f"the {wrapper.label}", problems)
                if (
                    wrapper.always_an_attempt
                    or match.group(0).startswith("```json")
                    or _JSON_LIKE_BODY.match(match.group(1))
                ):
                    problems.append(f"a {wrapper.label} is not valid JSON ({decoded.error})")
        if text.strip().startswith("["):
            decoded = _decode(text)
            if decoded.ok:
                return _calls(decoded.value, None, text, "the output", problems)
            problems.append(f"the output starts with '[' but is not valid JSON ({decoded.error})")
        elif text.strip().startswith("{") and _decode(text).ok:
            problems.append("the output is a single JSON object; xLAM calls must be a JSON list [...]")
        return ParsedOutput(content=text, problem=joined(problems))
