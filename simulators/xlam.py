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

from apigen_mt.simulators.tool_parsers import grammar
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


def tool_calls_schema(
    tools: Sequence[ToolSpec], max_calls: int | None = None, max_string_chars: int | None = None
) -> dict[str, Any]:
    """JSON Schema of a non-empty list of calls to these tools, each with that tool's arguments.

    `max_calls` caps the list (1 for policies that allow one tool call per turn); None leaves it open.
    `max_string_chars` caps free-text string arguments (a summary, a thought) so that a grammar closes them
    within the token limit; ids and enums keep their own constraints.
    """
    grammar.check_request(tools, max_calls)
    return grammar.call_list_schema(tools, max_calls, max_string_chars=max_string_chars)


# Under a grammar, a reply cut off by the token limit is broken JSON. Capping a free-text field at fewer
# characters than the token limit can produce (English runs at about four characters a token) lets the
# grammar close the JSON in time.
CHARS_PER_TOKEN_BOUND = 3


def text_field_limit(max_tokens: int) -> int:
    """The most characters a free-text JSON field may hold so that a reply of `max_tokens` tokens can close it."""
    return max(16, CHARS_PER_TOKEN_BOUND * max_tokens - 48)
