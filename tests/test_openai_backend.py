"""OpenAIChatModel against a real HTTP server of ours on a free loopback port (no external network): the test double
tests/loopback_endpoint.py, with scripted answers or with the behaviours of hosted endpoints."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from apigen_mt.pipeline.engines.openai_backend import (
    EndpointUnavailable,
    OpenAIBackendConfig,
    OpenAIChatModel,
    _retry_after_seconds,
)
from apigen_mt.simulators.chat import ChatModel, ChatRequest, SamplingParams
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec
from tests.conftest import load_test_module

loopback = load_test_module("loopback_endpoint")
Behaviours, LoopbackEndpoint, Planned = loopback.Behaviours, loopback.LoopbackEndpoint, loopback.Planned
chat_body, text_choice = loopback.chat_body, loopback.text_choice

ORDER_TOOL = ToolSpec(
    name="get_order_details",
    description="Get the status and details of an order.",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)


def endpoint_config(endpoint: LoopbackEndpoint, **overrides: Any) -> OpenAIBackendConfig:
    settings: dict[str, Any] = dict(
        base_url=endpoint.base_url, model="tiny", timeout_s=5.0, max_retries=3, backoff_base_s=0.001, backoff_max_s=0.01
    )
    settings.update(overrides)
    return OpenAIBackendConfig(**settings)


@pytest.fixture
def server():
    with LoopbackEndpoint(models=("tiny", "other")) as endpoint:
        yield endpoint


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask(model: OpenAIChatModel, request: ChatRequest):
    async def go():
        async with model:
            return await model.chat(request)

    return asyncio.run(go())


def check(model: OpenAIChatModel) -> list[str]:
    async def go():
        async with model:
            return await model.check()

    return asyncio.run(go())


HELLO = ChatRequest(messages=[Message(role="user", content="hello")])


def test_tool_call_completion_and_request_format(server):
    server.plan.append(
        Planned(
            body=chat_body(
                {
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_order_details", "arguments": '{"order_id": "#W0001"}'},
                            },
                            {"id": "call_2", "type": "function", "function": {"name": "think", "arguments": "{oops"}},
                        ],
                    },
                    "finish_reason": "tool_calls",
                },
                text_choice("Which order do you mean?"),
                prompt_tokens=50,
                completion_tokens=21,
            )
        )
    )
    history = [
        Message(role="system", content="You are a retail agent."),
        Message(role="user", content="Where is my order #W0001?"),
        Message(
            role="assistant",
            tool_calls=[
                OpenAIToolCall.of(ToolCall(name="get_order_details", arguments={"order_id": "#W0001"}), "call_0"),
                # arguments held as a dict must still go out as a JSON string
                OpenAIToolCall(id="call_9", function={"name": "get_order_details", "arguments": {"order_id": "#W2"}}),
            ],
        ),
        Message(role="tool", content='{"status": "pending"}', tool_call_id="call_0", name="get_order_details"),
    ]
    schema = {"title": "Agent reply!", "type": "object", "properties": {"answer": {"type": "string"}}}
    request = ChatRequest(
        messages=history,
        tools=[ORDER_TOOL],
        json_schema=schema,
        sampling=SamplingParams(temperature=0.3, top_p=0.9, max_tokens=64, n=2, seed=11, stop=["###STOP###"]),
    )
    model = OpenAIChatModel(endpoint_config(server))
    assert isinstance(model, ChatModel)

    response = ask(model, request)

    assert response.ok, response.error
    assert response.model == "tiny"
    first, second = response.completions
    assert first.tool_calls == [
        ToolCall(name="get_order_details", arguments={"order_id": "#W0001"}),
        ToolCall(name="think", arguments={"__raw__": "{oops"}),
    ]
    assert first.finish_reason == "tool_calls" and first.content is None and first.text == ""
    assert second.tool_calls == [] and second.content == second.text == "Which order do you mean?"
    assert second.finish_reason == "stop"
    assert [c.prompt_tokens for c in response.completions] == [50, 50]
    assert [c.completion_tokens for c in response.completions] == [11, 10]

    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    body = sent["json"]
    assert body["model"] == "tiny"
    sent_calls = body["messages"][2]["tool_calls"]
    assert [(call["id"], call["type"], call["function"]["name"]) for call in sent_calls] == [
        ("call_0", "function", "get_order_details"),
        ("call_9", "function", "get_order_details"),
    ]
    assert [call["function"]["arguments"] for call in sent_calls] == ['{"order_id": "#W0001"}', '{"order_id": "#W2"}']
    assert "content" not in body["messages"][2]
    assert body["messages"][3] == {
        "role": "tool",
        "content": '{"status": "pending"}',
        "tool_call_id": "call_0",
        "name": "get_order_details",
    }
    assert body["tools"] == [ORDER_TOOL.openai()]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "Agent_reply_", "schema": schema}}
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["n"], body["seed"], body["stop"]) == (
        0.3,
        0.9,
        64,
        2,
        11,
        ["###STOP###"],
    )
    assert "authorization" not in sent["headers"]


def test_optional_fields_are_left_out(server):
    config = endpoint_config(server, base_url=server.base_url + "/")
    assert config.base_url == server.base_url
    assert ask(OpenAIChatModel(config), HELLO).ok
    payload = server.requests[-1]["json"]
    assert payload["messages"] == [{"role": "user", "content": "hello"}]
    # n = 1 is left out too: every server defaults to it, and some refuse the field altogether.
    assert not {"seed", "stop", "tools", "response_format", "n", "parallel_tool_calls", "chat_template_kwargs"} & (
        payload.keys()
    )


def test_text_reply_is_parsed_with_the_xlam_parser_when_tools_are_offered(server):
    xlam_text = '[{"name": "get_order_details", "arguments": {"order_id": "#W0002"}}]'
    server.plan.append(Planned(body=chat_body(text_choice(xlam_text))))
    response = ask(OpenAIChatModel(endpoint_config(server)), ChatRequest(messages=HELLO.messages, tools=[ORDER_TOOL]))
    assert response.ok, response.error
    (completion,) = response.completions
    assert completion.text == xlam_text
    assert completion.tool_calls == [ToolCall(name="get_order_details", arguments={"order_id": "#W0002"})]
    assert completion.finish_reason == "tool_calls"

    # Without tools on offer the same text is just text.
    server.plan.append(Planned(body=chat_body(text_choice(xlam_text))))
    (plain,) = ask(OpenAIChatModel(endpoint_config(server)), HELLO).completions
    assert plain.tool_calls == [] and plain.content == xlam_text and plain.finish_reason == "stop"


def test_calls_are_read_whether_or_not_the_server_extracts_them(server):
    server_extracted = {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "get_order_details", "arguments": '{"order_id": "#W0003"}'},
                }
            ],
        },
        "finish_reason": "tool_calls",
    }
    server.plan += [
        Planned(body=chat_body(server_extracted)),  # vllm serve --tool-call-parser xlam: calls, no text
        Planned(body=chat_body(text_choice('[{"name": "get_order_details", "arguments": {"order_id": "#W0003"}}]'))),
        Planned(body=chat_body(text_choice("Which order?"))),
    ]
    lookup = [ToolCall(name="get_order_details", arguments={"order_id": "#W0003"})]
    model = OpenAIChatModel(endpoint_config(server))
    request = ChatRequest(messages=HELLO.messages, tools=[ORDER_TOOL])

    async def three():
        async with model:
            return [await model.chat(request) for _ in range(3)]

    extracted, listed, text = [response.completions[0] for response in asyncio.run(three())]
    assert extracted.tool_calls == lookup and extracted.text == "" and extracted.content is None
    assert listed.tool_calls == lookup and listed.finish_reason == "tool_calls" and listed.problem is None
    assert text.tool_calls == [] and text.content == "Which order?" and text.problem is None


def test_unexpected_finish_reason_marks_the_completion(server):
    server.plan.append(Planned(body=chat_body(text_choice("cut", finish_reason="content_filter"))))
    (completion,) = ask(OpenAIChatModel(endpoint_config(server)), HELLO).completions
    assert completion.finish_reason == "error"
    assert "content_filter" in completion.error


def test_429_is_retried_after_the_retry_after_delay(server):
    server.plan += [
        Planned(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"}),
        Planned(body=chat_body(text_choice("done"))),
    ]
    started = time.monotonic()
    response = ask(OpenAIChatModel(endpoint_config(server, backoff_max_s=5.0)), HELLO)
    elapsed = time.monotonic() - started
    assert response.ok and response.completions[0].text == "done"
    assert len(server.requests) == 2
    # The backoff alone would wait at most 1 ms; only Retry-After explains 0.3 s.
    assert elapsed >= 0.3


def test_retry_after_is_capped_by_backoff_max(server):
    server.plan += [
        Planned(status=429, body="busy", headers={"Retry-After": "30"}),
        Planned(body=chat_body(text_choice("done"))),
    ]
    started = time.monotonic()
    assert ask(OpenAIChatModel(endpoint_config(server, backoff_max_s=0.05)), HELLO).ok
    assert time.monotonic() - started < 2


def test_retry_after_reads_seconds_and_http_dates():
    assert _retry_after_seconds("120") == 120.0
    assert _retry_after_seconds(None) is None
    assert _retry_after_seconds("soon") is None
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= _retry_after_seconds(in_a_minute) <= 60


def test_500_twice_then_success(server):
    server.plan += [
        Planned(status=500, body="boom"),
        Planned(status=503, body="boom"),
        Planned(body=chat_body(text_choice("ok"))),
    ]
    response = ask(OpenAIChatModel(endpoint_config(server, max_retries=2)), HELLO)
    assert response.ok and response.completions[0].text == "ok"
    assert len(server.requests) == 3


def test_persistent_500_becomes_an_error_result(server):
    server.plan += [Planned(status=500, body={"error": {"message": "engine dead"}}) for _ in range(5)]
    response = ask(OpenAIChatModel(endpoint_config(server, max_retries=2)), HELLO)
    assert not response.ok and response.completions == []
    assert response.error == (
        f"POST {server.base_url}/chat/completions failed after 3 attempt(s); last failure: HTTP 500: engine dead"
    )
    assert len(server.requests) == 3


def test_client_error_is_not_retried(server):
    server.plan.append(Planned(status=400, body={"error": {"message": "prompt is longer than the context"}}))
    response = ask(OpenAIChatModel(endpoint_config(server)), HELLO)
    assert response.error == (
        f"POST {server.base_url}/chat/completions refused the request with HTTP 400: prompt is longer than the context"
    )
    assert len(server.requests) == 1


def test_body_that_is_not_a_chat_completion_is_an_error_result(server):
    server.plan.append(Planned(body={"choices": []}))
    response = ask(OpenAIChatModel(endpoint_config(server)), HELLO)
    assert not response.ok
    assert "not a chat completion" in response.error


def test_timeout_becomes_an_error_result(server):
    server.plan += [Planned(delay_s=3.0, body=chat_body(text_choice("late"))) for _ in range(2)]
    started = time.monotonic()
    response = ask(OpenAIChatModel(endpoint_config(server, timeout_s=0.2, max_retries=1)), HELLO)
    assert time.monotonic() - started < 2
    assert not response.ok
    assert response.error.startswith(f"POST {server.base_url}/chat/completions failed after 2 attempt(s)")
    assert "timed out after 0.2 s" in response.error
    assert len(server.requests) == 2


def test_unreachable_server():
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    config = OpenAIBackendConfig(base_url=base_url, model="tiny", max_retries=1, backoff_base_s=0.001)
    with pytest.raises(EndpointUnavailable) as raised:
        check(OpenAIChatModel(config))
    assert str(raised.value) == f"cannot reach {base_url}: connection refused; is the server running?"

    response = ask(OpenAIChatModel(config), HELLO)
    assert response.error == (
        f"POST {base_url}/chat/completions failed after 2 attempt(s); last failure: connection refused"
    )


def test_check_lists_models_and_rejects_an_unknown_one(server):
    assert check(OpenAIChatModel(endpoint_config(server, model="other"))) == ["tiny", "other"]
    with pytest.raises(EndpointUnavailable) as raised:
        check(OpenAIChatModel(endpoint_config(server, model="xlam-2-70b")))
    assert str(raised.value) == f"model 'xlam-2-70b' is not served by {server.base_url}; it serves: tiny, other"


def test_concurrency_is_bounded(server):
    # Each answer waits for 3 requests in flight, then 50 ms more, in which any excess request would show up.
    server.plan += [
        Planned(wait_for_in_flight=3, delay_s=0.05, body=chat_body(text_choice(f"reply {i}"))) for i in range(9)
    ]
    model = OpenAIChatModel(endpoint_config(server, max_concurrency=3))

    async def many():
        async with model:
            return await asyncio.gather(*(model.chat(HELLO) for _ in range(9)))

    responses = asyncio.run(many())
    assert all(response.ok for response in responses)
    assert len(server.requests) == 9
    # Never above the bound, and the bound was reached (requests really ran side by side).
    assert server.peak_in_flight == 3


def test_api_key_comes_from_the_environment_and_never_leaks(server, monkeypatch):
    secret = "sk-test-7f3a9c-secret"
    monkeypatch.setenv("APIGEN_MT_TEST_KEY", secret)
    config = endpoint_config(server, api_key_env="APIGEN_MT_TEST_KEY")
    model = OpenAIChatModel(config)
    assert secret not in repr(model) and secret not in repr(config)

    assert check(OpenAIChatModel(config)) == ["tiny", "other"]
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {secret}"

    # A server that echoes the header back must not carry the key into the error result.
    server.plan.append(Planned(status=400, body="echo-authorization"))
    response = ask(model, HELLO)
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {secret}"
    assert response.error.endswith("HTTP 400: bad request from Bearer ***")
    assert secret not in response.error

    # Nor may a server that puts the key inside a completion carry it into what the run stores (issue 18 class 10).
    echoed = {"role": "assistant", "content": f"Your key is {secret}.", "reasoning_content": f"They sent {secret}"}
    server.plan.append(Planned(body=chat_body({"message": echoed, "finish_reason": "stop"}, model=secret)))
    response = ask(model, HELLO)
    [completion] = response.completions
    assert (completion.text, completion.reasoning, response.model) == ("Your key is ***.", "They sent ***", "***")


def test_rejected_key_is_a_clear_exception_from_check(server, monkeypatch):
    monkeypatch.setenv("APIGEN_MT_TEST_KEY", "sk-wrong")
    server.models_answer = Planned(status=401, body={"error": {"message": "invalid api key sk-wrong"}})
    with pytest.raises(EndpointUnavailable) as raised:
        check(OpenAIChatModel(endpoint_config(server, api_key_env="APIGEN_MT_TEST_KEY")))
    assert str(raised.value) == (
        f"{server.base_url} rejected the request with HTTP 401 (invalid api key ***); "
        "check the key in $APIGEN_MT_TEST_KEY"
    )


def test_missing_api_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("APIGEN_MT_MISSING_KEY", raising=False)
    config = OpenAIBackendConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="APIGEN_MT_MISSING_KEY")
    with pytest.raises(EndpointUnavailable, match="APIGEN_MT_MISSING_KEY, but it is unset or empty"):
        OpenAIChatModel(config)


def test_config_rejects_a_url_without_scheme_and_an_unknown_parser():
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        OpenAIBackendConfig(base_url="127.0.0.1:8000/v1", model="m")
    with pytest.raises(ValueError, match="unknown tool-call format 'nonesuch'; known formats: "):
        OpenAIBackendConfig(base_url="http://127.0.0.1:8000/v1", model="m", tool_parser="nonesuch")


# ----------------------------------------------------------------------------------------- models ask


def write_endpoint_config(tmp_path, base_url: str, api_key_env: str | None = None):
    endpoint = {"base_url": base_url, "model": "tiny", "max_retries": 0, "backoff_base_s": 0.001}
    if api_key_env is not None:
        endpoint["api_key_env"] = api_key_env
    roles = {role: "endpoint" for role in ("proposer", "reviewer", "human", "human_judge", "agent")}
    path = tmp_path / "endpoint.yaml"
    path.write_text(json.dumps({"models": {"endpoint": {"backend": "openai", "endpoint": endpoint}}, "roles": roles}))
    return path


@pytest.fixture
def no_ray(monkeypatch):
    import ray

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("models ask started Ray for an OpenAI-compatible endpoint")

    monkeypatch.setattr(ray, "init", refuse)


def run_ask(*args: str):
    from typer.testing import CliRunner

    from apigen_mt.pipeline.cli import models as cli_models  # noqa: F401  (registers `models`)
    from apigen_mt.pipeline.cli.main import app

    return CliRunner().invoke(app, ["models", "ask", *args])


def test_models_ask_on_an_endpoint_prints_the_calls_without_ray(server, tmp_path, no_ray):
    call = {"name": "get_order_details", "arguments": {"order_id": "#W1"}}
    server.plan.append(Planned(body=chat_body(text_choice(json.dumps([call])))))
    config = write_endpoint_config(tmp_path, server.base_url)
    result = run_ask(str(config), "Where is #W1?", "--tools", "get_order_details")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"tool_calls": [call], "content": None}
    assert [request["method"] for request in server.requests] == ["GET", "POST"]  # checked first, then asked
    sent = server.requests[-1]["json"]
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][1] == {"role": "user", "content": "Where is #W1?"}
    # Free-running agent turns: the tools go to the server, one call per turn is asked for, no schema.
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_order_details"]
    assert sent["parallel_tool_calls"] is False and "response_format" not in sent


def test_models_ask_refuses_an_unset_key_and_an_unreachable_endpoint_in_one_line(server, tmp_path, monkeypatch, no_ray):
    from apigen_mt.pipeline.cli.main import CliError

    monkeypatch.delenv("APIGEN_MT_MISSING_KEY", raising=False)
    unset = run_ask(str(write_endpoint_config(tmp_path, server.base_url, "APIGEN_MT_MISSING_KEY")), "hello")
    assert isinstance(unset.exception, CliError)
    assert "APIGEN_MT_MISSING_KEY, but it is unset or empty" in str(unset.exception)
    assert server.requests == []

    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    unreachable = run_ask(str(write_endpoint_config(tmp_path, base_url)), "hello")
    assert isinstance(unreachable.exception, CliError)
    assert str(unreachable.exception) == f"cannot reach {base_url}: connection refused; is the server running?"


def test_models_ask_exits_2_with_one_line_when_the_key_variable_is_unset(tmp_path):
    import os
    import subprocess

    environment = {name: value for name, value in os.environ.items() if name != "APIGEN_MT_MISSING_KEY"}
    config = write_endpoint_config(tmp_path, "http://127.0.0.1:1/v1", "APIGEN_MT_MISSING_KEY")
    program = "from apigen_mt.pipeline.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", program, "models", "ask", str(config), "hello"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("apigen-mt: error: api_key_env names the environment variable APIGEN_MT_MISSING_KEY")


# ------------------------------------------------------------------------ hosted endpoints as they are

REPLY_SCHEMA = {
    "type": "object",
    "properties": {"critique": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["critique", "score"],
}


def judge_request(**sampling: Any) -> ChatRequest:
    """A request the loopback answers as the human judge, under a JSON schema."""
    from apigen_mt.simulators.human_prompts import judge_messages

    messages = judge_messages("You want to cancel order #W0000001.", [], "Cancel it, please.")
    return ChatRequest(messages=messages, json_schema=REPLY_SCHEMA, sampling=SamplingParams(**sampling))


def ask_all(model: OpenAIChatModel, *requests: ChatRequest, together: bool = False):
    """Each request's response, one after another (or all at once with `together`), on one client."""

    async def go():
        async with model:
            if together:
                return await asyncio.gather(*(model.chat(request) for request in requests))
            return [await model.chat(request) for request in requests]

    return asyncio.run(go())


