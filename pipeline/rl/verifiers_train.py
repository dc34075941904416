"""Training a verifiers environment with TRL's GRPOTrainer, on CPU, with the local model being trained.

verifiers ships no trainer that runs on a CPU with a local Hugging Face model (its trainer, prime-rl, runs on
GPUs against vLLM servers). The nearest real path is TRL's `GRPOTrainer` with a `rollout_func` that plays each
rollout through the verifiers environment (`env.rollout`, then its rubric), the agent being the trainer's model
itself, generating in process (`LocalModelClient`):

    env = load_environment(tasks, human_model=human)
    trainer = GRPOTrainer(
        model=MODEL_DIR, train_dataset=task_keys(env), rollout_func=verifiers_rollout(env),
        reward_funcs=reward_functions(), args=GRPOConfig(reward_weights=REWARD_WEIGHTS, ...),
    )

TRL hands a rollout function the prompts only, so the dataset TRL holds (`task_keys`) has one prompt per task
naming it (its task id); the model never sees it: the rollout's prompt is the episode's. One rollout's tokens
are the model's turns and, between them, the environment's messages as the next turn's prompt renders them
(`env_mask` 0: not trained on); this needs a chat template that renders earlier turns as they were sampled.
The rewards are the rubric's, passed to TRL in the `verifier` field; `reward_functions()` relays the reward
and each component, logged by TRL as `rewards/<name>/mean`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import verifiers as vf
from verifiers.types import Response, ResponseMessage, ResponseTokens, Usage

from apigen_mt.pipeline.rl.tasks import REWARD_WEIGHTS
from apigen_mt.pipeline.rl.verifiers_env import TASK, TaskMultiTurnEnv
from apigen_mt.simulators.tool_parsers import get_parser
from apigen_mt.validators.task_env import COMPONENTS

# REWARD_WEIGHTS lives with the tasks; a training script takes it from here with the rest.
__all__ = ["REWARD_WEIGHTS", "LocalModel", "LocalModelClient", "reward_functions", "task_keys", "verifiers_rollout"]


@dataclass
class LocalModel:
    """A loaded causal LM and its tokenizer; `parser`: the tool-call format its replies are read in."""

    model: Any
    tokenizer: Any
    max_new_tokens: int
    temperature: float = 1.0
    parser: str = "xlam"


class LocalModelClient(vf.Client):
    """A verifiers client that generates with a model in this process (the policy a trainer is training)."""

    def setup_client(self, config: Any) -> Any:
        raise TypeError("LocalModelClient wraps a loaded model (LocalModel), not a ClientConfig")

    async def to_native_tool(self, tool: vf.Tool) -> dict[str, Any]:
        return {"type": "function", "function": tool.model_dump(exclude_none=True)}

    async def to_native_prompt(self, messages: vf.Messages) -> tuple[list[dict[str, Any]], dict]:
        return [_template_message(message) for message in messages], {}

    async def get_native_response(
        self, prompt: list[dict[str, Any]], model: str, sampling_args: Any, tools: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        import torch

        local: LocalModel = self.client
        prompt_ids = local.tokenizer.apply_chat_template(
            prompt, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        with torch.no_grad():
            out = local.model.generate(
                torch.tensor([prompt_ids], device=local.model.device),
                max_new_tokens=local.max_new_tokens,
                do_sample=True,
                temperature=local.temperature,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=local.tokenizer.pad_token_id or local.tokenizer.eos_token_id,
            )
            scores = local.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        completion_ids = out.sequences[0, len(prompt_ids) :].tolist()
        return {
            "model": model,
            "prompt_ids": list(prompt_ids),
            "completion_ids": completion_ids,
            "logprobs": scores[0].tolist(),
            "truncated": completion_ids[-1:] != [local.tokenizer.eos_token_id],
            "text": local.tokenizer.decode(completion_ids, skip_special_tokens=True),
        }

    async def raise_from_native_response(self, response: dict[str, Any]) -> None:
        """A sampled reply is always an answer (noise included): the environment judges it."""

    async def from_native_response(self, response: dict[str, Any]) -> Response:
        parsed = get_parser(self.client.parser).parse(response["text"])
        calls = [
            vf.ToolCall(id=f"call_{uuid.uuid4().hex[:8]}", name=call.name, arguments=json.dumps(call.arguments))
            for call in parsed.tool_calls
        ]
        prompt_ids, completion_ids = response["prompt_ids"], response["completion_ids"]
        finish = "length" if response["truncated"] else ("tool_calls" if calls else "stop")
        return Response(
            id=uuid.uuid4().hex,
            created=int(time.time()),
            model=response["model"],
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                reasoning_tokens=0,
                completion_tokens=len(completion_ids),
                total_tokens=len(prompt_ids) + len(completion_ids),
            ),
            message=ResponseMessage(
                content=parsed.content if calls else response["text"],
                tool_calls=calls or None,
                finish_reason=finish,
                is_truncated=response["truncated"],
                tokens=ResponseTokens(
                    prompt_ids=prompt_ids,
                    prompt_mask=[0] * len(prompt_ids),
                    completion_ids=completion_ids,
                    completion_mask=[1] * len(completion_ids),
                    completion_logprobs=response["logprobs"],
                ),
            ),
        )

    async def close(self) -> None:
        """Nothing to close: the model belongs to the trainer."""


def _template_message(message: Any) -> dict[str, Any]:
    """verifiers' message as chat templates take it (a call's arguments as a mapping)."""
    out: dict[str, Any] = {"role": message.role, "content": message.get("content") or ""}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    for call in message.get("tool_calls") or []:
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError:
            arguments = call.arguments
        function = {"name": call.name, "arguments": arguments}
        out.setdefault("tool_calls", []).append({"id": call.id, "type": "function", "function": function})
    return out


def task_keys(env: TaskMultiTurnEnv) -> Any:
    """The dataset TRL holds: one prompt per task of the environment, naming it (see the module docstring)."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [[{"role": "user", "content": str(i)}] for i in env.dataset["task_id"]]})


