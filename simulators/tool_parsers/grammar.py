"""Building blocks of xgrammar structural tags (the `structural_tag` vLLM's structured outputs accept).

A parser's `structural_tag` composes these into the grammar of its format: plain text, or calls written
in the model's own syntax, each call an object naming one tool and holding arguments that follow that
tool's `strict_parameters()`. Whitespace inside the JSON is free, as a model writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apigen_mt.simulators.types import ToolSpec

Format = dict[str, Any]


def structural_tag(format_: Format) -> dict[str, Any]:
    return {"type": "structural_tag", "format": format_}


def const(value: str) -> Format:
    return {"type": "const_string", "value": value}


def text(excludes: Sequence[str] = ()) -> Format:
    """Any text (empty included) that contains none of `excludes`."""
    return {"type": "any_text", "excludes": list(excludes)}


def regex(pattern: str) -> Format:
    return {"type": "regex", "pattern": pattern}


def json_value(schema: dict[str, Any]) -> Format:
    return {"type": "json_schema", "json_schema": schema}


def sequence(*elements: Format) -> Format:
    return {"type": "sequence", "elements": list(elements)}


def either(*elements: Format) -> Format:
    return {"type": "or", "elements": list(elements)}


def optional(content: Format) -> Format:
    return {"type": "optional", "content": content}


def check_request(tools: Sequence[ToolSpec], max_calls: int | None) -> None:
    if not tools:
        raise ValueError("a tool-call grammar needs at least one tool; with no tools the reply is plain text")
    if max_calls is not None and max_calls < 1:
        raise ValueError(f"max_calls must be at least 1 (or None for no limit), got {max_calls}")


def capped_strings(schema: Any, max_chars: int) -> Any:
    """`schema` with every free-text string (no enum, const, pattern or length of its own) capped at `max_chars`."""
    if isinstance(schema, list):
        return [capped_strings(item, max_chars) for item in schema]
    if not isinstance(schema, dict):
        return schema
    capped = {key: capped_strings(value, max_chars) for key, value in schema.items()}
    free_text = not {"enum", "const", "pattern", "maxLength", "format"} & set(schema)
    if schema.get("type") == "string" and free_text:
        capped["maxLength"] = max_chars
    return capped


def call_schema(
    tool: ToolSpec, *, arguments_key: str = "arguments", name_first: bool = True, max_string_chars: int | None = None
) -> dict[str, Any]:
    """One call of `tool` as a JSON object `{"name": ..., <arguments_key>: {...}}`, keys in the order given;
    `max_string_chars` caps its free-text string arguments."""
    arguments = tool.strict_parameters()
    if max_string_chars is not None:
        arguments = capped_strings(arguments, max_string_chars)
    fields = [("name", {"type": "string", "const": tool.name}), (arguments_key, arguments)]
    return {
        "type": "object",
        "properties": dict(fields if name_first else fields[::-1]),
        "required": ["name", arguments_key],
        "additionalProperties": False,
    }


def any_call_schema(
    tools: Sequence[ToolSpec],
    *,
    arguments_key: str = "arguments",
    name_first: bool = True,
    max_string_chars: int | None = None,
) -> dict[str, Any]:
    return {
        "anyOf": [
            call_schema(tool, arguments_key=arguments_key, name_first=name_first, max_string_chars=max_string_chars)
            for tool in tools
        ]
    }


def call_list_schema(
    tools: Sequence[ToolSpec], max_calls: int | None, *, max_string_chars: int | None = None
) -> dict[str, Any]:
    """A non-empty JSON list of calls `[{"name": ..., "arguments": {...}}, ...]`, at most `max_calls` long."""
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": any_call_schema(tools, max_string_chars=max_string_chars),
    }
    if max_calls is not None:
        schema["maxItems"] = max_calls
    return schema


def repeated(item: Format, separator: Format, max_calls: int | None) -> Format:
    """One `item`, then up to `max_calls - 1` more (any number for None), each after `separator`."""
    if max_calls == 1:
        return item
    more = -1 if max_calls is None else max_calls - 1
    return sequence(item, {"type": "repeat", "min": 0, "max": more, "content": sequence(separator, item)})
