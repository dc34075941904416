"""A verifiers multi-turn environment over the tasks dataset, its rubric our verifier's reward.

    env = load_environment("RUN/dataset-tasks", human_model=human)     # a verifiers MultiTurnEnv
    state = await env.rollout(row, client, "policy")                   # any verifiers client plays the agent

verifiers 0.3 (`import verifiers as vf`: its classic stack, `MultiTurnEnv` and `Rubric`); its 0.4 release keeps
only the new `verifiers.v1` stack (tasksets and agent harnesses), hence the extra's `<0.4`.

How verifiers' protocol maps onto an episode (`TaskEnv`):
- The dataset is the tasks dataset (`prompt`, `info`, ...; verifiers decodes `info`). `setup_state` rebuilds the
  row's episode (`pipeline.rl.tasks.task_env`) and starts it: the rollout's prompt becomes the episode's first
  messages, the policy and the simulated human's opening (the row's prompt has an empty user turn).
- Each model turn is one step of the episode: its tool calls run (tool messages come back), or its text goes
  to the human (the human's reply comes back), as in Phase 2; verifiers' model never has to stop calling tools
  for the human to speak. The episode's own endings (the human's ###STOP###, a terminating tool, max_turns,
  repeated calls) end the rollout, its last observation the final environment response.
- The rubric is the verifier's (`TaskEnv.reward()`): `reward` (weight 1) and each component (state, outputs,
  terminated, policy, human) as a metric (weight 0). A rollout verifiers stops before the episode ends (its
  model failed, the prompt outgrew the context) is not a finished episode: every value is 0, as tau-bench
  scores an unfinished conversation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import verifiers as vf
from verifiers.utils.message_utils import normalize_messages

from apigen_mt.pipeline.rl.tasks import REWARD_WEIGHTS, task_env
from apigen_mt.simulators.chat import ChatModel
from apigen_mt.simulators.episode import EpisodeSettings
from apigen_mt.simulators.human import HumanSettings
from apigen_mt.simulators.types import Message
from apigen_mt.validators.task_env import COMPONENTS, RewardBreakdown, TaskEnv

TASK = "apigen_task"  # the state key of the rollout's TaskEnv


class TaskMultiTurnEnv(vf.MultiTurnEnv):
    """Each rollout one episode of its row's task, the simulated human answering the model's text."""

    def __init__(self, *, task_options: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(rubric=task_rubric(), **kwargs)
        self._task_options = dict(task_options)

    async def setup_state(self, state: vf.State) -> vf.State:
        task = task_env({"task_id": state["info"].get("task_id"), "info": state["info"]}, **self._task_options)
        observation = await task.reset()
        state[TASK] = task
        state["prompt"] = normalize_messages([_vf_message(m) for m in observation.messages], field_name="prompt")
        if observation.done:  # the human's model failed before its first message
            state["final_env_response"] = []
        return state

    async def env_response(self, messages: vf.Messages, state: vf.State, **kwargs: Any) -> vf.Messages:
        observation = await state[TASK].step(_openai_assistant(messages[-1]))
        replies = [_vf_message(m) for m in observation.messages]
        if observation.done:
            state["final_env_response"] = replies
        return replies


def task_rubric() -> vf.Rubric:
    """The verifier's reward (weight 1) and its components as metrics (weight 0)."""
    funcs = [_scorer("reward", lambda breakdown: breakdown.reward)]
    funcs += [_scorer(name, lambda breakdown, name=name: breakdown.components[name]) for name in COMPONENTS]
    return vf.Rubric(funcs=funcs, weights=list(REWARD_WEIGHTS))


def _scorer(name: str, value: Callable[[RewardBreakdown], float]) -> Callable[..., Any]:
    async def score(state: vf.State, **kwargs: Any) -> float:
        task: TaskEnv | None = state.get(TASK)
        return value(task.reward()) if task is not None and task.done else 0.0

    score.__name__ = score.__qualname__ = name
    return score


def load_environment(
    dataset: Any,
    *,
    human_model: ChatModel,
    data_dir: str | Path | None = None,
    human_settings: HumanSettings | None = None,
    episode_settings: EpisodeSettings | None = None,
    judge: ChatModel | None = None,
    **kwargs: Any,
) -> TaskMultiTurnEnv:
    """The verifiers environment of a tasks dataset: a `datasets.Dataset` of its rows, or the folder `apigen-mt
    export RUN --format tasks` wrote (RUN/dataset-tasks); `human_model` is the simulated human. The tools are
    the dataset's domains' (one domain per environment); `kwargs` go to `vf.MultiTurnEnv`."""
    if isinstance(dataset, str | Path):
        from datasets import load_from_disk

        dataset = load_from_disk(str(dataset))["train"]
    domains = sorted(set(dataset["domain"]))
    if len(domains) != 1:
        raise ValueError(
            f"the tasks span the domains {', '.join(domains) or '(none)'}; give load_environment one domain's rows "
            "(dataset.filter(lambda row: row['domain'] == NAME))"
        )
    tool_defs = [vf.Tool(**spec["function"]) for spec in json.loads(dataset[0]["tools"])]
    return TaskMultiTurnEnv(
        dataset=dataset,
        tool_defs=tool_defs,
        task_options={
            "human_model": human_model,
            "data_dir": data_dir,
            "human_settings": human_settings,
            "episode_settings": episode_settings,
            "judge": judge,
        },
        **kwargs,
    )


def _vf_message(message: Message) -> dict[str, Any]:
    """An episode's message as verifiers takes it (its tool calls' arguments stay JSON text)."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content or ""}
    if message.role == "assistant":
        calls = [
            {"id": call.id, "name": call.function["name"], "arguments": call.function["arguments"]}
            for call in message.tool_calls or []
        ]
        return {"role": "assistant", "content": message.content, "tool_calls": calls or None}
    return {"role": message.role, "content": message.content or ""}


def _openai_assistant(message: Any) -> dict[str, Any]:
    """verifiers' assistant message as the OpenAI dict `TaskEnv.step` takes."""
    calls = [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in message.get("tool_calls") or []
    ]
    content = message.get("content")
    return {"role": "assistant", "content": content if isinstance(content, str) else None, "tool_calls": calls}
