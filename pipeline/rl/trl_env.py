"""TRL's `GRPOTrainer` in its environment mode (`environment_factory`), over the tasks dataset.

    from trl import GRPOConfig, GRPOTrainer
    environment = trl_environment("retail", human_model)      # a class; TRL makes one instance per rollout
    trainer = GRPOTrainer(
        model=MODEL_DIR, train_dataset=load_from_disk("RUN/dataset-tasks")["train"],
        environment_factory=environment, reward_funcs=reward_functions(),
        args=GRPOConfig(reward_weights=REWARD_WEIGHTS, ...),
    )

How TRL's protocol maps onto an episode (`TaskEnv`), as faithfully as it allows:
- TRL calls `reset(**row)` before each rollout; it rebuilds the row's episode (`pipeline.rl.tasks.task_env`) and
  returns the simulated human's first message, which TRL appends to the row's prompt (whose user text is empty).
- The environment's public methods are the tools TRL shows the model: the domain's tools, generated from their
  schemas (TRL reads a method's signature and docstring), and `reply_to_user(message)`. TRL ends a rollout when
  the model answers without a tool call, while our human answers every text reply; so talking to the human
  mid-rollout is the `reply_to_user` tool (stored in the episode as the plain text reply it stands for, the
  human's answer returned as the tool result), and the rollout's final text is the agent's last reply: the
  reward functions give it to the human (who may end the conversation) before scoring.
- TRL runs each call of a message separately: every call is one agent turn of the episode (one step), so
  `EpisodeSettings.max_turns` counts calls.
- The reward is the verifier's (`TaskEnv.reward()`): `reward_functions()` returns the benchmark reward and each
  component (state, outputs, terminated, policy, human) as its own function, logged by TRL as
  `rewards/<name>/mean`; `REWARD_WEIGHTS` trains on the reward alone. A rollout TRL cut off inside a tool
  call (its completion budget or `max_tool_calling_iterations`) has no final reply and its episode no end: it
  is unscorable (None: TRL leaves it out of the group's baseline).
- The human's model is async (a vLLM engine, an endpoint client); TRL calls environments synchronously, so the
  human's requests run on one event loop in a daemon thread, shared by every environment of the process.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from apigen_mt.pipeline.rl.tasks import REWARD_WEIGHTS, task_env
from apigen_mt.simulators.chat import ChatModel
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.episode import EpisodeSettings
from apigen_mt.simulators.human import HumanSettings
from apigen_mt.validators.task_env import COMPONENTS, RewardBreakdown, TaskEnv

REPLY_TOOL = "reply_to_user"
# The weights and component names live with the tasks and the verifier; a training script takes them from here.
__all__ = ["COMPONENTS", "REPLY_TOOL", "REWARD_WEIGHTS", "TaskEnvironment", "reward_functions", "trl_environment"]
_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict}

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on the process's background event loop and wait for its result."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="apigen-mt-rl-human", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coroutine, _loop).result()


class TaskEnvironment:
    """The base of `trl_environment`'s classes: one rollout's episode; the domain's tools are added per class."""

    _domain_name = ""
    _options: dict[str, Any] = {}

    def __init__(self) -> None:
        self._task: TaskEnv | None = None
        self._scored: RewardBreakdown | None = None
        self._unscorable = False

    def reset(self, **row: Any) -> str:
        """Start the row's episode; the human's first message (TRL appends it to the row's prompt)."""
        self._task = task_env(row, **self._options)
        if self._task.domain.name != self._domain_name:
            raise ValueError(
                f"task {row.get('task_id')!r} is a {self._task.domain.name} task and this environment serves "
                f"{self._domain_name}; give each domain its own environment (filter the dataset by its 'domain')"
            )
        self._scored, self._unscorable = None, False
        observation = _run(self._task.reset())
        # No user message when the human's model failed at once: the episode has ended and the rollout scores 0.
        return next((seen.content or "" for seen in observation.messages if seen.role == "user"), "")

    def reply_to_user(self, message: str) -> str:
        """Send a message to the user you are helping and return what the user answers.

        Args:
            message: what you say to the user
        """
        return self._step({"role": "assistant", "content": message})

    def _call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        call = {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments, default=str)}}
        return self._step({"role": "assistant", "content": None, "tool_calls": [call]})

    def _step(self, message: dict[str, Any]) -> str:
        task = self._started()
        if task.done:
            # TRL turns the error into the tool result the model sees.
            raise RuntimeError(f"the conversation has ended ({task.episode.termination}); answer without tools")
        observation = _run(task.step(message))
        return "\n".join(seen.content or "" for seen in observation.messages)

    def _score(self, completion: Sequence[Mapping[str, Any]]) -> RewardBreakdown | None:
        """The verifier's reward of this rollout, once: its final text reply goes to the human first."""
        task = self._started()
        if self._scored is None and not self._unscorable:
            last = completion[-1] if completion else {}
            if not task.done and last.get("role") == "assistant" and not last.get("tool_calls"):
                _run(task.step({"role": "assistant", "content": last.get("content") or ""}))
            if task.done:
                self._scored = task.reward()
            else:
                self._unscorable = True
        return self._scored

    def _started(self) -> TaskEnv:
        if self._task is None:
            raise RuntimeError("the environment has no episode: TRL calls reset(**row) before a rollout")
        return self._task