def posted(server: LoopbackEndpoint) -> list[dict[str, Any]]:
    return [request["json"] for request in server.requests if request["method"] == "POST"]


def test_refused_json_schema_falls_back_to_json_object_once_for_the_run(server):
    server.behaviours = Behaviours(refuse_json_schema=True)
    model = OpenAIChatModel(endpoint_config(server))
    first, second = ask_all(model, judge_request(), judge_request())
    assert first.ok and second.ok, (first.error, second.error)
    assert json.loads(first.completions[0].text)["score"] == 9
    formats = [body.get("response_format", {}).get("type") for body in posted(server)]
    # Refused once, sent again at once as json_object; the second request goes straight to json_object.
    assert formats == ["json_schema", "json_object", "json_object"]
    assert server.counts["refused json_schema"] == 1
    assert model.fallbacks() == [f"tiny at {server.base_url}: structured_outputs -> json_object"]


def test_refused_json_object_too_leaves_the_schema_to_the_prompt(server):
    server.behaviours = Behaviours(refuse_json_schema=True, refuse_json_object=True)
    model = OpenAIChatModel(endpoint_config(server))
    first, second = ask_all(model, judge_request(), judge_request())
    assert first.ok and second.ok
    # The reply still reads as JSON: the prompt describes it.
    assert json.loads(second.completions[0].text) == {"critique": "It keeps to the task.", "score": 9}
    formats = [body.get("response_format", {}).get("type") for body in posted(server)]
    assert formats == ["json_schema", "json_object", None, None]
    assert model.fallbacks() == [f"tiny at {server.base_url}: structured_outputs -> prompt only"]


