"""Template round trips: the calls a family's real chat template writes for an assistant turn read back,
with that family's parser, as the same calls and no leftover content."""

from __future__ import annotations

import pytest

from apigen_mt.simulators.tool_parsers import get_parser
from tests.template_turns import FAMILIES, ONE_CALL_ONLY, assistant_turn

ORDER = ("get_order_details", {"order_id": "#W0000001"})
BOOKING = (
    "book_reservation",
    {
        "flights": [
            {"flight_number": "HAT001", "date": "2024-05-01"},
            {"flight_number": "HAT002", "date": "2024-05-03"},
        ],
        "passengers": [{"first_name": "Noah", "last_name": "O'Brien", "dob": "1990-01-01"}],
        "insurance": "no",
        "total": 1234.5,
    },
)
CITY = (
    "suche",
    {
        "stadt": "Zürich",
        "meta": {"note": "naïve — 東京 😀", "quote": 'say "hi"\n', "none": None, "flags": [True, False], "n": -3},
    },
)
EMPTY = ("get_order_details", {})

CASES = {
    "one call": [ORDER],
    "nested arguments": [BOOKING],
    "unicode and escapes": [CITY],
    "no arguments": [EMPTY],
    "three calls": [ORDER, BOOKING, CITY],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("template", FAMILIES)
def test_calls_written_by_the_template_parse_back(template, case):
    calls = CASES[case]
    if len(calls) > 1 and template in ONE_CALL_ONLY:
        pytest.skip(f"{template}.jinja refuses an assistant message with more than one call")
    turn = assistant_turn(template, calls)
    parsed = get_parser(FAMILIES[template][0]).parse(turn)
    assert [(call.name, call.arguments) for call in parsed.tool_calls] == calls, turn
    assert not (parsed.content or "").strip(), turn
    assert parsed.problem is None, parsed.problem


def test_each_family_writes_its_own_syntax():
    # The round trips above go through each family's own call syntax, not a shared one.
    written = {template: assistant_turn(template, [ORDER]) for template in FAMILIES}
    assert written["xlam_llama"] == '[{"name": "get_order_details", "arguments": {"order_id": "#W0000001"}}]'
    assert written["xlam_qwen"] == written["xlam_llama"]
    assert (
        written["hermes"]
        == '<tool_call>\n{ "arguments": {"order_id": "#W0000001"}, "name": "get_order_details"}\n</tool_call> '
    )
    assert written["llama3.1_json"] == '{"name": "get_order_details", "parameters": {"order_id": "#W0000001"}}'
