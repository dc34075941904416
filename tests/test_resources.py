"""Placement: what a config's engines ask of the cluster and the shortfall message (fake nodes, no Ray), one
model per distinct name however many roles share it, replicas balanced by load; and the CLI's exit 2 when
this GPU-less machine is asked for GPUs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from apigen_mt.pipeline.config import ROLES, RunConfig, load_config
from apigen_mt.pipeline.engines import pool as engines_module
from apigen_mt.pipeline.engines.pool import Engines, ReplicaPool
from apigen_mt.pipeline.engines.resources import (
    SKIP_ENV,
    ResourceShortfall,
    asks,
    check_cluster,
    core_shares,
    shortfalls,
)
from apigen_mt.simulators.chat import ChatRequest, ChatResponse
from apigen_mt.simulators.types import Message
from tests.conftest import cli_error_line

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def vllm(device: str = "gpu", replicas: int = 1, **engine) -> dict:
    return {"backend": "vllm", "replicas": replicas, "engine": {"model": "/models/m", "device": device, **engine}}


def run_config(models: dict, **roles: str) -> RunConfig:
    first = next(iter(models))
    return RunConfig.model_validate({"models": models, "roles": {role: roles.get(role, first) for role in ROLES}})


def problems(config: RunConfig, nodes: list[dict], models=None) -> list[str]:
    return shortfalls(asks(config, models or config.models), nodes)


# --------------------------------------------------------------------------------------------------
# What a config asks, against fake clusters
# --------------------------------------------------------------------------------------------------


def test_gpus_asked_are_replicas_times_tensor_parallel_size_and_the_shortfall_names_the_model():
    config = run_config({"big": vllm(replicas=2, tensor_parallel_size=4)})
    assert problems(config, [{"CPU": 2.0}]) == [
        "the config asks for 8 GPU (model big: 2 replicas x tensor_parallel_size 4) but the cluster has 0 GPU"
    ]
    assert problems(config, [{"CPU": 2.0, "GPU": 8.0}]) == []


def test_the_shipped_gpu_config_adds_up_every_model_and_needs_each_replica_on_one_node():
    config = load_config(CONFIGS / "gpu-cluster.yaml")
    [gpu] = problems(config, [{"CPU": 64.0, "GPU": 8.0}])
    assert gpu == (
        "the config asks for 12 GPU (model agent: 2 replicas x tensor_parallel_size 2, model teacher: 2 replicas x "
        "tensor_parallel_size 4) but the cluster has 8 GPU"
    )
    assert problems(config, [{"CPU": 32.0, "GPU": 8.0}] * 2) == []
    # Enough GPUs in all, but a tensor-parallel group is packed onto one node.
    assert problems(config, [{"CPU": 8.0, "GPU": 2.0}] * 8) == [
        "each replica of model teacher needs 4 GPU on one node (tensor_parallel_size 4) but the largest node has 2 GPU"
    ]


def test_cpu_replicas_ask_for_their_actor_cpus_and_gpu_replicas_for_one_cpu_each():
    config = run_config({"small": vllm("cpu", replicas=3, actor_num_cpus=0.1), "big": vllm(replicas=2)}, agent="big")
    assert problems(config, [{"CPU": 2.3, "GPU": 2.0}]) == []  # 0.3 + 2 CPUs: float sums do not make a shortfall
    [cpu] = problems(config, [{"CPU": 2.0, "GPU": 2.0}])
    assert cpu == (
        "the config asks for 2.3 CPU (model small: 3 replicas x actor_num_cpus 0.1, model big: 2 replicas x "
        "1 CPU for the engine actor) but the cluster has 2 CPU"
    )


def test_only_the_models_the_run_uses_count_and_endpoints_ask_nothing():
    endpoint = {"backend": "openai", "endpoint": {"base_url": "http://127.0.0.1:1/v1", "model": "x"}}
    config = run_config({"api": endpoint, "big": vllm(tensor_parallel_size=2)}, proposer="big", reviewer="big")
    assert asks(config, ["api", "api"]) == []
    assert problems(config, [{"CPU": 1.0}], models=["api"]) == []
    assert len(problems(config, [{"CPU": 1.0}], models=["big", "big"])) == 1


def test_check_cluster_reads_the_connected_cluster_and_can_be_skipped(monkeypatch):
    import ray

    config = run_config({"big": vllm(tensor_parallel_size=2)})
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    with pytest.raises(ResourceShortfall, match=rf"asks for 2 GPU .* but the cluster has 0 GPU; .*{SKIP_ENV}=1"):
        check_cluster(config, ["big"])
    monkeypatch.setenv(SKIP_ENV, "1")
    check_cluster(config, ["big"])


# --------------------------------------------------------------------------------------------------
# Engines from the config: shared and separate models, replicas
# --------------------------------------------------------------------------------------------------


def test_roles_sharing_a_model_share_one_pool_and_separate_models_get_their_own():
    config = run_config({"teacher": vllm(), "agent": vllm()}, agent="agent")
    made = []

    def factory(name: str):
        made.append(name)
        return type("Fake", (), {"model_id": name})()

    engines = Engines.start(config, ("agent", "human", "human_judge"), factory)
    assert made == ["agent", "teacher"]
    assert engines.model("human") is engines.model("human_judge") is not engines.model("agent")
    assert engines.model("agent").model_id == "agent"


def test_every_replica_is_started_once_the_cluster_can_place_them_all(monkeypatch):
    import ray

    started = []
    monkeypatch.setattr(engines_module.VllmChatModel, "start", lambda engine: started.append(engine) or engine)
    config = run_config({"small": vllm("cpu", replicas=3)})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    with pytest.raises(ResourceShortfall, match="asks for 3 CPU"):
        Engines.start(config, ("agent",))
    assert started == []  # nothing was started before the check
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0}}])
    engines = Engines.start(config, ("agent", "human"))
    assert len(engines.model("agent").replicas) == len(started) == 3


def test_engines_name_their_models_as_the_config_does_never_by_their_folder(monkeypatch, tmp_path):
    import ray

    folder = str(tmp_path / "cache" / "smollm2-135m-instruct")
    monkeypatch.setattr(
        engines_module, "resolve_model_path", lambda model: folder if model.startswith("embedded:") else model
    )
    started = []
    # VllmChatModel.start names its model by the config's model_id, as the real one does.
    monkeypatch.setattr(
        engines_module.VllmChatModel,
        "start",
        lambda engine: started.append(engine) or SimpleNamespace(model_id=engine.model_id),
    )
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0}}])
    models = {
        "smol": vllm("cpu", model="embedded:smollm2-135m-instruct"),
        "big": vllm("cpu", served_model_name="teacher"),
    }
    engines = Engines.start(run_config(models, human="big"), ("agent", "human"))
    assert engines.model("agent").model_id == "embedded:smollm2-135m-instruct"
    assert engines.model("human").model_id == "teacher"
    smol, big = started
    assert (smol.model, smol.model_id) == (folder, "embedded:smollm2-135m-instruct")  # vLLM loads the folder
    assert (big.model, big.model_id) == ("/models/m", "teacher")


def test_core_shares_cut_the_cores_into_contiguous_equal_shares():
    assert core_shares(list(range(8)), 2) == ["0,1,2,3", "4,5,6,7"]
    assert core_shares([0, 1, 2], 2) == ["0", "1"]  # the odd core stays free for the processes around the engines
    assert core_shares([4, 6], 1) == ["4,6"]
    assert core_shares([0], 2) is None


def test_several_cpu_replicas_on_one_node_each_bind_their_own_cores(monkeypatch):
    import ray

    started = []
    monkeypatch.setattr(engines_module.VllmChatModel, "start", lambda engine: started.append(engine) or engine)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    one_node = [{"Alive": True, "Resources": {"CPU": 4.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: one_node)

    def cores(model: dict) -> list[str | None]:
        started.clear()
        engines = Engines.start(run_config({"small": model}), ("agent",))
        assert [replica.cpu_cores for replica in engines.engine_configs["small"]] == [e.cpu_cores for e in started]
        return [engine.cpu_cores for engine in started]

    assert cores(vllm("cpu", replicas=2)) == ["0,1", "2,3"]
    assert cores(vllm("cpu", replicas=1)) == [None]  # one replica: vLLM's own choice
    assert cores(vllm("cpu", replicas=2, cpu_cores="1")) == ["1", "1"]  # the config's word stands
    # On a cluster of several nodes the driver's cores say nothing of where the replicas land.
    monkeypatch.setattr(ray, "nodes", lambda: one_node * 2)
    assert cores(vllm("cpu", replicas=2)) == [None, None]


def test_cpu_cores_must_name_cores():
    with pytest.raises(ValueError, match="cpu_cores"):
        run_config({"small": vllm("cpu", cpu_cores="all")})


# --------------------------------------------------------------------------------------------------
# ReplicaPool: least in flight, not round-robin
# --------------------------------------------------------------------------------------------------


class HeldReplica:
    """Answers once the test opens its gate; counts what it was sent."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.gate = asyncio.Event()
        self.sent = 0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.sent += 1
        await self.gate.wait()
        return ChatResponse(model=self.model_id)