def test_requests_refused_together_agree_on_the_fallback(server):
    server.behaviours = Behaviours(refuse_json_schema=True, refuse_json_object=True)
    model = OpenAIChatModel(endpoint_config(server))
    responses = ask_all(model, *(judge_request() for _ in range(6)), together=True)
    assert all(response.ok for response in responses)
    assert model.features.structured_step == 2
    assert model.fallbacks() == [f"tiny at {server.base_url}: structured_outputs -> prompt only"]
    # Nothing was sent more than three times (schema, object, prompt), and nothing was refused twice per step.
    assert server.counts["requests"] <= 6 * 3
    assert server.counts["response_format=json_schema"] <= 6


def test_refused_n_becomes_single_requests_merged_in_order(server):
    server.behaviours = Behaviours(refuse_n=True)
    model = OpenAIChatModel(endpoint_config(server))
    human = human_request(n=3, seed=40)
    first, second = ask_all(model, human, human)
    assert first.ok and second.ok
    assert len(first.completions) == len(second.completions) == 3
    bodies = posted(server)
    assert bodies[0]["n"] == 3  # refused, then three single requests; the second turn goes straight to singles
    assert server.counts["refused n"] == 1 and server.counts["n>1"] == 1
    singles = bodies[1:]
    assert len(singles) == 6 and all("n" not in body for body in singles)
    # Each single draw has its own seed, so seeded candidates still differ.
    assert sorted(body["seed"] for body in singles[:3]) == [40, 41, 42]
    assert model.fallbacks() == [f"tiny at {server.base_url}: n -> single requests"]


