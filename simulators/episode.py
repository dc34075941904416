"""The episode loop: a simulated human and an agent talk while the agent's tool calls run in an environment.

Pure async over the `ChatModel` protocol (through `Agent` and `HumanSimulator`) and an `Environment`:
deterministic with the scripted double, no Ray, no files. The conversation is kept as the agent sees it
(OpenAI messages, the policy as system prompt first), which is also what is stored and verified.

    episode = await run_episode(agent, human, env, EpisodeSettings(max_turns=30))
    episode.termination   # "user_stop", "terminating_tool", "max_turns", ...

An episode ends on the first of:
- `user_stop`: the human's message contains ###STOP###;
- `user_transfer`: the human's message contains ###TRANSFER### (tau2-bench's: the agent handed it to a
  human agent);
- `user_out_of_scope`: the human's message contains ###OUT-OF-SCOPE### (tau2-bench's: the chat cannot go
  on without something its instruction does not cover);
- `terminating_tool`: a tool such as `transfer_to_human_agents` ran;
- `max_turns`: the agent took `max_turns` turns (a turn is one completion: calls or a reply);
- `repeated_call`: the agent made the same call (name and arguments) `max_repeated_calls` times in a row;
- `model_error`: the agent's or the human's backend answered a request with an error (`error_role` says
  whose);
- `human_unusable`: the human model kept giving empty, role-breaking or malformed turns after its bounded
  retries (a failure of the simulated human, not of the system);
- `context_overflow`: the conversation no longer fits the model's context.
A dead engine is not an ending: `ModelUnavailable` propagates so that the run driver retries the episode.

Each agent turn is run and stored as `agent.repair_turn` settles it (one call per turn, text beside calls);
what that changed is listed in `Episode.repairs`. Thinking is stored in a message's `reasoning_content`,
never in its `content`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from apigen_mt.simulators.agent import Agent, AgentTurn, assistant_message, repair_turn
from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.human import HumanSimulator, HumanTurn
from apigen_mt.simulators.human_prompts import HumanEnding
from apigen_mt.simulators.types import Message, ToolCall

Termination = Literal[
    "user_stop",
    "user_transfer",
    "user_out_of_scope",
    "terminating_tool",
    "max_turns",
    "repeated_call",
    "model_error",
    "human_unusable",
    "context_overflow",
]
_HUMAN_ENDINGS: dict[HumanEnding, Termination] = {
    "stop": "user_stop",
    "transfer": "user_transfer",
    "out_of_scope": "user_out_of_scope",
}

# Backends phrase a prompt that outgrew the context differently; these fragments cover vLLM's own check
# (our actor's message), vLLM's server and OpenAI's API.
_CONTEXT_MARKERS = ("model's context is", "maximum context length", "context_length_exceeded", "context length")


class EpisodeSettings(BaseModel):
    """When an episode is cut off: too many agent turns, or an agent repeating one call."""

    model_config = ConfigDict(extra="forbid")

    max_turns: int = Field(
        30,
        ge=1,
        le=1000,
        description="agent turns (completions) before the episode is cut off; each adds to one context",
    )
    max_repeated_calls: int = Field(
        3,
        ge=2,
        le=1000,
        description="the same call this many times in a row ends the episode (an agent stuck in a loop)",
    )


@dataclass(frozen=True)
class TurnStats:
    """One completion of the episode: who produced it, its token counts and how long it took."""

    role: Literal["agent", "human"]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int = 0
    candidates: int = 1
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from the engine's prefix cache

    def record(self) -> dict[str, object]:
        return {
            "role": self.role,
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": round(self.latency_s, 4),
            "retries": self.retries,
            "candidates": self.candidates,
        }


@dataclass
class Episode:
    """What happened: the conversation, why it ended, and per-turn statistics."""

    messages: list[Message]
    termination: Termination | None = None
    error: str | None = None
    error_role: Literal["agent", "human"] | None = None
    turns: list[TurnStats] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # agent replies that broke the tool-call format
    repairs: list[str] = field(default_factory=list)  # what was changed in agent turns, each naming its turn

    @property
    def agent_turns(self) -> int:
        return sum(1 for turn in self.turns if turn.role == "agent")

    @property
    def tool_calls(self) -> int:
        return sum(len(message.tool_calls or []) for message in self.messages if message.role == "assistant")

    def tokens(self, role: Literal["agent", "human"]) -> tuple[int, int]:
        """(prompt, completion) tokens spent by one role over the episode."""
        mine = [turn for turn in self.turns if turn.role == role]
        return sum(turn.prompt_tokens for turn in mine), sum(turn.completion_tokens for turn in mine)

    def human_texts(self) -> list[str]:
        return [message.content or "" for message in self.messages if message.role == "user"]

    def agent_texts(self) -> list[str]:
        return [
            message.content or "" for message in self.messages if message.role == "assistant" and not message.tool_calls
        ]


def _overflowed(error: str) -> bool:
    lowered = error.lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


class _Loop:
    """The state of one running episode; `run_episode` is its only user."""

    def __init__(self, agent: Agent, human: HumanSimulator, env: Environment, settings: EpisodeSettings) -> None:
        self.agent, self.human, self.env, self.settings = agent, human, env, settings
        self.episode = Episode(messages=[Message(role="system", content=agent.policy)])
        self.last_call: str | None = None
        self.repeats = 0

    def end(
        self, termination: Termination, error: str | None = None, role: Literal["agent", "human"] | None = None
    ) -> Episode:
        self.episode.termination, self.episode.error, self.episode.error_role = termination, error, role
        return self.episode

    async def human_says(self) -> Episode | None:
        """Ask the human for the next message; the finished episode when that ends it."""
        turn: HumanTurn = await self.human.respond(self.episode.messages)
        self.episode.turns.append(
            TurnStats(
                "human",
                turn.prompt_tokens,
                turn.completion_tokens,
                turn.latency_s,
                turn.retries,
                len(turn.candidates) or 1,
                turn.cached_prompt_tokens,
            )
        )
        if turn.error is not None:
            if turn.unusable:
                return self.end("human_unusable", turn.error, "human")
            return self.end("context_overflow" if _overflowed(turn.error) else "model_error", turn.error, "human")
        self.episode.messages.append(Message(role="user", content=turn.text, reasoning_content=turn.reasoning))
        return None if turn.ending is None else self.end(_HUMAN_ENDINGS[turn.ending])

    def run_calls(self, turn: AgentTurn) -> Episode | None:
        """Run the turn's calls in order; each result goes back as a tool message."""
        call_ids = [f"call_{self.episode.tool_calls + offset}" for offset in range(len(turn.tool_calls))]
        self.episode.messages.append(assistant_message(turn, call_ids))
        for call, call_id in zip(turn.tool_calls, call_ids):
            result = self.env.step(call)
            self.episode.messages.append(
                Message(role="tool", tool_call_id=call_id, name=call.name, content=result.observation)
            )
            if result.terminated:
                return self.end("terminating_tool")
            key = _call_key(call)
            self.repeats = self.repeats + 1 if key == self.last_call else 1
            self.last_call = key
            if self.repeats >= self.settings.max_repeated_calls:
                return self.end(
                    "repeated_call",
                    f"{call.name} was called {self.repeats} times in a row with the same arguments",
                    "agent",
                )
        return None

    async def run(self) -> Episode:
        ended = await self.human_says()
        if ended is not None:
            return ended
        for number in range(1, self.settings.max_turns + 1):
            turn = await self.agent.act(self.episode.messages[1:])
            self.episode.turns.append(
                TurnStats(
                    "agent",
                    turn.prompt_tokens,
                    turn.completion_tokens,
                    turn.latency_s,
                    cached_prompt_tokens=turn.cached_prompt_tokens,
                )
            )
            if turn.error is not None:
                return self.end("context_overflow" if _overflowed(turn.error) else "model_error", turn.error, "agent")
            if turn.problem:
                self.episode.problems.append(turn.problem)
            turn, repairs = repair_turn(turn, self.agent.settings)
            self.episode.repairs.extend(f"agent turn {number}: {repair}" for repair in repairs)
            if turn.tool_calls:
                ended = self.run_calls(turn)
            else:
                self.episode.messages.append(assistant_message(turn, []))
                ended = await self.human_says()
            if ended is not None:
                return ended
        return self.end("max_turns")


async def run_episode(agent: Agent, human: HumanSimulator, env: Environment, settings: EpisodeSettings) -> Episode:
    """Play one episode to its end. Raises only `ModelUnavailable` (a dead engine), which the caller retries."""
    return await _Loop(agent, human, env, settings).run()


def conversation_records(messages: Sequence[Message]) -> list[dict[str, object]]:
    """The episode's messages as plain OpenAI dicts (what shards store and `apigen-mt verify` reads)."""
    return [message.openai() for message in messages]
