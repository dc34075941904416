"""TRL's GRPOTrainer over a tasks row: the adapter scores rollouts with our verifier, and really trains on CPU.

The tiny random-weight test model plays the agent (its replies are noise, so it never calls a tool: a rollout
is the human's first message and one reply) and the scripted double plays the human."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("trl", reason="the `trl` extra is not installed (pip install 'apigen-mt[trl]')")

from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.pipeline.engines.tiny_test_model import build_tiny_test_model
from apigen_mt.pipeline.rl.tasks import task_row
from apigen_mt.pipeline.rl.trl_env import COMPONENTS, REWARD_WEIGHTS, reward_functions, trl_environment
from apigen_mt.simulators.chat import ChatRequest
from apigen_mt.validators.trajectory import verify_trajectory
from tests.conftest import load_test_module

# The cancellation task the episode environment's tests play (cancel an order, say the refund).
CANCELLATION = load_test_module("test_episode_env")
RETAIL, DB, BLUEPRINT = CANCELLATION.RETAIL, CANCELLATION.DB, CANCELLATION.BLUEPRINT
ROW = task_row(RETAIL, DB, RETAIL.policy, BLUEPRINT, data_source="seeded")


def human_reply(request: ChatRequest) -> str:
    """The scripted human: the instruction first (it has not spoken yet), then it ends the conversation."""
    return BLUEPRINT.instruction if not any(m.role == "assistant" for m in request.messages) else "Thanks ###STOP###"


def score(environment, final_reply: str) -> dict[str, float]:
    values = {}
    for function in reward_functions():
        [values[function.__name__]] = function(
            completions=[[{"role": "assistant", "content": final_reply}]], environments=[environment]
        )
    return values


def test_a_known_good_rollout_earns_1_and_a_known_bad_one_0_through_the_adapter():
    human = ScriptedChatModel(
        [BLUEPRINT.instruction, "Yes, please cancel it.", "Thanks! ###STOP###"] * 2, model_id="scripted-human"
    )
    environment = trl_environment("retail", human)()
    assert environment.reset(**ROW) == BLUEPRINT.instruction
    assert environment.find_user_id_by_email(email="tao.grimes1013@example.com") == "tao_grimes_9935"
    assert json.loads(environment.get_order_details(order_id="#W9457132"))["status"] == "pending"
    assert environment.reply_to_user(message="Shall I cancel order #W9457132?") == "Yes, please cancel it."
    environment.cancel_pending_order(order_id="#W9457132", reason="ordered by mistake")
    good = score(environment, "Cancelled: 152.21 goes back to your gift card.")
    assert good == {"reward": 1.0, **dict.fromkeys(COMPONENTS, 1.0)}

    environment.reset(**ROW)  # the same instance, as TRL's pool reuses it: a fresh episode and database
    environment.find_user_id_by_email(email="tao.grimes1013@example.com")
    environment.get_order_details(order_id="#W9457132")
    environment.reply_to_user(message="Shall I cancel order #W9457132?")
    environment.cancel_pending_order(order_id="#W9457132", reason="no longer needed")
    bad = score(environment, "Cancelled, it is refunded.")
    assert bad == {"reward": 0.0, "state": 0.0, "outputs": 0.0, "terminated": 1.0, "policy": 1.0, "human": 1.0}
    with pytest.raises(RuntimeError, match=r"the conversation has ended \(user_stop\)"):
        environment.get_order_details(order_id="#W9457132")


def test_the_tools_trl_shows_are_the_domains_with_their_schemas_and_the_reply_tool():
    from transformers.utils import get_json_schema

    environment = trl_environment("retail", ScriptedChatModel([]))()
    shown = {
        name: get_json_schema(getattr(environment, name))["function"]
        for name in dir(type(environment))
        if not name.startswith("_") and name != "reset"
    }
    specs = {spec.name: spec.openai()["function"] for spec in RETAIL.toolkit.specs()}
    assert set(shown) == {*specs, "reply_to_user"}
    for name, spec in specs.items():
        assert shown[name]["parameters"]["required"] if spec["parameters"].get("required") else True
        assert set(shown[name]["parameters"]["properties"]) == set(spec["parameters"]["properties"])
    exchange = shown["exchange_delivered_order_items"]["parameters"]["properties"]["item_ids"]
    assert exchange["type"] == "array" and exchange["items"] == {"type": "string"}


def tiny_grpo_args(tmp_path) -> dict[str, Any]:
    """GRPOConfig's arguments for two logged steps of two rollouts each, on CPU, with short completions."""
    return {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "num_generations": 2,
        "max_completion_length": 8,
        "logging_steps": 1,
        "reward_weights": REWARD_WEIGHTS,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
    }


def check_logged_rewards(trainer) -> None:
    """Two steps were logged; each rollout of the last step was logged with the reward and
    components our verifier gave it, and the noise the tiny model replies never cancels the order: reward 0 with
    the human's stop (terminated 1)."""
    logged = [entry for entry in trainer.state.log_history if "rewards/reward/mean" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    records = [json.loads(record) for record in trainer._logs["extra"]["verifier"]]
    assert len(records) == 2 and all(record["task_id"] == "bp-cancel-refund" for record in records)
    for index, record in enumerate(records):
        assert trainer._logs["rewards"]["reward"][index] == record["reward"]
        for name in COMPONENTS:
            assert trainer._logs["rewards"][name][index] == record["components"][name]
    assert all(record["reward"] == 0.0 and record["components"]["state"] == 0.0 for record in records)
    assert all(record["termination"] == "user_stop" for record in records)
    for entry in logged:
        assert entry["rewards/reward/mean"] == 0.0 and entry["rewards/terminated/mean"] == 1.0
    print("\n".join(json.dumps({k: v for k, v in entry.items() if k.startswith("reward")}) for entry in logged))


def test_grpo_trains_two_steps_on_cpu_and_logs_the_verifiers_rewards(tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    model_dir = build_tiny_test_model(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # The tiny model's chat template is not one TRL knows: its replies are parsed as text (it calls no tool).
    tokenizer.response_template = {
        "defaults": {"role": "assistant"},
        "start_anchor": "<|im_start|>assistant\n",
        "fields": {"content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"}},
    }
    environment = trl_environment("retail", ScriptedChatModel(human_reply, model_id="scripted-human"))
    trainer = GRPOTrainer(
        model=str(model_dir),
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([ROW] * 4),
        environment_factory=environment,
        reward_funcs=reward_functions(),
        args=GRPOConfig(**tiny_grpo_args(tmp_path)),
    )
    trainer.train()

    check_logged_rewards(trainer)
    # Each environment's episode, verified again from its messages, earns the reward it was logged with.
    for environment_used in trainer._environment_pool[None][:2]:
        task = environment_used._task
        verdict = verify_trajectory(RETAIL, DB, BLUEPRINT, [m.openai() for m in task.episode.messages])
        assert verdict.reward == task.reward().reward