def test_n_is_sent_as_is_where_the_server_takes_it(server):
    model = OpenAIChatModel(endpoint_config(server))
    (response,) = ask_all(model, human_request(n=3, seed=1))
    assert len(response.completions) == 3 and len(posted(server)) == 1
    assert ["(take 2)" in c.text for c in response.completions] == [False, True, False]
    assert model.fallbacks() == []


def test_refused_max_tokens_switches_to_max_completion_tokens(server):
    server.behaviours = Behaviours(refuse_max_tokens=True)
    model = OpenAIChatModel(endpoint_config(server))
    first, second = ask_all(model, HELLO, HELLO)
    assert first.ok and second.ok
    bodies = posted(server)
    assert ["max_tokens" in body for body in bodies] == [True, False, False]
    assert [body.get("max_completion_tokens") for body in bodies] == [None, 512, 512]
    assert model.fallbacks() == [f"tiny at {server.base_url}: max_tokens -> max_completion_tokens"]

    # Configured from the start, it is a setting, not a fallback.
    configured = OpenAIChatModel(endpoint_config(server, max_tokens_field="max_completion_tokens"))
    assert ask_all(configured, HELLO)[0].ok
    assert "max_tokens" not in posted(server)[-1] and configured.fallbacks() == []


def test_parallel_tool_calls_false_is_sent_and_left_out_once_refused(server):
    one_call = ChatRequest(messages=HELLO.messages, tools=[ORDER_TOOL], parallel_tool_calls=False)
    model = OpenAIChatModel(endpoint_config(server))
    ask_all(model, one_call, ChatRequest(messages=HELLO.messages, tools=[ORDER_TOOL]))
    assert [body.get("parallel_tool_calls") for body in posted(server)] == [False, None]

    server.behaviours = Behaviours(refuse_parallel_tool_calls=True)
    refused = OpenAIChatModel(endpoint_config(server))
    first, second = ask_all(refused, one_call, one_call)
    assert first.ok and second.ok
    assert ["parallel_tool_calls" in body for body in posted(server)[2:]] == [True, False, False]
    assert refused.fallbacks() == [f"tiny at {server.base_url}: parallel_tool_calls -> left out"]


