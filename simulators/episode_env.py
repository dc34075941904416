"""An episode as a step-by-step environment: the human's turns and the tool calls, the agent's turns left to the caller.

`EpisodeEnv` owns everything an episode does except asking the agent; `run_episode`
(`apigen_mt.simulators.episode`) is its client that asks an `Agent`, and an RL trainer (through
`apigen_mt.validators.task_env.TaskEnv`) is another. Pure async over the human's `ChatModel` and an
`Environment`: no Ray, no files.

    env = EpisodeEnv(domain.environment(db), human, domain.policy, EpisodeSettings(max_turns=30))
    observation = await env.reset()          # [system (the policy), the human's first message] and the tools
    observation = await env.step({"role": "assistant", "content": "How can I help?"})
    observation.messages, observation.done   # the human's reply (or the tool results); whether it ended

One `step` is one agent turn: an assistant message (a `Message` or an OpenAI dict; a dict without a role is
taken as the assistant's). Its tool calls run in order and each result comes back as a tool message; a message
without calls is a reply, and the human answers it. The calls are stored and run as the verifier will replay
them (`simulators.trace.tool_calls_of`): argument text that is not a JSON object, an unknown tool or an entry
without a function becomes the environment's error observation, never an exception.

An episode ends on the first of:
- `user_stop`: the human's message contains ###STOP###;
- `user_transfer`: the human's message contains ###TRANSFER### (tau2-bench's: the agent handed it to a
  human agent);
- `user_out_of_scope`: the human's message contains ###OUT-OF-SCOPE### (tau2-bench's: the chat cannot go
  on without something its instruction does not cover);
- `terminating_tool`: a tool such as `transfer_to_human_agents` ran;
- `max_turns`: the agent took `max_turns` turns (steps);
- `repeated_call`: the agent made the same call (name and arguments) `max_repeated_calls` times in a row;
- `model_error`: the agent's (`agent_failed`) or the human's backend answered a request with an error
  (`error_role` says whose);
- `human_unusable`: the human model kept giving empty, role-breaking or malformed turns after its bounded
  retries (a failure of the simulated human, not of the system);
- `context_overflow`: the conversation no longer fits the model's context.
A dead engine is not an ending: `ModelUnavailable` propagates so that the caller retries the episode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.human import HumanSimulator, HumanTurn
from apigen_mt.simulators.human_prompts import HumanEnding
from apigen_mt.simulators.trace import content_text, tool_calls_of
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall

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
    """What happened: the conversation, why it ended, and per-turn statistics.

    The environment records the human's turns; whoever asks the agent records the agent's turns, format
    problems and repairs here (an RL trainer that does not leaves them empty)."""

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


class Observation(BaseModel):
    """What the agent sees after `reset` or `step`: the new messages, the tools (on reset), whether it ended."""

    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)  # OpenAI `tools=` entries; given by reset only
    done: bool = False
    termination: Termination | None = None


class EpisodeStateError(RuntimeError):
    """A call the episode's state does not allow: a step before reset or after the end, a second reset."""


class StepInputError(ValueError):
    """What `step` was given is not an assistant message at all (not a model's bad output: the caller's)."""


def _overflowed(error: str) -> bool:
    lowered = error.lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


