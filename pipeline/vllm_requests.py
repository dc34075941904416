"""A ChatRequest in vLLM's terms: its prompt text and tokens, its `SamplingParams`, and our completions
from vLLM's `RequestOutput`. Shared by the Ray actor (`pipeline.vllm_backend`) and the offline
benchmarks, so both see the same tokens.

Prompts: the model's chat template is applied with `tools=` when the template mentions tools; otherwise
(the embedded SmolLM2 is such a model) the tools go into the system turn in the xLAM format
(`simulators.xlam.render_messages_for_xlam`). Replies are read by `simulators.completions`, as every
backend's are. A request's `json_schema` becomes vLLM structured outputs (xgrammar).
"""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.chat import ChatRequest, Completion, FinishReason
from apigen_mt.simulators.completions import build_completion
from apigen_mt.simulators.types import Message, OpenAIToolCall
from apigen_mt.simulators.xlam import render_messages_for_xlam


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a `tools=` argument (it at least mentions `tools`)."""
    template = tokenizer.chat_template
    if isinstance(template, dict):  # several named templates: the default one is used
        template = template.get("default", "")
    if not template:
        raise ValueError(
            "the model's tokenizer has no chat template; use an instruct/chat model or add a chat_template to its "
            "tokenizer_config.json"
        )
    return "tools" in template


def _template_message(message: Message) -> dict[str, Any]:
    data = message.openai()
    # Chat templates take call arguments as a mapping (they serialise it themselves) and text, never None.
    for call in data.get("tool_calls", []):
        decoded = OpenAIToolCall(id=call["id"], function=call["function"]).call()
        call["function"] = {"name": decoded.name, "arguments": decoded.arguments}
    data["content"] = data.get("content") or ""
    return data


def render_prompt(tokenizer: Any, request: ChatRequest, takes_tools: bool) -> str:
    """The prompt text for a request: the chat template with `tools=`, or the xLAM fallback."""
    if takes_tools or not request.tools:
        messages = [_template_message(message) for message in request.messages]
        tools = [tool.openai() for tool in request.tools] or None
        return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    messages = render_messages_for_xlam(request.messages, request.tools)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    # The template already wrote any BOS/role tokens; adding special tokens again would double them.
    return list(tokenizer.encode(prompt, add_special_tokens=False))


def sampling_params(request: ChatRequest, extra: dict[str, Any] | None = None) -> Any:
    """vLLM `SamplingParams` for a request; `extra` sets further vLLM fields (e.g. ignore_eos) or overrides."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    sampling = request.sampling
    fields: dict[str, Any] = {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "stop": list(sampling.stop) or None,
        "structured_outputs": (
            StructuredOutputsParams(json=request.json_schema) if request.json_schema is not None else None
        ),
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


def completions_from(output: Any, request: ChatRequest, prompt_tokens: int, parser: str) -> list[Completion]:
    """Our completions from one vLLM `RequestOutput`, read with the named tool-call parser where it applies."""
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
        )
        completions.append(completion.model_copy(update=cached))
    return completions
