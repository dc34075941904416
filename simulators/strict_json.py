"""Strict JSON in and out: RFC 8259 only, with stated limits, and errors that name where the problem is.

Python's `json` accepts `NaN`, `Infinity` and `-Infinity`, turns `1e400` into `inf`, raises a bare
ValueError on integers longer than `sys.get_int_max_str_digits()` and a RecursionError on deep nesting.
None of that may reach a dataset, so every JSON the project reads or writes goes through these two
functions. Pure functions: no files (callers read the text and say where it came from).
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

# Deeper nesting is refused: no record of any format here comes close, and deep values make the
# recursive code downstream (copies, diffs, encoding) fail with RecursionError.
MAX_DEPTH = 200


class StrictJSONError(ValueError):
    """Text that is not strict JSON within the limits; the message names where, and the line when there are several."""


def loads_strict(text: str, where: str) -> Any:
    """Decode `text`; `where` names its origin for messages, e.g. "orders.json" or "input.jsonl: line 3"."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise StrictJSONError(_not_json(text, where, exc)) from None
    except _Refused as exc:
        raise StrictJSONError(_at(text, where, _locate(text, exc.token), exc.problem)) from None
    except RecursionError:
        raise StrictJSONError(_at(text, where, _too_deep_at(text), _DEPTH_PROBLEM)) from None
    if _depth(value) > MAX_DEPTH:
        raise StrictJSONError(_at(text, where, _too_deep_at(text), _DEPTH_PROBLEM))
    return value


def dumps_strict(value: Any, *, indent: int | None = None) -> str:
    """`json.dumps` that refuses NaN and infinities (which would make the output unreadable to strict readers)."""
    try:
        return json.dumps(value, allow_nan=False, indent=indent)
    except ValueError as exc:
        raise StrictJSONError(f"cannot write a value as JSON: {exc} (NaN and Infinity are not JSON)") from None


_DEPTH_PROBLEM = f"nested deeper than {MAX_DEPTH} levels (the limit for any JSON input)"


class _Refused(ValueError):
    """Raised from the decoder's hooks; `token` is the offending literal, found again in the text for its line."""

    def __init__(self, token: str, problem: str) -> None:
        super().__init__(problem)
        self.token = token
        self.problem = problem


def _refuse_constant(token: str) -> Any:
    raise _Refused(token, f"{token} is not allowed (strict JSON has no NaN or Infinity)")


def _finite_float(token: str) -> float:
    number = float(token)
    if math.isinf(number):
        raise _Refused(token, f"the number {_short(token)} is too large for a 64-bit float (it would become Infinity)")
    return number


def _bounded_int(token: str) -> int:
    limit = sys.get_int_max_str_digits()
    digits = len(token.lstrip("-"))
    if limit and digits > limit:
        raise _Refused(token, f"an integer of {digits} digits exceeds the limit of {limit} digits")
    return int(token)


def _short(token: str) -> str:
    return token if len(token) <= 24 else f"{token[:20]}..."


def _depth(value: Any) -> int:
    """Nesting depth of containers (a scalar is 0, `[]` is 1), iteratively so that it cannot overflow the stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, (dict, list)))
    return deepest


# Tokens outside strings that matter for locating a problem; strings are matched whole so their contents are skipped.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]|-?(?:Infinity|NaN)|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?', re.DOTALL)


def _locate(text: str, token: str) -> int:
    """Offset of the first occurrence of `token` outside strings; 0 when not found (the message then names no line)."""
    for match in _TOKEN.finditer(text):
        if match.group() == token:
            return match.start()
    return 0


def _too_deep_at(text: str) -> int:
    depth = 0
    for match in _TOKEN.finditer(text):
        symbol = match.group()
        if symbol in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return match.start()
        elif symbol in "]}":
            depth -= 1
    return 0


def _at(text: str, where: str, offset: int, problem: str) -> str:
    """`where: line L: problem`, naming the line only for text that spans several lines."""
    if "\n" not in text:
        return f"{where}: {problem}"
    return f"{where}: line {text.count(chr(10), 0, offset) + 1}: {problem}"


def _not_json(text: str, where: str, exc: json.JSONDecodeError) -> str:
    place = f"line {exc.lineno}, column {exc.colno}" if "\n" in text else f"column {exc.colno}"
    return f"{where} is not valid JSON ({place}: {exc.msg})"