def verifiers_rollout(env: TaskMultiTurnEnv, *, parser: str = "xlam") -> Callable[[list[Any], Any], dict[str, Any]]:
    """A TRL `rollout_func` that plays each prompt's task through `env` with the trainer's model as the agent."""
    rows = {row["task_id"]: row for row in env.dataset}

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        tokenizer, budget = trainer.processing_class, trainer.max_completion_length
        local = LocalModel(trainer.model, tokenizer, budget, temperature=trainer.temperature, parser=parser)
        client = LocalModelClient(local)

        async def play(index: int, task_id: str) -> vf.State:
            row = rows[task_id]
            given = {"prompt": row["prompt"], "info": row["info"], "example_id": index}
            state = await env.rollout(given, client, "policy")
            await env.rubric.score_rollout(state)
            return state

        async def play_all() -> list[vf.State]:
            return list(await asyncio.gather(*(play(i, p[-1]["content"]) for i, p in enumerate(prompts))))

        states = asyncio.run(play_all())
        sequences = [_sequence(state, local.tokenizer) for state in states]
        return {
            "prompt_ids": [sequence[0] for sequence in sequences],
            "completion_ids": [sequence[1] for sequence in sequences],
            "logprobs": [sequence[2] for sequence in sequences],
            "env_mask": [sequence[3] for sequence in sequences],
            "verifier": [json.dumps(_record(state)) for state in states],
        }

    return rollout


def _sequence(state: vf.State, tokenizer: Any) -> tuple[list[int], list[int], list[float], list[int]]:
    """(prompt ids, completion ids, their logprobs, env_mask) of one rollout: the model's turns (mask 1) with the
    environment's messages between them (mask 0)."""
    steps = [step["tokens"] for step in state["trajectory"]]
    if not steps:  # the episode ended before the model's first turn (the human's model failed): nothing to train
        messages = [_template_message(message) for message in state["prompt"]]
        prompt_ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        return list(prompt_ids), [tokenizer.eos_token_id], [0.0], [0]
    prompt = list(steps[0]["prompt_ids"])
    completion: list[int] = []
    logprobs: list[float] = []
    mask: list[int] = []
    for number, step in enumerate(steps):
        if number:
            so_far = prompt + completion
            if list(step["prompt_ids"][: len(so_far)]) != so_far:
                raise ValueError(
                    f"turn {number + 1} of task {state['info'].get('task_id')!r}: the chat template renders the "
                    "earlier turns differently from how they were sampled; use a model whose template keeps them"
                )
            between = list(step["prompt_ids"][len(so_far) :])
            completion += between
            logprobs += [0.0] * len(between)
            mask += [0] * len(between)
        completion += step["completion_ids"]
        logprobs += step["completion_logprobs"]
        mask += [1] * len(step["completion_ids"])
    return prompt, completion, logprobs, mask


def _record(state: vf.State) -> dict[str, Any]:
    task = state.get(TASK)
    return {
        "task_id": state["info"].get("task_id"),
        "reward": state["reward"],
        "components": {name: state["metrics"][name] for name in COMPONENTS},
        "termination": None if task is None or not task.done else task.episode.termination,
    }


def reward_functions() -> list[Callable[..., list[float]]]:
    """TRL reward functions relaying the rubric's values (the `verifier` field of each rollout); the first also logs
    that field (`log_extra`, column `verifier`)."""

    def relay(name: str) -> Callable[..., list[float]]:
        def value(completions: list[Any], verifier: list[str], **kwargs: Any) -> list[float]:
            records = [json.loads(record) for record in verifier]
            if name == "reward" and kwargs.get("log_extra") is not None:
                kwargs["log_extra"]("verifier", verifier)  # each rollout's task, reward, components and ending
            return [record["reward"] if name == "reward" else record["components"][name] for record in records]

        value.__name__ = value.__qualname__ = name
        return value

    return [relay("reward"), *(relay(name) for name in COMPONENTS)]
