"""Tool-call parsing (xLAM) checked rule by rule and against vLLM's own `xlam` parser; xLAM prompt
rendering and structured-output schemas; the `apigen-mt parse` command."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from apigen_mt.pipeline.cli import parse as cli_parse  # noqa: F401  (registers `parse` on the app)
from apigen_mt.pipeline.cli.main import CliError, app
from apigen_mt.simulators import tool_parsers
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.tool_parsers import ParsedOutput, ToolCallParser, get_parser, register_parser
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec
from apigen_mt.simulators.xlam import render_messages_for_xlam, tool_calls_schema, xlam_system_prompt
from tests.vllm_parsers import FILLERS, ours, outputs, theirs, vllm_extractor, weighted

XLAM = get_parser("xlam")
ORDER = '[{"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}]'
TWO = (
    '[{"name": "find_user_id_by_email", "arguments": {"email": "a@b.c"}}, '
    '{"name": "think", "arguments": {"thought": "ok"}}]'
)


def reading(parsed: ParsedOutput) -> tuple[list[tuple[str, dict]], str | None]:
    return [(call.name, call.arguments) for call in parsed.tool_calls], parsed.content


# ----------------------------------------------------------------------------------------------------
# Rules, one by one
# ----------------------------------------------------------------------------------------------------


def test_bare_list_of_calls():
    parsed = XLAM.parse("  \n" + TWO + "\n")
    assert reading(parsed) == (
        [("find_user_id_by_email", {"email": "a@b.c"}), ("think", {"thought": "ok"})],
        None,
    )
    assert parsed.problem is None


def test_plain_text_is_content_without_problem():
    parsed = XLAM.parse("Your order has shipped. Anything else?")
    assert reading(parsed) == ([], "Your order has shipped. Anything else?")
    assert parsed.problem is None


def test_text_before_a_bare_list_makes_it_text():
    text = "Let me look: " + ORDER
    assert reading(XLAM.parse(text)) == ([], text)


def test_fenced_json_block_with_text_around():
    parsed = XLAM.parse("Let me check.\n```json\n" + ORDER + "\n```\nOne moment.")
    assert reading(parsed) == ([("get_order_details", {"order_id": "#W0000001"})], "Let me check.\n\nOne moment.")
    assert parsed.problem is None


def test_fenced_block_without_language_tag():
    assert reading(XLAM.parse("```\n" + ORDER + "\n```"))[0] == [("get_order_details", {"order_id": "#W0000001"})]


def test_fence_with_another_tag_is_text_with_a_problem():
    text = "```python\n" + ORDER + "\n```"
    parsed = XLAM.parse(text)
    assert reading(parsed) == ([], text)
    assert "``` block is not valid JSON" in parsed.problem


def test_fence_whitespace_is_unicode_white_space_not_python_space():
    # \x1c counts as whitespace to Python's re, not to vLLM's `regex` module.
    assert reading(XLAM.parse("```\x1c" + ORDER + "```")) == ([], "```\x1c" + ORDER + "```")
    assert reading(XLAM.parse("```\u3000" + ORDER + "```"))[0] == [("get_order_details", {"order_id": "#W0000001"})]


def test_tool_calls_prefix_reads_its_line_only():
    assert reading(XLAM.parse("[TOOL_CALLS]" + ORDER + "\nThanks")) == (
        [("get_order_details", {"order_id": "#W0000001"})],
        "Thanks",
    )
    multi_line = "[TOOL_CALLS][\n" + ORDER[1:]
    parsed = XLAM.parse(multi_line)
    assert reading(parsed) == ([], multi_line)
    assert "[TOOL_CALLS] line is not valid JSON" in parsed.problem


def test_tool_call_tags():
    parsed = XLAM.parse("<tool_call>\n" + ORDER + "\n</tool_call>")
    assert reading(parsed) == ([("get_order_details", {"order_id": "#W0000001"})], "")


def test_think_prefix_keeps_only_the_thinking_as_content():
    parsed = XLAM.parse("<think>user wants order</think>\n" + ORDER)
    assert reading(parsed) == ([("get_order_details", {"order_id": "#W0000001"})], "<think>user wants order</think>")
    # vLLM drops any text after </think> other than the JSON it reads.
    parsed = XLAM.parse("<think>x</think>Sure!\n```json\n" + ORDER + "\n```\nbye")
    assert reading(parsed) == ([("get_order_details", {"order_id": "#W0000001"})], "<think>x</think>")
    assert "dropped" in parsed.problem


def test_think_followed_by_non_list_json_loses_the_json():
    parsed = XLAM.parse("<think>a</think> 42")
    assert reading(parsed) == ([], "<think>a</think>")
    assert "JSON number, not a list" in parsed.problem


def test_think_followed_by_text_falls_back_to_the_whole_output():
    text = "<think>```json\n" + ORDER + "\n```</think> done"
    assert reading(XLAM.parse(text)) == ([("get_order_details", {"order_id": "#W0000001"})], "<think></think> done")


def test_single_object_is_text_with_a_problem():
    text = '{"name": "think", "arguments": {"thought": "x"}}'
    parsed = XLAM.parse(text)
    assert reading(parsed) == ([], text)
    assert "single JSON object" in parsed.problem
    fenced = "Calling:\n```json\n" + text + "\n```"
    parsed = XLAM.parse(fenced)
    assert reading(parsed) == ([], "Calling:")
    assert "JSON object, not a list" in parsed.problem


def test_items_without_name_and_arguments_are_skipped():
    parsed = XLAM.parse('[1, {"name": "think"}, {"name": "think", "arguments": {}}]')
    assert reading(parsed) == ([("think", {})], None)
    assert parsed.problem == "items 0, 1 of the output are not objects with 'name' and 'arguments'"


def test_empty_or_callless_list_vanishes_from_content():
    for text in ("[]", "[1, 2]", ' [ "a" ] '):
        parsed = XLAM.parse(text)
        assert reading(parsed) == ([], None)
        assert parsed.problem
    assert reading(XLAM.parse("Here:\n```json\n[]\n```")) == ([], "Here:")


def test_non_string_name_turns_everything_into_text():
    text = '[{"name": "think", "arguments": {}}, {"name": 7, "arguments": {}}]'
    parsed = XLAM.parse(text)
    assert reading(parsed) == ([], text)
    assert "name is a JSON number" in parsed.problem


def test_arguments_of_wrong_type_turn_everything_into_text():
    text = '[{"name": "think", "arguments": ["x"]}]'
    assert reading(XLAM.parse(text)) == ([], text)


def test_arguments_as_json_string():
    parsed = XLAM.parse(
        '[{"name": "think", "arguments": "{\\"thought\\": \\"hi\\"}"}, {"name": "calculate", "arguments": ""}]'
    )
    assert reading(parsed) == ([("think", {"thought": "hi"}), ("calculate", {})], None)
    assert parsed.problem is None
    parsed = XLAM.parse('[{"name": "think", "arguments": "just text"}]')
    assert reading(parsed) == ([("think", {"__raw__": "just text"})], None)
    assert "__raw__" in parsed.problem


def test_broken_json_starting_with_bracket_is_text():
    text = '[{"name": "think", "arguments": {"thought": "x"}'
    parsed = XLAM.parse(text)
    assert reading(parsed) == ([], text)
    assert parsed.problem.startswith("the output starts with '[' but is not valid JSON")


def test_first_valid_block_wins_and_all_blocks_of_its_kind_are_cut():
    second = '[{"name": "think", "arguments": {"thought": "2"}}]'
    parsed = XLAM.parse("a ```json\n[oops\n``` b ```" + ORDER + "``` c ```" + second + "``` d")
    assert reading(parsed) == ([("get_order_details", {"order_id": "#W0000001"})], "a  b  c  d")
    assert "cut unread" in parsed.problem


def test_fence_is_tried_before_tool_call_tag():
    second = '[{"name": "think", "arguments": {"thought": "2"}}]'
    parsed = XLAM.parse("<tool_call>" + second + "</tool_call>\n```\n" + ORDER + "\n```")
    assert reading(parsed) == (
        [("get_order_details", {"order_id": "#W0000001"})],
        "<tool_call>" + second + "</tool_call>",
    )


def test_undecodable_numbers_and_nesting_turn_everything_into_text():
    huge = "[" + "1" * 5000 + "]"
    parsed = XLAM.parse("```json\n" + huge + "\n``` " + ORDER)
    assert reading(parsed) == ([], "```json\n" + huge + "\n``` " + ORDER)
    assert "digits" in parsed.problem
    deep = "[" * 100_000 + "]" * 100_000
    assert reading(XLAM.parse(deep)) == ([], deep)


def test_unicode_names_and_arguments():
    parsed = XLAM.parse('[{"name": "suche", "arguments": {"stadt": "Zürich", "emoji": "\\ud83d\\ude00"}}]')
    assert reading(parsed) == ([("suche", {"stadt": "Zürich", "emoji": "😀"})], None)


def test_registry(monkeypatch):
    monkeypatch.setattr(tool_parsers, "_PARSERS", dict(tool_parsers._PARSERS))

    @register_parser
    class Shout(ToolCallParser):
        name = "shout"

        def parse(self, text: str) -> ParsedOutput:
            return ParsedOutput(content=text.upper())

        def structural_tag(self, tools, max_calls):
            return {"type": "structural_tag", "format": {"type": "any_text"}}

    assert get_parser("shout").parse("hi").content == "HI"
    assert tool_parsers.parser_names() == ["hermes", "llama3_json", "mistral", "shout", "xlam"]
    with pytest.raises(
        ValueError, match="unknown tool-call format 'nope'; known formats: hermes, llama3_json, mistral, shout, xlam"
    ):
        get_parser("nope")


# ----------------------------------------------------------------------------------------------------
# Agreement with vLLM's own xlam parser
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_xlam():
    """vLLM's xlam parser as a function of the model output."""
    with vllm_extractor("xlam") as extract:
        yield extract


