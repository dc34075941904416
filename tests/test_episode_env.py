"""The episode as a step-by-step environment (EpisodeEnv) and a task with its reward (TaskEnv), with scripted
doubles: what reset and step give, every ending, hostile steps, and the must-show: driving the environment by
hand gives the same trajectory and verdict as Phase 2's episode loop on the same seeded episode."""

from __future__ import annotations

import asyncio
import json

import pytest

from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.pipeline.run.trials import TrialItem, TrialModels, TrialSettings, play_trial, stable_seed
from apigen_mt.simulators.agent import AgentSettings
from apigen_mt.simulators.chat import ChatResponse, ModelUnavailable
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.episode import (
    EpisodeEnv,
    EpisodeSettings,
    EpisodeStateError,
    StepInputError,
    conversation_records,
)
from apigen_mt.simulators.human import HumanSettings, HumanSimulator
from apigen_mt.simulators.types import Blueprint, Message, Scenario, ToolCall
from apigen_mt.validators.task_env import TaskEnv
from apigen_mt.validators.trajectory import verify_trajectory

RETAIL = get_domain("retail")
DB = RETAIL.load()
FIND = ToolCall(name="find_user_id_by_email", arguments={"email": "tao.grimes1013@example.com"})
ORDER = ToolCall(name="get_order_details", arguments={"order_id": "#W9457132"})
CANCEL = ToolCall(name="cancel_pending_order", arguments={"order_id": "#W9457132", "reason": "ordered by mistake"})
WRONG_CANCEL = ToolCall(name="cancel_pending_order", arguments={"order_id": "#W9457132", "reason": "no longer needed"})
TRANSFER = ToolCall(name="transfer_to_human_agents", arguments={"summary": "wants a cancellation"})
BLUEPRINT = Blueprint(
    id="bp-cancel-refund",
    domain="retail",
    user_id="tao_grimes_9935",
    instruction="You are Tao Grimes, email tao.grimes1013@example.com. Cancel order #W9457132: ordered by mistake. "
    "Ask how much is refunded.",
    actions=[FIND, ORDER, CANCEL],
    outputs=["152.21"],
)
HUMAN = [BLUEPRINT.instruction, "Yes, please cancel it.", "Thanks! ###STOP###"]
GOOD = [FIND, ORDER, "Shall I cancel #W9457132?", CANCEL, "Cancelled: 152.21 goes back to your gift card."]
SETTINGS = TrialSettings(
    agent=AgentSettings(),
    human=HumanSettings(max_retries=1),
    episode=EpisodeSettings(max_turns=6, max_repeated_calls=3),
)


