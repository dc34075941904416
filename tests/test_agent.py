"""The agent role and the one rule that turns a completion into tool calls or content (no engine)."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from apigen_mt.pipeline.engines.scripted import RawText, ScriptedChatModel
from apigen_mt.simulators.agent import (
    Agent,
    AgentSettings,
    AgentTurn,
    assistant_message,
    build_agent_request,
    repair_turn,
)
from apigen_mt.simulators.chat import ChatRequest, ChatResponse, Completion, ModelUnavailable
from apigen_mt.simulators.completions import build_completion, read_completion
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec
from apigen_mt.simulators.xlam import text_field_limit, tool_calls_schema

POLICY = "You are a store agent. Make at most one tool call per turn."
TOOLS = [
    ToolSpec(
        name="get_order_details",
        description="Look up an order.",
        parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    ),
    ToolSpec(
        name="cancel_pending_order",
        description="Cancel a pending order.",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["order_id", "reason"],
        },
        writes=True,
    ),
]
LOOKUP = ToolCall(name="get_order_details", arguments={"order_id": "#W1"})
CANCEL = ToolCall(name="cancel_pending_order", arguments={"order_id": "#W1", "reason": "no longer needed"})
USER = [Message(role="user", content="Please cancel #W1.")]


def request(tools: list[ToolSpec] = TOOLS) -> ChatRequest:
    return ChatRequest(messages=USER, tools=tools)


def act(agent: Agent, messages: list[Message] = USER) -> AgentTurn:
    return asyncio.run(agent.act(messages))


# ------------------------------------------------------------------------------------ read_completion


def test_calls_the_server_extracted_win_even_with_empty_text():
    # `vllm serve --tool-call-parser xlam` returns the calls and no text: reading the text would find nothing.
    parsed = read_completion("", request(), server_calls=[LOOKUP, CANCEL])
    assert parsed.tool_calls == [LOOKUP, CANCEL] and parsed.content is None and parsed.problem is None
    beside = read_completion("Looking it up.", request(), server_calls=[LOOKUP])
    assert beside.tool_calls == [LOOKUP] and beside.content == "Looking it up."


def test_a_reply_goes_through_the_named_parser():
    text = 'Let me check.\n```json\n[{"name": "get_order_details", "arguments": {"order_id": "#W1"}}]\n```'
    parsed = read_completion(text, request(), parser="xlam")
    assert parsed.tool_calls == [LOOKUP] and parsed.content == "Let me check."
    assert read_completion("Which order?", request()).content == "Which order?"
    with pytest.raises(ValueError, match="unknown tool-call format 'no_such_format'"):
        read_completion(text, request(), parser="no_such_format")


def test_without_tools_the_text_is_the_content():
    calls_text = json.dumps([LOOKUP.model_dump()])
    parsed = read_completion(calls_text, ChatRequest(messages=USER))
    assert parsed.tool_calls == [] and parsed.content == calls_text and parsed.problem is None


def test_build_completion_marks_a_stop_with_calls_as_tool_calls():
    calls_text = json.dumps([LOOKUP.model_dump()])
    counts = {"prompt_tokens": 9, "completion_tokens": 4}
    done = build_completion(calls_text, request(), finish_reason="stop", **counts)
    assert done.finish_reason == "tool_calls" and done.tool_calls == [LOOKUP] and done.text == calls_text
    assert (done.prompt_tokens, done.completion_tokens) == (9, 4)
    cut = build_completion('[{"name": "get_order_details", "argu', request(), finish_reason="length", **counts)
    assert cut.finish_reason == "length" and "not valid JSON" in cut.problem


def test_a_request_says_how_its_reply_is_read():
    assert ChatRequest(messages=USER).reply_format == "text"
    assert ChatRequest(messages=USER, tools=TOOLS).reply_format == "tool_calls"
    with pytest.raises(ValueError, match="needs tools on offer"):
        ChatRequest(messages=USER, reply_format="tool_calls")
    with pytest.raises(ValueError, match="offers tools"):
        ChatRequest(messages=USER, tools=TOOLS, reply_format="text")
    with pytest.raises(ValueError, match="agent_turn"):  # the JSON agent turn is gone
        ChatRequest(messages=USER, tools=TOOLS, reply_format="agent_turn")
    with pytest.raises(ValueError, match="constrained decoding follows a tool-call format"):
        ChatRequest(messages=USER, constrained=True)
    with pytest.raises(ValueError, match="either by json_schema or by the tool-call grammar"):
        ChatRequest(messages=USER, tools=TOOLS, constrained=True, json_schema={"type": "array"})


# ------------------------------------------------------------------------------------ requests


def test_the_request_has_the_policy_the_tools_and_asks_for_one_call_decoded_freely():
    settings = AgentSettings(temperature=0.2, max_tokens=300, seed=5)
    built = build_agent_request(POLICY, TOOLS, USER, settings)
    assert built.messages == [Message(role="system", content=POLICY), *USER]
    assert built.tools == TOOLS and built.reply_format == "tool_calls" and built.json_schema is None
    assert built.constrained is False and built.parallel_tool_calls is False
    sampling = built.sampling
    assert (sampling.temperature, sampling.max_tokens, sampling.seed, sampling.n) == (0.2, 300, 5, 1)


def test_constrained_and_several_call_requests():
    constrained = build_agent_request(POLICY, TOOLS, USER, AgentSettings(constrained=True))
    assert constrained.constrained is True and constrained.reply_format == "tool_calls"
    assert constrained.json_schema is None  # the backend's grammar of its own call format, not a JSON shape
    several = build_agent_request(POLICY, TOOLS, USER, AgentSettings(one_call_per_turn=False))
    assert several.parallel_tool_calls is None
    bare = build_agent_request(POLICY, [], USER, AgentSettings(constrained=True))
    assert bare.json_schema is None and bare.reply_format == "text" and bare.tools == [] and not bare.constrained


def test_no_thinking_reaches_the_agent():
    conversation = [
        Message(role="user", content="Cancel #W1.", reasoning_content="I will say STOP later."),
        Message(role="assistant", content="Which reason?", reasoning_content="Ask for the reason."),
        Message(role="user", content="No longer needed."),
    ]
    built = build_agent_request(POLICY, TOOLS, conversation, AgentSettings())
    assert [message.reasoning_content for message in built.messages] == [None] * 4
    assert [message.content for message in built.messages[1:]] == [message.content for message in conversation]
    assert conversation[0].reasoning_content == "I will say STOP later."  # the stored episode keeps it


def test_later_trials_may_sample_at_another_temperature():
    settings = AgentSettings(temperature=0.0, later_trial_temperature=0.8, seed=3)
    assert settings.for_trial(0) == settings
    assert settings.for_trial(1).temperature == settings.for_trial(4).temperature == 0.8
    assert settings.for_trial(1).model_copy(update={"temperature": 0.0}) == settings
    assert AgentSettings(temperature=0.3).for_trial(2).temperature == 0.3
    with pytest.raises(ValueError):
        AgentSettings(later_trial_temperature=-1)


def test_the_conversation_must_come_without_a_system_message():
    with pytest.raises(ValueError, match="system prompt is the policy"):
        build_agent_request(POLICY, TOOLS, [Message(role="system", content="other"), *USER], AgentSettings())


def test_max_calls_must_be_positive():
    assert tool_calls_schema(TOOLS, max_calls=2)["maxItems"] == 2
    assert "maxItems" not in tool_calls_schema(TOOLS)
    with pytest.raises(ValueError, match="max_calls must be at least 1"):
        tool_calls_schema(TOOLS, max_calls=0)


# ------------------------------------------------------------------------------------ turns


def test_a_call_turn_and_a_text_turn():
    model = ScriptedChatModel([LOOKUP, "Your order is cancelled."], model_id="scripted-agent")
    agent = Agent(model, POLICY, TOOLS, AgentSettings(seed=1))
    call_turn = act(agent)
    assert call_turn.tool_calls == [LOOKUP] and call_turn.content is None and call_turn.problem is None
    assert call_turn.finish_reason == "tool_calls" and call_turn.error is None
    assert call_turn.model_id == "scripted-agent"
    assert call_turn.latency_s >= 0
    assert model.requests[0] == build_agent_request(POLICY, TOOLS, USER, AgentSettings(seed=1))

    text_turn = act(agent)
    assert text_turn.tool_calls == [] and text_turn.content == "Your order is cancelled." and text_turn.problem is None
    assert assistant_message(text_turn, []) == Message(role="assistant", content="Your order is cancelled.")


def test_several_calls_in_one_turn_come_back_in_order_with_their_ids():
    model = ScriptedChatModel([RawText(json.dumps([CANCEL.model_dump(), LOOKUP.model_dump()]))])
    settings = AgentSettings(one_call_per_turn=False)
    turn = act(Agent(model, POLICY, TOOLS, settings))
    assert repair_turn(turn, settings) == (turn, [])
    assert turn.tool_calls == [CANCEL, LOOKUP] and turn.problem is None
    message = assistant_message(turn, ["call_0", "call_1"])
    assert message.role == "assistant" and message.content is None
    assert message.tool_calls == [OpenAIToolCall.of(CANCEL, "call_0"), OpenAIToolCall.of(LOOKUP, "call_1")]
    with pytest.raises(ValueError, match=r"made 2 tool call\(s\) and got 1 call id"):
        assistant_message(turn, ["call_0"])


def test_text_beside_calls_is_kept_in_the_assistant_message():
    turn = AgentTurn(tool_calls=[LOOKUP], content="Let me look.")
    assert assistant_message(turn, ["c1"]).content == "Let me look."
    assert assistant_message(AgentTurn(tool_calls=[LOOKUP], content="  "), ["c1"]).content is None


def test_repairs_keep_the_first_call_and_remove_text_beside_it_by_default():
    turn = AgentTurn(tool_calls=[LOOKUP, CANCEL], content="Let me look that up\nfor you.", reasoning="Look first.")
    repaired, repairs = repair_turn(turn, AgentSettings())
    assert repaired.tool_calls == [LOOKUP] and repaired.content is None and repaired.reasoning == "Look first."
    assert repairs == [
        "dropped 1 call(s) after the first, one call per turn: cancel_pending_order",
        "removed the text beside its tool call: 'Let me look that up for you.'",
    ]
    kept, repairs = repair_turn(turn, AgentSettings(one_call_per_turn=False, text_beside_calls="keep"))
    assert (kept, repairs) == (turn, [])
    first_only, repairs = repair_turn(turn, AgentSettings(text_beside_calls="keep"))
    assert first_only.tool_calls == [LOOKUP] and first_only.content == turn.content and len(repairs) == 1
    # A text reply, or blank text beside a call, needs no repair.
    for untouched in (AgentTurn(content="Done."), AgentTurn(tool_calls=[LOOKUP], content=" \n")):
        assert repair_turn(untouched, AgentSettings()) == (untouched, [])
    long_text = "word " * 40
    (_, (note,)) = repair_turn(AgentTurn(tool_calls=[LOOKUP], content=long_text), AgentSettings())
    assert note.endswith("...'") and len(note) < 130


def test_the_turns_thinking_goes_to_reasoning_content_never_to_content():
    model = ScriptedChatModel(["<think>Check the order first.</think>Which order?", RawText("<think>only thoughts")])
    agent = Agent(model, POLICY, TOOLS)
    turn = act(agent)
    assert (turn.content, turn.reasoning, turn.problem) == ("Which order?", "Check the order first.", None)
    message = assistant_message(turn, [])
    assert (message.content, message.reasoning_content) == ("Which order?", "Check the order first.")
    assert message.openai() == {
        "role": "assistant",
        "content": "Which order?",
        "reasoning_content": "Check the order first.",
    }
    assert "reasoning_content" not in assistant_message(AgentTurn(content="Hi."), []).openai()
    thinking_only = act(agent)
    assert thinking_only.problem == "the reply has neither tool calls nor text (only thinking)"


def test_backend_errors_become_the_turns_error():
    failure = ChatResponse(model="endpoint", error="HTTP 500: engine busy")
    filtered = Completion(text="", finish_reason="error", error="the server ended it with 'content_filter'")
    agent = Agent(ScriptedChatModel([failure, filtered]), POLICY, TOOLS)
    failed = act(agent)
    assert failed.error == "HTTP 500: engine busy" and failed.tool_calls == [] and failed.finish_reason is None
    assert failed.model_id == "endpoint"
    with pytest.raises(ValueError, match="record its error instead"):
        assistant_message(failed, [])
    assert "content_filter" in act(agent).error


def test_unreadable_cut_and_empty_replies_are_problems():
    script = [
        RawText("[{'name': 'get_order_details'}]"),
        RawText("Your order was cancel", finish_reason="length"),
        RawText(""),
    ]
    agent = Agent(ScriptedChatModel(script), POLICY, TOOLS, AgentSettings(max_tokens=40))
    unreadable, cut, empty = act(agent), act(agent), act(agent)
    assert unreadable.tool_calls == [] and "not valid JSON" in unreadable.problem
    assert unreadable.content == "[{'name': 'get_order_details'}]"
    assert "cut off at max_tokens=40" in cut.problem and cut.finish_reason == "length"
    assert empty.problem == "the reply has neither tool calls nor text" and empty.error is None


def test_a_dead_engine_is_not_a_turn():
    agent = Agent(ScriptedChatModel([ModelUnavailable("engine restarting")]), POLICY, TOOLS)
    with pytest.raises(ModelUnavailable, match="engine restarting"):
        act(agent)


def test_free_text_arguments_are_capped_in_the_call_schema_but_ids_and_enums_keep_their_own_rules():
    from apigen_mt.simulators.domain import get_domain

    limit = text_field_limit(100)
    valid = jsonschema.Draft202012Validator(tool_calls_schema(get_domain("retail").toolkit.specs(), 1, limit))
    transfer = {"name": "transfer_to_human_agents", "arguments": {"summary": "s" * limit}}
    assert valid.is_valid([transfer])
    assert not valid.is_valid([{**transfer, "arguments": {"summary": "s" * (limit + 1)}}])
    cancel = {"name": "cancel_pending_order", "arguments": {"order_id": "#W1", "reason": "ordered by mistake"}}
    assert valid.is_valid([cancel])
    assert not valid.is_valid([{**cancel, "arguments": {**cancel["arguments"], "reason": "just because"}}])
    assert not valid.is_valid([cancel, cancel])