def assert_agree(extract, text: str) -> ParsedOutput:
    parsed = XLAM.parse(text)
    assert ours(parsed) == theirs(extract, text), f"disagreement on {text!r}"
    return parsed


def _call(name: str, arguments) -> dict:
    return {"name": name, "arguments": arguments}


C1 = json.dumps([_call("get_user_details", {"user_id": "sara_doe_496"})])
C2 = json.dumps([_call("calculate", {"expression": "(2 + 3) * 4"}), _call("think", {"thought": "done"})])
NESTED = json.dumps(
    [
        _call(
            "book_reservation",
            {
                "flights": [{"flight_number": "HAT001", "date": "2024-05-01"}],
                "passengers": [{"first_name": "Noah", "dob": "1990-01-01"}],
                "meta": {"a": {"b": [1, 2.5, None, True]}},
            },
        )
    ],
    indent=2,
)
OBJ = json.dumps(_call("think", {"thought": "x"}))
UNI = json.dumps([_call("suche", {"stadt": "Zürich", "note": "naïve — 東京 😀"})], ensure_ascii=False)
STRARGS = json.dumps([_call("think", json.dumps({"thought": "s"}))])

HAND_CORPUS = [
    # bare lists and whitespace
    C1,
    C2,
    NESTED,
    UNI,
    STRARGS,
    " " + C1,
    "\n\n" + C1 + "\n",
    "\t" + C2 + "  ",
    "\r\n" + C1 + "\r\n",
    "\u00a0" + C1,
    C1 + "\u00a0",
    "\x1c" + C1,
    "\u2028" + C1,
    C1 + " trailing",
    C1 + C1,
    C1 + "\n" + C2,
    "[]",
    "[ ]",
    "[1, 2, 3]",
    '["a", {"name": "x"}]',
    "[null]",
    "[[]]",
    '[{"name": "a", "arguments": {}}, 5]',
    '[{"name": "a", "arguments": {}, "extra": 1}]',
    '[{"arguments": {}, "name": "b"}]',
    '[{"name": "", "arguments": {}}]',
    '[{"name": null, "arguments": {}}]',
    '[{"name": ["a"], "arguments": {}}]',
    '[{"name": "a", "arguments": null}]',
    '[{"name": "a", "arguments": 3}]',
    '[{"name": "a", "arguments": []}]',
    '[{"name": "a", "arguments": true}]',
    '[{"name": "a", "arguments": ""}]',
    '[{"name": "a", "arguments": "[1]"}]',
    '[{"name": "a", "arguments": "null"}]',
    '[{"name": "a", "arguments": "{\\"k\\": 1}"}]',
    '[{"name": "a", "arguments": "{bad"}]',
    '[{"name": "a", "arguments": {"k": NaN}}]',
    '[{"name": "a", "arguments": {"k": Infinity, "j": -Infinity}}]',
    '[{"name": "a", "arguments": {"k": 1e400}}]',
    '[{"name": "a", "arguments": {"k": 1, "k": 2}}]',
    '[{"name": "a", "arguments": {"\\u0000": "\\ud800"}}]',
    '[{"name": "a", "arguments": {}}',
    '[{"name": "a", "arguments": {}}]]',
    '[{"name": "a", "arguments": {},}]',
    "[{'name': 'a', 'arguments': {}}]",
    '[{"name": "a", "arguments": {"x": 01}}]',
    "[",
    "[ ",
    "[name arguments {",
    '[{"name": "a"',
    "[\n" + C1[1:-1] + ",\n]",
    "\ufeff" + C1,
    "[" + "1" * 5000 + "]",
    "[" * 50_000 + "]" * 50_000,
    "[" * 5000,
    # single objects and other JSON values
    OBJ,
    " " + OBJ,
    "42",
    '"just a string"',
    "null",
    "true",
    "{}",
    "{broken",
    # plain text
    "",
    " ",
    "\n",
    "Hello! How can I help you today?",
    "I will call get_user_details now.",
    "name arguments",
    "Here is JSON: " + C1,
    "The list [1, 2] is short.",
    "```",
    "``````",
    "```json```",
    "</think>",
    "<think>",
    "[TOOL_CALLS]",
    "<tool_call></tool_call>",
    "<tool_call>",
    "###STOP###",
    # fenced blocks
    "```json\n" + C1 + "\n```",
    "```\n" + C1 + "\n```",
    "```json" + C1 + "```",
    "``` " + C2 + " ```",
    "```JSON\n" + C1 + "\n```",
    "```python\n" + C1 + "\n```",
    "```jsonc\n" + C1 + "\n```",
    "```json\n" + OBJ + "\n```",
    "```json\n[]\n```",
    "Sure!\n```json\n" + C2 + "\n```\nDone.",
    "```json\n[oops\n```",
    "```json\n[oops\n```\n```json\n" + C1 + "\n```",
    "```json\n" + C1 + "\n```\n```json\n" + C2 + "\n```",
    "```json\n" + C1,
    "```json\n" + C1 + "\n``",
    "```\x1c" + C1 + "```",
    "```\u2003" + C1 + "```",
    "```json\u00a0\n" + C1 + "```",
    "````" + C1 + "````",
    "```json\n" + NESTED + "\n```",
    "```json\n" + UNI + "\n```",
    "```json\n" + STRARGS + "\n```",
    "```json\n" + "[" + "1" * 5000 + "]\n```" + C1,
    "text ```json\n" + C1 + "\n``` middle ```python\nprint(1)\n``` end",
    '```json\n"a string"\n```',
    # [TOOL_CALLS]
    "[TOOL_CALLS]" + C1,
    "[TOOL_CALLS] " + C2 + "\n",
    "[TOOL_CALLS]\n" + C1,
    "[TOOL_CALLS]" + NESTED,
    "Text [TOOL_CALLS]" + C1 + " after\nnext line",
    "[TOOL_CALLS]" + C1 + "\n[TOOL_CALLS]" + C2,
    "[TOOL_CALLS]" + OBJ,
    "[TOOL_CALLS][bad\n[TOOL_CALLS]" + C1,
    "[TOOL_CALLS]" + C1 + "\r\nmore",
    "[TOOL_CALLS][]",
    "[TOOL_CALLS]" + C1 + "\u2028x",
    # <tool_call> tags
    "<tool_call>" + C1 + "</tool_call>",
    "<tool_call>\n" + C2 + "\n</tool_call>",
    "<tool_call>" + OBJ + "</tool_call>",
    "<tool_call>" + C1 + "</tool_call><tool_call>" + C2 + "</tool_call>",
    "Hi <tool_call>" + NESTED + "</tool_call> bye",
    "<tool_call>[bad</tool_call><tool_call>" + C1 + "</tool_call>",
    "<tool_call>" + C1,
    "<tool_call>" + C1 + "</tool_call>\n```json\n" + C2 + "\n```",
    "<tool_call>" + C1 + "</tool_call>\n```json\n[bad\n```",
    # </think>
    "<think>plan</think>" + C1,
    "<think>plan</think>\n\n" + C2 + "\n",
    "<think>p</think>" + OBJ,
    "<think>p</think>42",
    "<think>p</think>",
    "</think>" + C1,
    "<think>p</think>Sure: ```json\n" + C1 + "\n``` bye",
    "<think>p</think>[TOOL_CALLS]" + C1,
    "<think>p</think><tool_call>" + C1 + "</tool_call>",
    "<think>p</think>I cannot help.",
    "<think>```json\n" + C1 + "\n```</think>done",
    "<think>a</think><think>b</think>" + C1,
    "<think>a</think>" + C1 + "</think>",
    "<think>a</think> [bad",
    "<think>a</think>```json\n[bad\n```\n```json\n" + C1 + "\n```",
    "<think>a</think>[]",
    "<think>a</think>" + "[" + "1" * 5000 + "]",
    "<think>a</think>" + '[{"name": 1, "arguments": {}}]',
    "<think>a</think>\u00a0" + C1,
    "<think>a</think>```json\n" + OBJ + "\n```",
    "before <think>a</think>" + C1 + " after",
]


