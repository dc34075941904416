"""Run configs (YAML): which models exist, which backend serves each, and which model plays each role.

```yaml
models:
  smollm2:
    backend: vllm
    engine: {model: "embedded:smollm2-135m-instruct", device: cpu, gpu_memory_utilization: 0.2}
roles: {proposer: smollm2, reviewer: smollm2, human: smollm2, human_judge: smollm2, agent: smollm2}
```

Roles may share a model; each model is started once. `embedded:NAME` names a model prepared by
`apigen-mt models prepare` and resolves to its local folder, so no config ever needs a hub download.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from apigen_mt.pipeline.models import SMOLLM2_NAME, prepared_smollm2
from apigen_mt.pipeline.openai_backend import OpenAIBackendConfig, OpenAIChatModel
from apigen_mt.pipeline.vllm_backend import VllmChatModel, VllmEngineConfig
from apigen_mt.simulators.chat import ChatModel

EMBEDDED_PREFIX = "embedded:"
ROLES = ("proposer", "reviewer", "human", "human_judge", "agent")


class ConfigError(ValueError):
    """A config file is missing, not YAML, or does not describe a valid run; the message says where."""


class VllmModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["vllm"]
    replicas: int = Field(1, ge=1, description="engine actors serving this model")
    engine: VllmEngineConfig


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai"]
    endpoint: OpenAIBackendConfig


ModelSpec = Annotated[VllmModel | OpenAIModel, Field(discriminator="backend")]


class Roles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    proposer: str
    reviewer: str
    human: str
    human_judge: str
    agent: str


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelSpec]
    roles: Roles

    @model_validator(mode="after")
    def _roles_name_models(self) -> RunConfig:
        for role in ROLES:
            name = getattr(self.roles, role)
            if name not in self.models:
                raise ValueError(f"roles.{role} names model {name!r}, but models defines only {', '.join(self.models)}")
        return self

    def fingerprint(self) -> str:
        """SHA-256 of the config's canonical JSON: a run folder refuses to mix results of different configs."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def resolve_model_path(model: str) -> str:
    """`embedded:NAME` -> the prepared local folder (ModelError says how to prepare it); anything else as is."""
    if not model.startswith(EMBEDDED_PREFIX):
        return model
    name = model.removeprefix(EMBEDDED_PREFIX)
    if name != SMOLLM2_NAME:
        raise ConfigError(f"unknown embedded model {name!r}; the embedded model is {SMOLLM2_NAME!r}")
    return str(prepared_smollm2())


def start_model(spec: ModelSpec) -> list[ChatModel]:
    """Start a model's replicas (vLLM: Ray actors, so `ray.init()` first) or open its endpoint client."""
    if isinstance(spec, OpenAIModel):
        return [OpenAIChatModel(spec.endpoint)]
    engine = spec.engine.model_copy(update={"model": resolve_model_path(spec.engine.model)})
    return [VllmChatModel.start(engine) for _ in range(spec.replicas)]

