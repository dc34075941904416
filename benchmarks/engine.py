"""Engine utilisation of the vLLM backend, and a memory soak of its Ray actor.

    python benchmarks/engine.py [--model DIR] [--prompts 16] [--max-tokens 128]
    python benchmarks/engine.py --soak [--requests 2000]

Utilisation: one set of chat prompts, each answered with exactly `--max-tokens` tokens (ignore_eos),
measured three ways on the same engine settings:
  (a) offline: `vllm.LLM.generate` on the whole batch, the best the engine can do;
  (b) in-flight: the Ray actor through `VllmChatModel`, every request in flight at once;
  (c) one-at-a-time: the same actor, each request awaited before the next is sent.
Each engine first answers every prompt once with one token, so all three runs find the prompts in the
prefix cache. The last line is `engine utilisation: in-flight/offline = X.XX, one-at-a-time/offline = Y.YY`.

Soak: sequential requests to one actor (plain, schema-constrained with tools, n=2, every prompt
different), sampling the resident memory of the actor process and of its engine processes; the
actor's must stay within 10% of its value after warm-up.

Default model: the prepared SmolLM2 (`apigen-mt models prepare`) when there is one, else the tiny
random-weight test model; the soak defaults to the tiny model, since it measures the actor, not the model.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from offline import timed_batch

from apigen_mt.pipeline.engines.local_models import ModelError, prepared_smollm2
from apigen_mt.pipeline.engines.tiny_test_model import build_tiny_test_model
from apigen_mt.pipeline.engines.vllm_backend import VllmChatModel
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig
from apigen_mt.pipeline.engines.vllm_requests import prompt_token_ids, render_prompt, sampling_params, tokenizer_family
from apigen_mt.simulators.chat import ChatRequest, SamplingParams
from apigen_mt.simulators.types import Message, ToolSpec
from apigen_mt.simulators.xlam import tool_calls_schema

SYSTEM = "You are a helpful customer service agent for an online store. Answer briefly and politely."
QUESTIONS = [
    "Where is my order #W{n}? It was supposed to arrive last week.",
    "Can I change the shipping address of order #W{n} to 12 Elm Street, Springfield?",
    "I would like to return the blue t-shirt from order #W{n}. How do I do that?",
    "What payment methods can I use for order #W{n}?",
    "Please cancel order #W{n}, I ordered it by mistake.",
    "Is the large red backpack in order #W{n} still in stock?",
    "How long does a refund for order #W{n} take to reach my credit card?",
    "Could you exchange the size M hoodie in order #W{n} for size L?",
]
SOAK_TOOLS = [
    ToolSpec(
        name="get_order_details",
        description="Look up an order by its id.",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string", "enum": ["#W1", "#W2"]}},
            "required": ["order_id"],
        },
    )
]
MEMORY_TOLERANCE = 0.10
MIN_IN_FLIGHT_UTILISATION = 0.9  # the pipeline's target (architecture section 7); the exit status reflects it


@dataclass(frozen=True)
class Measurement:
    mode: str
    requests: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def chat_requests(count: int, max_tokens: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            messages=[
                Message(role="system", content=SYSTEM),
                Message(role="user", content=QUESTIONS[index % len(QUESTIONS)].format(n=1000 + index)),
            ],
            sampling=SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=index),
        )
        for index in range(count)
    ]


def with_max_tokens(requests: list[ChatRequest], max_tokens: int) -> list[ChatRequest]:
    return [
        request.model_copy(update={"sampling": request.sampling.model_copy(update={"max_tokens": max_tokens})})
        for request in requests
    ]


def choose_model(requested: str | None, *, prefer_smollm2: bool, scratch: Path) -> Path:
    if requested:
        return Path(requested)
    if prefer_smollm2:
        try:
            return prepared_smollm2()
        except ModelError as exc:
            print(f"note: {exc}; using the tiny random-weight test model", file=sys.stderr)
    return build_tiny_test_model(scratch / "tiny-test-model")


def engine_config(model: Path, max_num_seqs: int) -> VllmEngineConfig:
    return VllmEngineConfig(
        model=str(model),
        device="cpu",
        max_model_len=2048,
        max_num_seqs=max_num_seqs,
        # A fixed KV cache (not a share of RAM) so the runs do not depend on what else the machine holds.
        engine_kwargs={"kv_cache_memory_bytes": 512 << 20},
    )


def run_offline(config: VllmEngineConfig, requests: list[ChatRequest]) -> Measurement:
    from transformers import AutoTokenizer
    from vllm.inputs import TokensPrompt

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    family = tokenizer_family(tokenizer)
    prompts = [
        TokensPrompt(prompt_token_ids=prompt_token_ids(tokenizer, render_prompt(tokenizer, request, family)))
        for request in requests
    ]
    warm_up = [sampling_params(request, family.parser) for request in with_max_tokens(requests, 1)]
    params = [sampling_params(request, family.parser, {"ignore_eos": True}) for request in requests]
    tokens, seconds = timed_batch(config, prompts, params, (prompts, warm_up))
    return Measurement("offline LLM.generate", len(requests), tokens, seconds)


async def run_actor_modes(model: VllmChatModel, requests: list[ChatRequest]) -> list[Measurement]:
    await asyncio.gather(*[model.chat(request) for request in with_max_tokens(requests, 1)])

    started = time.perf_counter()
    in_flight = await asyncio.gather(*[model.chat(request) for request in requests])
    in_flight_seconds = time.perf_counter() - started

    started = time.perf_counter()
    one_by_one = [await model.chat(request) for request in requests]
    one_by_one_seconds = time.perf_counter() - started

    measurements = []
    for mode, responses, seconds in (
        ("Ray actor, all in flight", in_flight, in_flight_seconds),
        ("Ray actor, one at a time", one_by_one, one_by_one_seconds),
    ):
        failed = [response.error for response in responses if not response.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} benchmark request(s) failed, first: {failed[0]}")
        tokens = sum(completion.completion_tokens for response in responses for completion in response.completions)
        measurements.append(Measurement(mode, len(requests), tokens, seconds))
    return measurements


def utilisation(model_dir: Path, prompts: int, max_tokens: int) -> bool:
    """Print the table and the utilisation line; True when in-flight reaches MIN_IN_FLIGHT_UTILISATION."""
    import ray

    config = engine_config(model_dir, max_num_seqs=prompts)
    requests = chat_requests(prompts, max_tokens)
    offline = run_offline(config, requests)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        model = VllmChatModel.start(config, extra_sampling={"ignore_eos": True})
        try:
            in_flight, one_at_a_time = asyncio.run(run_actor_modes(model, requests))
        finally:
            model.shutdown()
    finally:
        ray.shutdown()

    expected = prompts * max_tokens
    for measurement in (offline, in_flight, one_at_a_time):
        if measurement.tokens != expected:
            raise RuntimeError(f"{measurement.mode} generated {measurement.tokens} tokens, expected {expected}")
    print(f"model: {model_dir}  prompts: {prompts}  max_tokens: {max_tokens} (ignore_eos)  max_num_seqs: {prompts}")
    print(f"{'mode':<28}{'requests':>9}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'vs offline':>12}")
    for measurement in (offline, in_flight, one_at_a_time):
        ratio = measurement.tokens_per_second / offline.tokens_per_second
        print(
            f"{measurement.mode:<28}{measurement.requests:>9}{measurement.tokens:>8}{measurement.seconds:>9.2f}"
            f"{measurement.tokens_per_second:>10.1f}{ratio:>12.2f}"
        )
    in_flight_ratio = in_flight.tokens_per_second / offline.tokens_per_second
    print(
        f"engine utilisation: in-flight/offline = {in_flight_ratio:.2f}, "
        f"one-at-a-time/offline = {one_at_a_time.tokens_per_second / offline.tokens_per_second:.2f}"
    )
    return in_flight_ratio >= MIN_IN_FLIGHT_UTILISATION


def soak_request(index: int) -> ChatRequest:
    messages = [
        Message(role="system", content=SYSTEM),
        Message(role="user", content=f"Request {index}: " + QUESTIONS[index % len(QUESTIONS)].format(n=index)),
    ]
    sampling = SamplingParams(temperature=0.8, max_tokens=8, seed=index)
    if index % 4 == 1:
        return ChatRequest(
            messages=messages,
            tools=SOAK_TOOLS,
            json_schema=tool_calls_schema(SOAK_TOOLS),
            sampling=sampling.model_copy(update={"max_tokens": 48}),
        )
    if index % 4 == 2:
        return ChatRequest(messages=messages, sampling=sampling.model_copy(update={"n": 2}))
    return ChatRequest(messages=messages, sampling=sampling)


async def soak_run(model: VllmChatModel, total: int, warm_up: int, every: int) -> tuple[list[tuple[int, dict]], int]:
    """Memory samples (requests done after warm-up, memory) and the number of failed requests."""
    failures = 0
    samples = []
    for index in range(warm_up + total):
        response = await model.chat(soak_request(index))
        failures += not response.ok
        done = index + 1 - warm_up
        if done >= 0 and (done % every == 0 or done == total):
            samples.append((done, await model.memory()))
    return samples, failures


def soak(model_dir: Path, total: int, warm_up: int = 100, every: int = 250) -> bool:
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    try:
        model = VllmChatModel.start(engine_config(model_dir, max_num_seqs=8))
        try:
            samples, failures = asyncio.run(soak_run(model, total, warm_up, every))
        finally:
            model.shutdown()
    finally:
        ray.shutdown()

    baseline = samples[0][1]["actor_rss"]
    print(
        f"model: {model_dir}  sequential requests: {total} after {warm_up} warm-up  failed: {failures}  "
        f"wall: {time.perf_counter() - started:.0f} s"
    )
    print(f"{'after requests':>15}{'actor RSS MiB':>15}{'vs start':>10}{'engine RSS MiB':>16}")
    for done, memory in samples:
        print(
            f"{done:>15}{memory['actor_rss'] / 2**20:>15.1f}{memory['actor_rss'] / baseline - 1:>+10.1%}"
            f"{memory['engine_rss'] / 2**20:>16.1f}"
        )
    worst = max(abs(memory["actor_rss"] / baseline - 1) for _, memory in samples)
    flat = worst <= MEMORY_TOLERANCE and failures == 0
    print(
        f"actor memory {'flat' if flat else 'NOT flat'}: largest change {worst:.1%} (limit {MEMORY_TOLERANCE:.0%}), "
        f"{failures} failed request(s)"
    )
    return flat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", help="Hugging Face model folder (default: prepared SmolLM2, else the tiny test model)"
    )
    parser.add_argument("--prompts", type=int, default=16, help="prompts in the utilisation workload")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens generated per prompt")
    parser.add_argument("--soak", action="store_true", help="run the memory soak instead")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests in the soak")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="apigen-mt-bench-") as scratch:
        model_dir = choose_model(args.model, prefer_smollm2=not args.soak, scratch=Path(scratch))
        if args.soak:
            return 0 if soak(model_dir, args.requests) else 1
        return 0 if utilisation(model_dir, args.prompts, args.max_tokens) else 1


if __name__ == "__main__":
    sys.exit(main())