def test_a_refusal_that_names_no_feature_used_is_that_requests_error(server):
    # json_schema named, but the request sent no response_format: nothing to fall back from.
    server.plan.append(Planned(status=400, body={"error": {"message": "json_schema is not supported"}}))
    model = OpenAIChatModel(endpoint_config(server))
    (response,) = ask_all(model, HELLO)
    assert response.error.endswith("refused the request with HTTP 400: json_schema is not supported")
    assert len(posted(server)) == 1 and model.fallbacks() == []


def test_sampling_parameters_the_model_refuses_are_left_out_and_template_kwargs_sent(server):
    config = endpoint_config(
        server, omit_sampling=["temperature", "top_p", "seed", "stop"], chat_template_kwargs={"enable_thinking": False}
    )
    request = ChatRequest(messages=HELLO.messages, sampling=SamplingParams(seed=3, stop=["###STOP###"]))
    assert ask(OpenAIChatModel(config), request).ok
    body = posted(server)[-1]
    assert not {"temperature", "top_p", "seed", "stop"} & body.keys()
    assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["max_tokens"] == 512
    with pytest.raises(ValueError, match="omit_sampling"):
        endpoint_config(server, omit_sampling=["temprature"])


def test_reasoning_content_and_think_blocks_become_reasoning(server):
    server.behaviours = Behaviours(think_blocks=True, reasoning_content=True)
    (judged,) = ask_all(OpenAIChatModel(endpoint_config(server)), judge_request())
    (completion,) = judged.completions
    assert json.loads(completion.text) == {"critique": "It keeps to the task.", "score": 9}
    assert "<think>" not in completion.text
    # The server's reasoning_content and the <think> block both say it; they are joined, never in the text.
    assert completion.reasoning.count("I answer as the judge.") == 2


