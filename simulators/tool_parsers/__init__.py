"""Tool-call parsers: read a model's raw completion text as tool calls plus remaining text.

One class per output format (a module each), registered by the name vLLM gives the same format
(`vllm serve --tool-call-parser NAME`), so a completion decoded here yields the same calls and text as
an OpenAI-compatible server running that parser would return. Each parser also gives the grammar of
its format for constrained decoding (`structural_tag`).

    parsed = get_parser("xlam").parse('[{"name": "get_user_details", "arguments": {"user_id": "u1"}}]')
    parsed.tool_calls  # [ToolCall(name='get_user_details', arguments={'user_id': 'u1'})]

| format | families | calls look like |
|---|---|---|
| `xlam` | xLAM-2 | `[{"name": ..., "arguments": {...}}]` |
| `hermes` | Qwen2.5, Qwen3, Hermes | `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` |
| `llama3_json` | Llama 3.1-3.3 | `{"name": ..., "parameters": {...}}`, several separated by `; ` |
| `mistral` | Mistral (tokenizers before v11) | `[TOOL_CALLS][{"name": ..., "arguments": {...}}]` |
"""

from __future__ import annotations

from apigen_mt.simulators.tool_parsers.base import ParsedOutput, ToolCallParser, json_kind
from apigen_mt.simulators.tool_parsers.hermes import HermesParser
from apigen_mt.simulators.tool_parsers.llama3_json import Llama3JSONParser
from apigen_mt.simulators.tool_parsers.mistral import MistralParser
from apigen_mt.simulators.tool_parsers.xlam import XLAMParser

__all__ = [
    "HermesParser",
    "Llama3JSONParser",
    "MistralParser",
    "ParsedOutput",
    "ToolCallParser",
    "XLAMParser",
    "get_parser",
    "json_kind",
    "parser_names",
    "register_parser",
]

_PARSERS: dict[str, type[ToolCallParser]] = {}


def register_parser(parser: type[ToolCallParser]) -> type[ToolCallParser]:
    """Class decorator: make a parser available to `get_parser` under its `name`; a name already taken is refused."""
    taken = _PARSERS.get(parser.name)
    if taken is not None and taken is not parser:
        raise ValueError(
            f"tool-call format {parser.name!r} is already registered by {taken.__module__}.{taken.__qualname__}; "
            f"give {parser.__module__}.{parser.__qualname__} another name"
        )
    _PARSERS[parser.name] = parser
    return parser


def parser_names() -> list[str]:
    return sorted(_PARSERS)


def get_parser(name: str) -> ToolCallParser:
    if name not in _PARSERS:
        raise ValueError(f"unknown tool-call format {name!r}; known formats: {', '.join(parser_names())}")
    return _PARSERS[name]()


for _parser in (XLAMParser, HermesParser, Llama3JSONParser, MistralParser):
    register_parser(_parser)
