"""ChatModel over any OpenAI-compatible `/chat/completions` endpoint (vLLM serve, SGLang, llama.cpp, hosted APIs).

Failure semantics follow the run's rule that one item's failure never kills the run:
- `check()` is the start-up probe; it raises `EndpointUnavailable` with a message that says what to fix.
- `chat()` never raises for anything the endpoint does. Transient failures (HTTP 429, 5xx, timeouts,
  connection errors) are retried with exponential backoff and jitter, honouring `Retry-After`; what is
  still failing after that, or a non-retryable HTTP error, comes back as `ChatResponse(error=...)`.
- A refusal (HTTP 400) that names a feature the request used (structured outputs, `n` > 1,
  `parallel_tool_calls`, `max_tokens`) is worked around at once and for the rest of the run
  (`pipeline.engines.endpoint_features`); `fallbacks()` names what this client worked around.
Calls the server extracted itself (`vllm serve --tool-call-parser ...`) are taken as they are; otherwise the reply
text is read by `simulators.completions`, as every backend's is, with the server's reasoning beside it. The API
key is read only from the environment variable named in the config and is scrubbed from every message this
module produces and from every answer it passes on (a server may echo it inside a completion).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from apigen_mt.pipeline.engines.endpoint_features import (
    REFUSAL_STATUSES,
    EndpointFeatures,
    describe_fallback,
    request_body,
)
from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig
from apigen_mt.simulators.chat import ChatModel, ChatRequest, ChatResponse, Completion, FinishReason
from apigen_mt.simulators.completions import build_completion
from apigen_mt.simulators.types import OpenAIToolCall, ToolCall

# The server's own explanation is kept, but a whole HTML error page is not useful in a parquet reason column.
SERVER_MESSAGE_LIMIT = 500


class EndpointUnavailable(RuntimeError):
    """The endpoint cannot serve this run: unreachable, the key is rejected, or the model is not served."""


class OpenAIChatModel:
    """One model behind an OpenAI-compatible endpoint. Use as `async with`, or call `aclose()` when done."""

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self.config = config
        self.model_id = config.model
        self._api_key = _read_api_key(config.api_key_env)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._jitter = random.Random()
        self.features = EndpointFeatures(max_tokens_field=config.max_tokens_field)
        # Created on first use so the connection pool belongs to the event loop that uses it.
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"OpenAIChatModel(model={self.config.model!r}, base_url={self.config.base_url!r})"

    async def __aenter__(self) -> OpenAIChatModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check(self) -> list[str]:
        """Probe `GET /models` once; return the served model ids or raise `EndpointUnavailable`."""
        base = self.config.base_url
        try:
            response = await self._http().get("models")
        except httpx.RequestError as exc:
            raise EndpointUnavailable(f"cannot reach {base}: {self._describe(exc)}; is the server running?") from exc
        if response.status_code in (401, 403):
            hint = (
                f"check the key in ${self.config.api_key_env}"
                if self.config.api_key_env
                else "set api_key_env to the name of the environment variable that holds the key"
            )
            raise EndpointUnavailable(
                f"{base} rejected the request with HTTP {response.status_code} "
                f"({self._server_message(response)}); {hint}"
            )
        if response.status_code != 200:
            raise EndpointUnavailable(
                f"GET {base}/models answered HTTP {response.status_code}: {self._server_message(response)}"
            )
        try:
            served = [str(entry["id"]) for entry in self._scrub(response.json())["data"]]
        except (ValueError, KeyError, TypeError):
            raise EndpointUnavailable(
                f"GET {base}/models did not answer with an OpenAI model list: {self._server_message(response)}"
            ) from None
        if self.config.model not in served:
            listing = ", ".join(served) if served else "(nothing)"
            raise EndpointUnavailable(f"model {self.config.model!r} is not served by {base}; it serves: {listing}")
        return served

    def fallbacks(self) -> list[str]:
        """What this client works around on its endpoint, one `describe_fallback` text each."""
        endpoint = f"{self.config.model} at {self.config.base_url}"
        return [describe_fallback(endpoint, feature, instead) for feature, instead in self.features.fallbacks.items()]

    async def chat(self, request: ChatRequest) -> ChatResponse:
        while True:
            if request.sampling.n > 1 and self.features.single_requests:
                return await self._single_requests(request)
            payload = request_body(self.config, self.features, request)
            async with self._slots:
                posted = await self._post_with_retries(payload)
            # Each refusal steps a feature down, so this loop ends; a refusal naming nothing used is an error.
            if posted.refusal is None or self.features.learn(posted.refusal, payload) is None:
                break
        if posted.failure is not None:
            return ChatResponse(model=self.model_id, error=posted.failure)
        try:
            return self._response(posted.body, request)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            snippet = self._scrub(json.dumps(posted.body)[:SERVER_MESSAGE_LIMIT])
            return ChatResponse(
                model=self.model_id,
                error=f"{self._endpoint()} answered 200 with something that is not a chat completion "
                f"({exc}): {snippet}",
            )

    async def _single_requests(self, request: ChatRequest) -> ChatResponse:
        """`n` completions as `n` concurrent requests of one, in order. The completions that came back are the answer
        (a best-of-N turn can choose among fewer); an error only when none did."""
        sampling = request.sampling
        # A seeded request must not repeat itself: each single draw gets its own seed.
        seeds = [None if sampling.seed is None else sampling.seed + index for index in range(sampling.n)]
        singles = [
            request.model_copy(update={"sampling": sampling.model_copy(update={"n": 1, "seed": seed})})
            for seed in seeds
        ]
        responses = await asyncio.gather(*(self.chat(single) for single in singles))
        completions = [completion for response in responses for completion in response.completions]
        if not completions:
            return ChatResponse(model=self.model_id, error=next(r.error for r in responses if r.error is not None))
        return ChatResponse(completions=completions, model=next(r.model for r in responses if r.completions))

    async def _post_with_retries(self, payload: dict[str, Any]) -> _Posted:
        """The decoded 200 body, or why the request failed for good (with the server's message of a refusal)."""
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = await self._http().post("chat/completions", json=payload)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                failure = self._describe(exc)
            except httpx.RequestError as exc:  # not transient: a redirect loop, an undecodable body, a proxy error
                return _Posted(failure=f"{self._endpoint()} failed: {self._describe(exc)}")
            else:
                if response.status_code == 200:
                    try:
                        return _Posted(body=self._scrub(response.json()))
                    except ValueError:
                        return _Posted(
                            failure=f"{self._endpoint()} answered 200 with a body that is not JSON: "
                            f"{self._server_message(response)}"
                        )
                message = self._server_message(response)
                failure = f"HTTP {response.status_code}: {message}"
                if not _retryable(response.status_code):
                    refusal = message if response.status_code in REFUSAL_STATUSES else None
                    return _Posted(failure=f"{self._endpoint()} refused the request with {failure}", refusal=refusal)
                retry_after = _retry_after_seconds(response.headers.get("retry-after"))
            if attempt + 1 < attempts:
                await asyncio.sleep(self._backoff(attempt, retry_after))
        return _Posted(failure=f"{self._endpoint()} failed after {attempts} attempt(s); last failure: {failure}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.backoff_max_s)
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2**attempt)
        # Equal jitter: never less than half the backoff, spread so that many clients do not retry in step.
        return ceiling / 2 + self._jitter.uniform(0, ceiling / 2)

    def _response(self, body: dict[str, Any], request: ChatRequest) -> ChatResponse:
        choices = sorted(body["choices"], key=lambda choice: choice.get("index", 0))
        if not choices:
            raise ValueError("no choices")
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_shares = _split_evenly(int(usage.get("completion_tokens") or 0), len(choices))
        completions = [
            self._completion(choice, request, prompt_tokens, share) for choice, share in zip(choices, completion_shares)
        ]
        return ChatResponse(completions=completions, model=str(body.get("model") or self.model_id))

    def _completion(
        self, choice: dict[str, Any], request: ChatRequest, prompt_tokens: int, completion_tokens: int
    ) -> Completion:
        message = choice.get("message") or {}
        finish_reason, error = _finish_reason(choice.get("finish_reason"))
        return build_completion(
            message.get("content") or "",
            request,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            error=error,
            server_calls=[_decode_tool_call(call) for call in message.get("tool_calls") or []],
            parser=self.config.tool_parser,
            # vLLM and DeepSeek name the field reasoning_content; newer vLLM and OpenRouter name it reasoning.
            reasoning=message.get("reasoning_content") or message.get("reasoning") or None,
            thinking=self.config.thinking_delimiters,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            limits = httpx.Limits(
                max_connections=self.config.max_concurrency, max_keepalive_connections=self.config.max_concurrency
            )
            self._client = httpx.AsyncClient(
                base_url=self.config.base_url + "/",
                headers=headers,
                timeout=httpx.Timeout(self.config.timeout_s),
                limits=limits,
            )
        return self._client

    def _endpoint(self) -> str:
        return f"POST {self.config.base_url}/chat/completions"

    def _describe(self, exc: httpx.RequestError) -> str:
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out after {self.config.timeout_s:g} s ({type(exc).__name__})"
        if _caused_by(exc, ConnectionRefusedError):
            return "connection refused"
        return self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _server_message(self, response: httpx.Response) -> str:
        text = response.text
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and error.get("message"):
                text = str(error["message"])
            elif isinstance(error, str):
                text = error
            elif body.get("message") or body.get("detail"):
                text = str(body.get("message") or body.get("detail"))
        text = " ".join(text.split()) or "(empty body)"
        if len(text) > SERVER_MESSAGE_LIMIT:
            text = text[:SERVER_MESSAGE_LIMIT] + "..."
        return self._scrub(text)

    def _scrub(self, value: Any) -> Any:
        # A text or decoded JSON without the key, which a server may echo in an error body or inside a completion.
        if isinstance(value, str):
            return value.replace(self._api_key, "***") if self._api_key else value
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        if isinstance(value, dict):
            return {self._scrub(key): self._scrub(item) for key, item in value.items()}
        return value


@dataclass(frozen=True)
class _Posted:
    """One request's outcome over HTTP: the 200 body, or the failure; `refusal` is a 400's server message."""

    body: Any = None
    failure: str | None = None
    refusal: str | None = None


def fallbacks_in_force(models: Iterable[ChatModel]) -> list[str]:
    """The fallbacks of every endpoint client among `models` (a replica pool's replicas included), each once."""
    clients = [replica for model in models for replica in getattr(model, "replicas", (model,))]
    return sorted({text for client in clients if isinstance(client, OpenAIChatModel) for text in client.fallbacks()})


def _read_api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise EndpointUnavailable(
            f"api_key_env names the environment variable {variable}, but it is unset or empty; "
            "export the API key there, or drop api_key_env for a server without authentication"
        )
    return key


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after_seconds(header: str | None) -> float | None:
    """`Retry-After` as seconds (a number or an HTTP date); None when absent or unreadable."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _finish_reason(reason: Any) -> tuple[FinishReason, str | None]:
    if reason in (None, "stop", "eos"):
        return "stop", None
    if reason == "length":
        return "length", None
    if reason in ("tool_calls", "function_call"):
        return "tool_calls", None
    return "error", f"the server ended this completion with finish_reason {reason!r}"


def _decode_tool_call(call: dict[str, Any]) -> ToolCall:
    return OpenAIToolCall(id=str(call.get("id") or ""), function=call.get("function") or {}).call()


def _split_evenly(total: int, parts: int) -> list[int]:
    """Usage reports one completion-token total for all `n` choices; share it so the sum stays exact."""
    share, remainder = divmod(total, parts)
    return [share + (1 if index < remainder else 0) for index in range(parts)]


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
