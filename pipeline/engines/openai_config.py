"""The config of a model behind an OpenAI-compatible endpoint (`backend: openai` in a run config): where it is,
how hard to push it, and what the model refuses. The client is `pipeline.engines.openai_backend`."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from apigen_mt.pipeline.engines.endpoint_features import MaxTokensField, SamplingField
from apigen_mt.pipeline.engines.vllm_config import MAX_IN_FLIGHT
from apigen_mt.pipeline.store.remote import redact_uri
from apigen_mt.simulators.completions import THINKING
from apigen_mt.simulators.tool_parsers import get_parser


class OpenAIBackendConfig(BaseModel):
    """How to reach one model on an OpenAI-compatible server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="URL prefix before /chat/completions, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="model name as the server lists it under /models")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    max_concurrency: int = Field(16, ge=1, le=MAX_IN_FLIGHT, description="requests in flight at once, retries included")
    timeout_s: float = Field(300.0, gt=0, description="seconds to wait for connect, send and the whole reply")
    max_retries: int = Field(4, ge=0, le=100, description="extra attempts after a transient failure")
    backoff_base_s: float = Field(0.5, ge=0, description="first backoff; doubles per attempt")
    backoff_max_s: float = Field(30.0, ge=0, description="cap on one wait, Retry-After included")
    tool_parser: str = Field("xlam", description="parser for tool calls a server returns as plain text")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None,
        description='sent as the body field chat_template_kwargs (vLLM, SGLang), e.g. {"enable_thinking": false}',
    )
    max_tokens_field: MaxTokensField = Field(
        "max_tokens",
        description="the body field of the token limit; max_completion_tokens for OpenAI's reasoning models (a 400 "
        "that asks for it switches to it anyway, and the run reports it)",
    )
    omit_sampling: tuple[SamplingField, ...] = Field(
        (), description="sampling parameters the model refuses, left out of every request (e.g. [temperature, top_p])"
    )
    thinking_delimiters: tuple[str, str] = Field(
        THINKING, description="the tags around thinking text in a reply's content, split off from it"
    )

    @field_validator("tool_parser")
    @classmethod
    def _known_parser(cls, value: str) -> str:
        get_parser(value)  # raises with the known names
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # No credentials in it: a URL is written to manifests, rows and logs; the key comes from api_key_env.
        if not re.match(r"^https?://[^/]", value) or redact_uri(value) != value:
            problem = "hold no credentials (the key goes in api_key_env's variable)"
            raise ValueError(
                f"base_url must start with http:// or https://, name a host and {problem}, got {redact_uri(value)!r}"
            )
        return value.rstrip("/")
