"""The `mistral` tool-call format (`[TOOL_CALLS]` and a JSON call list, tokenizers before v11): its rules,
and agreement with vLLM's own `mistral` parser on a hand corpus and on generated outputs."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from apigen_mt.pipeline.cli import parse as cli_parse  # noqa: F401  (registers `parse` on the app)
from apigen_mt.pipeline.cli.main import app
from apigen_mt.simulators.tool_parsers import ParsedOutput, get_parser
from tests.vllm_parsers import FILLERS, assert_agree, calls, json_texts, outputs, values, vllm_extractor, weighted

MISTRAL = get_parser("mistral")
MARK = "[TOOL_CALLS]"
ORDER = {"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}
THINK = {"name": "think", "arguments": {"thought": "ok"}}
ONE = json.dumps([ORDER])
TWO = json.dumps([ORDER, THINK])


def reading(parsed: ParsedOutput) -> tuple[list[tuple[str, dict]], str | None]:
    return [(call.name, call.arguments) for call in parsed.tool_calls], parsed.content


# ----------------------------------------------------------------------------------------------------
# Rules, one by one
# ----------------------------------------------------------------------------------------------------


def test_calls_after_the_marker_with_text_before():
    parsed = MISTRAL.parse("Let me check. " + MARK + " " + TWO)
    assert reading(parsed) == (
        [("get_order_details", {"order_id": "#W0000001"}), ("think", {"thought": "ok"})],
        "Let me check. ",
    )
    assert parsed.problem is None
    assert reading(MISTRAL.parse(MARK + ONE)) == ([("get_order_details", {"order_id": "#W0000001"})], None)


def test_text_without_the_marker_is_content():
    assert reading(MISTRAL.parse("It shipped.")) == ([], "It shipped.")
    parsed = MISTRAL.parse(ONE)
    assert reading(parsed) == ([], ONE)
    assert parsed.problem == "JSON calls without [TOOL_CALLS] are read as text"


def test_a_single_object_is_one_call_and_trailing_text_is_dropped():
    parsed = MISTRAL.parse(MARK + json.dumps(THINK) + " Anything else?")
    assert reading(parsed) == ([("think", {"thought": "ok"})], None)
    assert parsed.problem == "text after the calls is dropped: 'Anything else?'"


def test_broken_json_falls_back_to_the_bracketed_span():
    parsed = MISTRAL.parse(MARK + "calls: " + ONE + " end")
    assert reading(parsed) == ([("get_order_details", {"order_id": "#W0000001"})], None)


def test_json_without_calls_leaves_only_what_followed_the_marker():
    parsed = MISTRAL.parse("Hello " + MARK + " [1, 2] ")
    assert reading(parsed) == ([], "[1, 2]")
    assert parsed.problem == (
        "item 0 after [TOOL_CALLS] is not an object with 'name' and 'arguments'; skipped; "
        "item 1 after [TOOL_CALLS] is not an object with 'name' and 'arguments'; skipped; "
        "the JSON after [TOOL_CALLS] is a list without calls"
    )
    cut = "Sure " + MARK + ONE[:20]
    parsed = MISTRAL.parse(cut)
    assert reading(parsed) == ([], ONE[:20])
    assert parsed.problem.startswith("the text after [TOOL_CALLS] is not valid JSON")
    assert reading(MISTRAL.parse("Hi " + MARK + "  ")) == ([], "")


def test_a_missing_name_is_kept_as_empty_and_arguments_default_to_an_object():
    calls = (
        '[{"arguments": {"x": 1}}, {"name": "think"}, {"name": "a", "arguments": null}, '
        '{"name": "b", "arguments": "{\\"k\\": 2}"}]'
    )
    parsed = MISTRAL.parse(MARK + calls)
    assert reading(parsed) == ([("", {"x": 1}), ("think", {}), ("a", {}), ("b", {"k": 2})], None)
    assert parsed.problem == "call 0 after [TOOL_CALLS]: name is a JSON null, not a string; read as ''"


def test_later_markers_and_what_follows_them_are_dropped():
    parsed = MISTRAL.parse(MARK + MARK + " " + ONE + MARK + json.dumps([THINK]))
    assert reading(parsed) == ([("get_order_details", {"order_id": "#W0000001"})], None)
    assert "text after the calls is dropped" in parsed.problem


def test_undecodable_json_is_text_where_vllm_raises():
    text = MARK + "[" + "1" * 5000 + "]"
    parsed = MISTRAL.parse(text)
    assert reading(parsed) == ([], text)
    assert "cannot be decoded" in parsed.problem


def test_parse_command_jsonl():
    texts = ["Checking. " + MARK + TWO, "Plain text.", MARK + " [1]"]
    expected = [
        {
            "tool_calls": [
                {"name": "get_order_details", "arguments": {"order_id": "#W0000001"}},
                {"name": "think", "arguments": {"thought": "ok"}},
            ],
            "content": "Checking. ",
        },
        {"tool_calls": [], "content": "Plain text."},
        {"tool_calls": [], "content": "[1]"},
    ]
    result = CliRunner().invoke(
        app, ["parse", "--parser", "mistral", "--jsonl"], input="\n".join(json.dumps(text) for text in texts) + "\n"
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == expected


# ----------------------------------------------------------------------------------------------------
# Agreement with vLLM's own mistral parser (its branch for tokenizers without [ARGS])
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_mistral():
    with vllm_extractor("mistral") as extract:
        yield extract


def test_vllm_takes_the_branch_reproduced_here():
    pytest.importorskip("vllm", reason="vLLM is not installed: pip install -e .[cpu]")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from vllm.parser.mistral import _is_pre_v11_tokeniser

    with_marker = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, MARK: 1}, unk_token="[UNK]"))
    )
    with_args = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, MARK: 1, "[ARGS]": 2}, unk_token="[UNK]"))
    )
    assert _is_pre_v11_tokeniser(with_marker) and not _is_pre_v11_tokeniser(with_args)


BOOKING = {"flights": [{"flight_number": "HAT001"}], "meta": {"a": {"b": [1, 2.5, None, True]}}}
NESTED = json.dumps([{"name": "book_reservation", "arguments": BOOKING}], indent=2)
UNI = json.dumps([{"name": "suche", "arguments": {"stadt": "Zürich", "note": "naïve — 東京 😀"}}], ensure_ascii=False)
STRARGS = json.dumps([{"name": "think", "arguments": json.dumps({"thought": "s"})}])
OBJ = json.dumps(THINK)

HAND_CORPUS = [
    # no marker
    "",
    " ",
    "Hello! How can I help you today?",
    ONE,
    TWO,
    OBJ,
    "[TOOL_CALL]" + ONE,
    "[tool_calls]" + ONE,
    "TOOL_CALLS" + ONE,
    "Zürich 😀",
    # the marker and one or more calls
    MARK + ONE,
    MARK + " " + ONE,
    MARK + "\n" + ONE + "\n",
    MARK + TWO,
    MARK + NESTED,
    MARK + UNI,
    MARK + STRARGS,
    MARK + OBJ,
    MARK + " " + OBJ + " ",
    MARK + "\u00a0" + ONE,
    MARK + "\x1c" + ONE,
    MARK + "\u2028" + ONE,
    MARK + "\ufeff" + ONE,
    " " + MARK + ONE,
    MARK + json.dumps([ORDER], indent=4),
    # text before and after
    "Let me check. " + MARK + ONE,
    "Let me check.\n" + MARK + ONE,
    "\n \t" + MARK + ONE,
    MARK + ONE + " done",
    MARK + ONE + "\nThanks!",
    MARK + OBJ + " done",
    "a " + MARK + ONE + " b " + MARK + TWO,
    MARK + ONE + MARK + TWO,
    MARK + MARK + ONE,
    MARK + " " + MARK + ONE,
    MARK + "  " + MARK + " " + TWO + MARK,
    "<think>plan</think>" + MARK + ONE,
    "<tool_call>" + MARK + ONE + "</tool_call>",
    "```json\n" + MARK + ONE + "\n```",
    # marker without valid JSON
    MARK,
    MARK + " ",
    "x" + MARK,
    "x " + MARK + " \n",
    MARK + "hello",
    MARK + "[",
    MARK + "{",
    MARK + ONE[:-1],
    MARK + ONE[:-2],
    MARK + ONE[1:],
    MARK + "[{'name': 'think', 'arguments': {}}]",
    MARK + '[{"name": "a", "arguments": {},}]',
    MARK + '[{"name": "a" "arguments": {}}]',
    MARK + "calls: " + ONE,
    MARK + "calls: " + ONE + " trailing",
    MARK + "x [{bad}] y " + ONE,
    MARK + "[{}]",
    MARK + "x[{}]y",
    MARK + "[{ } ] [{}]",
    MARK + "[{" + ONE + "}]",
    MARK + "x " + ONE + " y " + TWO + " z",
    MARK + '[{"name": "a"}] [{"name": "b"}]',
    MARK + "x [{1}]",
    # other JSON values
    MARK + "[]",
    MARK + "{}",
    MARK + "42",
    MARK + '"text"',
    MARK + "null",
    MARK + "true",
    MARK + "[1, 2]",
    MARK + "[[]]",
    MARK + "[null, " + OBJ + "]",
    MARK + '["think", ' + OBJ + "]",
    MARK + "[" + OBJ + ", 5]",
    MARK + "[" + ONE + "]",
    # missing and odd keys
    MARK + '[{"name": "a"}]',
    MARK + '[{"arguments": {}}]',
    MARK + '[{"id": "c1"}]',
    MARK + '[{"name": "a", "parameters": {}}]',
    MARK + '[{"name": null, "arguments": {}}]',
    MARK + '[{"name": 7, "arguments": {}}]',
    MARK + '[{"name": ["a"], "arguments": {}}]',
    MARK + '[{"name": "", "arguments": {}}]',
    MARK + '[{"name": "a", "arguments": null}]',
    MARK + '[{"name": "a", "arguments": 3}]',
    MARK + '[{"name": "a", "arguments": [1]}]',
    MARK + '[{"name": "a", "arguments": true}]',
    MARK + '[{"name": "a", "arguments": ""}]',
    MARK + '[{"name": "a", "arguments": "x"}]',
    MARK + '[{"name": "a", "arguments": "[1]"}]',
    MARK + '[{"name": "a", "arguments": "null"}]',
    MARK + '[{"name": "a", "arguments": "{bad"}]',
    MARK + '[{"name": "a", "arguments": {}, "id": "abc123xyz"}]',
    MARK + '{"name": "a"}',
    # numbers and strings
    MARK + '[{"name": "a", "arguments": {"k": NaN, "j": -Infinity}}]',
    MARK + '[{"name": "a", "arguments": {"k": 1e400}}]',
    MARK + '[{"name": "a", "arguments": {"k": 1, "k": 2}}]',
    MARK + '[{"name": "a", "arguments": {"\\u0000": "\\ud800"}}]',
    MARK + '[{"name": "a", "arguments": {"x": 01}}]',
    MARK + "[" + "1" * 5000 + "]",
    MARK + "x [{" + "1" * 5000 + "}]",
    MARK + "[" * 100_000 + "]" * 100_000,
    MARK + '[{"name": "a", "arguments": {"t": "[TOOL_CALLS]"}}]',
    # unicode
    MARK + '[{"name": "名前", "arguments": {"ключ": "значение"}}]',
    MARK + '[{"name": "a", "arguments": {"e": "\\ud83d\\ude00"}}]',
    "Привет! " + MARK + UNI + " 👋",
]


def test_corpus_agrees_with_vllm(vllm_mistral):
    assert len(HAND_CORPUS) >= 100 and len(set(HAND_CORPUS)) == len(HAND_CORPUS)
    read = [assert_agree(MISTRAL, vllm_mistral, text) for text in HAND_CORPUS]
    assert sum(bool(parsed.tool_calls) for parsed in read) >= 40
    print(
        f"\nhand corpus: {len(HAND_CORPUS)} inputs ({sum(bool(p.tool_calls) for p in read)} with calls), "
        "0 disagreements"
    )


_payloads = json_texts(
    weighted(
        (3, st.lists(calls(), min_size=1, max_size=3)), (1, calls()), (1, st.lists(values, max_size=2)), (1, values)
    )
)
_pieces = st.builds(
    lambda wrap, body: wrap.replace("{}", body, 1),
    st.sampled_from(
        [
            MARK + "{}",
            MARK + "{}",
            MARK + " {}",
            MARK + "\n{}\n",
            MARK + " x {} y",
            MARK + "{}" + MARK,
            MARK + MARK + "{}",
            "{}",
        ]
    ),
    _payloads,
)
model_outputs = outputs(_pieces, FILLERS + [MARK, "[", "]", "[{", "}]", "{", "}"])


def test_generated_outputs_agree_with_vllm(vllm_mistral):
    seen: dict[str, ParsedOutput] = {}

    @settings(
        max_examples=600, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(model_outputs)
    def agree(text: str) -> None:
        seen[text] = assert_agree(MISTRAL, vllm_mistral, text)

    agree()
    with_calls = [text for text, parsed in seen.items() if parsed.tool_calls]
    # The strategy must reach calls, several calls, text before them, and markers followed by no call.
    # Floors well under the smallest counts of 8 seeds: Hypothesis also draws literals of the project's loaded
    # modules, so the counts move with unrelated changes to the code.
    assert len(with_calls) >= 100
    assert sum(len(seen[text].tool_calls) >= 2 for text in with_calls) >= 20
    assert sum(seen[text].content is not None for text in with_calls) >= 6
    assert sum(MARK in text and not parsed.tool_calls for text, parsed in seen.items()) >= 50
    assert len(seen) + len(HAND_CORPUS) >= 500
    print(
        f"\ngenerated: {len(seen)} distinct inputs ({len(with_calls)} with calls), 0 disagreements; "
        f"with the hand corpus {len(seen) + len(HAND_CORPUS)}"
    )
