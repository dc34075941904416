"""The episode loop with scripted doubles (milliseconds): how every kind of episode ends, and what the trial
row then says (status, attribution, reasons). Malformed output, tool errors, a human who never stops, an
agent stuck on one call, an engine timing out or dying: each ends its episode with a recorded reason."""

from __future__ import annotations

import asyncio
import json

from apigen_mt.pipeline.engines.scripted import RawText, ScriptedChatModel, ServerReply
from apigen_mt.pipeline.run.trials import TrialItem, TrialModels, TrialSettings, play_trial
from apigen_mt.simulators.agent import Agent, AgentSettings
from apigen_mt.simulators.chat import ChatResponse, ModelUnavailable
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.episode import EpisodeSettings, run_episode
from apigen_mt.simulators.human import HumanSettings, HumanSimulator
from apigen_mt.simulators.types import Blueprint, ToolCall

RETAIL = get_domain("retail")
DB = RETAIL.load()
BLUEPRINT = Blueprint(
    id="bp-cancel",
    user_id="tao_grimes_9935",
    instruction="You are Tao Grimes, email tao.grimes1013@example.com. Cancel order #W9457132: ordered by mistake.",
    actions=[
        ToolCall(name="find_user_id_by_email", arguments={"email": "tao.grimes1013@example.com"}),
        ToolCall(name="get_order_details", arguments={"order_id": "#W9457132"}),
        ToolCall(name="cancel_pending_order", arguments={"order_id": "#W9457132", "reason": "ordered by mistake"}),
    ],
)
FIND = BLUEPRINT.actions[0]
ORDER = BLUEPRINT.actions[1]
CANCEL = BLUEPRINT.actions[2]
SETTINGS = TrialSettings(
    agent=AgentSettings(),
    human=HumanSettings(max_retries=1),
    episode=EpisodeSettings(max_turns=6, max_repeated_calls=3),
)


def trial(agent_script, human_script) -> dict:
    models = TrialModels(
        agent=ScriptedChatModel(agent_script, model_id="scripted-agent"),
        human=ScriptedChatModel(human_script, model_id="scripted-human"),
        judge=ScriptedChatModel([], model_id="scripted-judge"),
    )
    return asyncio.run(play_trial(RETAIL, DB, RETAIL.policy, TrialItem(BLUEPRINT, 0, None), models, SETTINGS))


HUMAN = [BLUEPRINT.instruction, "Yes, please cancel it.", "Thanks! ###STOP###"]


def test_a_correct_episode_is_accepted_and_its_row_holds_the_conversation():
    row = trial([FIND, ORDER, "Shall I cancel #W9457132?", CANCEL, "It is cancelled."], HUMAN)
    assert (row["status"], row["attribution"], row["termination"], row["reward"]) == (
        "accepted",
        None,
        "user_stop",
        1.0,
    )
    messages = json.loads(row["messages"])
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert messages[0]["content"] == RETAIL.policy
    assert (row["turns"], row["tool_calls"]) == (5, 3)
    stats = json.loads(row["turn_stats"])
    assert [turn["role"] for turn in stats].count("human") == 3


def test_a_write_before_authentication_reaches_the_right_state_and_is_still_rejected_by_policy():
    row = trial([ORDER, CANCEL, "Done."], [BLUEPRINT.instruction, "Thanks ###STOP###"])
    assert row["reward"] == 1.0 and row["state_match"]
    assert (row["status"], row["attribution"]) == ("rejected", "agent")
    assert any(violation.startswith("[R1]") for violation in row["policy_violations"])


def test_malformed_agent_output_is_a_reply_with_a_format_problem_and_the_episode_goes_on():
    wrong = ToolCall(name="cancel_pending_order", arguments={"order_id": "#W9457132", "reason": "no longer needed"})
    row = trial(
        [RawText('[{"name": "cancel_pending_order", "arguments": '), wrong, "Sorry."],
        [BLUEPRINT.instruction, "Please try again.", "Bye ###STOP###"],
    )
    assert (row["status"], row["attribution"], row["termination"]) == ("rejected", "agent", "user_stop")
    assert any(reason.startswith("format:") for reason in row["reasons"])


