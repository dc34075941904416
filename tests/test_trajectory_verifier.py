"""Trajectory verification on hand-built OpenAI conversations: state, outputs and termination, as tau-bench rewards."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.toolkit import Toolkit, tool
from apigen_mt.simulators.types import Message
from apigen_mt.validators.trajectory import TrajectoryInputError, verify_trajectory


class CounterTools(Toolkit):
    @tool()
    def read(self, name: str) -> str:
        """Read a counter.

        Args:
            name: The counter's name.
        """
        return str(self.db["counters"].get(name, "Error: no such counter"))

    @tool(writes=True)
    def add(self, name: str, amount: int) -> str:
        """Add to a counter.

        Args:
            name: The counter's name.
            amount: How much to add.
        """
        if name not in self.db["counters"]:
            return "Error: no such counter"
        self.db["counters"][name] += amount
        return str(self.db["counters"][name])

    @tool(terminates=True)
    def transfer(self, summary: str) -> str:
        """Hand over to a person.

        Args:
            summary: What the user needs.
        """
        return "Transfer successful"


COUNTERS = Domain(
    name="counters", description="test counters", toolkit=CounterTools, tables=("counters",), policy="", generate=lambda seed: {}
)
DB = {"counters": {"apples": 3, "pears": 1}}
BLUEPRINT = {
    "user_id": "u1",
    "instruction": "Add two apples and tell me the total.",
    "actions": [{"name": "add", "kwargs": {"name": "apples", "amount": 2}}],
    "outputs": ["5 apples"],
}


def call(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    """An assistant turn with one tool call; OpenAI sends the arguments as a JSON string."""
    return {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


def conversation(*middle: dict[str, Any], last_user: str = "Thanks! ###STOP###") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Please add two apples."},
        *middle,
        {"role": "user", "content": last_user},
    ]


SUCCESS = conversation(
    call("add", '{"name": "apples", "amount": 2}'),
    {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    {"role": "assistant", "content": "Done: you now have 5 Apples."},
)


def test_a_successful_trajectory_earns_reward_1():
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, SUCCESS)
    assert verdict.record(3) == {
        "index": 3, "reward": 1.0, "terminated": True, "state_match": True, "outputs_match": True, "reasons": [],
    }
    assert verdict.details["agent_digest"] == verdict.details["ground_truth_digest"]
    assert DB == {"counters": {"apples": 3, "pears": 1}}  # both replays ran on copies


def test_messages_may_be_message_models():
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, [Message.model_validate(m) for m in SUCCESS])
    assert verdict.reward == 1.0


def test_a_wrong_final_state_names_the_difference():
    messages = conversation(
        call("add", '{"name": "pears", "amount": 2}'),
        {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        {"role": "assistant", "content": "You have 5 apples."},
    )
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    assert (verdict.reward, verdict.state_match, verdict.outputs_match, verdict.terminated) == (0.0, False, True, True)
    assert verdict.reasons == [
        "the final database differs from the ground truth's in 2 place(s): /counters/apples is 3 but the ground truth "
        "has 5; /counters/pears is 3 but the ground truth has 1"
    ]
    assert verdict.details["state_diff"][0] == {"op": "replace", "path": "/counters/apples", "old": 5, "value": 3}


def test_arguments_that_are_not_json_make_a_failed_call():
    messages = conversation(call("add", '{"name": "apples", "amount": 2'), {"role": "assistant", "content": "5 apples"})
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    assert not verdict.state_match
    assert verdict.details["agent_calls"][0]["observation"].startswith("Error:")


def test_a_missing_output_is_named():
    messages = conversation(call("add", '{"name": "apples", "amount": 2}'), {"role": "assistant", "content": "All done."})
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    assert (verdict.reward, verdict.state_match, verdict.outputs_match) == (0.0, True, False)
    assert verdict.reasons == ["expected output '5 apples' appears in none of the agent's 1 replies"]


def test_only_agent_replies_count_as_outputs():
    # The output shows up in a tool result, a user message and an assistant turn that also calls a tool: none counts.
    messages = conversation(
        {"role": "user", "content": "I think I will have 5 apples."},
        {**call("add", '{"name": "apples", "amount": 2}'), "content": "Adding, you will have 5 apples."},
        {"role": "tool", "tool_call_id": "call_1", "content": "5 apples"},
    )
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    assert verdict.state_match and not verdict.outputs_match


def test_commas_are_removed_from_replies_only():
    blueprint = {**BLUEPRINT, "outputs": ["1005", "1,005"]}
    messages = conversation(call("add", '{"name": "apples", "amount": 2}'), {"role": "assistant", "content": "The total is 1,005."})
    verdict = verify_trajectory(COUNTERS, DB, blueprint, messages)
    assert verdict.details["outputs"] == {"1005": True, "1,005": False}
    assert verdict.reasons == [
        "expected output '1,005' appears in none of the agent's 1 replies (it contains a comma, and commas are "
        "removed from replies, so it can never match)"
    ]


def test_an_unfinished_episode_scores_zero():
    messages = conversation(
        call("add", '{"name": "apples", "amount": 2}'), {"role": "assistant", "content": "5 apples now."}, last_user="And pears?"
    )
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    assert (verdict.reward, verdict.terminated, verdict.state_match, verdict.outputs_match) == (0.0, False, True, True)
    assert verdict.reasons == [
        "the episode did not end: the last user message has no ###STOP### and no terminating tool (transfer) was called"
    ]


def test_a_terminating_tool_ends_the_episode_and_is_not_replayed_from_ground_truth():
    blueprint = {**BLUEPRINT, "actions": [*BLUEPRINT["actions"], {"name": "transfer", "kwargs": {"summary": "more"}}], "outputs": []}
    messages = conversation(
        call("add", '{"name": "apples", "amount": 2}'),
        call("transfer", '{"summary": "wants more"}', call_id="call_2"),
        last_user="Hello?",
    )
    verdict = verify_trajectory(COUNTERS, DB, blueprint, messages)
    assert (verdict.reward, verdict.terminated) == (1.0, True)


@pytest.mark.parametrize(
    ("blueprint", "messages", "problem"),
    [
        ({"actions": []}, SUCCESS, "the trajectory's blueprint is malformed: instruction: Field required"),
        (BLUEPRINT, "hello", "messages must be a list of OpenAI chat messages"),
        (BLUEPRINT, [{"role": "robot", "content": "x"}], "message 0 has role 'robot'; expected system, user, assistant or tool"),
        (BLUEPRINT, [42], "message 0 must be an object, got int"),
        (BLUEPRINT, [{"role": "assistant", "tool_calls": {"id": "x"}}], "message 0: tool_calls must be a list"),
    ],
)
def test_malformed_input_is_refused(blueprint, messages, problem):
    with pytest.raises(TrajectoryInputError) as raised:
        verify_trajectory(COUNTERS, DB, blueprint, messages)
    assert str(raised.value) == problem


def test_a_taubench_airline_task_replayed_as_a_conversation(taubench_dir, taubench_tasks):
    """Airline sample task 2: five cabin downgrades and the total saved, said with a thousands separator."""
    task = taubench_tasks("airline", "sample")[2]
    domain = get_domain("airline")
    db = domain.load(taubench_dir / "airline")
    turns = [{"role": "user", "content": "Downgrade all my business flights to economy."}]
    for number, step in enumerate(task["actions"]):
        turns.append(call(step["name"], json.dumps(step["kwargs"]), call_id=f"call_{number}"))
        turns.append({"role": "tool", "tool_call_id": f"call_{number}", "content": "..."})
    reply = {"role": "assistant", "content": "All five are economy now; you saved $23,553 in total."}
    verdict = verify_trajectory(domain, db, task, [*turns, reply, {"role": "user", "content": "###STOP###"}])
    assert verdict.reward == 1.0, verdict.reasons

    missing_last = verify_trajectory(domain, db, task, [*turns[:-2], reply, {"role": "user", "content": "###STOP###"}])
    assert not missing_last.state_match
    assert "/reservations/BOH180/" in missing_last.reasons[0]