def trl_environment(
    domain: str,
    human_model: ChatModel,
    *,
    data_dir: str | Path | None = None,
    human_settings: HumanSettings | None = None,
    episode_settings: EpisodeSettings | None = None,
    judge: ChatModel | None = None,
) -> type[TaskEnvironment]:
    """A `TaskEnvironment` class for `domain`'s tasks, for `GRPOTrainer(environment_factory=...)`: the domain's
    tools as methods, `human_model` as the simulated human (`data_dir`: the run's data folder, if it had one)."""
    found = get_domain(domain)
    methods: dict[str, Any] = {
        "_domain_name": found.name,
        "_options": {
            "human_model": human_model,
            "data_dir": data_dir,
            "human_settings": human_settings,
            "episode_settings": episode_settings,
            "judge": judge,
        },
    }
    for spec in found.toolkit.specs():
        tool = spec.openai()["function"]
        if tool["name"] in vars(TaskEnvironment):
            raise ValueError(f"{found.name}'s tool {tool['name']!r} has the name of the environment's own method")
        methods[tool["name"]] = _tool_method(tool)
    return type(f"{found.name.title()}TaskEnvironment", (TaskEnvironment,), methods)


def _tool_method(tool: Mapping[str, Any]) -> Callable[..., str]:
    """A method TRL can show as `tool` (typed signature, Google docstring) that runs it in the episode."""
    name = tool["name"]
    parameters = tool.get("parameters") or {}
    properties: dict[str, Any] = parameters.get("properties") or {}
    required = set(parameters.get("required") or [])

    def call(self: TaskEnvironment, **arguments: Any) -> str:
        return self._call_tool(name, arguments)

    signature = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    lines = [_one_line(tool.get("description") or name), "", "Args:"]
    for argument, schema in properties.items():
        hint = _python_type(schema)
        optional = argument not in required
        annotations[argument] = hint | None if optional else hint
        signature.append(
            inspect.Parameter(
                argument,
                inspect.Parameter.KEYWORD_ONLY,
                default=None if optional else inspect.Parameter.empty,
                annotation=annotations[argument],
            )
        )
        described = _one_line(schema.get("description") or argument)
        if schema.get("enum"):  # transformers reads "(choices: [...])" at a description's end as the enum
            described += f" (choices: {json.dumps(schema['enum'])})"
        lines.append(f"    {argument}: {described}")
    annotations["return"] = str
    call.__name__ = call.__qualname__ = name
    call.__doc__ = "\n".join(lines if properties else lines[:1])
    call.__annotations__ = annotations
    call.__signature__ = inspect.Signature(signature, return_annotation=str)  # type: ignore[attr-defined]
    return call


def _python_type(schema: Mapping[str, Any]) -> Any:
    """The Python type transformers turns back into `schema`'s JSON type (arrays keep their items' type)."""
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return list[_python_type(items)] if isinstance(items, Mapping) and items.get("type") else list
    return _JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def reward_functions() -> list[Callable[..., list[float | None]]]:
    """TRL reward functions: the verifier's reward, then each component; one value per rollout (its environment).

    The first also logs each rollout's task, reward, components and termination (`log_extra`, column `verifier`)."""

    def reward(completions: list[Any], environments: list[TaskEnvironment], **kwargs: Any) -> list[float | None]:
        scored = [environment._score(completion) for environment, completion in zip(environments, completions)]
        log_extra = kwargs.get("log_extra")
        if log_extra is not None:
            log_extra("verifier", [_log_record(env, breakdown) for env, breakdown in zip(environments, scored)])
        return [None if breakdown is None else breakdown.reward for breakdown in scored]

    return [reward, *(_component(name) for name in COMPONENTS)]


def _component(name: str) -> Callable[..., list[float | None]]:
    def component(completions: list[Any], environments: list[TaskEnvironment], **kwargs: Any) -> list[float | None]:
        scored = [environment._score(completion) for environment, completion in zip(environments, completions)]
        return [None if breakdown is None else breakdown.components[name] for breakdown in scored]

    component.__name__ = component.__qualname__ = name
    return component


def _log_record(environment: TaskEnvironment, breakdown: RewardBreakdown | None) -> str:
    task = environment._started()
    record: dict[str, Any] = {"task_id": str(task.blueprint.id)}
    if breakdown is None:
        record["unscorable"] = "cut off by the trainer inside a tool call"
    else:
        record.update(
            reward=breakdown.reward,
            components=breakdown.components,
            termination=breakdown.termination,
            accepted=breakdown.accepted,
        )
    return json.dumps(record)
