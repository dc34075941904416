"""The verifiers environment over a tasks row: its rubric is our verifier's reward, and TRL trains through it on CPU.

A scripted agent client (a test double) plays known-good and known-bad rollouts; for training, the tiny
random-weight test model is the agent (generating in process) and the scripted double the human."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("verifiers", reason="the `verifiers` extra is not installed (pip install 'apigen-mt[verifiers]')")

import verifiers as vf
from datasets import Dataset
from verifiers.types import Response, ResponseMessage

from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.pipeline.engines.tiny_test_model import build_tiny_test_model
from apigen_mt.pipeline.rl.tasks import task_row
from apigen_mt.pipeline.rl.verifiers_env import COMPONENTS, TASK, load_environment
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.types import Blueprint, ToolCall
from apigen_mt.validators.trajectory import verify_trajectory
from tests.conftest import load_test_module

# The cancellation task the episode environment's tests play (cancel an order, say the refund).
CANCELLATION = load_test_module("test_episode_env")
RETAIL, DB, BLUEPRINT = CANCELLATION.RETAIL, CANCELLATION.DB, CANCELLATION.BLUEPRINT
FIND, ORDER, CANCEL, WRONG_CANCEL = (
    CANCELLATION.FIND,
    CANCELLATION.ORDER,
    CANCELLATION.CANCEL,
    CANCELLATION.WRONG_CANCEL,
)
ROWS = Dataset.from_list([task_row(RETAIL, DB, RETAIL.policy, BLUEPRINT, data_source="seeded")])


class ScriptedAgentClient(vf.Client):
    """Test double: a verifiers client whose model answers from a script of calls and texts."""

    def __init__(self, replies: list[ToolCall | str]) -> None:
        super().__init__(list(replies))

    def setup_client(self, config):
        raise TypeError("a scripted client takes its replies")

    async def to_native_tool(self, tool):
        return tool

    async def to_native_prompt(self, messages):
        return messages, {}

    async def get_native_response(self, prompt, model, sampling_args, tools=None, **kwargs):
        return self.client.pop(0)

    async def raise_from_native_response(self, response):
        return None

    async def from_native_response(self, reply):
        if isinstance(reply, str):
            message = ResponseMessage(content=reply, finish_reason="stop", is_truncated=False)
        else:
            call = vf.ToolCall(id=f"call_{len(self.client)}", name=reply.name, arguments=json.dumps(reply.arguments))
            message = ResponseMessage(tool_calls=[call], finish_reason="tool_calls", is_truncated=False)
        return Response(id="scripted", created=int(time.time()), model="scripted-agent", message=message)

    async def close(self):
        return None


def play(env, replies: list[ToolCall | str]) -> vf.State:
    async def rollout():
        row = ROWS[0]
        state = await env.rollout(
            {"prompt": row["prompt"], "info": row["info"], "example_id": 0},
            ScriptedAgentClient(replies),
            "scripted-agent",
        )
        await env.rubric.score_rollout(state)
        return state

    return asyncio.run(rollout())


def test_a_known_good_rollout_earns_1_and_a_known_bad_one_0_through_the_rubric():
    human = ScriptedChatModel(
        [BLUEPRINT.instruction, "Yes, please cancel it.", "Thanks! ###STOP###"] * 2, model_id="scripted-human"
    )
    env = load_environment(ROWS, human_model=human)
    good = play(env, [FIND, ORDER, "Shall I cancel #W9457132?", CANCEL, "Cancelled: 152.21 goes back to your card."])
    assert [message.role for message in good["prompt"]] == ["system", "user"]
    assert good["prompt"][1].content == BLUEPRINT.instruction
    assert good["completion"][-1].content == "Thanks! ###STOP###"  # the final environment response
    assert good["reward"] == 1.0 and {name: good["metrics"][name] for name in COMPONENTS} == dict.fromkeys(
        COMPONENTS, 1.0
    )
    assert good[TASK].reward().termination == "user_stop"
    bad = play(env, [FIND, ORDER, "Shall I cancel #W9457132?", WRONG_CANCEL, "Cancelled, it is refunded."])
    assert bad["reward"] == 0.0
    assert {name: bad["metrics"][name] for name in COMPONENTS} == {
        "state": 0.0,
        "outputs": 0.0,
        "terminated": 1.0,
        "policy": 1.0,
        "human": 1.0,
    }


def test_load_environment_takes_one_domains_tasks():
    airline = get_domain("airline")
    other = task_row(airline, airline.load(), airline.policy, _airline_blueprint(airline), data_source="seeded")
    with pytest.raises(ValueError, match="the tasks span the domains airline, retail; give load_environment one"):
        load_environment(Dataset.from_list([ROWS[0], other]), human_model=ScriptedChatModel([]))


def _airline_blueprint(airline) -> Blueprint:
    user_id = next(iter(airline.load()["users"]))
    details = ToolCall(name="get_user_details", arguments={"user_id": user_id})
    return Blueprint(id="bp-air", domain="airline", user_id=user_id, instruction="Check my profile.", actions=[details])


def test_grpo_trains_two_steps_through_the_verifiers_environment_and_logs_its_rewards(tmp_path):
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from apigen_mt.pipeline.rl.verifiers_train import reward_functions, task_keys, verifiers_rollout

    training = load_test_module("test_rl_trl")  # the same scripted human, GRPO arguments and log checks
    model_dir = build_tiny_test_model(tmp_path / "tiny")
    env = load_environment(ROWS, human_model=ScriptedChatModel(training.human_reply, model_id="scripted-human"))
    trainer = GRPOTrainer(
        model=str(model_dir),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        train_dataset=task_keys(env),
        rollout_func=verifiers_rollout(env),
        reward_funcs=reward_functions(),
        args=GRPOConfig(**training.tiny_grpo_args(tmp_path)),
    )
    trainer.train()

    training.check_logged_rewards(trainer)
    # A rollout's episode, verified again from its messages, earns what the rubric gave.
    state = asyncio.run(_one_rollout(env, trainer))
    verdict = verify_trajectory(RETAIL, DB, BLUEPRINT, [m.openai() for m in state[TASK].episode.messages])
    assert verdict.reward == state["reward"] == 0.0


async def _one_rollout(env, trainer):
    from apigen_mt.pipeline.rl.verifiers_train import LocalModel, LocalModelClient

    client = LocalModelClient(LocalModel(trainer.model, trainer.processing_class, max_new_tokens=8))
    row = ROWS[0]
    state = await env.rollout({"prompt": row["prompt"], "info": row["info"], "example_id": 0}, client, "p")
    await env.rubric.score_rollout(state)
    return state
