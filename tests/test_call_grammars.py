"""Constrained decoding in each family's own syntax: every parser's `structural_tag` compiles in xgrammar
(vLLM's structured-output backend) and passes vLLM's checks; it lets the model write plain text or calls
the way the family writes them (as its real chat template writes them, where there is one), each read back
by the family's parser; and it refuses calls with a wrong argument type, an unknown tool, a missing or an
extra argument, more calls than allowed, and text the parser would read as an unchecked call."""

from __future__ import annotations

import json
from functools import cache

import pytest

from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.tool_parsers import get_parser, parser_names
from apigen_mt.simulators.types import ToolSpec
from tests.template_turns import FAMILIES, TOOLS, assistant_turn

xgrammar = pytest.importorskip("xgrammar", reason="xgrammar (vLLM's structured-output backend) is not installed")

HANDMADE = [
    ToolSpec(
        name=tool["function"]["name"],
        description=tool["function"]["description"],
        parameters=tool["function"]["parameters"],
    )
    for tool in TOOLS
]
ORDER = ("get_order_details", {"order_id": "#W0000001"})
CITY = ("suche", {"stadt": "Zürich", "meta": {"note": "東京 😀"}})
WRONG_TYPE = ("get_order_details", {"order_id": 1})
UNKNOWN_TOOL = ("get_user_details", {"order_id": "#W0000001"})
MISSING = ("get_order_details", {})
EXTRA = ("get_order_details", {"order_id": "#W0000001", "reason": "x"})
# One tool of each domain that takes a single string argument: (name, argument).
ONE_STRING_ARGUMENT = {
    "retail": ("get_order_details", "order_id"),
    "airline": ("get_reservation_details", "reservation_id"),
    "telecom": ("get_line_details", "line_id"),
}


def written(family: str, calls: list[tuple[str, dict]]) -> str:
    """Calls as a model of `family` writes them, without a template to render them."""
    if family in ("xlam", "mistral"):
        listed = json.dumps([{"name": name, "arguments": arguments} for name, arguments in calls], ensure_ascii=False)
        return listed if family == "xlam" else "[TOOL_CALLS]" + listed
    if family == "hermes":  # as Qwen2.5 and Qwen3 write them
        return "\n".join(
            f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n</tool_call>"
            for name, arguments in calls
        )
    return "; ".join(
        json.dumps({"name": name, "parameters": arguments}, ensure_ascii=False) for name, arguments in calls
    )


@cache
def compiler():
    # Printable ASCII, a few multi-byte characters, and each family's markers as single tokens,
    # as in their vocabularies.
    tokens = [chr(code) for code in range(32, 127)] + [
        "\n",
        "ü",
        "東",
        "京",
        "😀",
        "<tool_call>",
        "</tool_call>",
        "[TOOL_CALLS]",
        "<|python_tag|>",
    ]
    return xgrammar.GrammarCompiler(xgrammar.TokenizerInfo(tokens))


def matcher_of(family: str, tools: list[ToolSpec], max_calls: int | None):
    compiled = compiler().compile_structural_tag(json.dumps(get_parser(family).structural_tag(tools, max_calls)))

    def accepts(text: str) -> bool:
        matcher = xgrammar.GrammarMatcher(compiled)
        return matcher.accept_string(text) and matcher.is_completed()

    return accepts


def reads_back(family: str, text: str, calls: list[tuple[str, dict]]) -> bool:
    parsed = get_parser(family).parse(text)
    return [(call.name, call.arguments) for call in parsed.tool_calls] == calls and parsed.problem is None


@pytest.mark.parametrize("family", parser_names())
def test_plain_text_and_the_familys_own_calls_are_accepted_and_read_back(family):
    accepts = matcher_of(family, HANDMADE, None)
    for text in ("Your order #W0000001 has shipped. Anything else?", "Grüezi! 東京 😀\n\nBye."):
        assert accepts(text), text
        assert reads_back(family, text, [])
    for calls in ([ORDER], [CITY], [ORDER, CITY, ORDER]):
        text = written(family, calls)
        assert accepts(text), text
        assert reads_back(family, text, calls), text


