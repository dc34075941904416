"""The tasks dataset's rows (`apigen-mt export RUN --format tasks`) and the `TaskEnv` each row rebuilds.

A row is one accepted blueprint as RL frameworks load a task:

- `prompt`: the messages a rollout starts from, [system: the domain's policy, user: ""]. The user's text is
  empty because the simulated human writes the first message when the episode starts (`TaskEnv.reset`); the
  adapter puts it there (TRL appends `reset()`'s text to the last prompt message).
- `tools`: the domain's tools, OpenAI `tools=` entries as JSON text (each tool's schema differs).
- `task_id`, `domain`: the blueprint's id and domain.
- `info`: JSON text of `TaskInfo`, everything the reward needs to rebuild the episode without the run folder:
  the blueprint (instruction, scenario, user id, ground-truth actions and outputs, provenance), the digest of
  the database after the ground truth, and the data it runs on (`data_source`: "seeded", or the name of the
  run's --data-dir folder, whose database digest `db_digest` is checked when the row is rebuilt).

TRL reads `prompt` (and gives every column to the environment's `reset`); verifiers' datasets have the same
`prompt` and `info` columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apigen_mt.blueprints.personas import persona_of
from apigen_mt.simulators.chat import ChatModel
from apigen_mt.simulators.domain import DataError, Domain, get_domain
from apigen_mt.simulators.episode import EpisodeSettings
from apigen_mt.simulators.human import HumanSettings
from apigen_mt.simulators.state import JSON, state_digest
from apigen_mt.simulators.types import Blueprint
from apigen_mt.validators.execution import replay_blueprint
from apigen_mt.validators.task_env import COMPONENTS, TaskEnv

SEEDED = "seeded"
# The adapters' reward functions are the verifier's reward, then each component: train on the reward alone, log
# the components.
REWARD_WEIGHTS = [1.0] + [0.0] * len(COMPONENTS)
COLUMNS = ("prompt", "tools", "task_id", "domain", "info")


class TaskRowError(ValueError):
    """A tasks-dataset row cannot rebuild its episode; the message names the row and what to do."""


class TaskInfo(BaseModel):
    """What a row's reward needs to rebuild its episode (the row's `info` column)."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(description="the blueprint's id")
    domain: str = Field(description="the domain whose tools, policy and database the episode uses")
    blueprint: Blueprint = Field(description="the task: instruction, scenario, user id, ground-truth actions, outputs")
    ground_truth_digest: str = Field(description="SHA-256 digest of the database after the ground-truth actions")
    data_source: str = Field(description="'seeded' (the domain's own data) or the name of the run's data folder")
    db_digest: str = Field(description="digest of the database the episode starts from, checked on rebuild")


def task_row(domain: Domain, db: JSON, policy: str, blueprint: Blueprint, *, data_source: str) -> dict[str, Any]:
    """One accepted blueprint as a tasks-dataset row (the ground truth is replayed once for its digest)."""
    info = TaskInfo(
        task_id=str(blueprint.id),
        domain=domain.name,
        blueprint=blueprint,
        ground_truth_digest=state_digest(replay_blueprint(domain, db, blueprint).final),
        data_source=data_source,
        db_digest=state_digest(db),
    )
    return {
        "prompt": [{"role": "system", "content": policy}, {"role": "user", "content": ""}],
        "tools": json.dumps([spec.openai() for spec in domain.toolkit.specs()]),
        "task_id": info.task_id,
        "domain": domain.name,
        "info": info.model_dump_json(),
    }


def task_info(row: Mapping[str, Any]) -> TaskInfo:
    """The row's `info` (JSON text, or the dict a framework decoded it to); TaskRowError naming the problem."""
    raw = row.get("info")
    where = f"task {row.get('task_id')!r}" if row.get("task_id") else "a tasks row"
    if raw is None:
        raise TaskRowError(f"{where} has no 'info' column; use a dataset of `apigen-mt export RUN --format tasks`")
    try:
        return TaskInfo.model_validate_json(raw) if isinstance(raw, str) else TaskInfo.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "info"
        raise TaskRowError(f"{where}: info.{field}: {first['msg']}") from None


def task_env(
    row: Mapping[str, Any] | TaskInfo,
    human_model: ChatModel,
    *,
    data_dir: str | Path | None = None,
    human_settings: HumanSettings | None = None,
    episode_settings: EpisodeSettings | None = None,
    judge: ChatModel | None = None,
) -> TaskEnv:
    """The episode a row describes, played with `human_model` as the simulated human (persona as in Phase 2).

    A row made from a run's data folder needs that folder again as `data_dir` (its database digest must match)."""
    info = row if isinstance(row, TaskInfo) else task_info(row)
    where = f"task {info.task_id!r}"
    if info.data_source != SEEDED and data_dir is None:
        raise TaskRowError(
            f"{where} runs on the data folder {info.data_source!r}; give that folder as data_dir (--data-dir)"
        )
    try:
        domain = get_domain(info.domain)
        db = domain.load(None if info.data_source == SEEDED else data_dir)
    except KeyError as exc:
        raise TaskRowError(f"{where}: {exc.args[0]}") from None
    except DataError as exc:
        raise TaskRowError(f"{where}: {exc}") from None
    if state_digest(db) != info.db_digest:
        raise TaskRowError(
            f"{where}: the database differs from the one the task was made on ({info.data_source}); give the same "
            "data folder the run used"
        )
    return TaskEnv(
        domain,
        db,
        info.blueprint,
        human_model,
        policy=domain.policy_text(None if info.data_source == SEEDED else data_dir),
        persona=persona_of(info.blueprint),
        human_settings=human_settings or HumanSettings(),
        episode_settings=episode_settings or EpisodeSettings(),
        ground_truth_digest=info.ground_truth_digest,
        judge=judge,
    )