def test_custom_thinking_delimiters(server):
    server.plan.append(Planned(body=chat_body(text_choice("[THINK]hmm ###STOP###[/THINK]Where is it?"))))
    config = endpoint_config(server, thinking_delimiters=("[THINK]", "[/THINK]"))
    (completion,) = ask(OpenAIChatModel(config), HELLO).completions
    assert completion.text == completion.content == "Where is it?"
    assert completion.reasoning == "hmm ###STOP###"


def test_reasoning_is_not_sent_back(server):
    history = [
        Message(role="user", content="hi"),
        Message(role="assistant", content="Hello.", reasoning_content="They greet me."),
        Message(role="user", content="where is my order?"),
    ]
    assert ask(OpenAIChatModel(endpoint_config(server)), ChatRequest(messages=history)).ok
    assert posted(server)[-1]["messages"][1] == {"role": "assistant", "content": "Hello."}


def test_two_calls_with_text_beside_them_come_back_as_the_server_sent_them(server):
    server.behaviours = Behaviours(parallel_calls=True, text_beside_calls=True, think_blocks=True)
    conversation = [Message(role="system", content="policy"), Message(role="user", content="Order #W0000007, please.")]
    request = ChatRequest(messages=conversation, tools=[ORDER_TOOL], parallel_tool_calls=False)
    (completion,) = ask(OpenAIChatModel(endpoint_config(server)), request).completions
    order = ToolCall(name="get_order_details", arguments={"order_id": "#W0000007"})
    assert completion.tool_calls == [order, order]  # keeping the first is the agent's rule, not the client's
    assert completion.content == "Let me look that up for you."
    assert "###STOP###" in completion.reasoning and "###STOP###" not in completion.content


