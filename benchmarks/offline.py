"""The offline reference both benchmarks divide by: one `vllm.LLM.generate` batch on the same engine settings."""

from __future__ import annotations

import gc
import time
from typing import Any

from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig, engine_arguments


def timed_batch(
    config: VllmEngineConfig, prompts: list[Any], params: list[Any], warm_up: tuple[list[Any], list[Any]]
) -> tuple[int, float]:
    """(tokens generated, seconds) of one batch; the `warm_up` (prompts, sampling) run first, untimed, to fill
    the prefix cache with what the measured workload finds there."""
    from vllm import LLM

    llm = LLM(**engine_arguments(config))
    try:
        llm.generate(*warm_up, use_tqdm=False)
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - started
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    return sum(len(sample.token_ids) for output in outputs for sample in output.outputs), seconds
