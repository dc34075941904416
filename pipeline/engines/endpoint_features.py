"""What an OpenAI-compatible endpoint refuses, learned from its HTTP 400s, and how requests work around it.

Hosted APIs and self-served engines differ in what they accept: DeepSeek refuses `response_format` of type
`json_schema`, several providers refuse `n` > 1, OpenAI's reasoning models refuse `max_tokens` and ask for
`max_completion_tokens`, some servers refuse `parallel_tool_calls`. A refusal is an HTTP 400 (or a 422, the
validation error of FastAPI-based servers) whose message names the feature. `EndpointFeatures` holds, per
endpoint client, what is in force; `learn` moves one feature one step down when a refusal names it:

- structured outputs: `json_schema` -> `json_object` -> prompt only (no `response_format`; every reader of a
  structured reply also reads JSON from plain text);
- `n` > 1 -> N single requests (the client sends them concurrently and merges the answers in order);
- `parallel_tool_calls` -> left out;
- `max_tokens` -> `max_completion_tokens`.

Steps only go down, so requests refused at the same time agree, and every request after the first refusal
goes straight to the fallback. A 400 that names none of the features a request used is that request's error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from apigen_mt.simulators.chat import ChatRequest
from apigen_mt.simulators.types import Message

if TYPE_CHECKING:
    from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
SamplingField = Literal["temperature", "top_p", "seed", "stop"]

STRUCTURED_STEPS = ("json_schema", "json_object", "prompt only")
SINGLE_REQUESTS = "single requests"
LEFT_OUT = "left out"

# Statuses a refusal of a feature comes with: 400 from OpenAI-like APIs, 422 from FastAPI validation.
REFUSAL_STATUSES = (400, 422)

_STRUCTURED = re.compile(r"response_format|response format|json_schema|json_object|structured output|guided_json")
_N = re.compile(
    # `n` as a parameter name, not a letter in a word: 'n' :, n=1, n > 1, "n must be", "parameter n", "value of n"
    r"(?:^|[^\w'-])['\"`]?n['\"`]?\s*(?:[<>=!≤:]|must\b|should\b|is\b|can\b|only\b|parameter\b|\))"
    r"|\b(?:parameter|value of|field|argument)\s+['\"`]?n\b(?!['-])"
    r"|\bnumber of (?:choices|completions)\b"
)


@dataclass
class EndpointFeatures:
    """The features one endpoint client uses now, and the fallbacks it took (feature -> what it does instead)."""

    max_tokens_field: MaxTokensField = "max_tokens"
    structured_step: int = 0  # index into STRUCTURED_STEPS
    single_requests: bool = False
    parallel_tool_calls: bool = True
    fallbacks: dict[str, str] = field(default_factory=dict)

    def response_format(self, schema: dict[str, Any], name: str) -> dict[str, Any] | None:
        """The `response_format` for a reply under `schema`, at the step in force; None at prompt only."""
        step = STRUCTURED_STEPS[self.structured_step]
        if step == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        if step == "json_object":
            return {"type": "json_object"}
        return None

    def learn(self, message: str, sent: dict[str, Any]) -> str | None:
        """The feature the refusal `message` of the request `sent` names, after stepping it down; None when it names
        no feature the request used (then the refusal is that request's own error)."""
        text = message.lower()
        response_format = sent.get("response_format")
        if response_format is not None and _STRUCTURED.search(text):
            step = STRUCTURED_STEPS.index(response_format["type"]) + 1
            self.structured_step = max(self.structured_step, step)
            self.fallbacks["structured_outputs"] = STRUCTURED_STEPS[self.structured_step]
            return "structured_outputs"
        if "max_tokens" in sent and "max_completion_tokens" in text:
            self.max_tokens_field = "max_completion_tokens"
            self.fallbacks["max_tokens"] = "max_completion_tokens"
            return "max_tokens"
        if "parallel_tool_calls" in sent and "parallel_tool_calls" in text:
            self.parallel_tool_calls = False
            self.fallbacks["parallel_tool_calls"] = LEFT_OUT
            return "parallel_tool_calls"
        if sent.get("n", 1) > 1 and _N.search(text):
            self.single_requests = True
            self.fallbacks["n"] = SINGLE_REQUESTS
            return "n"
        return None


def request_body(config: OpenAIBackendConfig, features: EndpointFeatures, request: ChatRequest) -> dict[str, Any]:
    """The `/chat/completions` body for `request`, as the model's settings and the features in force shape it."""
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": config.model,
        "messages": [_openai_message(message) for message in request.messages],
        features.max_tokens_field: sampling.max_tokens,
    }
    wanted = {"temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed}
    body.update(
        (name, value) for name, value in wanted.items() if value is not None and name not in config.omit_sampling
    )
    if sampling.stop and "stop" not in config.omit_sampling:
        body["stop"] = sampling.stop
    if sampling.n > 1:  # n = 1 is every server's default; some refuse the field altogether
        body["n"] = sampling.n
    if request.tools:
        body["tools"] = [tool.openai() for tool in request.tools]
        if request.parallel_tool_calls is False and features.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    if request.json_schema is not None:
        response_format = features.response_format(request.json_schema, _schema_name(request.json_schema))
        if response_format is not None:
            body["response_format"] = response_format
    if config.chat_template_kwargs is not None:
        body["chat_template_kwargs"] = config.chat_template_kwargs
    return body


def _openai_message(message: Message) -> dict[str, Any]:
    # Thinking stays out of the prompt: DeepSeek refuses a reasoning_content field in input messages.
    data = message.model_copy(update={"reasoning_content": None}).openai()
    # OpenAI servers take tool call arguments only as a JSON string.
    for call in data.get("tool_calls", []):
        function = call["function"]
        if not isinstance(function.get("arguments"), str):
            function["arguments"] = json.dumps(function.get("arguments") or {})
    return data


def _schema_name(schema: dict[str, Any]) -> str:
    # OpenAI requires a name of at most 64 characters from [a-zA-Z0-9_-].
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", str(schema.get("title") or "reply"))[:64]
    return name or "reply"


def describe_fallback(endpoint: str, feature: str, instead: str) -> str:
    """One fallback as rows and the manifest name it: `MODEL at BASE_URL: feature -> what it does instead`."""
    return f"{endpoint}: {feature} -> {instead}"


_DESCRIBED = re.compile(r"(?P<endpoint>.+): (?P<what>\w+ -> .+)")


def fallbacks_by_endpoint(described: list[str]) -> dict[str, list[str]]:
    """`describe_fallback` texts grouped by endpoint, each fallback once, sorted: the manifest's section."""
    grouped: dict[str, set[str]] = {}
    for text in described:
        match = _DESCRIBED.fullmatch(text)
        if match is None:
            raise ValueError(f"fallback {text!r} is not of the form 'MODEL at BASE_URL: feature -> instead'")
        grouped.setdefault(match["endpoint"], set()).add(match["what"])
    return {endpoint: sorted(whats) for endpoint, whats in sorted(grouped.items())}
