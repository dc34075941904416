"""A task as an environment with a reward: what RL trainers and evaluation harnesses step through.

`TaskEnv` plays one blueprint's episode with the simulated human over any `ChatModel`, one agent turn per
`step` (`apigen_mt.simulators.episode_env.EpisodeEnv`), and scores it at the end with the trajectory verifier,
exactly as Phase 2 scores a trial: `judge_episode` is the one verdict on a played episode, shared with the trial
rows (`apigen_mt.pipeline.run.trials`).

    env = TaskEnv("retail", db, blueprint, human_model)
    observation = await env.reset()           # policy + the human's first message, and the tools
    while not observation.done:
        observation = await env.step(await my_policy(observation))
    env.reward().reward, env.reward().components   # 1.0; {"state": 1.0, "outputs": 1.0, ...}

`reset` may be called again for a new episode of the same task (a fresh copy of the database, a new human).
The reward is the benchmark's (tau-bench's: state, outputs, terminated); `accepted` is ours, stricter (no policy
violation, no error of the simulated human); the components are each 0 or 1, for multi-reward training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from apigen_mt.simulators.chat import ChatModel
from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.episode import conversation_records
from apigen_mt.simulators.episode_env import (
    Episode,
    EpisodeEnv,
    EpisodeSettings,
    EpisodeStateError,
    Observation,
    Termination,
)
from apigen_mt.simulators.human import HumanSettings, HumanSimulator, revealed_values
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Blueprint, Message
from apigen_mt.validators.trajectory import TrajectoryVerdict, verify_trajectory

Status = Literal["accepted", "rejected", "failed"]
Attribution = Literal["agent", "human", "system"]


@dataclass(frozen=True)
class EpisodeJudgement:
    """The verdict on a played episode and what it makes of the trial: status, whose fault, why."""

    verdict: TrajectoryVerdict
    messages: list[dict[str, Any]]  # the conversation as OpenAI dicts, as verified and stored
    status: Status
    attribution: Attribution | None
    reasons: list[str]


def judge_episode(
    domain: Domain, db: JSON, blueprint: Blueprint, episode: Episode, *, ground_truth_digest: str | None = None
) -> EpisodeJudgement:
    """Verify a finished episode against its blueprint on `db` (left untouched), with the values the human
    revealed that its instruction does not hold as its errors; a failed backend makes the trial the system's."""
    messages = conversation_records(episode.messages)
    human_errors = revealed_values(blueprint.instruction, episode.human_texts(), episode.agent_texts())
    verdict = verify_trajectory(
        domain, db, blueprint, messages, ground_truth_digest=ground_truth_digest, human_errors=human_errors
    )
    reasons = list(verdict.reasons)
    status: Status
    attribution: Attribution | None
    if episode.termination == "human_unusable":
        status, attribution = "rejected", "human"
        reasons.insert(0, f"the simulated human failed: {episode.error}")
    elif episode.termination in ("model_error", "context_overflow"):
        # The backend failed, so the verdict on the unfinished conversation says nothing about the agent.
        status, attribution = "failed", "system"
        reasons = [f"{episode.termination}: the {episode.error_role} model's backend failed: {episode.error}"]
    elif verdict.accepted:
        status, attribution = "accepted", None
    else:
        status, attribution = "rejected", verdict.attribution
        if episode.termination in ("max_turns", "repeated_call"):
            reasons.insert(
                0, f"the episode was cut off ({episode.termination}{': ' + episode.error if episode.error else ''})"
            )
    return EpisodeJudgement(verdict, messages, status, attribution, reasons)


# The names of `RewardBreakdown.components`, in the order trainers log them.
COMPONENTS = ("state", "outputs", "terminated", "policy", "human")


class RewardBreakdown(BaseModel):
    """The reward of one finished episode with its parts, for multi-reward training and for logs."""

    reward: float = Field(description="the benchmark's reward: 1.0 when state, outputs and terminated all hold")
    accepted: bool = Field(description="our stricter acceptance: reward 1.0, no policy violation, no human error")
    components: dict[str, float] = Field(
        description="state, outputs, terminated, policy (1 without violations), human (1 without human errors)"
    )
    termination: Termination | None = Field(description="why the episode ended")
    policy_violations: list[str] = Field(description="the domain's rules the episode broke, '[R1] ...'")
    human_errors: list[str] = Field(description="what the simulated human did wrong")
    reasons: list[str] = Field(description="why the episode is not accepted; empty when it is")
    attribution: Attribution | None = Field(description="whose fault a rejection or failure is; None when accepted")


