"""ScriptedChatModel, the deterministic double the core's tests talk to."""

from __future__ import annotations

import asyncio
import json

import pytest

from apigen_mt.pipeline.engines.scripted import RawText, ScriptedChatModel, ScriptExhausted, ServerReply
from apigen_mt.simulators.chat import ChatModel, ChatRequest, ChatResponse, Completion, ModelUnavailable, SamplingParams
from apigen_mt.simulators.types import Message, ToolCall, ToolSpec

TOOLS = [
    ToolSpec(
        name="find_user_id_by_email",
        description="Find a user.",
        parameters={"type": "object", "properties": {"email": {"type": "string"}}},
    )
]


def request(text: str, n: int = 1) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], sampling=SamplingParams(n=n))


def ask(model: ScriptedChatModel, *requests: ChatRequest) -> list[ChatResponse]:
    async def go():
        return [await model.chat(item) for item in requests]

    return asyncio.run(go())


def test_answers_in_order_and_records_requests():
    lookup = ToolCall(name="find_user_id_by_email", arguments={"email": "a@b.c"})
    model = ScriptedChatModel(["Hi, how can I help?", lookup, "Done."], model_id="scripted-agent")
    assert isinstance(model, ChatModel)
    first, second, third = ask(model, request("hello"), request("my email is a@b.c"), request("thanks"))

    assert first.model == "scripted-agent"
    assert first.completions == [Completion(text="Hi, how can I help?", content="Hi, how can I help?")]
    (call,) = second.completions
    assert call.tool_calls == [lookup] and call.finish_reason == "tool_calls" and call.content is None
    assert json.loads(call.text) == [{"name": "find_user_id_by_email", "arguments": {"email": "a@b.c"}}]
    assert third.completions[0].text == "Done."
    assert [r.messages[-1].content for r in model.requests] == ["hello", "my email is a@b.c", "thanks"]
    assert model.remaining == 0


def test_list_of_tool_calls_is_one_completion():
    calls = [ToolCall(name="a", arguments={}), ToolCall(name="b", arguments={"x": 1})]
    (response,) = ask(ScriptedChatModel([calls]), request("go"))
    assert response.completions[0].tool_calls == calls


def test_completion_and_chat_response_are_used_as_given():
    raw = Completion(text="[{broken", content="[{broken", finish_reason="length", completion_tokens=5)
    failure = ChatResponse(model="scripted", error="HTTP 500: engine dead")
    model = ScriptedChatModel([raw, failure])
    first, second = ask(model, request("a"), request("b"))
    assert first.completions == [raw]
    assert second is failure and not second.ok


def test_n_completions_take_n_replies():
    model = ScriptedChatModel(["one", "two", "three", "four"])
    (best_of_three,) = ask(model, request("pick", n=3))
    assert [c.text for c in best_of_three.completions] == ["one", "two", "three"]
    assert model.remaining == 1


def test_chat_response_cannot_be_one_of_n_completions():
    model = ScriptedChatModel(["one", ChatResponse(error="x")])
    with pytest.raises(TypeError, match="reply #2 is a whole ChatResponse"):
        ask(model, request("pick", n=2))


def test_function_script_sees_each_request():
    def echo(req: ChatRequest) -> str:
        return f"you said: {req.messages[-1].content}"

    model = ScriptedChatModel(echo)
    responses = ask(model, request("x"), request("y", n=2))
    assert [c.text for r in responses for c in r.completions] == ["you said: x", "you said: y", "you said: y"]
    assert len(model.requests) == 2 and model.remaining == 0


def test_running_out_of_script_is_a_clear_error():
    model = ScriptedChatModel(["only reply"])
    ask(model, request("first"))
    with pytest.raises(ScriptExhausted) as raised:
        ask(model, request("second question"))
    message = str(raised.value)
    assert "no reply left for request #2" in message
    assert "held 1 replies" in message and "'second question'" in message


def test_a_reply_of_the_wrong_type_is_refused():
    with pytest.raises(TypeError, match="must be a str, ToolCall, list of ToolCall, RawText"):
        ask(ScriptedChatModel([{"name": "a"}]), request("x"))


def tool_request() -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="hi")], tools=TOOLS)


LOOKUP = ToolCall(name="find_user_id_by_email", arguments={"email": "a@b.c"})


def test_raw_text_is_read_like_a_backend_reads_it():
    calls = '[{"name": "find_user_id_by_email", "arguments": {"email": "a@b.c"}}]'
    cut = RawText("[{broken", finish_reason="length")
    model = ScriptedChatModel([RawText(calls), cut, RawText(calls)])
    as_calls, broken, as_text = ask(model, tool_request(), tool_request(), request("x"))
    (completion,) = as_calls.completions
    assert completion.tool_calls == [LOOKUP] and completion.finish_reason == "tool_calls" and completion.text == calls
    (cut,) = broken.completions
    assert cut.tool_calls == [] and cut.finish_reason == "length" and "not valid JSON" in cut.problem
    # Without tools on offer the same text is only text.
    assert as_text.completions[0].content == calls and as_text.completions[0].tool_calls == []


def test_a_str_is_raw_text_so_thinking_is_split_off_and_calls_are_parsed():
    thinking = "<think>The user said ###STOP### earlier?</think>\n\nWhich order do you mean?"
    calls = '[{"name": "find_user_id_by_email", "arguments": {"email": "a@b.c"}}]'
    reply, called, plain = ask(ScriptedChatModel([thinking, calls, "Hi."]), request("x"), tool_request(), request("y"))
    (completion,) = reply.completions
    assert completion.text == completion.content == "Which order do you mean?"
    assert completion.reasoning == "The user said ###STOP### earlier?"
    assert called.completions[0].tool_calls == [LOOKUP]
    assert plain.completions == [Completion(text="Hi.", content="Hi.")]


def test_a_server_reply_carries_text_beside_several_calls_and_reasoning():
    second = ToolCall(name="find_user_id_by_email", arguments={"email": "x@y.z"})
    script = [
        ServerReply(content="Let me look.", calls=(LOOKUP, second), reasoning="Two lookups."),
        ServerReply(content="<think>inline</think>Done.", reasoning="apart"),
    ]
    with_calls, text_only = ask(ScriptedChatModel(script), tool_request(), tool_request())
    (completion,) = with_calls.completions
    assert completion.tool_calls == [LOOKUP, second] and completion.content == "Let me look."
    assert completion.reasoning == "Two lookups." and completion.finish_reason == "tool_calls"
    (completion,) = text_only.completions
    assert (completion.content, completion.reasoning, completion.tool_calls) == ("Done.", "apart\n\ninline", [])


def test_model_unavailable_is_raised_and_only_answers_a_request_by_itself():
    model = ScriptedChatModel([ModelUnavailable("the engine is restarting"), "back again"])
    with pytest.raises(ModelUnavailable, match="restarting"):
        ask(model, request("x"))
    assert ask(model, request("y"))[0].completions[0].text == "back again"
    with pytest.raises(TypeError, match="reply #2 is a whole ModelUnavailable"):
        ask(ScriptedChatModel(["one", ModelUnavailable("gone")]), request("pick", n=2))
