"""LoopbackEndpoint: a TEST DOUBLE of an OpenAI-compatible server, on 127.0.0.1 in a thread of the test process.

It serves `GET /v1/models` and `POST /v1/chat/completions` and behaves, on request, like the hosted APIs and
self-served engines the pipeline meets (every behaviour is off by default, see `Behaviours`): refusing
`response_format` json_schema (as DeepSeek's API does) or json_object, `n` > 1, `max_tokens` (as OpenAI's
reasoning models do) or `parallel_tool_calls`, each with HTTP 400 and the message such a server sends;
answering two calls in one message, text beside calls, `<think>` blocks in the content, `reasoning_content`,
Qwen-style `<tool_call>` calls in the text (a server without a tool parser); storms of HTTP 500; slow answers.

It answers each role of the pipeline plausibly, recognising it from the request the way the real prompts make it
(`loopback_roles.role_of`): with tools on offer it is the agent (it calls a read tool of the request with values from
the conversation, then replies); the simulated human gives a detail a turn, thinks about stopping (a `###STOP###` inside
its thinking only) and ends with a visible `###STOP###` after `HUMAN_TURNS` turns; the judge, the Phase-1 proposer, the
reviewers, the feedback summariser and the instruction rewriter answer the JSON (or text) their prompts describe, which
`off_schema` checks against the request's schema when one was sent.

`requests` keeps every request; `counts` counts what was received (`n>1`, `response_format=json_schema`,
`parallel_tool_calls`, `refused n`, `500`, `role=agent`, ...). Scripted answers queued in `plan` take
precedence over the roles (a refusal or a storm still comes first), for tests of single client behaviours.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema

from apigen_mt.simulators.human_prompts import STOP


def _load_roles():
    # The tests folder is not a package (pytest's importlib mode): the roles module is loaded from its file.
    if "loopback_roles" not in sys.modules:
        spec = importlib.util.spec_from_file_location("loopback_roles", Path(__file__).parent / "loopback_roles.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["loopback_roles"] = module
        spec.loader.exec_module(module)
    return sys.modules["loopback_roles"]


roles = _load_roles()
HUMAN_TURNS, role_of = roles.HUMAN_TURNS, roles.role_of


@dataclass
class Behaviours:
    """What the endpoint does beyond answering; each off by default."""

    refuse_json_schema: bool = False
    refuse_json_object: bool = False
    refuse_n: bool = False
    refuse_max_tokens: bool = False
    refuse_parallel_tool_calls: bool = False
    parallel_calls: bool = False  # two calls in one assistant message
    text_beside_calls: bool = False
    think_blocks: bool = False  # <think>...</think> before the content
    reasoning_content: bool = False  # the thinking in message.reasoning_content
    calls_in_text: bool = False  # <tool_call>{...}</tool_call> in the content instead of tool_calls
    error_storm: int = 0  # the next K chat requests answer HTTP 500
    delay_s: float = 0.0  # every chat answer waits this long

    @classmethod
    def hosted(cls, *, error_storm: int = 3, delay_s: float = 0.05) -> Behaviours:
        """Every behaviour at once; the calls come as Qwen-style text, so the client needs the hermes parser."""
        return cls(
            refuse_json_schema=True,
            refuse_json_object=True,
            refuse_n=True,
            refuse_max_tokens=True,
            refuse_parallel_tool_calls=True,
            parallel_calls=True,
            text_beside_calls=True,
            think_blocks=True,
            reasoning_content=True,
            calls_in_text=True,
            error_storm=error_storm,
            delay_s=delay_s,
        )


@dataclass
class Planned:
    """One scripted HTTP answer."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # Hold the answer until this many requests are in flight (or a second passes), to measure concurrency.
    wait_for_in_flight: int = 0


# What servers answer when they refuse a feature (the messages of the APIs named).
REFUSALS = {
    "json_schema": "This response_format type is unavailable now",  # DeepSeek
    "json_object": "Invalid parameter: response_format of type 'json_object' is not supported with this model.",
    "n": "'n' : number must be at most 1",  # Groq
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead.",  # OpenAI o-series
    "parallel_tool_calls": "Unsupported parameter: 'parallel_tool_calls' is not supported with this model.",
}


