"""The agent role and the one rule that turns a completion into tool calls or content (no engine)."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from apigen_mt.pipeline.scripted import RawText, ScriptedChatModel
from apigen_mt.simulators.agent import Agent, AgentSettings, AgentTurn, assistant_message, build_agent_request
from apigen_mt.simulators.chat import ChatRequest, ChatResponse, Completion, ModelUnavailable
from apigen_mt.simulators.completions import build_completion, read_completion
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec
from apigen_mt.simulators.xlam import agent_turn_schema, text_field_limit, tool_calls_schema

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


def request(reply_format: str, tools: list[ToolSpec] = TOOLS) -> ChatRequest:
    schema = agent_turn_schema(tools) if reply_format == "agent_turn" else None
    return ChatRequest(messages=USER, tools=tools, json_schema=schema, reply_format=reply_format)


def act(agent: Agent, messages: list[Message] = USER) -> AgentTurn:
    return asyncio.run(agent.act(messages))


# ------------------------------------------------------------------------------------ read_completion


@pytest.mark.parametrize("reply_format", ["tool_calls", "agent_turn"])
def test_calls_the_server_extracted_win_even_with_empty_text(reply_format):
    # `vllm serve --tool-call-parser xlam` returns the calls and no text: reading the text would find nothing.
    parsed = read_completion("", request(reply_format), server_calls=[LOOKUP, CANCEL])
    assert parsed.tool_calls == [LOOKUP, CANCEL] and parsed.content is None and parsed.problem is None
    beside = read_completion("Looking it up.", request(reply_format), server_calls=[LOOKUP])
    assert beside.tool_calls == [LOOKUP] and beside.content == "Looking it up."


def test_an_agent_turn_reads_text_calls_and_broken_json():
    turn = request("agent_turn")
    assert read_completion('{"content": "It shipped."}', turn).content == "It shipped."
    both = read_completion(json.dumps([LOOKUP.model_dump(), CANCEL.model_dump()]), turn)
    assert both.tool_calls == [LOOKUP, CANCEL] and both.problem is None
    cut = '[{"name": "get_order_details", "argu'
    broken = read_completion(cut, turn)
    assert broken.tool_calls == [] and broken.content == cut and "not valid JSON" in broken.problem
    # Plain text is no agent turn: a backend that ignored the schema shows up as a problem.
    assert "not valid JSON" in read_completion("Sure, one moment.", turn).problem


def test_an_unconstrained_reply_goes_through_the_named_parser():
    text = 'Let me check.\n```json\n[{"name": "get_order_details", "arguments": {"order_id": "#W1"}}]\n```'
    parsed = read_completion(text, request("tool_calls"), parser="xlam")
    assert parsed.tool_calls == [LOOKUP] and parsed.content == "Let me check."
    assert read_completion("Which order?", request("tool_calls")).content == "Which order?"
    with pytest.raises(ValueError, match="unknown tool-call format 'hermes'"):
        read_completion(text, request("tool_calls"), parser="hermes")


def test_without_tools_the_text_is_the_content():
    calls_text = json.dumps([LOOKUP.model_dump()])
    parsed = read_completion(calls_text, ChatRequest(messages=USER))
    assert parsed.tool_calls == [] and parsed.content == calls_text and parsed.problem is None


def test_build_completion_marks_a_stop_with_calls_as_tool_calls():
    calls_text = json.dumps([LOOKUP.model_dump()])
    counts = {"prompt_tokens": 9, "completion_tokens": 4}
    done = build_completion(calls_text, request("tool_calls"), finish_reason="stop", **counts)
    assert done.finish_reason == "tool_calls" and done.tool_calls == [LOOKUP] and done.text == calls_text
    assert (done.prompt_tokens, done.completion_tokens) == (9, 4)
    cut = build_completion('{"content": "It sh', request("agent_turn"), finish_reason="length", **counts)
    assert cut.finish_reason == "length" and "not valid JSON" in cut.problem


def test_a_request_says_how_its_reply_is_read():
    assert ChatRequest(messages=USER).reply_format == "text"
    assert ChatRequest(messages=USER, tools=TOOLS).reply_format == "tool_calls"
    with pytest.raises(ValueError, match="needs json_schema"):
        ChatRequest(messages=USER, tools=TOOLS, reply_format="agent_turn")
    with pytest.raises(ValueError, match="needs tools on offer"):
        ChatRequest(messages=USER, json_schema={"type": "object"}, reply_format="agent_turn")
    with pytest.raises(ValueError, match="offers tools"):
        ChatRequest(messages=USER, tools=TOOLS, reply_format="text")


# ------------------------------------------------------------------------------------ requests


def test_the_request_has_the_policy_the_tools_and_a_one_call_schema():
    settings = AgentSettings(temperature=0.2, max_tokens=300, seed=5)
    built = build_agent_request(POLICY, TOOLS, USER, settings)
    assert built.messages == [Message(role="system", content=POLICY), *USER]
    assert built.tools == TOOLS and built.reply_format == "agent_turn"
    assert built.json_schema == agent_turn_schema(TOOLS, max_calls=1, max_text_chars=text_field_limit(300))
    sampling = built.sampling
    assert (sampling.temperature, sampling.max_tokens, sampling.seed, sampling.n) == (0.2, 300, 5, 1)

    valid = jsonschema.Draft202012Validator(built.json_schema)
    assert valid.is_valid([LOOKUP.model_dump()]) and valid.is_valid({"content": "Done."})
    assert not valid.is_valid([LOOKUP.model_dump(), CANCEL.model_dump()])
    # The text is capped below what 300 tokens can hold, so the grammar closes the JSON before the limit cuts it.
    assert not valid.is_valid({"content": "x" * (text_field_limit(300) + 1)})
    several = build_agent_request(POLICY, TOOLS, USER, AgentSettings(one_call_per_turn=False))
    assert jsonschema.Draft202012Validator(several.json_schema).is_valid([LOOKUP.model_dump(), CANCEL.model_dump()])


def test_unconstrained_and_toolless_requests():
    free = build_agent_request(POLICY, TOOLS, USER, AgentSettings(constrained=False))
    assert free.json_schema is None and free.reply_format == "tool_calls" and free.tools == TOOLS
    bare = build_agent_request(POLICY, [], USER, AgentSettings())
    assert bare.json_schema is None and bare.reply_format == "text" and bare.tools == []


def test_the_conversation_must_come_without_a_system_message():
    with pytest.raises(ValueError, match="system prompt is the policy"):
        build_agent_request(POLICY, TOOLS, [Message(role="system", content="other"), *USER], AgentSettings())


def test_max_calls_must_be_positive():
    assert tool_calls_schema(TOOLS, max_calls=2)["maxItems"] == 2
    assert "maxItems" not in tool_calls_schema(TOOLS)
    with pytest.raises(ValueError, match="max_calls must be at least 1"):
        tool_calls_schema(TOOLS, max_calls=0)


def test_the_one_call_schema_constrains_xgrammar():
    xgrammar = pytest.importorskip("xgrammar", reason="xgrammar (vLLM's structured-output backend) is not installed")
    characters = xgrammar.TokenizerInfo([chr(code) for code in range(32, 127)] + ["\n"])
    schema = json.dumps(agent_turn_schema(TOOLS, max_calls=1))
    compiled = xgrammar.GrammarCompiler(characters).compile_json_schema(schema)

    def accepts(text: str) -> bool:
        matcher = xgrammar.GrammarMatcher(compiled)
        return matcher.accept_string(text) and matcher.is_completed()

    assert accepts(json.dumps([LOOKUP.model_dump()])) and accepts('{"content": "Done."}')
    assert not accepts(json.dumps([LOOKUP.model_dump(), CANCEL.model_dump()]))


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
    turn = act(Agent(model, POLICY, TOOLS, AgentSettings(one_call_per_turn=False)))
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
        RawText('{"content": "Your order was cancel', finish_reason="length"),
        RawText('{"content": ""}'),
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


def test_free_text_arguments_are_capped_in_the_constrained_schema_but_ids_and_enums_keep_their_own_rules():
    from apigen_mt.simulators.domain import get_domain

    retail = get_domain("retail")
    built = build_agent_request(retail.policy, retail.toolkit.specs(), USER, AgentSettings(max_tokens=100))
    valid = jsonschema.Draft202012Validator(built.json_schema)
    limit = text_field_limit(100)
    transfer = {"name": "transfer_to_human_agents", "arguments": {"summary": "s" * limit}}
    assert valid.is_valid([transfer])
    assert not valid.is_valid([{**transfer, "arguments": {"summary": "s" * (limit + 1)}}])
    cancel = {"name": "cancel_pending_order", "arguments": {"order_id": "#W1", "reason": "ordered by mistake"}}
    assert valid.is_valid([cancel])
    assert not valid.is_valid([{**cancel, "arguments": {**cancel["arguments"], "reason": "just because"}}])
