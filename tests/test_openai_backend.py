"""OpenAIChatModel against a real HTTP server of ours on a free loopback port (no external network)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from apigen_mt.pipeline.openai_backend import (
    EndpointUnavailable,
    OpenAIBackendConfig,
    OpenAIChatModel,
    _retry_after_seconds,
)
from apigen_mt.simulators.chat import ChatModel, ChatRequest, SamplingParams
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec
from apigen_mt.simulators.xlam import agent_turn_schema

ORDER_TOOL = ToolSpec(
    name="get_order_details",
    description="Get the status and details of an order.",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)


@dataclass
class Planned:
    """One scripted HTTP answer of the test server."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # Hold the answer until this many requests are in flight (or a second passes), to measure concurrency.
    wait_for_in_flight: int = 0


def chat_body(*choices: dict[str, Any], prompt_tokens: int = 7, completion_tokens: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "tiny",
        "choices": [dict(choice, index=index) for index, choice in enumerate(choices)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def text_choice(text: str, finish_reason: str = "stop") -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}


class FakeOpenAIServer:
    """Answers /v1/models and /v1/chat/completions from a plan; records requests and peak concurrency."""

    def __init__(self, models: tuple[str, ...] = ("tiny",)) -> None:
        self.models = models
        self.plan: list[Planned] = []
        self.models_answer: Planned | None = None  # replaces the model list, e.g. to refuse the key
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are still sleeping for a timeout test
        self._httpd.shutdown()
        self._httpd.server_close()

    def config(self, **overrides: Any) -> OpenAIBackendConfig:
        settings: dict[str, Any] = dict(
            base_url=self.base_url, model="tiny", timeout_s=5.0, max_retries=3, backoff_base_s=0.001, backoff_max_s=0.01
        )
        settings.update(overrides)
        return OpenAIBackendConfig(**settings)

    def _next(self) -> Planned:
        with self._lock:
            if self.plan:
                return self.plan.pop(0)
        return Planned(body=chat_body(text_choice("default reply")))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append({"method": "GET", "path": self.path, "headers": self._headers()})
                if self.path != "/v1/models":
                    return self._send(Planned(status=404, body={"error": {"message": f"no route {self.path}"}}))
                if server.models_answer is not None:
                    return self._send(server.models_answer)
                listing = [{"id": name, "object": "model"} for name in server.models]
                self._send(Planned(body={"object": "list", "data": listing}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length))
                server.requests.append(
                    {"method": "POST", "path": self.path, "headers": self._headers(), "json": payload}
                )
                with server._lock:
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                    server._lock.notify_all()
                try:
                    planned = server._next()
                    if planned.wait_for_in_flight:
                        with server._lock:
                            server._lock.wait_for(lambda: server.in_flight >= planned.wait_for_in_flight, timeout=1.0)
                    if planned.delay_s:
                        server._stopping.wait(planned.delay_s)
                    if planned.body == "echo-authorization":
                        planned.body = {"error": {"message": f"bad request from {self.headers.get('Authorization')}"}}
                    self._send(planned)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _headers(self) -> dict[str, str]:
                return {name.lower(): value for name, value in self.headers.items()}

            def _send(self, planned: Planned) -> None:
                raw = planned.body if isinstance(planned.body, str) else json.dumps(planned.body)
                data = raw.encode()
                self.send_response(planned.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in planned.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client hung up (timeout tests); nothing to report.
        pass


@pytest.fixture
def server():
    fake = FakeOpenAIServer(models=("tiny", "other"))
    fake.start()
    yield fake
    fake.stop()


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
    model = OpenAIChatModel(server.config())
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
    config = server.config(base_url=server.base_url + "/")
    assert config.base_url == server.base_url
    assert ask(OpenAIChatModel(config), HELLO).ok
    payload = server.requests[-1]["json"]
    assert payload["messages"] == [{"role": "user", "content": "hello"}]
    assert not {"seed", "stop", "tools", "response_format"} & payload.keys()


def test_text_reply_is_parsed_with_the_xlam_parser_when_tools_are_offered(server):
    xlam_text = '[{"name": "get_order_details", "arguments": {"order_id": "#W0002"}}]'
    server.plan.append(Planned(body=chat_body(text_choice(xlam_text))))
    response = ask(OpenAIChatModel(server.config()), ChatRequest(messages=HELLO.messages, tools=[ORDER_TOOL]))
    assert response.ok, response.error
    (completion,) = response.completions
    assert completion.text == xlam_text
    assert completion.tool_calls == [ToolCall(name="get_order_details", arguments={"order_id": "#W0002"})]
    assert completion.finish_reason == "tool_calls"

    # Without tools on offer the same text is just text.
    server.plan.append(Planned(body=chat_body(text_choice(xlam_text))))
    (plain,) = ask(OpenAIChatModel(server.config()), HELLO).completions
    assert plain.tool_calls == [] and plain.content == xlam_text and plain.finish_reason == "stop"


def agent_turn_request() -> ChatRequest:
    return ChatRequest(
        messages=HELLO.messages,
        tools=[ORDER_TOOL],
        json_schema=agent_turn_schema([ORDER_TOOL]),
        reply_format="agent_turn",
    )


def test_agent_turns_are_read_whether_or_not_the_server_extracts_the_calls(server):
    calls = '[{"name": "get_order_details", "arguments": {"order_id": "#W0003"}}]'
    server_extracted = {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "get_order_details", "arguments": '{"order_id": "#W0003"}'}}
            ],
        },
        "finish_reason": "tool_calls",
    }
    server.plan += [
        Planned(body=chat_body(server_extracted)),  # vllm serve --tool-call-parser xlam: calls, no text
        Planned(body=chat_body(text_choice(calls))),  # a server without a tool parser: the JSON list as text
        Planned(body=chat_body(text_choice('{"content": "Which order?"}'))),
        Planned(body=chat_body(text_choice("Which order?"))),  # a server that ignored the schema
    ]
    lookup = [ToolCall(name="get_order_details", arguments={"order_id": "#W0003"})]
    model = OpenAIChatModel(server.config())

    async def four():
        async with model:
            return [await model.chat(agent_turn_request()) for _ in range(4)]

    extracted, listed, text, ignored = [response.completions[0] for response in asyncio.run(four())]
    assert extracted.tool_calls == lookup and extracted.text == "" and extracted.content is None
    assert listed.tool_calls == lookup and listed.finish_reason == "tool_calls" and listed.problem is None
    assert text.tool_calls == [] and text.content == "Which order?" and text.problem is None
    assert ignored.content == "Which order?" and "not valid JSON" in ignored.problem
    assert server.requests[-1]["json"]["response_format"]["json_schema"]["schema"] == agent_turn_schema([ORDER_TOOL])


