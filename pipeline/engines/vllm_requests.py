"""A ChatRequest in vLLM's terms: its prompt text and tokens, its `SamplingParams`, and our completions
from vLLM's `RequestOutput`. Shared by the Ray actor (`pipeline.engines.vllm_backend`) and the offline
benchmarks, so both see the same tokens.

Prompts: the model's chat template is applied with `tools=` in the form its family's model card uses
(`pipeline.engines.model_family`) when the template renders tools; otherwise (the embedded SmolLM2 is such a model)
the tools go into the system turn in the xLAM format (`simulators.xlam.render_messages_for_xlam`). Replies
are read by `simulators.completions`, as every backend's are. A request's `json_schema` becomes vLLM
structured outputs (xgrammar); a `constrained` request gets its parser's structural tag, which allows plain
text or the model's own call syntax.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from apigen_mt.pipeline.engines.model_family import ModelFamily, family_of_template, tool_template
from apigen_mt.simulators.chat import ChatRequest, Completion, FinishReason
from apigen_mt.simulators.completions import build_completion
from apigen_mt.simulators.tool_parsers import ToolCallParser, get_parser
from apigen_mt.simulators.types import Message, OpenAIToolCall
from apigen_mt.simulators.xlam import render_messages_for_xlam


def tokenizer_family(tokenizer: Any, model_type: str | None = None) -> ModelFamily:
    """The family of a loaded tokenizer's chat template (the one transformers applies to requests with tools)."""
    return family_of_template(tool_template(tokenizer.chat_template), model_type)


def _template_message(message: Message, call_names: Mapping[str, str]) -> dict[str, Any]:
    data = message.openai()
    # Chat templates write call arguments with `tojson` (a string would come out quoted and escaped) and
    # concatenate content (None would fail or print "None"); Hermes' refuses a tool message without `name`.
    for call in data.get("tool_calls", []):
        decoded = OpenAIToolCall(id=call["id"], function=call["function"]).call()
        call["function"] = {"name": decoded.name, "arguments": decoded.arguments}
    data["content"] = data.get("content") or ""
    if message.role == "tool" and "name" not in data and message.tool_call_id in call_names:
        data["name"] = call_names[message.tool_call_id]
    return data


def _one_call_each(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An assistant message with several calls as consecutive one-call turns, each followed by its results,
    for templates that refuse several calls in one message (Llama 3.1's)."""
    result: list[dict[str, Any]] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        calls = message.get("tool_calls") or []
        if len(calls) < 2:
            result.append(message)
            continue
        answers = []
        while index < len(messages) and messages[index]["role"] == "tool":
            answers.append(messages[index])
            index += 1
        for position, call in enumerate(calls):
            result.append({**message, "content": message["content"] if position == 0 else "", "tool_calls": [call]})
            result += [answer for answer in answers if answer.get("tool_call_id") == call["id"]]
        ids = {call["id"] for call in calls}
        result += [answer for answer in answers if answer.get("tool_call_id") not in ids]
    return result


def template_messages(messages: Sequence[Message], family: ModelFamily) -> list[dict[str, Any]]:
    """The messages as the family's chat template reads them."""
    call_names = {call.id: call.function.get("name", "") for message in messages for call in message.tool_calls or []}
    rendered = [_template_message(message, call_names) for message in messages]
    return _one_call_each(rendered) if family.one_call_per_message else rendered


def template_tools(request: ChatRequest, family: ModelFamily) -> list[dict[str, Any]] | None:
    """The `tools=` entries in the form the family's model card gives them; None without tools."""
    entries = [tool.plain() if family.tool_entries == "plain" else tool.openai() for tool in request.tools]
    return entries or None


def render_prompt(
    tokenizer: Any, request: ChatRequest, family: ModelFamily, template_kwargs: Mapping[str, Any] | None = None
) -> str:
    """The prompt text for a request: the chat template with `tools=`, or the xLAM fallback."""
    extra = dict(template_kwargs or {})
    if family.takes_tools or not request.tools:
        messages = template_messages(request.messages, family)
        return tokenizer.apply_chat_template(
            messages, tools=template_tools(request, family), add_generation_prompt=True, tokenize=False, **extra
        )
    messages = render_messages_for_xlam(request.messages, request.tools)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)


def prompt_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    # The template already wrote any BOS/role tokens; adding special tokens again would double them.
    return list(tokenizer.encode(prompt, add_special_tokens=False))


def _structured_outputs(request: ChatRequest, parser: ToolCallParser) -> Any:
    """vLLM's structured-outputs constraint for a request, None for free decoding."""
    from vllm.sampling_params import StructuredOutputsParams

    if request.constrained:  # ChatRequest guarantees tools on offer and no json_schema
        max_calls = 1 if request.parallel_tool_calls is False else None
        tag = parser.structural_tag(request.tools, max_calls)
        return StructuredOutputsParams(structural_tag=json.dumps(tag))
    if request.json_schema is not None:
        return StructuredOutputsParams(json=request.json_schema)
    return None


def sampling_params(request: ChatRequest, parser: str, extra: dict[str, Any] | None = None) -> Any:
    """vLLM `SamplingParams` for a request whose replies the named tool-call parser reads; `extra` sets
    further vLLM fields (e.g. ignore_eos) or overrides."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    sampling = request.sampling
    reader = get_parser(parser)
    fields: dict[str, Any] = {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "stop": list(sampling.stop) or None,
        "structured_outputs": _structured_outputs(request, reader),
        "skip_special_tokens": not (request.tools and reader.needs_special_tokens),
        # Only the finished answer is needed: no per-token streaming work in the actor.
        "output_kind": RequestOutputKind.FINAL_ONLY,
    }
    fields.update(extra or {})
    return SamplingParams(**fields)


def _finish_reason(reason: str | None) -> tuple[FinishReason, str | None]:
    if reason in ("stop", None):
        return "stop", None
    if reason == "length":
        return "length", None
    return "error", f"vLLM ended this completion with finish_reason {reason!r}"


def completions_from(
    output: Any, request: ChatRequest, prompt_tokens: int, parser: str, thinking: tuple[str, str]
) -> list[Completion]:
    """Our completions from one vLLM `RequestOutput`, read with the named tool-call parser where it applies
    and the model's thinking delimiters."""
    completions = []
    cached = {"cached_prompt_tokens": output.num_cached_tokens or 0}
    for sample in sorted(output.outputs, key=lambda sample: sample.index):
        finish_reason, error = _finish_reason(sample.finish_reason)
        completion = build_completion(
            sample.text,
            request,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(sample.token_ids),
            error=error,
            parser=parser,
            thinking=thinking,
        )
        completions.append(completion.model_copy(update=cached))
    return completions
