"""One trial: play an episode for a blueprint, verify it, and make the row the trajectory shards store.

The same function serves every way trials run (Ray worker actors, benchmarks, tests), so a row looks
the same whoever produced it. Columns: `apigen_mt.pipeline.store.shards.TRAJECTORY_SCHEMA`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from apigen_mt.blueprints.personas import persona_of
from apigen_mt.pipeline.engines.openai_backend import fallbacks_in_force
from apigen_mt.pipeline.store.manifest import utc_now
from apigen_mt.simulators.agent import Agent, AgentSettings
from apigen_mt.simulators.chat import ChatModel, ModelUnavailable
from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.episode import Episode, EpisodeSettings, run_episode
from apigen_mt.simulators.human import HumanSettings, HumanSimulator
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Blueprint
from apigen_mt.validators.sampling import trajectory_signature
from apigen_mt.validators.task_env import judge_episode


class TrialSettings(BaseModel):
    """How each trial plays: the agent's and the human's settings and the episode's limits."""

    model_config = ConfigDict(extra="forbid")

    agent: AgentSettings = Field(default_factory=AgentSettings)
    human: HumanSettings = Field(default_factory=HumanSettings)
    episode: EpisodeSettings = Field(default_factory=EpisodeSettings)


@dataclass(frozen=True)
class TrialModels:
    agent: ChatModel
    human: ChatModel
    judge: ChatModel


@dataclass(frozen=True)
class TrialItem:
    """One (blueprint, trial) to play. `attempt` counts this run's plays of it after engine failures (1 = first);
    `earlier_attempts` those of earlier runs that failed for a system reason (the row's `attempt` counts on)."""

    blueprint: Blueprint
    trial: int
    ground_truth_digest: str | None
    attempt: int = 1
    earlier_attempts: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (str(self.blueprint.id), self.trial)


def stable_seed(*parts: str | int) -> int:
    """A 32-bit seed made of `parts` joined by "/", the same in every run and process (unlike `hash`), so a rerun
    samples as the first run did: a trial's is (blueprint id, trial), a proposal's (config seed, domain, index)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "big")


def _with_seed(settings: BaseModel, seed: int) -> Any:
    return settings if getattr(settings, "seed", None) is not None else settings.model_copy(update={"seed": seed})


async def play_trial(
    domain: Domain, db: JSON, policy: str, item: TrialItem, models: TrialModels, settings: TrialSettings
) -> dict[str, Any]:
    """Play and verify one trial; the shard row. A dead engine gives a `failed` row marked for retry, a backend
    that raises a `failed` row."""
    blueprint = item.blueprint
    seed = stable_seed(str(blueprint.id), item.trial)
    tools = domain.toolkit.specs()
    agent = Agent(models.agent, policy, tools, _with_seed(settings.agent.for_trial(item.trial), seed))
    human = HumanSimulator(
        models.human,
        blueprint.instruction,
        persona=persona_of(blueprint),
        judge=models.judge,
        settings=_with_seed(settings.human, seed + 1),
        scenario=blueprint.scenario,
    )
    started = time.perf_counter()
    try:
        episode = await run_episode(agent, human, domain.environment(db), settings.episode)
    except ModelUnavailable as exc:
        return unavailable_row(domain, item, models, f"engine unavailable: {exc}", time.perf_counter() - started)
    except Exception as exc:
        # A backend that raises breaks the ChatModel contract (errors come back as answers): this trial
        # fails with the reason, and the run, which would otherwise stop, goes on with the others.
        logging.getLogger(__name__).exception("trial %s/%d raised", blueprint.id, item.trial)
        reason = f"model_error: the episode raised {type(exc).__name__}: {exc}"
        return _failed_row(domain, item, models, reason, "model_error", time.perf_counter() - started)
    return _verified_row(domain, db, item, models, episode, time.perf_counter() - started)


def _verified_row(
    domain: Domain, db: JSON, item: TrialItem, models: TrialModels, episode: Episode, duration: float
) -> dict[str, Any]:
    judged = judge_episode(domain, db, item.blueprint, episode, ground_truth_digest=item.ground_truth_digest)
    verdict, messages, status = judged.verdict, judged.messages, judged.status
    row = _base_row(domain, item, models, duration)
    agent_prompt, agent_completion = episode.tokens("agent")
    human_prompt, human_completion = episode.tokens("human")
    row.update(
        status=status,
        # A model stuck on one broken reply repeats its problem every turn: each distinct problem once.
        reasons=judged.reasons
        + [f"format: {problem}" for problem in dict.fromkeys(episode.problems) if status != "accepted"],
        attribution=judged.attribution,
        reward=verdict.reward,
        state_match=verdict.state_match,
        outputs_match=verdict.outputs_match,
        terminated=verdict.terminated,
        policy_violations=list(verdict.policy_violations),
        human_errors=list(verdict.human_errors),
        termination=episode.termination,
        messages=json.dumps(messages, allow_nan=False),
        signature=trajectory_signature(messages),
        turns=episode.agent_turns,
        tool_calls=episode.tool_calls,
        prompt_tokens=agent_prompt,
        completion_tokens=agent_completion,
        human_prompt_tokens=human_prompt,
        human_completion_tokens=human_completion,
        turn_stats=json.dumps([turn.record() for turn in episode.turns]),
        repairs=list(episode.repairs),
        warnings=list(verdict.warnings),
    )
    return row


def unavailable_row(
    domain: Domain, item: TrialItem, models: TrialModels, reason: str, duration: float
) -> dict[str, Any]:
    """The row of a trial its engine or worker could not finish: retried while attempts remain, else stored."""
    attempt = item.earlier_attempts + item.attempt
    return _failed_row(domain, item, models, f"{reason} (attempt {attempt})", "engine_unavailable", duration)


def _failed_row(
    domain: Domain, item: TrialItem, models: TrialModels, reason: str, termination: str, duration: float
) -> dict[str, Any]:
    row = _base_row(domain, item, models, duration)
    row.update(
        status="failed",
        reasons=[reason],
        attribution="system",
        termination=termination,
        messages="[]",
        signature="",
        turn_stats="[]",
    )
    return row


def _base_row(domain: Domain, item: TrialItem, models: TrialModels, duration: float) -> dict[str, Any]:
    blueprint = item.blueprint
    return {
        "blueprint_id": str(blueprint.id),
        "domain": domain.name,
        "trial": item.trial,
        "attempt": item.earlier_attempts + item.attempt,
        "reward": 0.0,
        "state_match": False,
        "outputs_match": False,
        "terminated": False,
        "policy_violations": [],
        "human_errors": [],
        "tools": json.dumps([spec.openai() for spec in domain.toolkit.specs()]),
        "blueprint": blueprint.model_dump_json(),
        "turns": 0,
        "tool_calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "human_prompt_tokens": 0,
        "human_completion_tokens": 0,
        "agent_model": models.agent.model_id,
        "human_model": models.human.model_id,
        "duration_s": round(duration, 4),
        "finished_at": utc_now(),
        "fallbacks": fallbacks_in_force([models.agent, models.human, models.judge]),
    }


def needs_retry(row: dict[str, Any]) -> bool:
    return row.get("termination") == "engine_unavailable"