def test_a_tool_error_is_an_observation_and_the_agent_goes_on():
    bad = ToolCall(name="cancel_pending_order", arguments={"order_id": "#W0000000", "reason": "ordered by mistake"})
    row = trial([FIND, bad, "That failed."], [BLUEPRINT.instruction, "Oh well ###STOP###"])
    messages = json.loads(row["messages"])
    assert messages[5]["role"] == "tool" and messages[5]["content"].startswith("Error")
    assert (row["status"], row["attribution"]) == ("rejected", "agent")


def test_a_human_that_never_stops_ends_at_max_turns():
    row = trial(lambda request: "How else can I help?", lambda request: "Hmm, let me think.")
    assert (row["status"], row["attribution"], row["termination"], row["turns"]) == (
        "rejected",
        "agent",
        "max_turns",
        6,
    )
    assert "cut off (max_turns)" in row["reasons"][0]


def test_an_agent_repeating_one_call_is_stopped():
    row = trial(lambda request: ORDER, HUMAN)
    assert (row["status"], row["attribution"], row["termination"], row["tool_calls"]) == (
        "rejected",
        "agent",
        "repeated_call",
        3,
    )
    assert "get_order_details was called 3 times in a row" in row["reasons"][0]


def test_an_engine_that_times_out_fails_the_trial_on_the_system():
    timeout = ChatResponse(
        model="scripted-agent", error="no answer within request_timeout_s=600s; the request was aborted"
    )
    row = trial([FIND, timeout], HUMAN)
    assert (row["status"], row["attribution"], row["termination"]) == ("failed", "system", "model_error")
    assert row["reasons"] == [f"model_error: the agent model's backend failed: {timeout.error}"]


def test_a_prompt_past_the_context_is_a_context_overflow():
    overflow = ChatResponse(
        model="scripted-agent", error="the prompt has 9000 tokens, the model's context is 8192; ..."
    )
    row = trial([FIND, overflow], HUMAN)
    assert (row["status"], row["termination"]) == ("failed", "context_overflow")


def test_a_human_giving_only_unusable_turns_is_the_humans_failure():
    row = trial([], ["", "As an AI language model, how can I help you?"])
    assert (row["status"], row["attribution"], row["termination"]) == ("rejected", "human", "human_unusable")


def test_a_human_inventing_a_value_is_a_human_error():
    row = trial(
        [FIND, ORDER, CANCEL, "Done."], [BLUEPRINT.instruction + " Also my other order #W1111111.", "Bye ###STOP###"]
    )
    assert (row["status"], row["attribution"]) == ("rejected", "human")
    assert any("#W1111111" in error for error in row["human_errors"])


def test_a_dead_engine_gives_a_row_marked_for_retry():
    row = trial([FIND, ModelUnavailable("the engine actor is restarting")], HUMAN)
    assert (row["status"], row["termination"], row["attempt"]) == ("failed", "engine_unavailable", 1)


def test_a_terminating_tool_ends_the_episode():
    transfer = ToolCall(name="transfer_to_human_agents", arguments={"summary": "wants a cancellation"})
    row = trial([transfer], HUMAN)
    assert row["termination"] == "terminating_tool" and row["terminated"]


def episode_of(agent_script, human_script, settings: AgentSettings = AgentSettings(), max_turns: int = 4):
    """(episode, environment) of a scripted episode, for what the trial row does not show."""
    agent = Agent(ScriptedChatModel(agent_script), RETAIL.policy, RETAIL.toolkit.specs(), settings)
    human = HumanSimulator(ScriptedChatModel(human_script), BLUEPRINT.instruction, settings=HumanSettings())
    env = RETAIL.environment(DB)
    return asyncio.run(run_episode(agent, human, env, EpisodeSettings(max_turns=max_turns))), env


