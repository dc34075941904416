"""What a run's engines ask of the Ray cluster, checked before any engine starts.

A replica the cluster cannot place waits in Ray's queue until `start_timeout_s` (15 minutes by default) and
then fails; a config that asks for more than the cluster has fails at once instead, naming the shortfall:

    the config asks for 8 GPU (model big: 2 replicas x tensor_parallel_size 4) but the cluster has 0 GPU

Only vLLM replicas reserve resources: worker actors reserve none (`WorkerPool`), OpenAI-compatible endpoints
run elsewhere. A cluster that adds nodes on demand (an autoscaler) has less than it can get; set
APIGEN_MT_SKIP_RESOURCE_CHECK=1 there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from apigen_mt.pipeline.config import OpenAIModel, RunConfig
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig

SKIP_ENV = "APIGEN_MT_SKIP_RESOURCE_CHECK"
RESOURCES = ("GPU", "CPU")  # the ones an engine replica reserves, in the order shortfalls are reported
SLACK = 1e-9  # fractional CPUs add up with rounding errors


class ResourceShortfall(RuntimeError):
    """The cluster lacks resources the config asks for; the message names them and the models asking."""


@dataclass(frozen=True)
class Ask:
    """One resource one model reserves: `per_replica` of it for each of `replicas`, and why (`reason`)."""

    model: str
    resource: str
    replicas: int
    per_replica: float
    reason: str  # the config field behind `per_replica`, e.g. "tensor_parallel_size 4"

    @property
    def total(self) -> float:
        return self.replicas * self.per_replica

    def describe(self) -> str:
        count = f"{self.replicas} replica{'s' if self.replicas != 1 else ''}"
        return f"model {self.model}: {count} x {self.reason}"


def replica_resources(engine: VllmEngineConfig) -> dict[str, tuple[float, str]]:
    """What one replica reserves, as `vllm_backend.start_engine_actor` places it: resource -> (amount, reason)."""
    if engine.device == "cpu":
        return {"CPU": (engine.actor_num_cpus, f"actor_num_cpus {engine.actor_num_cpus:g}")}
    # On GPU the actor holds one CPU beside its GPUs (a multi-GPU replica: in its placement group's first bundle).
    return {
        "GPU": (engine.tensor_parallel_size, f"tensor_parallel_size {engine.tensor_parallel_size}"),
        "CPU": (1.0, "1 CPU for the engine actor"),
    }


def asks(config: RunConfig, models: Iterable[str]) -> list[Ask]:
    """Every resource the named models reserve (each model once, however many roles share it)."""
    found = []
    for name in dict.fromkeys(models):
        spec = config.models[name]
        if isinstance(spec, OpenAIModel):
            continue
        for resource, (amount, reason) in replica_resources(spec.engine).items():
            if amount > 0:
                found.append(Ask(name, resource, spec.replicas, amount, reason))
    return found


def shortfalls(wanted: Sequence[Ask], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """Why the cluster of these nodes (each node's total resources) cannot place every replica; [] when it can.

    First the totals; when they suffice, whether each replica fits on one node, as an actor (and a
    STRICT_PACK placement group) must.
    """
    problems = []
    for resource in RESOURCES:
        mine = [ask for ask in wanted if ask.resource == resource]
        asked = sum(ask.total for ask in mine)
        have = sum(node.get(resource, 0.0) for node in nodes)
        if mine and asked > have + SLACK:
            who = ", ".join(ask.describe() for ask in mine)
            problems.append(f"the config asks for {asked:g} {resource} ({who}) but the cluster has {have:g} {resource}")
    if problems:
        return problems
    for ask in wanted:
        largest = max((node.get(ask.resource, 0.0) for node in nodes), default=0.0)
        if ask.per_replica > largest + SLACK:
            problems.append(
                f"each replica of model {ask.model} needs {ask.per_replica:g} {ask.resource} on one node "
                f"({ask.reason}) but the largest node has {largest:g} {ask.resource}"
            )
    return problems


def check_cluster(config: RunConfig, models: Iterable[str]) -> None:
    """Raise `ResourceShortfall` when the connected Ray cluster cannot place every replica of these models."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    wanted = asks(config, models)
    if not wanted:
        return
    import ray

    problems = shortfalls(wanted, [node["Resources"] for node in ray.nodes() if node["Alive"]])
    if problems:
        raise ResourceShortfall(
            "; ".join(problems) + "; ask for less (replicas, tensor_parallel_size, actor_num_cpus) or add nodes "
            f"(a cluster that adds nodes on demand: set {SKIP_ENV}=1)"
        )


def core_shares(cores: Sequence[int], replicas: int) -> list[str] | None:
    """`cores` cut into `replicas` contiguous equal shares, as VLLM_CPU_OMP_THREADS_BIND values (cores left over
    by the division stay free for the processes around the engines); None when there are fewer cores than
    replicas."""
    size = len(cores) // replicas
    if size == 0:
        return None
    return [",".join(str(core) for core in cores[index * size : (index + 1) * size]) for index in range(replicas)]


def replica_configs(engine: VllmEngineConfig, replicas: int) -> list[VllmEngineConfig]:
    """Each replica's settings. Several CPU replicas on a one-node cluster bind their own share of its cores:
    left to vLLM, each binds the same cores, and they run on top of each other while the rest idle."""
    if engine.device != "cpu" or replicas == 1 or engine.cpu_cores is not None:
        return [engine] * replicas
    import ray

    if sum(1 for node in ray.nodes() if node["Alive"]) != 1:
        return [engine] * replicas  # the driver's cores say nothing of the nodes the replicas land on
    shares = core_shares(sorted(os.sched_getaffinity(0)), replicas)
    if shares is None:
        return [engine] * replicas
    return [engine.model_copy(update={"cpu_cores": share}) for share in shares]