def assistant(reply: ToolCall | str) -> dict:
    """An agent reply as an OpenAI assistant dict, as an RL trainer hands it over (no call ids: the env adds them)."""
    if isinstance(reply, str):
        return {"role": "assistant", "content": reply}
    function = {"name": reply.name, "arguments": json.dumps(reply.arguments)}
    return {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": function}]}


def episode_env(human_script, max_turns: int = 6, max_repeated_calls: int = 3) -> EpisodeEnv:
    human = HumanSimulator(ScriptedChatModel(human_script), BLUEPRINT.instruction, settings=HumanSettings())
    settings = EpisodeSettings(max_turns=max_turns, max_repeated_calls=max_repeated_calls)
    return EpisodeEnv(RETAIL.environment(DB), human, RETAIL.policy, settings)


def task_env(human_script, *, human_settings: HumanSettings = HumanSettings(), **options) -> TaskEnv:
    model = ScriptedChatModel(human_script, model_id="scripted-human")
    return TaskEnv(RETAIL, DB, BLUEPRINT, model, human_settings=human_settings, **options)


async def drive(env, replies) -> list:
    """Reset, then step each reply until the episode ends; every observation."""
    observations = [await env.reset()]
    for reply in replies:
        if observations[-1].done:
            break
        observations.append(await env.step(assistant(reply)))
    return observations


def test_reset_gives_the_policy_the_humans_first_message_and_the_tools():
    env = episode_env(HUMAN)
    observation = asyncio.run(env.reset())
    assert [(m.role, m.content) for m in observation.messages] == [
        ("system", RETAIL.policy),
        ("user", BLUEPRINT.instruction),
    ]
    assert observation.tools == [spec.openai() for spec in RETAIL.toolkit.specs()]
    assert (observation.done, observation.termination) == (False, None)
    assert [turn.role for turn in env.episode.turns] == ["human"]


def test_a_step_with_tool_calls_gives_their_results_under_the_callers_ids():
    env = episode_env(HUMAN)
    asyncio.run(env.reset())
    named = [(FIND, "tool-a"), (ORDER, "tool-b")]
    calls = [{**assistant(call)["tool_calls"][0], "id": call_id} for call, call_id in named]
    observation = asyncio.run(env.step({"role": "assistant", "tool_calls": calls}))
    assert [(m.role, m.tool_call_id, m.name) for m in observation.messages] == [
        ("tool", "tool-a", FIND.name),
        ("tool", "tool-b", ORDER.name),
    ]
    assert observation.messages[0].content == "tao_grimes_9935"
    assert json.loads(observation.messages[1].content)["status"] == "pending"
    assert observation.tools == [] and not observation.done
    # The env numbers calls that come without an id on from the calls made so far.
    observation = asyncio.run(env.step(assistant(FIND)))
    assert observation.messages[0].tool_call_id == "call_2"


def test_a_step_with_text_gives_the_humans_reply_and_a_stop_ends_the_episode():
    env = episode_env(HUMAN)
    asyncio.run(env.reset())
    reply = asyncio.run(env.step(assistant("Which order?")))
    assert [(m.role, m.content) for m in reply.messages] == [("user", "Yes, please cancel it.")]
    assert not reply.done
    last = asyncio.run(env.step(Message(role="assistant", content="Done.")))
    assert (last.done, last.termination) == (True, "user_stop")
    assert last.messages[0].content == "Thanks! ###STOP###"
    with pytest.raises(EpisodeStateError, match=r"has ended \(user_stop\)"):
        asyncio.run(env.step(assistant("Anything else?")))


def test_a_terminating_tool_ends_the_episode():
    observations = asyncio.run(drive(episode_env(HUMAN), [TRANSFER, "Hello?"]))
    assert (observations[-1].done, observations[-1].termination) == (True, "terminating_tool")
    assert len(observations) == 2 and observations[-1].messages[0].role == "tool"


def test_the_episode_is_cut_off_at_max_turns_steps():
    env = episode_env(lambda request: "Hmm.", max_turns=3)
    observations = asyncio.run(drive(env, ["One.", "Two.", "Three.", "Four."]))
    assert [o.done for o in observations] == [False, False, False, True]
    assert observations[-1].termination == "max_turns"
    assert env.episode.human_texts() == ["Hmm."] * 4


def test_the_same_call_again_and_again_is_a_repeated_call():
    env = episode_env(HUMAN, max_repeated_calls=2)
    observations = asyncio.run(drive(env, [ORDER, ORDER, ORDER]))
    assert observations[-1].termination == "repeated_call" and len(observations) == 3
    assert env.episode.error == "get_order_details was called 2 times in a row with the same arguments"
    assert env.episode.error_role == "agent"


def test_model_errors_of_either_side_end_the_episode():
    # The human sends a failed request again (max_retries=2 by default): three errors, then it gives up.
    human_failing = episode_env([BLUEPRINT.instruction, *[ChatResponse(error="upstream 503")] * 3])
    observations = asyncio.run(drive(human_failing, ["Hello."]))
    assert (observations[-1].termination, observations[-1].messages) == ("model_error", [])
    assert (human_failing.episode.error, human_failing.episode.error_role) == ("upstream 503", "human")
    agent_failing = episode_env(HUMAN)
    asyncio.run(agent_failing.reset())
    ended = agent_failing.agent_failed("the prompt has 9000 tokens, the model's context is 8192")
    assert (ended.done, ended.termination, agent_failing.episode.error_role) == (True, "context_overflow", "agent")
    with pytest.raises(EpisodeStateError, match="has ended"):
        agent_failing.agent_failed("again")


def test_calls_out_of_order_are_clear_errors():
    env = episode_env(HUMAN)
    with pytest.raises(EpisodeStateError, match=r"call reset\(\) first"):
        asyncio.run(env.step(assistant("Hi.")))
    asyncio.run(env.reset())
    with pytest.raises(EpisodeStateError, match="plays one episode"):
        asyncio.run(env.reset())
    task = task_env(HUMAN)
    with pytest.raises(EpisodeStateError, match=r"call reset\(\) first"):
        task.reward()
    asyncio.run(task.reset())
    with pytest.raises(EpisodeStateError, match="has not ended"):
        task.reward()


async def step_after_reset(message):
    env = task_env(HUMAN)
    await env.reset()
    return await env.step(message)


def test_hostile_steps_become_error_observations_and_the_verifier_replays_them_alike():
    env = task_env(HUMAN)
    asyncio.run(env.reset())
    hostile = [
        {"function": {"name": ORDER.name, "arguments": '{"order_id": "#W945'}},  # cut-off JSON
        {"function": {"name": "delete_everything", "arguments": "{}"}},  # no such tool
        {"function": {"name": ORDER.name, "arguments": "[1, 2]"}},  # JSON, not an object
        {"function": "get_order_details"},  # no function object
        "get_order_details(order_id='#W9457132')",  # not an entry at all
        {"id": 7, "function": {"name": ["x"], "arguments": {"order_id": "#W9457132"}}},  # wrong types
        {"function": {"name": ORDER.name, "arguments": "[" * 100_000}},  # nested past Python's recursion limit
    ]
    observation = asyncio.run(env.step({"tool_calls": hostile}))  # no role: the assistant's
    observed = [m.content for m in observation.messages]
    assert observed == [
        "Error: GetOrderDetails.invoke() got an unexpected keyword argument '__raw__'",
        "Unknown action delete_everything",
        "Error: GetOrderDetails.invoke() got an unexpected keyword argument '__raw__'",
        "Unknown action ",
        "Unknown action ",
        "Unknown action ",
        "Error: GetOrderDetails.invoke() got an unexpected keyword argument '__raw__'",
    ]
    assert [m.tool_call_id for m in observation.messages] == [f"call_{i}" for i in range(7)]
    odd = Message(role="assistant", tool_calls=[{"id": "x", "function": {"name": None, "arguments": 3}}])
    odd_seen = asyncio.run(env.step(odd)).messages[0].content
    assert odd_seen == "Unknown action "
    asyncio.run(env.step({"role": "assistant", "content": [{"type": "text", "text": ""}]}))
    assert env.episode.messages[-2].content == "" and env.episode.messages[-1].role == "user"
    asyncio.run(env.step({"content": "Bye."}))
    assert env.done
    reward = env.reward()
    # The user stopped before the agent even attempted the cancellation: the human's error, as the verifier says.
    assert (reward.reward, reward.components["state"], reward.attribution) == (0.0, 0.0, "human")
    # The verifier replays the stored calls and meets the same observations the agent saw.
    verdict = verify_trajectory(RETAIL, DB, BLUEPRINT, conversation_records(env.episode.messages))
    tool_messages = [m.content for m in env.episode.messages if m.role == "tool"]
    assert [call["observation"] for call in verdict.details["agent_calls"]] == tool_messages == [*observed, odd_seen]
    for wrong, problem in [
        ({"role": "user", "content": "hi"}, "got role 'user'"),
        (Message(role="tool", content="x", tool_call_id="c"), "got a 'tool' message"),
        ("just text", "got str"),
        ({"role": "assistant", "content": 42}, "content must be text, got int"),
        ({"role": "assistant", "tool_calls": {"name": "x"}}, "tool_calls must be a list, got dict"),
    ]:
        with pytest.raises(StepInputError, match=problem):
            asyncio.run(step_after_reset(wrong))


TIMEOUT = ChatResponse(model="scripted-agent", error="no answer within request_timeout_s=600s; the request was aborted")
# (agent's replies, human's replies, what Phase 2's row says: status, attribution, termination)
SAME_EPISODES = {
    "accepted": (GOOD, HUMAN, ("accepted", None, "user_stop")),
    "wrong state": (
        [FIND, ORDER, WRONG_CANCEL, "Cancelled: 152.21 is refunded."],
        [BLUEPRINT.instruction, "Thanks ###STOP###"],
        ("rejected", "agent", "user_stop"),
    ),
    "write before authentication": (
        [ORDER, CANCEL, "Cancelled: 152.21 is refunded."],
        [BLUEPRINT.instruction, "Thanks ###STOP###"],
        ("rejected", "agent", "user_stop"),
    ),
    "human reveals a value it could not know": (
        GOOD,
        [BLUEPRINT.instruction + " Also my other order #W1111111.", "Yes.", "Bye ###STOP###"],
        ("rejected", "human", "user_stop"),
    ),
    "repeated call": ([ORDER] * 3, HUMAN, ("rejected", "agent", "repeated_call")),
    "max turns": (["Hm?"] * 6, lambda request: "Let me think.", ("rejected", "agent", "max_turns")),
    "transfer tool": ([FIND, TRANSFER], HUMAN, ("rejected", "agent", "terminating_tool")),
    "agent backend fails": ([FIND, TIMEOUT], HUMAN, ("failed", "system", "model_error")),
    "tau2 scenario": (GOOD, HUMAN, ("accepted", None, "user_stop")),
}
# A tau2 task's human is given its scenario part by part, on either path.
SCENARIO = Scenario(
    reason_for_call="You ordered a rain jacket by mistake and want order #W9457132 cancelled.",
    known_info="You are Tao Grimes, email tao.grimes1013@example.com.",
    unknown_info="You do not know how much was paid.",
)


@pytest.mark.parametrize("case", list(SAME_EPISODES))
def test_the_step_api_and_the_phase_2_loop_give_the_same_trajectory_and_verdict(case):
    agent_script, human_script, expected = SAME_EPISODES[case]
    blueprint = BLUEPRINT
    if case == "tau2 scenario":
        blueprint = BLUEPRINT.model_copy(update={"scenario": SCENARIO, "instruction": SCENARIO.text()})
    loop_human = ScriptedChatModel(human_script, model_id="scripted-human")
    models = TrialModels(
        agent=ScriptedChatModel(agent_script, model_id="scripted-agent"),
        human=loop_human,
        judge=ScriptedChatModel([], model_id="scripted-judge"),
    )
    row = asyncio.run(play_trial(RETAIL, DB, RETAIL.policy, TrialItem(blueprint, 0, None), models, SETTINGS))
    assert (row["status"], row["attribution"], row["termination"]) == expected

    # The same seeded episode by hand: the human seeded as play_trial seeds trial 0, each agent reply stepped in.
    seeded = SETTINGS.human.model_copy(update={"seed": stable_seed(str(BLUEPRINT.id), 0) + 1})
    env_human = ScriptedChatModel(human_script, model_id="scripted-human")
    env = TaskEnv(RETAIL, DB, blueprint, env_human, human_settings=seeded, episode_settings=SETTINGS.episode)

    async def by_hand() -> list[dict]:
        observation = await env.reset()
        tools = observation.tools
        for reply in agent_script:
            if observation.done:
                break
            if isinstance(reply, ChatResponse):  # the agent's backend failed: no message, the episode ends
                observation = env.agent_failed(reply.error)
            else:
                observation = await env.step(assistant(reply))
        return tools

    assert asyncio.run(by_hand()) == json.loads(row["tools"])
    assert conversation_records(env.episode.messages) == json.loads(row["messages"])
    assert env.episode.termination == row["termination"]
    assert [request.model_dump() for request in env_human.requests] == [
        request.model_dump() for request in loop_human.requests
    ]
    if blueprint.scenario is not None:
        prompt = env_human.requests[0].messages[0].content
        assert "## What you do not know" in prompt and SCENARIO.unknown_info in prompt
    reward = env.reward()
    assert reward.reward == row["reward"]
    assert reward.components == {
        "state": float(row["state_match"]),
        "outputs": float(row["outputs_match"]),
        "terminated": float(row["terminated"]),
        "policy": float(not row["policy_violations"]),
        "human": float(not row["human_errors"]),
    }
    assert (reward.policy_violations, reward.human_errors) == (row["policy_violations"], row["human_errors"])
    assert (reward.accepted, reward.attribution, reward.reasons) == (
        row["status"] == "accepted",
        row["attribution"],
        row["reasons"],
    )


def test_a_known_good_rollout_earns_1_and_a_known_bad_one_0_with_their_components():
    # Two episodes of one task: reset starts the second on a fresh copy of the database (the order is pending
    # again, so the second cancellation runs too) and the caller's database is never touched.
    env = task_env(HUMAN + HUMAN)
    asyncio.run(drive(env, GOOD))
    good = env.reward()
    assert (good.reward, good.accepted, good.termination, good.attribution) == (1.0, True, "user_stop", None)
    assert good.components == {"state": 1.0, "outputs": 1.0, "terminated": 1.0, "policy": 1.0, "human": 1.0}
    assert good.reasons == [] and env.ground_truth_digest is not None
    bad_replies = [FIND, ORDER, "Shall I cancel #W9457132?", WRONG_CANCEL, "Cancelled, it is refunded."]
    observations = asyncio.run(drive(env, bad_replies))
    assert json.loads(observations[4].messages[0].content)["status"] == "cancelled"
    bad = env.reward()
    assert (bad.reward, bad.accepted, bad.attribution) == (0.0, False, "agent")
    assert bad.components == {"state": 0.0, "outputs": 0.0, "terminated": 1.0, "policy": 1.0, "human": 1.0}
    assert bad.reasons[0].startswith("the final database differs from the ground truth's")
    assert "expected output '152.21' appears in none" in bad.reasons[1]
    assert DB["orders"]["#W9457132"]["status"] == "pending"


def test_a_task_env_is_built_from_a_rows_plain_values():
    human = ScriptedChatModel(HUMAN)
    for stored in (json.loads(BLUEPRINT.model_dump_json()), BLUEPRINT.model_dump_json()):
        env = TaskEnv("retail", DB, stored, human)
        assert (env.domain, env.blueprint, env.policy) == (RETAIL, BLUEPRINT, RETAIL.policy)
        assert env.tools == [spec.openai() for spec in RETAIL.toolkit.specs()]
    with pytest.raises(ValueError, match="belongs to domain 'retail', not 'airline'"):
        TaskEnv("airline", DB, BLUEPRINT, human)
    with pytest.raises(ValueError, match="the task's blueprint is malformed at instruction: Field required"):
        TaskEnv("retail", DB, {"actions": []}, human)
    with pytest.raises(KeyError, match="unknown domain 'shop'"):
        TaskEnv("shop", DB, BLUEPRINT, human)


def test_a_dead_human_engine_propagates_for_the_caller_to_retry():
    env = task_env([BLUEPRINT.instruction, ModelUnavailable("the engine actor is restarting")])
    asyncio.run(env.reset())
    with pytest.raises(ModelUnavailable, match="restarting"):
        asyncio.run(env.step(assistant("Hello.")))