def test_several_calls_in_one_turn_run_in_order_when_allowed():
    episode, env = episode_of([[FIND, ORDER], "ok", "ok"], HUMAN, AgentSettings(one_call_per_turn=False))
    assert [call.name for call, _ in env.log] == ["find_user_id_by_email", "get_order_details"]
    tool_messages = [m for m in episode.messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["call_0", "call_1"]
    assert episode.repairs == []


def test_one_call_per_turn_runs_the_first_and_records_the_rest_as_a_repair():
    episode, env = episode_of(["Hello.", [FIND, ORDER], "ok"], HUMAN)
    assert [call.name for call, _ in env.log] == ["find_user_id_by_email"]
    (calling,) = [m for m in episode.messages if m.tool_calls]
    assert [call.function["name"] for call in calling.tool_calls] == ["find_user_id_by_email"]
    assert episode.repairs == ["agent turn 2: dropped 1 call(s) after the first, one call per turn: get_order_details"]


def test_text_beside_a_call_is_removed_by_default_and_never_shown_to_the_human():
    beside = ServerReply(content="Let me find your account.", calls=(FIND,))
    agent_script = [beside, "Found you.", beside, "Found you."]
    human_script = [BLUEPRINT.instruction, "Bye ###STOP###"]
    removed, _ = episode_of(agent_script[:2], human_script)
    (calling,) = [m for m in removed.messages if m.tool_calls]
    assert calling.content is None
    assert removed.repairs == ["agent turn 1: removed the text beside its tool call: 'Let me find your account.'"]
    kept, _ = episode_of(agent_script[2:], human_script, AgentSettings(text_beside_calls="keep"))
    (calling,) = [m for m in kept.messages if m.tool_calls]
    assert calling.content == "Let me find your account." and kept.repairs == []
    human = HumanSimulator(ScriptedChatModel(["x"]), BLUEPRINT.instruction, settings=HumanSettings())
    asyncio.run(human.respond(kept.messages))
    assert all("Let me find" not in (m.content or "") for m in human.model.requests[0].messages)


def test_thinking_is_stored_apart_and_a_stop_in_it_never_ends_the_episode():
    human_script = [
        f"<think>I could end with ###STOP### right away.</think>{BLUEPRINT.instruction}",
        "<think>Done now.</think>Thanks! ###STOP###",
    ]
    agent_script = [ServerReply(calls=(FIND,), reasoning="Find the user first."), "<think>All set.</think>Found you."]
    episode, _ = episode_of(agent_script, human_script)
    assert episode.termination == "user_stop" and len(episode.human_texts()) == 2
    first_user, calling, _, reply, last_user = episode.messages[1:]
    assert (first_user.content, first_user.reasoning_content) == (
        BLUEPRINT.instruction,
        "I could end with ###STOP### right away.",
    )
    assert (calling.content, calling.reasoning_content) == (None, "Find the user first.")
    assert (reply.content, reply.reasoning_content) == ("Found you.", "All set.")
    assert (last_user.content, last_user.reasoning_content) == ("Thanks! ###STOP###", "Done now.")
    row = trial(agent_script, human_script)
    assert "<think>" not in row["messages"] and row["termination"] == "user_stop"
    stored = json.loads(row["messages"])
    assert stored[1]["reasoning_content"] == "I could end with ###STOP### right away."
    assert all("STOP" not in (message.get("content") or "") for message in stored[:-1])


def test_transfer_and_out_of_scope_end_the_episode_as_the_human_said():
    transferred, _ = episode_of(["Let me transfer you."], [BLUEPRINT.instruction, "Okay. ###TRANSFER###"])
    assert transferred.termination == "user_transfer" and transferred.human_texts()[-1] == "Okay. ###TRANSFER###"
    stuck, _ = episode_of(["What is your zip code?"], [BLUEPRINT.instruction, "###OUT-OF-SCOPE###"])
    assert stuck.termination == "user_out_of_scope" and stuck.agent_turns == 1


def test_episodes_are_deterministic_with_the_scripted_double():
    first = trial([FIND, ORDER, CANCEL, "Done."], [BLUEPRINT.instruction, "Thanks ###STOP###"])
    second = trial([FIND, ORDER, CANCEL, "Done."], [BLUEPRINT.instruction, "Thanks ###STOP###"])
    assert first["status"] == "accepted"
    for key in ("messages", "status", "signature", "turns"):
        assert first[key] == second[key]
