"""Run configs (YAML): which models exist, which backend serves each, and which model plays each role.

```yaml
models:
  smollm2:
    backend: vllm
    engine: {model: "embedded:smollm2-135m-instruct", device: cpu, gpu_memory_utilization: 0.2}
roles: {proposer: smollm2, reviewer: smollm2, human: smollm2, agent: smollm2}   # human_judge: the human's model
tasks:                           # task files Phase 2 plays (paths relative to this file)
  - {domain: retail, path: "examples:retail"}
trajectories: {trials: 3, agent: {temperature: 0.0}, human: {best_of_n: 4}, episode: {max_turns: 30}}
blueprint_generation:            # Phase 1; when present, `generate` also plays the blueprints it accepts
  domains: [{domain: retail, proposals: 100}]
  seed: 0
  max_rounds: 3
```

Roles may share a model; each model is started once. A run needs only the roles of the phases it runs
(`PHASE1_ROLES`, `PHASE2_ROLES`). `embedded:NAME` names a model prepared by `apigen-mt models prepare` and
resolves to its local folder, so no config ever needs a hub download. Every field: docs/config.md, generated
by `python -m apigen_mt.pipeline.config_reference`. The phase sections are in `pipeline.config_phases`; what a
YAML value may be before pydantic reads it, in `pipeline.config_values`.

Words: a *blueprint* is a task as an episode plays it, Phase 1's product; a *task file* is a file of tasks a
run is given (`tasks:`). The former key `blueprints` still loads, with a warning (`pipeline/renamed.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from apigen_mt.pipeline.config_phases import BlueprintPhase, TrajectoryPhase
from apigen_mt.pipeline.config_values import UnfitValue, config_json
from apigen_mt.pipeline.engines.local_models import SMOLLM2_NAME, prepared_smollm2
from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig
from apigen_mt.pipeline.renamed import warn_renamed
from apigen_mt.pipeline.store.io import InputError

EMBEDDED_PREFIX = "embedded:"
PHASE1_ROLES = ("proposer", "reviewer")
PHASE2_ROLES = ("agent", "human", "human_judge")
ROLES = ("proposer", "reviewer", "human", "human_judge", "agent")
Phase = Literal["blueprints", "trajectories"]
# What a missing role stops, in the words of the commands that run it.
_NEEDED_BY = {
    **dict.fromkeys(PHASE1_ROLES, "Phase 1 (`apigen-mt blueprints`, and `generate` with blueprint_generation)"),
    **dict.fromkeys(PHASE2_ROLES, "Phase 2 (`apigen-mt trajectories` and `generate`)"),
}


# Settings that change how fast a run goes, never what it makes: the fingerprint leaves them out.
_SCALE_SETTINGS = ("workers", "in_flight", "max_attempts", "rows_per_shard", "max_replays")
_ENGINE_SCALE_SETTINGS = (  # vLLM engines' (the first two lines), then endpoints'
    *("tensor_parallel_size", "gpu_memory_utilization", "max_num_seqs", "max_in_flight", "actor_num_cpus"),
    *("cpu_cores", "max_restarts", "start_timeout_s", "request_timeout_s"),
    *("max_concurrency", "timeout_s", "max_retries", "backoff_base_s", "backoff_max_s"),
)


class ConfigError(InputError):
    """A config file is missing, not YAML, or does not describe a valid run; the message says where.

    An `InputError`, so that the CLI reports one that escapes a command as one line (exit 2)."""


class VllmModel(BaseModel):
    """A model served by vLLM engines that the run starts, one Ray actor per replica."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["vllm"] = Field(description="served by vLLM engines the run starts")
    replicas: int = Field(1, ge=1, le=1000, description="engine actors serving this model, each a Ray actor of its own")
    engine: VllmEngineConfig = Field(description="one replica's engine: the weights, vLLM's settings, the actor")


