"""What every tool-call parser shares: the parsed result, the parser interface, and how a call's
arguments are decoded the way an OpenAI-compatible server hands them over."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from apigen_mt.simulators.types import OpenAIToolCall, ToolCall, ToolSpec


class ParsedOutput(BaseModel):
    """A completion split into tool calls and text.

    `problem` says why (part of) the output was not read as tool calls when it looks like an attempt
    at one (broken JSON, a single object instead of a list, an item without `name`), or which text
    beside the calls the format's reader drops; it is None for clean calls and for ordinary text.
    The format validator reports it.
    """

    tool_calls: list[ToolCall] = Field(default_factory=list)
    content: str | None = None
    problem: str | None = None


class ToolCallParser(ABC):
    """Reads one output format. Parsers are stateless: one instance serves any number of outputs."""

    name: ClassVar[str]
    # The format's markers are special tokens in some models (Qwen's <tool_call>, Mistral's [TOOL_CALLS]): the
    # engine must keep special tokens in the text it decodes for requests with tools, as vLLM's server does.
    needs_special_tokens: ClassVar[bool] = False

    @abstractmethod
    def parse(self, text: str) -> ParsedOutput:
        """Split one complete completion; never raises on any text."""

    @abstractmethod
    def structural_tag(self, tools: Sequence[ToolSpec], max_calls: int | None) -> dict[str, Any]:
        """The xgrammar structural tag (vLLM's `StructuredOutputsParams(structural_tag=json.dumps(...))`) that
        lets the model write plain text or calls in this format, each call's arguments held to its tool's
        `strict_parameters()`, at most `max_calls` calls (None: any number)."""


def json_kind(value: Any) -> str:
    """The JSON type name of a decoded value: object, list, string, number, boolean or null."""
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def joined(problems: list[str]) -> str | None:
    return "; ".join(dict.fromkeys(problems)) or None


def arguments_from_text(raw: str, where: str, problems: list[str]) -> dict[str, Any]:
    """Arguments a server passes on as text, decoded the way `OpenAIToolCall.call` decodes a server's
    arguments: a JSON object as is, "" as {}, anything else kept under `__raw__`."""
    arguments = OpenAIToolCall(id="", function={"name": "", "arguments": raw}).call().arguments
    if arguments == {"__raw__": raw}:
        problems.append(f"{where}: arguments are not a JSON object ({raw[:40]!r}), kept under '__raw__'")
    return arguments


def arguments_from_value(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """Arguments a server re-encodes with `json.dumps(value, ensure_ascii=False)` before passing them on,
    decoded as the client reads them: an object as is, any other JSON value as its text under `__raw__`."""
    return arguments_from_text(json.dumps(value, ensure_ascii=False), where, problems)


def looks_like_calls(text: str) -> bool:
    """Whether `text` is, as a whole, a JSON call object or a list starting with one (calls written
    without the wrapper the format requires)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    first = value[0] if isinstance(value, list) and value else value
    return isinstance(first, dict) and "name" in first


def dropped(text: str, what: str) -> str | None:
    """A problem naming non-blank `text` that the format's reader drops, or None when nothing is lost."""
    text = text.strip()
    if not text:
        return None
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"{what} is dropped: {shown!r}"
