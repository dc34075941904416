"""The models a run uses: started once per config, shared by roles, replicas balanced by load, kept alive.

engines = Engines.start(config, roles=("agent", "human", "human_judge"))
agent = engines.model("agent")         # picklable: sent to every worker actor
engines.ensure_alive()                 # after an engine death: wait for Ray's restart, or start anew
engines.shutdown()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from apigen_mt.pipeline.config import ConfigError, OpenAIModel, RunConfig, resolve_model_path
from apigen_mt.pipeline.engines.model_family import ModelFamilyError, chosen_tool_parser, family_of_folder
from apigen_mt.pipeline.engines.openai_backend import OpenAIChatModel
from apigen_mt.pipeline.engines.resources import check_cluster, replica_configs
from apigen_mt.pipeline.engines.vllm_backend import EngineStartError, VllmChatModel
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig, installed_vllm_version, vllm_version_problem
from apigen_mt.simulators.chat import ChatModel, ChatRequest, ChatResponse


class ReplicaPool:
    """One model served by several replicas: each request goes to the replica with the fewest in flight.

    Counts are per process: every worker actor balances its own requests, which spreads the whole load
    because each worker sees the same replicas.
    """

    def __init__(self, replicas: Sequence[ChatModel]) -> None:
        if not replicas:
            raise ValueError("a replica pool needs at least one replica")
        self.replicas = list(replicas)
        self.model_id = self.replicas[0].model_id
        self._in_flight = [0] * len(self.replicas)

    def __repr__(self) -> str:
        return f"ReplicaPool({self.model_id!r}, {len(self.replicas)} replica(s))"

    def __getstate__(self) -> dict:
        return {"replicas": self.replicas, "model_id": self.model_id}

    def __setstate__(self, state: dict) -> None:
        self.replicas, self.model_id = state["replicas"], state["model_id"]
        self._in_flight = [0] * len(self.replicas)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        index = min(range(len(self.replicas)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        try:
            return await self.replicas[index].chat(request)
        finally:
            self._in_flight[index] -= 1


def preflight(config: RunConfig, roles: Sequence[str]) -> None:
    """Fail before Ray starts: an unset API-key variable, an endpoint that is down or lacks the model, an
    embedded model that was never prepared, a vLLM older than the tested one, or a model folder whose chat
    template contradicts the configured tool parser. Raises `EndpointUnavailable`, `ConfigError`,
    `ModelError` or `EngineStartError`."""
    import asyncio

    for name in dict.fromkeys(name for role in roles for name in config.roles.models_of(role)):
        spec = config.models[name]
        if isinstance(spec, OpenAIModel):
            asyncio.run(_probe(OpenAIChatModel(spec.endpoint)))
        else:
            _check_engine(name, spec.engine)


def _check_engine(name: str, engine: VllmEngineConfig) -> None:
    problem = vllm_version_problem(installed_vllm_version())
    if problem is not None:
        raise EngineStartError(f"models.{name}: {problem}")
    folder = Path(resolve_model_path(engine.model))
    tokenizer = Path(engine.tokenizer) if engine.tokenizer else None
    if not folder.is_dir() or (tokenizer is not None and not tokenizer.is_dir()):
        return  # a hub id: the engine checks the template once it has loaded it
    try:
        family = family_of_folder(folder, tokenizer)
        chosen_tool_parser(engine.tool_parser, family, field=f"models.{name}.engine.tool_parser", folder=str(folder))
    except ModelFamilyError as exc:
        raise ConfigError(str(exc)) from None


def engine_to_start(engine: VllmEngineConfig) -> VllmEngineConfig:
    """The engine as started: `embedded:NAME` resolved to its local folder, the model still named as the config
    names it (served_model_name), so that rows and responses never carry a machine's path."""
    return engine.model_copy(update={"model": resolve_model_path(engine.model), "served_model_name": engine.model_id})


async def _probe(client: OpenAIChatModel) -> None:
    async with client:
        await client.check()


ModelFactory = Callable[[str], ChatModel]  # model name -> a model; tests pass scripted doubles this way
# For replicas the caller started (no config here to read it from): the engine config's default.
UNKNOWN_START_TIMEOUT_S: float = VllmEngineConfig.model_fields["start_timeout_s"].default


@dataclass
class Engines:
    config: RunConfig
    pools: dict[str, ReplicaPool] = field(default_factory=dict)
    engine_configs: dict[str, list[VllmEngineConfig]] = field(default_factory=dict)  # per replica
    restarts: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, config: RunConfig, roles: Sequence[str], factory: ModelFactory | None = None) -> Engines:
        """Start every model the roles name, once each (vLLM replicas are Ray actors: `ray.init()` first).

        Raises `ResourceShortfall` before starting any when the cluster cannot place every replica.
        """
        engines = cls(config)
        names = list(dict.fromkeys(name for role in roles for name in config.roles.models_of(role)))
        if factory is None:
            check_cluster(config, names)
        for name in names:
            if factory is not None:
                engines.pools[name] = ReplicaPool([factory(name)])
                continue
            spec = config.models[name]
            if isinstance(spec, OpenAIModel):
                engines.pools[name] = ReplicaPool([OpenAIChatModel(spec.endpoint)])
                continue
            replicas = engines.engine_configs[name] = replica_configs(engine_to_start(spec.engine), spec.replicas)
            engines.pools[name] = ReplicaPool([VllmChatModel.start(replica) for replica in replicas])
        return engines

    def model(self, role: str) -> ReplicaPool:
        """The role's model (a committee of reviewers: its first)."""
        return self.models(role)[0]

    def models(self, role: str) -> list[ReplicaPool]:
        return [self.pools[name] for name in self.config.roles.models_of(role)]

    def vllm_replicas(self) -> list[tuple[str, int, VllmChatModel]]:
        return [
            (name, index, replica)
            for name, pool in self.pools.items()
            for index, replica in enumerate(pool.replicas)
            if isinstance(replica, VllmChatModel)
        ]

    def ensure_alive(self) -> bool:
        """Wait until every vLLM replica answers again; start a new one where Ray gave up restarting it.

        True when a replica had to be replaced (the caller then hands the new handles to its workers).
        """
        import ray

        replaced = False
        for name, index, replica in self.vllm_replicas():
            config = self.engine_configs[name][index] if name in self.engine_configs else None
            if replica.wait_until_serving(config.start_timeout_s if config else UNKNOWN_START_TIMEOUT_S):
                continue
            if config is None:
                continue  # a replica the caller started (a benchmark's): only its owner could start another
            # Ray's restarts are used up, or the restart never came up in time: this replica is gone for good.
            ray.kill(replica.actor, no_restart=True)
            started = time.monotonic()
            self.pools[name].replicas[index] = VllmChatModel.start(config)
            self.restarts.append(f"{name} replica {index} restarted by the driver in {time.monotonic() - started:.0f}s")
            replaced = True
        return replaced

    def shutdown(self) -> None:
        """Stop the engines this object started; models a factory made belong to the factory's caller."""
        for name, _, replica in self.vllm_replicas():
            if name not in self.engine_configs:
                continue
            try:
                replica.shutdown()
            except Exception:  # a replica that already died has nothing left to stop
                pass