class OpenAIModel(BaseModel):
    """A model behind an OpenAI-compatible server that is already running."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai"] = Field(description="served by an OpenAI-compatible server")
    endpoint: OpenAIBackendConfig = Field(description="where the server is and how to ask it")


ModelSpec = Annotated[VllmModel | OpenAIModel, Field(discriminator="backend")]


class Roles(BaseModel):
    """Which model plays each role. A run needs only its phases' roles: Phase 1 the proposer and the reviewer,
    Phase 2 the agent, the human and the human judge."""

    model_config = ConfigDict(extra="forbid")

    proposer: str | None = Field(None, description="Phase 1: the model that proposes and revises blueprints")
    reviewer: str | list[str] | None = Field(
        None,
        description="Phase 1: the review committee's model, or several: reviewer i asks the (i mod n)-th, and the "
        "first writes the feedback summaries",
    )
    human: str | None = Field(None, description="Phase 2: the model that plays the customer")
    human_judge: str | None = Field(
        None, description="Phase 2: the model that picks the best of the human's best_of_n turns; default: `human`'s"
    )
    agent: str | None = Field(None, description="Phase 2: the model whose conversations with tools become the data")

    @model_validator(mode="before")
    @classmethod
    def _judge_defaults_to_human(cls, data: Any) -> Any:
        # Filled in rather than looked up, so the config (and its fingerprint) is the same as one that names it.
        if isinstance(data, dict) and data.get("human_judge") is None and data.get("human") is not None:
            return {**data, "human_judge": data["human"]}
        return data

    @field_validator("reviewer")
    @classmethod
    def _some_reviewer(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one model")
        return value

    def models_of(self, role: str) -> list[str]:
        """The model names a role uses, in order (one, except a committee of reviewers); ConfigError when the
        config does not set the role."""
        named = getattr(self, role)
        if named is None:
            raise ConfigError(f"roles.{role} is not set, and {_NEEDED_BY[role]} needs it: name its model in roles")
        return list(named) if isinstance(named, list) else [named]


EXAMPLES_PREFIX = "examples:"


class TaskFile(BaseModel):
    """A file of tasks for one domain (JSON Lines or a JSON array such as tau-bench's task files); Phase 2 plays
    each task as a blueprint.

    `path` is relative to the config file, or `examples:DOMAIN` for the example tasks a domain ships.
    """

    model_config = ConfigDict(extra="forbid")

    domain: str = Field(description="the domain of the file's tasks (retail, airline, ...)")
    path: str = Field(description="the file, relative to the config file, or `examples:DOMAIN`")
    data_dir: str | None = Field(None, description="tau-bench-layout data folder; default: the domain's seeded data")
    limit: int | None = Field(None, ge=1, description="take at most this many tasks from the file")


class RunConfig(BaseModel):
    """A run config: the models, the roles they play, and the phases."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelSpec] = Field(description="the models, by names you choose; each is started once")
    roles: Roles
    tasks: list[TaskFile] = Field(
        default_factory=list,
        description="the task files Phase 2 plays (beside the blueprints Phase 1 accepts when blueprint_generation "
        "is set); formerly `blueprints`",
    )
    trajectories: TrajectoryPhase = Field(default_factory=TrajectoryPhase)
    blueprint_generation: BlueprintPhase | None = Field(
        None, description="Phase 1; when present, `generate` proposes blueprints and Phase 2 plays those it accepts"
    )

    @model_validator(mode="after")
    def _roles_name_models(self) -> RunConfig:
        for role in ROLES:
            if getattr(self.roles, role) is None:
                continue  # checked when a run needs it
            for name in self.roles.models_of(role):
                if name not in self.models:
                    raise ValueError(
                        f"roles.{role} names model {name!r}, but models defines only {', '.join(self.models)}"
                    )
        return self

    def fingerprint(self) -> str:
        """SHA-256 of the config's canonical JSON: a run folder refuses to mix results of different configs.

        Left out: the number of trials, the task files' limits and the numbers of proposals (raising them
        extends a run with more of the same kind of data, which resume is meant to allow), and how the work is
        spread (replicas, workers, batch sizes, in-flight bounds, shard sizes, retries, timeouts), so that a run
        started on one machine can be resumed on a larger cluster. A config without `blueprint_generation`
        keeps the fingerprint it had before that section existed.
        """
        data = self.model_dump(mode="json", exclude={"trajectories": {"trials", *_SCALE_SETTINGS}})
        for task_file in data["tasks"]:
            task_file.pop("limit")
        # Hashed under the key's former name, so that run folders made before the rename still resume.
        data["blueprints"] = data.pop("tasks")
        generation = data.pop("blueprint_generation")
        if generation is not None:
            for entry in generation["domains"]:
                entry.pop("proposals")
            for name in _SCALE_SETTINGS:
                generation.pop(name, None)  # max_replays is Phase 2's only
            data["blueprint_generation"] = generation
        for spec in data["models"].values():
            spec.pop("replicas", None)
            for name in _ENGINE_SCALE_SETTINGS:
                spec.get("engine", {}).pop(name, None)
                spec.get("endpoint", {}).pop(name, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def phase_concurrency(self, phase: Phase) -> Concurrency:
        """`concurrency` of a phase: its settings on the model of the role that drives it (Phase 1 the proposer,
        Phase 2 the agent). ConfigError when the config lacks the phase's section or that role."""
        section = self.trajectories if phase == "trajectories" else self.blueprint_generation
        if section is None:
            raise ConfigError("Phase 1 needs the config's blueprint_generation section")
        spec = self.models[self.roles.models_of("agent" if phase == "trajectories" else "proposer")[0]]
        engine, replicas = (spec.endpoint, 1) if isinstance(spec, OpenAIModel) else (spec.engine, spec.replicas)
        return concurrency(engine, replicas=replicas, in_flight=section.in_flight, workers=section.workers)


@dataclass(frozen=True)
class Concurrency:
    """How many of each thing are in flight at once; `concurrency` derives every figure."""

    client: int  # requests one replica's client keeps in flight
    engine_actor: int | None  # calls one vLLM engine actor accepts at once (None: an endpoint has no actor)
    in_flight: int  # items (episodes, proposals) the driver keeps in flight
    per_worker: int  # items one worker actor accepts at once


# A worker's own calls (`ready`, `set_models`) count against its actor's concurrency too.
_WORKER_HEADROOM = 8
# An engine actor's calls are waiting coroutines, cheap enough to allow far more than the client sends.
_ENGINE_ACTOR_FLOOR = 1000


def concurrency(
    engine: VllmEngineConfig | OpenAIBackendConfig, *, replicas: int = 1, in_flight: int | None = None, workers: int = 1
) -> Concurrency:
    """Every concurrency figure of a run, from the few settings a user sets; the rule, written only here:

    - client: a vLLM replica's client keeps the engine's `max_in_flight` requests in flight, default
      2 x `max_num_seqs` (twice what it decodes at once keeps its batch full while the rest wait in the
      client); an endpoint's client keeps its `max_concurrency`.
    - engine_actor: a vLLM engine actor accepts max(1000, 4 x client) calls at once: generous, since the
      client's limit is what holds requests back.
    - in_flight: a phase keeps its `in_flight` items in flight, default client x replicas of the model that
      drives it (`RunConfig.phase_concurrency` picks it).
    - per_worker: one of the phase's `workers` accepts ceil(in_flight / workers) + 8 items at once: its share,
      and room for its own calls beside a full share.
    """
    if isinstance(engine, OpenAIBackendConfig):
        client, engine_actor = engine.max_concurrency, None
    else:
        client, engine_actor = engine.in_flight_limit, max(_ENGINE_ACTOR_FLOOR, 4 * engine.in_flight_limit)
    bound = in_flight if in_flight is not None else client * replicas
    return Concurrency(client, engine_actor, bound, -(-bound // workers) + _WORKER_HEADROOM)


def load_config(path: str | Path) -> RunConfig:
    """The run config in a YAML file; ConfigError naming the file (and the field) when it is not one.

    Read strictly, as JSON is: a number field takes a number, not true/false or quoted digits, and an int
    field not 3.0; and the YAML first passes `config_json` (no alias bomb, nothing JSON cannot hold)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{path} nests lists or mappings too deeply to read; a run config nests a few levels"
        ) from None
    except ValueError as exc:  # a value YAML recognises but Python cannot make: an int of over 4300 digits, 2024-13-01
        raise ConfigError(f"{path} holds a value that cannot be read: {str(exc).split(':')[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a run config is a YAML mapping with `models` and `roles`, got {type(raw).__name__}")
    if "blueprints" in raw:
        if "tasks" in raw:
            raise ConfigError(f"{path}: `blueprints` is the former name of `tasks`; keep `tasks` only")
        warn_renamed(str(path), "the config key `blueprints`", "`tasks`")
        raw["tasks"] = raw.pop("blueprints")
    try:
        return RunConfig.model_validate_json(config_json(raw), strict=True)
    except UnfitValue as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def config_relative(path: str, config_path: Path) -> Path:
    """A file or folder a config names: relative to the config file's folder unless absolute (`~` expanded)."""
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else config_path.parent / resolved


def task_file_path(task_file: TaskFile, config_path: Path) -> Path | str:
    """Where a task file is: relative to the config file, or `examples:DOMAIN` left as is."""
    if task_file.path.startswith(EXAMPLES_PREFIX):
        return task_file.path
    return config_relative(task_file.path, config_path)


def resolve_model_path(model: str) -> str:
    """`embedded:NAME` -> the prepared local folder (ModelError says how to prepare it); anything else as is."""
    if not model.startswith(EMBEDDED_PREFIX):
        return model
    name = model.removeprefix(EMBEDDED_PREFIX)
    if name != SMOLLM2_NAME:
        raise ConfigError(f"unknown embedded model {name!r}; the embedded model is {SMOLLM2_NAME!r}")
    return str(prepared_smollm2())
