"""The episode loop: a simulated human and an agent talk while the agent's tool calls run in an environment.

`run_episode` asks the `Agent` for each turn and plays it in an `EpisodeEnv`
(`apigen_mt.simulators.episode_env`), which owns the rest of an episode: the human's turns, the tool calls and
every ending (listed there). One implementation of an episode serves Phase 2 and RL trainers alike. Pure async
over the `ChatModel` protocol: deterministic with the scripted double, no Ray, no files. The conversation is kept
as the agent sees it (OpenAI messages, the policy as system prompt first), which is also what is stored and
verified.

    episode = await run_episode(agent, human, env, EpisodeSettings(max_turns=30))
    episode.termination   # "user_stop", "terminating_tool", "max_turns", ...

Each agent turn is run and stored as `agent.repair_turn` settles it (one call per turn, text beside calls);
what that changed is listed in `Episode.repairs`, its token counts in `Episode.turns`. Thinking is stored in a
message's `reasoning_content`, never in its `content`. A dead engine (`ModelUnavailable`) propagates, so that the
run driver retries the episode.
"""

from __future__ import annotations

from collections.abc import Sequence

from apigen_mt.simulators.agent import Agent, assistant_message, repair_turn
from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.episode_env import (
    Episode,
    EpisodeEnv,
    EpisodeSettings,
    EpisodeStateError,
    Observation,
    StepInputError,
    Termination,
    TurnStats,
)
from apigen_mt.simulators.human import HumanSimulator
from apigen_mt.simulators.types import Message

# The episode's types are defined beside the environment that fills them; they are known from here too.
__all__ = [
    "Episode",
    "EpisodeEnv",
    "EpisodeStateError",
    "EpisodeSettings",
    "Observation",
    "StepInputError",
    "Termination",
    "TurnStats",
    "conversation_records",
    "run_episode",
]


async def run_episode(agent: Agent, human: HumanSimulator, env: Environment, settings: EpisodeSettings) -> Episode:
    """Play one episode to its end. Raises only `ModelUnavailable` (a dead engine), which the caller retries."""
    episode_env = EpisodeEnv(env, human, agent.policy, settings)
    observation = await episode_env.reset()
    episode = episode_env.episode
    number = 0
    while not observation.done:
        number += 1
        turn = await agent.act(episode.messages[1:])
        episode.turns.append(
            TurnStats(
                "agent",
                turn.prompt_tokens,
                turn.completion_tokens,
                turn.latency_s,
                cached_prompt_tokens=turn.cached_prompt_tokens,
            )
        )
        if turn.error is not None:
            observation = episode_env.agent_failed(turn.error)
            continue
        if turn.problem:
            episode.problems.append(turn.problem)
        turn, repairs = repair_turn(turn, agent.settings)
        episode.repairs.extend(f"agent turn {number}: {repair}" for repair in repairs)
        observation = await episode_env.step(assistant_message(turn, episode_env.call_ids(len(turn.tool_calls))))
    return episode


def conversation_records(messages: Sequence[Message]) -> list[dict[str, object]]:
    """The episode's messages as plain OpenAI dicts (what shards store and `apigen-mt verify` reads)."""
    return [message.openai() for message in messages]