def test_unexpected_finish_reason_marks_the_completion(server):
    server.plan.append(Planned(body=chat_body(text_choice("cut", finish_reason="content_filter"))))
    (completion,) = ask(OpenAIChatModel(server.config()), HELLO).completions
    assert completion.finish_reason == "error"
    assert "content_filter" in completion.error


def test_429_is_retried_after_the_retry_after_delay(server):
    server.plan += [
        Planned(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"}),
        Planned(body=chat_body(text_choice("done"))),
    ]
    started = time.monotonic()
    response = ask(OpenAIChatModel(server.config(backoff_max_s=5.0)), HELLO)
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
    assert ask(OpenAIChatModel(server.config(backoff_max_s=0.05)), HELLO).ok
    assert time.monotonic() - started < 2


def test_retry_after_reads_seconds_and_http_dates():
    assert _retry_after_seconds("120") == 120.0
    assert _retry_after_seconds(None) is None
    assert _retry_after_seconds("soon") is None
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    in_a_minute = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    assert 55 <= _retry_after_seconds(in_a_minute) <= 60


def test_500_twice_then_success(server):
    server.plan += [
        Planned(status=500, body="boom"),
        Planned(status=503, body="boom"),
        Planned(body=chat_body(text_choice("ok"))),
    ]
    response = ask(OpenAIChatModel(server.config(max_retries=2)), HELLO)
    assert response.ok and response.completions[0].text == "ok"
    assert len(server.requests) == 3


def test_persistent_500_becomes_an_error_result(server):
    server.plan += [Planned(status=500, body={"error": {"message": "engine dead"}}) for _ in range(5)]
    response = ask(OpenAIChatModel(server.config(max_retries=2)), HELLO)
    assert not response.ok and response.completions == []
    assert response.error == (
        f"POST {server.base_url}/chat/completions failed after 3 attempt(s); last failure: HTTP 500: engine dead"
    )
    assert len(server.requests) == 3


def test_client_error_is_not_retried(server):
    server.plan.append(Planned(status=400, body={"error": {"message": "prompt is longer than the context"}}))
    response = ask(OpenAIChatModel(server.config()), HELLO)
    assert response.error == (
        f"POST {server.base_url}/chat/completions refused the request with HTTP 400: prompt is longer than the context"
    )
    assert len(server.requests) == 1


def test_body_that_is_not_a_chat_completion_is_an_error_result(server):
    server.plan.append(Planned(body={"choices": []}))
    response = ask(OpenAIChatModel(server.config()), HELLO)
    assert not response.ok
    assert "not a chat completion" in response.error


def test_timeout_becomes_an_error_result(server):
    server.plan += [Planned(delay_s=3.0, body=chat_body(text_choice("late"))) for _ in range(2)]
    started = time.monotonic()
    response = ask(OpenAIChatModel(server.config(timeout_s=0.2, max_retries=1)), HELLO)
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
    assert check(OpenAIChatModel(server.config(model="other"))) == ["tiny", "other"]
    with pytest.raises(EndpointUnavailable) as raised:
        check(OpenAIChatModel(server.config(model="xlam-2-70b")))
    assert str(raised.value) == f"model 'xlam-2-70b' is not served by {server.base_url}; it serves: tiny, other"


def test_concurrency_is_bounded(server):
    # Each answer waits for 3 requests in flight, then 50 ms more, in which any excess request would show up.
    server.plan += [
        Planned(wait_for_in_flight=3, delay_s=0.05, body=chat_body(text_choice(f"reply {i}"))) for i in range(9)
    ]
    model = OpenAIChatModel(server.config(max_concurrency=3))

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
    config = server.config(api_key_env="APIGEN_MT_TEST_KEY")
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


def test_rejected_key_is_a_clear_exception_from_check(server, monkeypatch):
    monkeypatch.setenv("APIGEN_MT_TEST_KEY", "sk-wrong")
    server.models_answer = Planned(status=401, body={"error": {"message": "invalid api key sk-wrong"}})
    with pytest.raises(EndpointUnavailable) as raised:
        check(OpenAIChatModel(server.config(api_key_env="APIGEN_MT_TEST_KEY")))
    assert str(raised.value) == (
        f"{server.base_url} rejected the request with HTTP 401 (invalid api key ***); check the key in $APIGEN_MT_TEST_KEY"
    )


def test_missing_api_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("APIGEN_MT_MISSING_KEY", raising=False)
    config = OpenAIBackendConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="APIGEN_MT_MISSING_KEY")
    with pytest.raises(EndpointUnavailable, match="APIGEN_MT_MISSING_KEY, but it is unset or empty"):
        OpenAIChatModel(config)


