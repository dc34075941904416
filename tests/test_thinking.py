"""Thinking is split off a completion before any parser or role reads it, the same way for every backend."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apigen_mt.simulators.chat import ChatRequest
from apigen_mt.simulators.completions import build_completion, read_completion, split_thinking
from apigen_mt.simulators.types import Message, ToolCall, ToolSpec

TOOL = ToolSpec(
    name="get_order_details",
    description="Look up an order.",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
LOOKUP = ToolCall(name="get_order_details", arguments={"order_id": "#W1"})
CALLS = json.dumps([LOOKUP.model_dump()])
TEXT_REQUEST = ChatRequest(messages=[Message(role="user", content="hi")])
TOOL_REQUEST = ChatRequest(messages=[Message(role="user", content="hi")], tools=[TOOL])


@pytest.mark.parametrize(
    ("text", "visible", "thinking"),
    [
        ("Plain answer.  ", "Plain answer.  ", None),  # no delimiter: unchanged, not even stripped
        ("<think>\nPlan it.\n</think>\n\nAnswer.", "Answer.", "Plan it."),
        ("Before <think>one</think> middle <think>two</think> after", "Before  middle  after", "one\n\ntwo"),
        # Qwen3 templates open the block in the prompt: the completion starts inside it.
        ("Plan it.\n</think>\n\nAnswer.", "Answer.", "Plan it."),
        # Cut at max_tokens inside the block: the rest is thinking.
        ("Answer so far <think>still thinking", "Answer so far", "still thinking"),
        ("<think>", "", None),
        ("<think>a <think> b</think>c", "c", "a <think> b"),
        ("a</think>b</think>c", "c", "a\n\nb"),
        ("<think></think>Answer.", "Answer.", None),
    ],
)
def test_split_thinking(text, visible, thinking):
    assert split_thinking(text) == (visible, thinking)


def test_other_delimiters_and_bad_ones():
    assert split_thinking("[THINK]plan[/THINK]Answer.", ("[THINK]", "[/THINK]")) == ("Answer.", "plan")
    assert split_thinking("<think>plan</think>Answer.", ("[THINK]", "[/THINK]")) == ("<think>plan</think>Answer.", None)
    with pytest.raises(ValueError, match="two non-empty strings"):
        split_thinking("x", ("", "</think>"))


fragments = st.lists(st.sampled_from(["<think>", "</think>", "a", "b c", " ", "\n", "[", "#"]), max_size=12)


@given(fragments)
def test_visible_text_never_holds_a_delimiter_and_no_character_is_lost(parts):
    text = "".join(parts)
    visible, thinking = split_thinking(text)
    assert "<think>" not in visible and "</think>" not in visible
    kept = "".join((visible + (thinking or "")).split())
    # Every removed character belongs to a delimiter; an opening tag inside a block stays in the thinking.
    removed = text.count("</think>") * len("</think>") + (
        text.count("<think>") - (thinking or "").count("<think>")
    ) * len("<think>")
    assert len(kept) + removed == len("".join(text.split()))


def test_thinking_is_gone_before_the_parser_reads_the_reply():
    # A call written only while thinking is no call; one after the thinking is.
    pondering = f"<think>Maybe {CALLS}? No, ask first.</think>Which order do you mean?"
    reading = read_completion(pondering, TOOL_REQUEST)
    assert (reading.tool_calls, reading.content, reading.problem) == ([], "Which order do you mean?", None)
    assert reading.reasoning == f"Maybe {CALLS}? No, ask first."
    calling = read_completion(f"I should look it up.\n</think>\n\n{CALLS}", TOOL_REQUEST)
    assert calling.tool_calls == [LOOKUP] and calling.content is None and calling.reasoning == "I should look it up."


def test_the_servers_reasoning_and_the_split_off_text_are_joined():
    reading = read_completion("<think>inline</think>Hello.", TEXT_REQUEST, reasoning="from the server")
    assert (reading.content, reading.reasoning, reading.visible_text) == (
        "Hello.",
        "from the server\n\ninline",
        "Hello.",
    )
    beside = read_completion("<think>why</think>Looking.", TOOL_REQUEST, server_calls=[LOOKUP], reasoning=" ")
    assert (beside.tool_calls, beside.content, beside.reasoning) == ([LOOKUP], "Looking.", "why")
    only = read_completion("<think>why</think>", TOOL_REQUEST, server_calls=[LOOKUP])
    assert only.content is None


def test_a_completion_keeps_only_visible_text_and_content():
    cut = build_completion(
        "<think>Which order could", TEXT_REQUEST, finish_reason="length", prompt_tokens=5, completion_tokens=9
    )
    assert (cut.text, cut.content, cut.reasoning, cut.finish_reason) == ("", "", "Which order could", "length")
    done = build_completion(
        f"<think>Look it up.</think>{CALLS}",
        TOOL_REQUEST,
        finish_reason="stop",
        prompt_tokens=5,
        completion_tokens=9,
        thinking=("<think>", "</think>"),
    )
    assert (done.text, done.tool_calls, done.finish_reason, done.reasoning) == (
        CALLS,
        [LOOKUP],
        "tool_calls",
        "Look it up.",
    )
    # A JSON role (judge, proposer, reviewer) reads `text`: the JSON alone.
    judged = build_completion(
        '<think>{"score": 1}?</think>{"critique": "fine", "score": 9}',
        TEXT_REQUEST,
        finish_reason="stop",
        prompt_tokens=0,
        completion_tokens=0,
    )
    assert json.loads(judged.text) == {"critique": "fine", "score": 9}