def test_qwen_style_calls_in_the_text_are_read_by_the_hermes_parser(server):
    from apigen_mt.simulators.tool_parsers import get_parser

    try:
        get_parser("hermes")
    except ValueError:
        pytest.skip("the hermes tool-call parser is not registered in simulators/tool_parsers yet")
    server.behaviours = Behaviours(calls_in_text=True, think_blocks=True)
    conversation = [Message(role="system", content="policy"), Message(role="user", content="Order #W0000007, please.")]
    request = ChatRequest(messages=conversation, tools=[ORDER_TOOL])
    (completion,) = ask(OpenAIChatModel(endpoint_config(server, tool_parser="hermes")), request).completions
    assert completion.tool_calls == [ToolCall(name="get_order_details", arguments={"order_id": "#W0000007"})]
    assert completion.finish_reason == "tool_calls" and not completion.content


def test_a_500_storm_is_retried_through(server):
    server.behaviours = Behaviours(error_storm=3)
    response = ask(OpenAIChatModel(endpoint_config(server, max_retries=3)), HELLO)
    assert response.ok, response.error
    assert server.counts["500"] == 3 and len(posted(server)) == 4


def test_slow_answers_time_out_as_errors_of_their_requests(server):
    server.behaviours = Behaviours(delay_s=2.0)
    model = OpenAIChatModel(endpoint_config(server, timeout_s=0.2, max_retries=0))

    async def slow_then_quick():
        async with model:
            slow = await model.chat(HELLO)
            server.behaviours.delay_s = 0.0
            return slow, await model.chat(HELLO)

    slow, quick = asyncio.run(slow_then_quick())
    assert not slow.ok and "timed out after 0.2 s" in slow.error
    assert quick.ok and model.fallbacks() == []