def chat_body(
    *choices: dict[str, Any], model: str = "tiny", prompt_tokens: int = 7, completion_tokens: int = 3
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "model": model,
        "choices": [dict(choice, index=index) for index, choice in enumerate(choices)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def text_choice(text: str, finish_reason: str = "stop") -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}


class LoopbackEndpoint:
    """The test double. `start()`, point a client at `base_url`, `stop()`; or use it as a context manager."""

    def __init__(self, models: tuple[str, ...] = ("tiny",), behaviours: Behaviours | None = None) -> None:
        self.models = models
        self.behaviours = behaviours or Behaviours()
        self.plan: list[Planned] = []
        self.models_answer: Planned | None = None  # replaces the model list, e.g. to refuse the key
        self.requests: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.off_schema: list[str] = []  # role answers that did not fit the request's schema: a bug of this double
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def start(self) -> LoopbackEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers still sleeping in a slow answer
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- one chat request --------------------------------------------------------------------------------

    def _answer_chat(self, body: dict[str, Any]) -> Planned:
        behaviours = self.behaviours
        with self._lock:
            self._count(body)
            if behaviours.error_storm > 0:
                behaviours.error_storm -= 1
                self.counts["500"] += 1
                return Planned(status=500, body={"error": {"message": "internal server error (loopback storm)"}})
            refused = self._refused(body)
            if refused is not None:
                self.counts[f"refused {refused}"] += 1
                error = {"message": REFUSALS[refused], "type": "invalid_request_error"}
                return Planned(status=400, body={"error": error})
            if self.plan:
                return self.plan.pop(0)
        return Planned(body=self._role_answer(body), delay_s=behaviours.delay_s)

    def _count(self, body: dict[str, Any]) -> None:
        self.counts["requests"] += 1
        self.counts[f"role={role_of(body)}"] += 1
        if "response_format" in body:
            self.counts[f"response_format={body['response_format'].get('type')}"] += 1
        if body.get("n", 1) > 1:
            self.counts["n>1"] += 1
        for name in ("parallel_tool_calls", "max_tokens", "max_completion_tokens", "chat_template_kwargs"):
            if name in body:
                self.counts[name] += 1

    def _refused(self, body: dict[str, Any]) -> str | None:
        behaviours = self.behaviours
        kind = (body.get("response_format") or {}).get("type")
        if kind == "json_schema" and behaviours.refuse_json_schema:
            return "json_schema"
        if kind == "json_object" and behaviours.refuse_json_object:
            return "json_object"
        if body.get("n", 1) > 1 and behaviours.refuse_n:
            return "n"
        if "max_tokens" in body and behaviours.refuse_max_tokens:
            return "max_tokens"
        if "parallel_tool_calls" in body and behaviours.refuse_parallel_tool_calls:
            return "parallel_tool_calls"
        return None

    def _role_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        role = role_of(body)
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        choices = []
        for index in range(body.get("n", 1)):
            if role == "agent":
                choices.append(self._agent_choice(body["messages"], body["tools"]))
                continue
            value = roles.ROLE_ANSWERS[role](body["messages"], index)
            text = value if isinstance(value, str) else json.dumps(value)
            if schema is not None and not isinstance(value, str):
                try:
                    jsonschema.validate(value, schema)
                except jsonschema.ValidationError as exc:
                    with self._lock:
                        self.off_schema.append(f"{role}: {exc.message}")
            # The human thinks about ending the chat before it should: no reader may take that for its STOP.
            thought = f"Perhaps I can end the chat already: {STOP}" if role == "human" else f"I answer as the {role}."
            choices.append(self._with_thinking({"role": "assistant", "content": text}, thought))
        return chat_body(*({"message": message, "finish_reason": "stop"} for message in choices), model=body["model"])

    def _with_thinking(self, message: dict[str, Any], thought: str) -> dict[str, Any]:
        if self.behaviours.think_blocks:
            message["content"] = f"<think>{thought}</think>\n\n{message.get('content') or ''}".rstrip()
        if self.behaviours.reasoning_content:
            message["reasoning_content"] = thought
        return message

    def _agent_choice(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        behaviours = self.behaviours
        calls = [] if messages[-1]["role"] == "tool" else roles.next_calls(messages, tools)
        if not calls:
            text = roles.agent_reply(messages)
            return self._with_thinking({"role": "assistant", "content": text}, "I can answer without a tool.")
        calls = calls[:2] if behaviours.parallel_calls else calls[:1]
        if behaviours.parallel_calls and len(calls) == 1:
            calls = calls * 2
        beside = "Let me look that up for you." if behaviours.text_beside_calls else ""
        if behaviours.calls_in_text:
            tagged = "\n".join(f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in calls)
            message = {"role": "assistant", "content": f"{beside}\n{tagged}".strip()}
        else:
            message = {
                "role": "assistant",
                "content": beside or None,
                "tool_calls": [
                    {
                        "id": f"call_{n}",
                        "type": "function",
                        "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                    }
                    for n, call in enumerate(calls)
                ],
            }
        # A reasoning model thinks about ending the chat in the middle of it: no reader may take that as a STOP.
        return self._with_thinking(message, f"I need {calls[0]['name']} first. {STOP}")

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                endpoint.requests.append({"method": "GET", "path": self.path, "headers": self._headers()})
                if self.path != "/v1/models":
                    return self._send(Planned(status=404, body={"error": {"message": f"no route {self.path}"}}))
                if endpoint.models_answer is not None:
                    return self._send(endpoint.models_answer)
                listing = [{"id": name, "object": "model"} for name in endpoint.models]
                self._send(Planned(body={"object": "list", "data": listing}))

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                endpoint.requests.append(
                    {"method": "POST", "path": self.path, "headers": self._headers(), "json": payload}
                )
                with endpoint._lock:
                    endpoint.in_flight += 1
                    endpoint.peak_in_flight = max(endpoint.peak_in_flight, endpoint.in_flight)
                    endpoint._lock.notify_all()
                try:
                    planned = endpoint._answer_chat(payload)
                    if planned.wait_for_in_flight:
                        with endpoint._lock:
                            endpoint._lock.wait_for(
                                lambda: endpoint.in_flight >= planned.wait_for_in_flight, timeout=1.0
                            )
                    if planned.delay_s:
                        endpoint._stopping.wait(planned.delay_s)
                    if planned.body == "echo-authorization":
                        planned.body = {"error": {"message": f"bad request from {self.headers.get('Authorization')}"}}
                    self._send(planned)
                finally:
                    with endpoint._lock:
                        endpoint.in_flight -= 1

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