class EpisodeEnv:
    """One episode over `env` (its database copy) with `human`; the agent's turns come in through `step`."""

    def __init__(self, env: Environment, human: HumanSimulator, policy: str, settings: EpisodeSettings) -> None:
        self.env, self.human, self.policy, self.settings = env, human, policy, settings
        self._episode: Episode | None = None
        self._steps = 0
        self._last_call: str | None = None
        self._repeats = 0

    @property
    def episode(self) -> Episode:
        if self._episode is None:
            raise EpisodeStateError("the episode has not started: call reset() first")
        return self._episode

    @property
    def done(self) -> bool:
        return self._episode is not None and self._episode.termination is not None

    def call_ids(self, count: int) -> list[str]:
        """Ids for the next `count` tool calls: call_0, call_1, ... over the whole episode."""
        made = self.episode.tool_calls
        return [f"call_{made + offset}" for offset in range(count)]

    async def reset(self) -> Observation:
        """Start the episode: the policy as system message and the human's first message, with the tools."""
        if self._episode is not None:
            raise EpisodeStateError("an EpisodeEnv plays one episode and this one has started; build a new one")
        self._episode = Episode(messages=[Message(role="system", content=self.policy)])
        await self._human_says()
        return self._observed(list(self._episode.messages), tools=[spec.openai() for spec in self.env.tools])

    async def step(self, message: Message | Mapping[str, Any]) -> Observation:
        """Play one agent turn: run its tool calls, or give its reply to the human; what the agent sees next."""
        episode = self.episode
        if episode.termination is not None:
            raise EpisodeStateError(f"the episode has ended ({episode.termination}); step() takes no more turns")
        stored = self._assistant_message(message)
        episode.messages.append(stored)
        seen = len(episode.messages)
        self._steps += 1
        if stored.tool_calls:
            self._run_calls(stored)
        else:
            await self._human_says()
        if episode.termination is None and self._steps >= self.settings.max_turns:
            self._end("max_turns")
        return self._observed(episode.messages[seen:])

    def agent_failed(self, error: str) -> Observation:
        """End the episode on the agent backend's failure (`model_error`, or `context_overflow`)."""
        if self.episode.termination is not None:
            raise EpisodeStateError(f"the episode has ended ({self.episode.termination}); it cannot fail again")
        self._end("context_overflow" if _overflowed(error) else "model_error", error, "agent")
        return self._observed([])

    def _observed(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> Observation:
        termination = self.episode.termination
        return Observation(messages=messages, tools=tools or [], done=termination is not None, termination=termination)

    def _end(
        self, termination: Termination, error: str | None = None, role: Literal["agent", "human"] | None = None
    ) -> None:
        self.episode.termination, self.episode.error, self.episode.error_role = termination, error, role

    async def _human_says(self) -> None:
        """Ask the human for the next message; end the episode when that ends it."""
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
                self._end("human_unusable", turn.error, "human")
            else:
                self._end("context_overflow" if _overflowed(turn.error) else "model_error", turn.error, "human")
            return
        self.episode.messages.append(Message(role="user", content=turn.text, reasoning_content=turn.reasoning))
        if turn.ending is not None:
            self._end(_HUMAN_ENDINGS[turn.ending])

    def _run_calls(self, stored: Message) -> None:
        """Run the message's calls in order, as the verifier replays them; each result goes back as a tool message."""
        for entry, call in zip(stored.tool_calls or [], tool_calls_of(stored.openai())):
            result = self.env.step(call)
            self.episode.messages.append(
                Message(role="tool", tool_call_id=entry.id, name=call.name, content=result.observation)
            )
            if result.terminated:
                self._end("terminating_tool")
                return
            key = _call_key(call)
            self._repeats = self._repeats + 1 if key == self._last_call else 1
            self._last_call = key
            if self._repeats >= self.settings.max_repeated_calls:
                self._end(
                    "repeated_call",
                    f"{call.name} was called {self._repeats} times in a row with the same arguments",
                    "agent",
                )
                return

    def _assistant_message(self, message: Message | Mapping[str, Any]) -> Message:
        """The turn as it is stored, read leniently: a model wrote its parts, and a `Message` may hold anything."""
        if isinstance(message, Message):
            if message.role != "assistant":
                raise StepInputError(f"step() takes the agent's assistant message, got a {message.role!r} message")
            message = message.openai()
        if not isinstance(message, Mapping):
            raise StepInputError(f"step() takes an assistant message (Message or dict), got {type(message).__name__}")
        role = message.get("role", "assistant")
        if role != "assistant":
            raise StepInputError(f"step() takes the agent's assistant message, got role {role!r}")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise StepInputError(f"the assistant message's content must be text, got {type(content).__name__}")
        entries = message.get("tool_calls") or []
        if not isinstance(entries, list):
            raise StepInputError(f"the assistant message's tool_calls must be a list, got {type(entries).__name__}")
        reasoning = message.get("reasoning_content")
        calls = [_openai_call(entry, call_id) for entry, call_id in zip(entries, self.call_ids(len(entries)))]
        text = content_text({"content": content})
        return Message(
            role="assistant",
            # As `agent.assistant_message` stores a turn: blank text beside calls is no content, a reply is text.
            content=(text if text.strip() else None) if calls else text,
            tool_calls=calls or None,
            reasoning_content=reasoning if isinstance(reasoning, str) else None,
        )


def _openai_call(entry: Any, default_id: str) -> OpenAIToolCall:
    """One tool-call entry as stored: its id (or `default_id`), name and argument text, whatever the model wrote.

    What cannot be a call keeps its text under the arguments, so the environment answers it with an error."""
    entry = entry if isinstance(entry, Mapping) else {"function": {"name": "", "arguments": entry}}
    call_id = entry.get("id") if isinstance(entry.get("id"), str) and entry.get("id") else default_id
    function = entry.get("function")
    if not isinstance(function, Mapping):
        function = {"name": "", "arguments": function}
    name = function.get("name")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = "{}" if arguments is None else json.dumps(arguments, default=str)
    return OpenAIToolCall(id=call_id, function={"name": name if isinstance(name, str) else "", "arguments": arguments})