class TaskEnv:
    """One task (a blueprint on a domain's database) as a step-by-step environment with the verifier's reward.

    `domain` is a `Domain` or its name; `blueprint` a `Blueprint`, its dict or its JSON text (as rows store it);
    `db` is read, never changed (each episode plays on its own copy). `persona` is the human's persona, if the
    task has one; a tau2 task's scenario reaches the human from the blueprint. A dead engine
    (`ModelUnavailable`) propagates from `reset` and `step`.
    """

    def __init__(
        self,
        domain: Domain | str,
        db: JSON,
        blueprint: Blueprint | Mapping[str, Any] | str,
        human_model: ChatModel,
        *,
        policy: str | None = None,
        persona: str | None = None,
        human_settings: HumanSettings = HumanSettings(),
        episode_settings: EpisodeSettings = EpisodeSettings(),
        ground_truth_digest: str | None = None,
        judge: ChatModel | None = None,
    ) -> None:
        self.domain = get_domain(domain) if isinstance(domain, str) else domain
        self.db = db
        self.blueprint = _blueprint(blueprint, self.domain)
        self.human_model, self.judge = human_model, judge
        self.policy = self.domain.policy if policy is None else policy
        self.persona = persona
        self.human_settings, self.episode_settings = human_settings, episode_settings
        self.ground_truth_digest = ground_truth_digest
        self._episode_env: EpisodeEnv | None = None
        self._reward: RewardBreakdown | None = None

    def __repr__(self) -> str:
        return f"TaskEnv({self.domain.name!r}, blueprint {self.blueprint.id!r}, human {self.human_model!r})"

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The domain's tools as OpenAI `tools=` entries."""
        return [spec.openai() for spec in self.domain.toolkit.specs()]

    @property
    def episode(self) -> Episode:
        return self._started().episode

    @property
    def done(self) -> bool:
        return self._episode_env is not None and self._episode_env.done

    async def reset(self) -> Observation:
        """Start a new episode of this task: the policy and the human's first message, and the tools."""
        human = HumanSimulator(
            self.human_model,
            self.blueprint.instruction,
            persona=self.persona,
            judge=self.judge,
            settings=self.human_settings,
            scenario=self.blueprint.scenario,
        )
        self._episode_env = EpisodeEnv(self.domain.environment(self.db), human, self.policy, self.episode_settings)
        self._reward = None
        return await self._episode_env.reset()

    async def step(self, message: Message | Mapping[str, Any]) -> Observation:
        """Play one agent turn (an assistant message or its OpenAI dict); what the agent sees next."""
        return await self._started().step(message)

    def agent_failed(self, error: str) -> Observation:
        """End the episode on the agent backend's failure: the episode is the system's, not the agent's."""
        return self._started().agent_failed(error)

    def reward(self) -> RewardBreakdown:
        """The verifier's reward of the finished episode, with its components."""
        episode = self.episode
        if episode.termination is None:
            raise EpisodeStateError("the episode has not ended: step until an observation is done, then ask reward()")
        if self._reward is None:
            judged = judge_episode(
                self.domain, self.db, self.blueprint, episode, ground_truth_digest=self.ground_truth_digest
            )
            verdict = judged.verdict
            # The ground truth's state is the same for every episode of the task: replayed once, then reused.
            self.ground_truth_digest = verdict.details["ground_truth_digest"]
            self._reward = RewardBreakdown(
                reward=verdict.reward,
                accepted=judged.status == "accepted",
                components={
                    "state": float(verdict.state_match),
                    "outputs": float(verdict.outputs_match),
                    "terminated": float(verdict.terminated),
                    "policy": float(not verdict.policy_violations),
                    "human": float(not verdict.human_errors),
                },
                termination=episode.termination,
                policy_violations=list(verdict.policy_violations),
                human_errors=list(verdict.human_errors),
                reasons=judged.reasons,
                attribution=judged.attribution,
            )
        return self._reward

    def _started(self) -> EpisodeEnv:
        if self._episode_env is None:
            raise EpisodeStateError("the task's episode has not started: call reset() first")
        return self._episode_env


def _blueprint(blueprint: Blueprint | Mapping[str, Any] | str, domain: Domain) -> Blueprint:
    if not isinstance(blueprint, Blueprint):
        try:
            if isinstance(blueprint, str):
                blueprint = Blueprint.model_validate_json(blueprint)
            else:
                blueprint = Blueprint.model_validate(blueprint)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "blueprint"
            raise ValueError(f"the task's blueprint is malformed at {where}: {first['msg']}") from None
    if blueprint.domain is not None and blueprint.domain != domain.name:
        raise ValueError(f"blueprint {blueprint.id!r} belongs to domain {blueprint.domain!r}, not {domain.name!r}")
    return blueprint