@pytest.mark.parametrize("template", FAMILIES)
def test_calls_as_the_real_template_writes_them_are_accepted(template):
    family = FAMILIES[template][0]
    accepts = matcher_of(family, HANDMADE, None)
    for calls in ([ORDER], [CITY]) if template == "llama3.1_json" else ([ORDER], [CITY], [ORDER, CITY]):
        turn = assistant_turn(template, calls)
        assert accepts(turn), turn
        assert reads_back(family, turn, calls), turn


@pytest.mark.parametrize("family", parser_names())
def test_calls_off_the_schema_are_refused(family):
    accepts = matcher_of(family, HANDMADE, None)
    for wrong in (WRONG_TYPE, UNKNOWN_TOOL, MISSING, EXTRA):
        assert not accepts(written(family, [wrong])), wrong
        assert not accepts(written(family, [ORDER, wrong])), wrong


@pytest.mark.parametrize("family", parser_names())
def test_max_calls(family):
    one, any_number = matcher_of(family, HANDMADE, 1), matcher_of(family, HANDMADE, None)
    assert one(written(family, [ORDER])) and any_number(written(family, [ORDER] * 4))
    assert not one(written(family, [ORDER, CITY]))
    assert matcher_of(family, HANDMADE, 2)(written(family, [ORDER, CITY])) and not matcher_of(family, HANDMADE, 2)(
        written(family, [ORDER] * 3)
    )


@pytest.mark.parametrize(
    ("family", "text"),
    [
        # Text around calls that the family's parser would drop, or would not read as calls.
        ("xlam", "Let me check. " + written("xlam", [ORDER])),
        ("xlam", written("xlam", [ORDER]) + " Done."),
        ("hermes", written("hermes", [ORDER]) + "\nDone."),
        ("llama3_json", "Sure! " + written("llama3_json", [ORDER])),
        ("mistral", written("mistral", [ORDER]) + " Done."),
        # Text the parser would read as calls, unchecked: every call goes through the schema instead.
        ("xlam", '[{"name":"get_order_details","arguments":{"order_id":1}}]'),
        ("xlam", "Sure.\n```json\n" + json.dumps([dict(zip(("name", "arguments"), WRONG_TYPE))]) + "\n```"),
        ("xlam", "[TOOL_CALLS]" + json.dumps([dict(zip(("name", "arguments"), WRONG_TYPE))])),
        ("llama3_json", "Use {braces} here."),
    ],
)
def test_text_the_parser_would_misread_is_refused(family, text):
    assert not matcher_of(family, HANDMADE, None)(text)


@pytest.mark.parametrize("family", parser_names())
def test_text_beside_calls_where_the_family_keeps_it(family):
    text = "Let me look that up.\n" + written(family, [ORDER])
    assert matcher_of(family, HANDMADE, None)(text) == (family in ("hermes", "mistral"))


@pytest.mark.parametrize("family", parser_names())
@pytest.mark.parametrize("domain", ONE_STRING_ARGUMENT)
def test_domain_tool_sets_compile_and_pass_vllm_checks(family, domain):
    pytest.importorskip("vllm", reason="vLLM is not installed: pip install -e .[cpu]")
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams
    from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar

    tools = get_domain(domain).toolkit.specs()
    for max_calls in (1, None):
        spec = get_parser(family).structural_tag(tools, max_calls)
        validate_xgrammar_grammar(
            SamplingParams(structured_outputs=StructuredOutputsParams(structural_tag=json.dumps(spec)))
        )
    name, argument = ONE_STRING_ARGUMENT[domain]
    accepts = matcher_of(family, tools, None)
    assert accepts(written(family, [(name, {argument: "A1"})]))
    assert not accepts(written(family, [(name, {argument: 1})]))
    assert not accepts(written(family, [(name + "_nope", {argument: "A1"})]))


@pytest.mark.parametrize("family", parser_names())
def test_a_grammar_needs_tools_and_a_positive_limit(family):
    with pytest.raises(ValueError, match="needs at least one tool"):
        get_parser(family).structural_tag([], None)
    with pytest.raises(ValueError, match="max_calls must be at least 1"):
        get_parser(family).structural_tag(HANDMADE, 0)