def test_corpus_agrees_with_vllm(vllm_xlam):
    assert len(HAND_CORPUS) >= 100 and len(set(HAND_CORPUS)) == len(HAND_CORPUS)
    for text in HAND_CORPUS:
        assert_agree(vllm_xlam, text)
    print(f"\nhand corpus: {len(HAND_CORPUS)} inputs, 0 disagreements")


# Hypothesis: model outputs composed of the fragments the parser reacts to.

_names = st.sampled_from(["get_user_details", "calculate", "think", "名前", "", "name", "arguments", "a b"])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["```", "</think>", "[TOOL_CALLS]", "\n", "<tool_call>", "ü😀"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_arguments = st.dictionaries(st.sampled_from(["user_id", "order_id", "x", "ключ", ""]), _values, max_size=3)
_valid_calls = st.builds(_call, _names, _arguments)
_odd_calls = st.one_of(
    st.builds(_call, _names, _arguments.map(json.dumps)),
    st.builds(_call, _names, st.text(max_size=6)),
    st.builds(_call, _names, _values),
    st.builds(_call, _values, _arguments),
    st.fixed_dictionaries({"name": _names}),
    _values,
)


_calls = weighted((3, _valid_calls), (1, _odd_calls))
_call_lists = st.lists(_calls, min_size=1, max_size=3)
_payload_values = weighted((3, _call_lists), (1, st.lists(_odd_calls, max_size=2)), (1, _calls), (1, _values))


@st.composite
def _payload_texts(draw) -> str:
    text = json.dumps(draw(_payload_values), indent=draw(st.sampled_from([None, 2])), ensure_ascii=draw(st.booleans()))
    damage = draw(st.sampled_from(["none", "none", "none", "none", "cut", "append"]))
    if damage == "cut":
        return text[: draw(st.integers(0, len(text)))]
    if damage == "append":
        return text + draw(st.sampled_from(["]", "}", ",", " x", "\n", "```"]))
    return text


_wrappings = st.sampled_from(
    [
        "{}",
        "{}",
        " {} ",
        "\n{}\n",
        "\u00a0{}",
        "```json\n{}\n```",
        "```{}```",
        "```json{}```",
        "``` {} ```",
        "```\x1d{}```",
        "```python\n{}\n```",
        "```JSON\n{}```",
        "```json\n{}",
        "[TOOL_CALLS]{}",
        "[TOOL_CALLS] {}\n",
        "[TOOL_CALLS]\n{}",
        "<tool_call>{}</tool_call>",
        "<tool_call>\n{}\n</tool_call>",
        "<tool_call>{}",
        "</think>{}",
        "<think>x</think>\n{}",
        "<think>x</think>```json\n{}\n```",
        "<think></think>[TOOL_CALLS]{}",
        "<think>x</think><tool_call>{}</tool_call>",
    ]
)
_wrapped = st.builds(lambda wrap, body: wrap.replace("{}", body, 1), _wrappings, _payload_texts())
model_outputs = outputs(
    _wrapped,
    FILLERS
    + ["{", "}", "[", "]", "```", "```json", "</think>", "<think>", "[TOOL_CALLS]", "<tool_call>", "</tool_call>"],
)


def test_generated_outputs_agree_with_vllm(vllm_xlam):
    seen: dict[str, ParsedOutput] = {}

    @settings(
        max_examples=700, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(model_outputs)
    def agree(text: str) -> None:
        seen[text] = assert_agree(vllm_xlam, text)

    agree()
    with_calls = [text for text, parsed in seen.items() if parsed.tool_calls]
    # The strategy must reach every way of calling, not only text.
    for marker in ("```", "[TOOL_CALLS]", "<tool_call>", "</think>"):
        assert sum(marker in text for text in with_calls) >= 5, marker
    assert sum(text.lstrip().startswith("[") for text in with_calls) >= 5
    assert (
        sum(parsed.content is None and not parsed.tool_calls for parsed in seen.values()) >= 1
    )  # a bare list without calls
    assert sum(parsed.content == text and parsed.problem is not None for text, parsed in seen.items()) >= 20
    assert len(seen) + len(HAND_CORPUS) >= 500
    print(
        f"\ngenerated: {len(seen)} distinct inputs ({len(with_calls)} with calls), 0 disagreements; "
        f"with the hand corpus {len(seen) + len(HAND_CORPUS)}"
    )


# ----------------------------------------------------------------------------------------------------
# Prompt rendering and structured-output schemas
# ----------------------------------------------------------------------------------------------------

HANDMADE = [
    ToolSpec(
        name="get_order_details",
        description="Get an order.",
        parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    ),
    ToolSpec(
        name="cancel_pending_order",
        description="Cancel an order.",
        parameters={
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "reason": {"type": "string", "enum": ["no longer needed", "ordered by mistake"]},
            },
            "required": ["order_id", "reason"],
        },
        writes=True,
    ),
]


def test_system_prompt_lists_each_tool_as_indented_json():
    prompt = xlam_system_prompt("You are a retail agent.", HANDMADE)
    assert prompt.startswith("You are a retail agent.\n\n")
    assert '[{"name": "<tool name>", "arguments": {' in prompt
    for tool in HANDMADE:
        assert json.dumps(tool.plain(), indent=4) in prompt
    assert xlam_system_prompt("Base.", []) == "Base."


def test_render_messages_for_xlam():
    calls = [OpenAIToolCall.of(ToolCall(name="get_order_details", arguments={"order_id": "#W1"}), "c1")]
    messages = [
        Message(role="system", content="Policy."),
        Message(role="user", content="Where is #W1?"),
        Message(role="assistant", tool_calls=calls),
        Message(role="tool", tool_call_id="c1", content='{"status": "pending"}'),
        Message(role="assistant", content="Checking once more.", tool_calls=calls),
        Message(role="tool", tool_call_id="c1", content=""),
        Message(role="assistant", content="It is pending."),
    ]
    rendered = render_messages_for_xlam(messages, HANDMADE)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert rendered[0]["content"] == xlam_system_prompt("Policy.", HANDMADE)
    assert rendered[2]["content"] == '[{"name": "get_order_details", "arguments": {"order_id": "#W1"}}]'
    assert rendered[3] == {"role": "tool", "content": '{"status": "pending"}'}
    # What the model "said" reads back to the same calls and text.
    for rendered_turn, original in ((rendered[2], messages[2]), (rendered[4], messages[4])):
        parsed = XLAM.parse(rendered_turn["content"])
        assert parsed.tool_calls == [call.call() for call in original.tool_calls]
        assert (parsed.content or None) == original.content
    without_system = render_messages_for_xlam(messages[1:2], HANDMADE)
    assert without_system[0] == {"role": "system", "content": xlam_system_prompt("", HANDMADE)}
    assert render_messages_for_xlam(messages[1:2], []) == [{"role": "user", "content": "Where is #W1?"}]


def test_tool_calls_schema_accepts_calls_and_rejects_wrong_names_and_arguments():
    schema = tool_calls_schema(HANDMADE)
    jsonschema.Draft202012Validator.check_schema(schema)
    valid = jsonschema.Draft202012Validator(schema)
    assert valid.is_valid(
        [
            {"name": "get_order_details", "arguments": {"order_id": "#W1"}},
            {"name": "cancel_pending_order", "arguments": {"order_id": "#W1", "reason": "ordered by mistake"}},
        ]
    )
    for wrong in (
        [],
        {"name": "get_order_details", "arguments": {"order_id": "#W1"}},
        [{"name": "get_user_details", "arguments": {"order_id": "#W1"}}],
        [{"name": "get_order_details", "arguments": {}}],
        [{"name": "get_order_details", "arguments": {"order_id": 1}}],
        [{"name": "get_order_details", "arguments": {"order_id": "#W1", "extra": 1}}],
        [{"name": "cancel_pending_order", "arguments": {"order_id": "#W1", "reason": "bored"}}],
        [{"name": "get_order_details", "arguments": {"order_id": "#W1"}, "id": "x"}],
        [{"name": "get_order_details"}],
    ):
        assert not valid.is_valid(wrong), wrong
    with pytest.raises(ValueError, match="at least one tool"):
        tool_calls_schema([])
    assert "additionalProperties" not in HANDMADE[0].parameters  # the spec itself is left alone


def _domain_tools() -> dict[str, list[ToolSpec]]:
    return {"handmade": HANDMADE, **{name: get_domain(name).toolkit.specs() for name in ("retail", "airline")}}


# One tool of each set that takes a single string argument: (name, argument).
ONE_STRING_ARGUMENT = {
    "handmade": ("get_order_details", "order_id"),
    "retail": ("get_order_details", "order_id"),
    "airline": ("get_reservation_details", "reservation_id"),
}


@pytest.mark.parametrize("toolset", ["handmade", "retail", "airline"])
def test_schemas_compile_in_xgrammar_and_constrain_output(toolset):
    xgrammar = pytest.importorskip("xgrammar", reason="xgrammar (vLLM's structured-output backend) is not installed")
    tools = _domain_tools()[toolset]
    name, argument = ONE_STRING_ARGUMENT[toolset]
    characters = xgrammar.TokenizerInfo([chr(code) for code in range(32, 127)] + ["\n"])
    compiler = xgrammar.GrammarCompiler(characters)
    schema = tool_calls_schema(tools)
    xgrammar.Grammar.from_json_schema(json.dumps(schema))
    compiled = compiler.compile_json_schema(json.dumps(schema))

    def accepts(text: str) -> bool:
        matcher = xgrammar.GrammarMatcher(compiled)
        return matcher.accept_string(text) and matcher.is_completed()

    assert accepts(
        json.dumps([{"name": name, "arguments": {argument: "A1"}}, {"name": name, "arguments": {argument: "B2"}}])
    )
    assert not accepts(json.dumps([{"name": name + "_x", "arguments": {argument: "A1"}}]))
    assert not accepts(json.dumps([{"name": name, "arguments": {argument: 1}}]))
    assert not accepts(json.dumps([{"name": name, "arguments": {}}]))
    assert not accepts(json.dumps([{"name": name, "arguments": {argument: "A1", "other": "x"}}]))
    assert not accepts("[]")
    assert not accepts('{"content": "Hi"}')


@pytest.mark.parametrize("toolset", ["retail", "airline"])
def test_schemas_pass_vllm_structured_output_checks(toolset):
    pytest.importorskip("vllm", reason="vLLM is not installed: pip install -e .[cpu]")
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams
    from vllm.v1.structured_output.backend_xgrammar import (
        has_xgrammar_unsupported_json_features,
        validate_xgrammar_grammar,
    )

    tools = _domain_tools()[toolset]
    schema = tool_calls_schema(tools)
    assert not has_xgrammar_unsupported_json_features(schema)
    validate_xgrammar_grammar(SamplingParams(structured_outputs=StructuredOutputsParams(json=schema)))


# ----------------------------------------------------------------------------------------------------
# apigen-mt parse
# ----------------------------------------------------------------------------------------------------


def run_parse(args: list[str], stdin: str):
    return CliRunner().invoke(app, ["parse", *args], input=stdin)


def test_parse_command_reads_all_of_stdin_as_one_output():
    result = run_parse(["--parser", "xlam"], "Sure.\n```json\n" + C1 + "\n```\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"tool_calls": [{"name": "get_user_details", "arguments": {"user_id": "sara_doe_496"}}], "content": "Sure."}
    ]
    result = run_parse([], "Hello\n")
    assert json.loads(result.stdout) == {"tool_calls": [], "content": "Hello\n"}


def test_parse_command_jsonl():
    lines = [json.dumps(text) for text in (C2, "plain\u2028text", "[]")]
    result = run_parse(["--parser", "xlam", "--jsonl"], "\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {
            "tool_calls": [
                {"name": "calculate", "arguments": {"expression": "(2 + 3) * 4"}},
                {"name": "think", "arguments": {"thought": "done"}},
            ],
            "content": None,
        },
        {"tool_calls": [], "content": "plain\u2028text"},
        {"tool_calls": [], "content": None},
    ]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["--parser", "qwen"],
            "x",
            "unknown tool-call format 'qwen'; known formats: hermes, llama3_json, mistral, xlam",
        ),
        (["--jsonl"], '"ok"\n{"text": 1}\n', "line 2 of stdin holds a JSON object, not a string"),
        (["--jsonl"], '"ok"\nnot json\n', "line 2 of stdin is not valid JSON"),
    ],
)
def test_parse_command_rejects_bad_input(args, stdin, message):
    result = run_parse(args, stdin)
    assert isinstance(result.exception, CliError)
    assert message in str(result.exception)
    assert result.stdout == ""