REQUEST = ChatRequest(messages=[Message(role="user", content="hi")])


def test_a_busy_replica_gets_no_more_work_until_it_answers():
    async def scenario() -> tuple[int, int]:
        slow, fast = HeldReplica("m"), HeldReplica("m")
        fast.gate.set()
        pool = ReplicaPool([slow, fast])
        held = asyncio.create_task(pool.chat(REQUEST))
        await asyncio.sleep(0)  # the first request is now in flight on `slow`
        for _ in range(3):  # round-robin would send the second of these to `slow`
            await pool.chat(REQUEST)
        slow.gate.set()
        await held
        return slow.sent, fast.sent

    assert asyncio.run(scenario()) == (1, 3)


def test_concurrent_requests_spread_evenly_and_finished_ones_free_their_replica():
    async def scenario() -> list[list[int]]:
        replicas = [HeldReplica("m") for _ in range(3)]
        pool = ReplicaPool(replicas)
        waves = []
        for size in (6, 3):
            tasks = [asyncio.create_task(pool.chat(REQUEST)) for _ in range(size)]
            await asyncio.sleep(0)
            waves.append([replica.sent for replica in replicas])
            for replica in replicas:
                replica.gate.set()
            await asyncio.gather(*tasks)
            for replica in replicas:
                replica.gate.clear()
        return waves

    assert asyncio.run(scenario()) == [[2, 2, 2], [3, 3, 3]]


# --------------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------------


def test_generate_asking_for_gpus_the_machine_lacks_exits_2_with_the_shortfall(tmp_path):
    config = tmp_path / "gpu.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"big": vllm(tensor_parallel_size=2)},
                "roles": {role: "big" for role in ROLES},
                "tasks": [{"domain": "retail", "path": "examples:retail"}],
            }
        )
    )
    line = cli_error_line("generate", config, "--output", tmp_path / "run", "--limit", "1", "--quiet")
    assert line.startswith(
        f"apigen-mt: error: {config}: the config asks for 2 GPU (model big: 1 replica x tensor_parallel_size 2) but "
        "the cluster has 0 GPU; "
    )


def test_models_ask_checks_one_replica_against_the_machine(tmp_path):
    config = tmp_path / "gpu.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": {"big": vllm(replicas=3, tensor_parallel_size=2)}, "roles": {role: "big" for role in ROLES}}
        )
    )
    line = cli_error_line("models", "ask", config, "hello")
    # One replica answers a question: 2 GPUs asked, not 6.
    assert "the config asks for 2 GPU (model big: 1 replica x tensor_parallel_size 2) but the cluster has 0 GPU" in line
