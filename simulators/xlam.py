"""The xLAM tool-call format on the prompt side, and the JSON schema of a call list.

For models whose chat template knows nothing of tools (the embedded SmolLM2 included), the tools go
into the system turn as indented JSON after a short instruction, earlier assistant calls are written
as the JSON list the model itself would produce, and tool results go back as `tool` messages
(formats.md section 2). ChatML-style templates print any role name, so no tool role is mapped to
`user`; a template that rejects unknown roles would need that mapping added here.

`tool_calls_schema` describes the xLAM call list for JSON-Schema grammars (Phase 1 proposes ground-truth
actions under it); `text_field_limit` caps free-text fields so that a grammar closes the JSON in time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from apigen_mt.simulators.types import Message, ToolCall, ToolSpec

CALL_FORMAT_INSTRUCTION = """\
# Tools

You can call the tools listed below. To call tools, reply with nothing but a JSON list of calls, in the
order they should run:
[{"name": "<tool name>", "arguments": {"<parameter>": <value>, ...}}, ...]
The arguments of each call must follow that tool's parameter schema. When no tool is needed, reply
to the user in plain text instead. The results of your calls come back in the next messages.

The tools, one JSON object each:"""


def xlam_system_prompt(base_system: str, tools: Sequence[ToolSpec]) -> str:
    """`base_system` followed by the call-format instruction and each tool as indented JSON."""
    if not tools:
        return base_system
    described = "\n\n".join(json.dumps(tool.plain(), indent=4, ensure_ascii=False) for tool in tools)
    parts = [base_system.rstrip(), CALL_FORMAT_INSTRUCTION, described]
    return "\n\n".join(part for part in parts if part)


def calls_text(calls: Sequence[ToolCall]) -> str:
    """The JSON list an xLAM model writes for these calls."""
    return json.dumps([{"name": call.name, "arguments": call.arguments} for call in calls], ensure_ascii=False)


def _assistant_text(message: Message) -> str:
    if not message.tool_calls:
        return message.content or ""
    listed = calls_text([call.call() for call in message.tool_calls])
    if not (message.content or "").strip():
        return listed
    # Text and calls in one turn (a teacher model over an OpenAI endpoint can do that): a bare list
    # after text would no longer parse, a fenced block does and gives back the same calls and text.
    return f"{message.content.strip()}\n```json\n{listed}\n```"


def render_messages_for_xlam(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Plain `{role, content}` dicts for a chat template without tool support.

    The first system message gets the tools (one is added in front when there is none); assistant
    tool calls become their JSON list; tool results stay `tool` messages, without call ids, which
    the xLAM format does not use (results answer the calls in order).
    """
    rendered: list[dict[str, Any]] = []
    tools_placed = not any(message.role == "system" for message in messages)
    if tools_placed and tools:
        rendered.append({"role": "system", "content": xlam_system_prompt("", tools)})
    for message in messages:
        if message.role == "system" and not tools_placed:
            rendered.append({"role": "system", "content": xlam_system_prompt(message.content or "", tools)})
            tools_placed = True
        elif message.role == "assistant":
            rendered.append({"role": "assistant", "content": _assistant_text(message)})
        else:
            rendered.append({"role": message.role, "content": message.content or ""})
    return rendered


def _capped_strings(schema: Any, max_chars: int) -> Any:
    """`schema` with every free-text string (no enum, const, pattern or length of its own) capped at `max_chars`."""
    if isinstance(schema, list):
        return [_capped_strings(item, max_chars) for item in schema]
    if not isinstance(schema, dict):
        return schema
    capped = {key: _capped_strings(value, max_chars) for key, value in schema.items()}
    free_text = not {"enum", "const", "pattern", "maxLength", "format"} & set(schema)
    if schema.get("type") == "string" and free_text:
        capped["maxLength"] = max_chars
    return capped


def _call_schema(tool: ToolSpec, max_string_chars: int | None) -> dict[str, Any]:
    arguments = tool.strict_parameters()
    if max_string_chars is not None:
        arguments = _capped_strings(arguments, max_string_chars)
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "const": tool.name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_calls_schema(
    tools: Sequence[ToolSpec], max_calls: int | None = None, max_string_chars: int | None = None
) -> dict[str, Any]:
    """JSON Schema of a non-empty list of calls to these tools, each with that tool's arguments.

    `max_calls` caps the list (1 for policies that allow one tool call per turn); None leaves it open.
    `max_string_chars` caps free-text string arguments (a summary, a thought) so that a grammar closes them
    within the token limit; ids and enums keep their own constraints.
    """
    if not tools:
        raise ValueError("a tool-call schema needs at least one tool; with no tools the reply is plain text")
    if max_calls is not None and max_calls < 1:
        raise ValueError(f"max_calls must be at least 1 (or None for no limit), got {max_calls}")
    calls = {"anyOf": [_call_schema(tool, max_string_chars) for tool in tools]}
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": calls}
    if max_calls is not None:
        schema["maxItems"] = max_calls
    return schema


# Under a grammar, a reply cut off by the token limit is broken JSON. Capping a free-text field at fewer
# characters than the token limit can produce (English runs at about four characters a token) lets the
# grammar close the JSON in time.
CHARS_PER_TOKEN_BOUND = 3


def text_field_limit(max_tokens: int) -> int:
    """The most characters a free-text JSON field may hold so that a reply of `max_tokens` tokens can close it."""
    return max(16, CHARS_PER_TOKEN_BOUND * max_tokens - 48)