def test_fallbacks_in_force_gathers_every_client_of_the_roles(server):
    from apigen_mt.pipeline.engines.openai_backend import fallbacks_in_force
    from apigen_mt.pipeline.engines.pool import ReplicaPool

    server.behaviours = Behaviours(refuse_json_schema=True, refuse_n=True)
    judge, human = OpenAIChatModel(endpoint_config(server)), OpenAIChatModel(endpoint_config(server, model="other"))
    ask_all(judge, judge_request())
    ask_all(human, human_request(n=2))
    pool = ReplicaPool([judge, OpenAIChatModel(endpoint_config(server))])
    assert fallbacks_in_force([pool, human, pool]) == [
        f"other at {server.base_url}: n -> single requests",
        f"tiny at {server.base_url}: structured_outputs -> json_object",
    ]


def human_request(**sampling: Any) -> ChatRequest:
    """A request the loopback answers as the simulated human."""
    from apigen_mt.simulators.human_prompts import human_system_prompt

    system = human_system_prompt("You are Ann, email ann@example.com, order #W0000001.", None, structured=False)
    messages = [Message(role="system", content=system), Message(role="user", content="Hi! How can I help you today?")]
    return ChatRequest(messages=messages, sampling=SamplingParams(temperature=1.0, **sampling))


SCHEMA_SENT = {"response_format": {"type": "json_schema"}}


@pytest.mark.parametrize(
    ("message", "sent", "feature"),
    [
        ("This response_format type is unavailable now", SCHEMA_SENT, "structured_outputs"),
        ("Invalid schema for response_format 'reply': 'maxLength' is not permitted", SCHEMA_SENT, "structured_outputs"),
        ("json_object is not supported", {"response_format": {"type": "json_object"}}, "structured_outputs"),
        ("'n' : number must be at most 1", {"n": 4}, "n"),
        ("n > 1 is not supported for this model", {"n": 2}, "n"),
        ("Bad Request: n: Input should be less than or equal to 1", {"n": 2}, "n"),
        (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            {"max_tokens": 5, "n": 2},
            "max_tokens",
        ),
        ("Unsupported parameter: 'parallel_tool_calls'", {"parallel_tool_calls": False}, "parallel_tool_calls"),
        # Refusals that name nothing the request used stay its own errors.
        ("This model's maximum context length is 8192 tokens", {"n": 2, **SCHEMA_SENT}, None),
        ("response_format is not supported", {"n": 1}, None),
        ("'n' : number must be at most 1", {}, None),
        ("Please don't send unknown fields", {"n": 2}, None),
    ],
)
def test_a_refusal_is_read_for_the_feature_it_names(message, sent, feature):
    from apigen_mt.pipeline.engines.endpoint_features import EndpointFeatures

    assert EndpointFeatures().learn(message, sent) == feature


def test_a_validation_error_422_naming_a_feature_is_a_refusal_too(server):
    # FastAPI-based servers answer an unknown field with 422 (pydantic's "extra fields not permitted").
    message = "body -> parallel_tool_calls: extra fields not permitted"
    server.plan.append(Planned(status=422, body={"detail": message}))
    model = OpenAIChatModel(endpoint_config(server))
    (response,) = ask_all(model, ChatRequest(messages=HELLO.messages, tools=[ORDER_TOOL], parallel_tool_calls=False))
    assert response.ok and ["parallel_tool_calls" in body for body in posted(server)] == [True, False]
    assert model.fallbacks() == [f"tiny at {server.base_url}: parallel_tool_calls -> left out"]