def test_config_rejects_a_url_without_scheme_and_an_unknown_parser():
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        OpenAIBackendConfig(base_url="127.0.0.1:8000/v1", model="m")
    with pytest.raises(ValueError, match="unknown tool-call format 'hermes'; known formats: xlam"):
        OpenAIBackendConfig(base_url="http://127.0.0.1:8000/v1", model="m", tool_parser="hermes")


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

    from apigen_mt.pipeline import cli_models  # noqa: F401  (registers `models`)
    from apigen_mt.pipeline.cli import app

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
    assert sent["response_format"]["json_schema"]["schema"]["anyOf"][0]["maxItems"] == 1


def test_models_ask_refuses_an_unset_key_and_an_unreachable_endpoint_in_one_line(server, tmp_path, monkeypatch, no_ray):
    from apigen_mt.pipeline.cli import CliError

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
    import sys

    environment = {name: value for name, value in os.environ.items() if name != "APIGEN_MT_MISSING_KEY"}
    config = write_endpoint_config(tmp_path, "http://127.0.0.1:1/v1", "APIGEN_MT_MISSING_KEY")
    program = "from apigen_mt.pipeline.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", program, "models", "ask", str(config), "hello"],
        capture_output=True, text=True, env=environment, timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("apigen-mt: error: api_key_env names the environment variable APIGEN_MT_MISSING_KEY")
