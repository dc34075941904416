"""Trajectory verification on hand-built OpenAI conversations: state, outputs and termination, as tau-bench rewards;
the domain rules on the episode, errors of the simulated human, attribution, and warnings about broken blueprints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.simulators.domain import Domain, PolicyRule, get_domain
from apigen_mt.simulators.toolkit import Toolkit, tool
from apigen_mt.simulators.trace import one_call_per_turn
from apigen_mt.simulators.types import Blueprint, Message
from apigen_mt.validators.execution import check_execution, replay_blueprint
from apigen_mt.validators.trajectory import TrajectoryInputError, verify_trajectory

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "retail_trajectories.jsonl"


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
    name="counters",
    description="test counters",
    toolkit=CounterTools,
    tables=("counters",),
    policy="",
    generate=lambda seed: {},
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
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
    }


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
        "index": 3,
        "reward": 1.0,
        "terminated": True,
        "state_match": True,
        "outputs_match": True,
        "reasons": [],
        "accepted": True,
        "attribution": None,
        "policy_violations": [],
        "human_errors": [],
        "warnings": [],
    }
    assert verdict.accepted
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
    messages = conversation(
        call("add", '{"name": "apples", "amount": 2}'), {"role": "assistant", "content": "All done."}
    )
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
    messages = conversation(
        call("add", '{"name": "apples", "amount": 2}'), {"role": "assistant", "content": "The total is 1,005."}
    )
    verdict = verify_trajectory(COUNTERS, DB, blueprint, messages)
    assert verdict.details["outputs"] == {"1005": True, "1,005": False}
    assert verdict.reasons == [
        "expected output '1,005' appears in none of the agent's 1 replies (it contains a comma, and commas are "
        "removed from replies, so it can never match)"
    ]


def test_an_unfinished_episode_scores_zero():
    messages = conversation(
        call("add", '{"name": "apples", "amount": 2}'),
        {"role": "assistant", "content": "5 apples now."},
        last_user="And pears?",
    )
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    assert (verdict.reward, verdict.terminated, verdict.state_match, verdict.outputs_match) == (0.0, False, True, True)
    assert verdict.reasons == [
        "the episode did not end: the last user message has no ###STOP###, ###TRANSFER### or ###OUT-OF-SCOPE### and no "
        "terminating tool (transfer) was called"
    ]


def test_a_terminating_tool_ends_the_episode_and_is_not_replayed_from_ground_truth():
    blueprint = {
        **BLUEPRINT,
        "actions": [*BLUEPRINT["actions"], {"name": "transfer", "kwargs": {"summary": "more"}}],
        "outputs": [],
    }
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
        (
            BLUEPRINT,
            [{"role": "robot", "content": "x"}],
            "message 0 has role 'robot'; expected system, user, assistant or tool",
        ),
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


# ------------------------------------------------------------------------------------------------ policy


def example(index: int) -> dict[str, Any]:
    """A trajectory of examples/retail_trajectories.jsonl, on the retail domain's seeded database."""
    return json.loads(EXAMPLES.read_text(encoding="utf-8").splitlines()[index])


R1_MESSAGE = (
    "[R1] action 0 (get_order_details) runs before the user is authenticated; first find the user id with "
    "find_user_id_by_email or find_user_id_by_name_zip"
)


def test_the_right_state_reached_against_the_policy_is_rejected_with_the_rule_id():
    """Example 0 without its find-user call: tau-bench's reward is still 1, but the user was never authenticated."""
    trajectory = example(0)
    messages = [m for m in trajectory["messages"] if "call_0" not in json.dumps(m)]
    domain = get_domain("retail")
    verdict = verify_trajectory(domain, domain.load(), trajectory["blueprint"], messages)
    assert (verdict.reward, verdict.state_match, verdict.outputs_match, verdict.terminated) == (1.0, True, True, True)
    assert verdict.policy_violations == [R1_MESSAGE]
    assert verdict.reasons == [R1_MESSAGE]
    assert (verdict.accepted, verdict.attribution, verdict.human_errors) == (False, "agent", [])
    record = verdict.record(0)
    assert (record["reward"], record["accepted"], record["policy_violations"]) == (1.0, False, [R1_MESSAGE])

    compliant = verify_trajectory(domain, domain.load(), trajectory["blueprint"], trajectory["messages"])
    assert (compliant.accepted, compliant.policy_violations, compliant.attribution) == (True, [], None)


def test_episode_only_rules_judge_what_the_agent_read_and_heard():
    """Cancelling without get_order_details (R6), with an order id nobody gave the agent (R18): state still right."""
    trajectory = example(0)
    messages = [
        *trajectory["messages"][:4],
        call("cancel_pending_order", '{"order_id": "#W1077442", "reason": "ordered by mistake"}', call_id="call_2"),
        {"role": "tool", "tool_call_id": "call_2", "content": "cancelled"},
        {"role": "assistant", "content": "Cancelled."},
        {"role": "user", "content": "###STOP###"},
    ]
    domain = get_domain("retail")
    verdict = verify_trajectory(domain, domain.load(), trajectory["blueprint"], messages)
    assert verdict.reward == 1.0
    assert verdict.policy_violations == [
        "[R6] action 1 (cancel_pending_order) acts on order #W1077442 without a get_order_details call for it first",
        "[R18] action 1 (cancel_pending_order) uses '#W1077442', which no earlier tool output or user message contains",
    ]
    assert verdict.attribution == "agent"


def test_two_tool_calls_in_one_turn_break_the_turn_rule():
    both = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read", "arguments": '{"name": "apples"}'}},
            {
                "id": "c2",
                "type": "function",
                "function": {"name": "add", "arguments": '{"name": "apples", "amount": 2}'},
            },
        ],
    }
    rules = (PolicyRule("T1", "one call per turn", one_call_per_turn),)
    domain = dataclasses.replace(COUNTERS, rules=rules)
    verdict = verify_trajectory(domain, DB, BLUEPRINT, conversation(both, {"role": "assistant", "content": "5 apples"}))
    assert verdict.reward == 1.0
    assert verdict.policy_violations == ["[T1] message 2 makes 2 tool calls in one turn; make one call at a time"]


def test_text_beside_a_call_is_accepted_as_stored_and_as_repaired():
    """tau-bench's user never sees text that accompanies a call; the episode may store the turn either way."""
    domain = dataclasses.replace(COUNTERS, rules=(PolicyRule("T1", "one call per turn", one_call_per_turn),))
    as_stored = conversation(
        {**call("add", '{"name": "apples", "amount": 2}'), "content": "Let me add those for you."},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        {"role": "assistant", "content": "Done: 5 apples."},
    )
    repaired = [{**message, "content": None} if message.get("tool_calls") else message for message in as_stored]
    verdicts = [verify_trajectory(domain, DB, BLUEPRINT, messages) for messages in (as_stored, repaired)]
    assert [verdict.accepted for verdict in verdicts] == [True, True]
    assert verdicts[0].record(0) == verdicts[1].record(0)


def unknown_counter_added(trace) -> list[str]:
    return [
        f"{c.label()} adds to {c.arguments.get('name')!r}, which is no counter"
        for c in trace.calls_of("add")
        if c.arguments.get("name") not in c.before["counters"]
    ]


@pytest.mark.parametrize("attempt_counts", [False, True], ids=["attempt-harmless", "attempt-forbidden"])
def test_a_refused_call_is_a_warning_unless_the_rule_forbids_the_attempt(attempt_counts):
    rule = PolicyRule(
        "C1", "Add only to counters that exist.", unknown_counter_added, refused_calls_count=attempt_counts
    )
    domain = dataclasses.replace(COUNTERS, rules=(rule,))
    messages = conversation(
        call("add", '{"name": "aples", "amount": 2}'),
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: no such counter"},
        call("add", '{"name": "apples", "amount": 2}', call_id="call_2"),
        {"role": "tool", "tool_call_id": "call_2", "content": "5"},
        {"role": "assistant", "content": "5 apples."},
    )
    verdict = verify_trajectory(domain, DB, BLUEPRINT, messages)
    found = "[C1] action 0 (add) adds to 'aples', which is no counter"
    assert verdict.reward == 1.0
    if attempt_counts:
        assert (verdict.accepted, verdict.policy_violations, verdict.warnings) == (False, [found], [])
    else:
        assert (verdict.accepted, verdict.policy_violations) == (True, [])
        assert verdict.record(0)["warnings"] == [f"{found} (the call was refused and changed nothing)"]


# ------------------------------------------------------------------------------------------ human errors


def test_a_user_who_stops_before_a_needed_write_is_attempted_is_the_humans_error():
    messages = conversation({"role": "assistant", "content": "How many apples?"}, last_user="Never mind. ###STOP###")
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    stop = "the user ended the conversation before the agent attempted add"
    assert (verdict.reward, verdict.state_match, verdict.terminated) == (0.0, False, True)
    assert verdict.human_errors == [stop]
    assert verdict.reasons[-1] == stop and verdict.reasons[0].startswith("the final database differs")
    assert (verdict.accepted, verdict.attribution) == (False, "human")


def test_a_user_who_stops_before_the_agents_first_turn_is_the_humans_error():
    # Outputs only (a question, no write): the agent never had a turn to give them, so it cannot be at fault.
    question = {**BLUEPRINT, "actions": [{"name": "add", "kwargs": {"name": "apples", "amount": 0}}]}
    for blueprint in (BLUEPRINT, question):
        verdict = verify_trajectory(COUNTERS, DB, blueprint, conversation(last_user="Bye ###STOP###"))
        assert verdict.human_errors == ["the user ended the conversation before the agent's first turn"], (
            verdict.reasons
        )
        assert (verdict.accepted, verdict.attribution) == (False, "human")
    # Once the agent has spoken, a missed output stays the agent's.
    spoke = verify_trajectory(
        COUNTERS, DB, question, conversation({"role": "assistant", "content": "Hi!"}, last_user="Bye ###STOP###")
    )
    assert (spoke.human_errors, spoke.attribution) == ([], "agent")


def test_an_attempted_write_or_an_agent_ending_leaves_the_fault_with_the_agent():
    failed_attempt = conversation(
        call("add", '{"name": "apples", "amount": "two"}'),
        {"role": "tool", "tool_call_id": "call_1", "content": "Error"},
        {"role": "assistant", "content": "5 apples"},
    )
    transferred = conversation(call("transfer", '{"summary": "apples"}'), last_user="###STOP###")
    unfinished = conversation({"role": "assistant", "content": "How many?"}, last_user="Hmm.")
    for messages in (failed_attempt, transferred, unfinished):
        verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
        assert not verdict.state_match
        assert (verdict.human_errors, verdict.attribution) == ([], "agent"), verdict.reasons


def test_human_errors_passed_in_reject_an_otherwise_perfect_trial():
    leak = "the user revealed '5 apples', which the instruction does not contain"
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, SUCCESS, human_errors=[leak])
    assert verdict.reward == 1.0
    assert (verdict.human_errors, verdict.reasons, verdict.accepted, verdict.attribution) == (
        [leak],
        [leak],
        False,
        "human",
    )
    assert verdict.record(0)["human_errors"] == [leak]


TRANSFER_BLUEPRINT = {**BLUEPRINT, "actions": [{"name": "transfer", "kwargs": {"summary": "apples"}}], "outputs": []}


def test_a_user_transferred_ends_the_episode_as_a_transfer_tool_does():
    """tau2-bench's ###TRANSFER###: the agent handed the user over, so a wrong state is the agent's fault."""
    handed_over = conversation(
        {"role": "assistant", "content": "A colleague will take over."}, last_user="###TRANSFER###"
    )
    right = verify_trajectory(COUNTERS, DB, TRANSFER_BLUEPRINT, handed_over)
    assert (right.terminated, right.accepted) == (True, True)
    wrong = verify_trajectory(COUNTERS, DB, BLUEPRINT, handed_over)
    assert (wrong.terminated, wrong.state_match, wrong.human_errors, wrong.attribution) == (True, False, [], "agent")


def test_a_user_out_of_scope_is_the_humans_fault_when_the_trial_is_rejected():
    """tau2-bench's ###OUT-OF-SCOPE###: the user's scenario could not answer the agent."""
    stuck = conversation(
        {"role": "assistant", "content": "Which apples, green or red?"}, last_user="###OUT-OF-SCOPE###"
    )
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, stuck)
    out_of_scope = "the user ended the conversation with ###OUT-OF-SCOPE###: its scenario could not answer the agent"
    assert (verdict.terminated, verdict.state_match, verdict.accepted) == (True, False, False)
    assert (verdict.human_errors, verdict.attribution, verdict.reasons[-1]) == ([out_of_scope], "human", out_of_scope)
    done = conversation(
        call("add", '{"name": "apples", "amount": 2}'),
        {"role": "assistant", "content": "You have 5 apples. Anything about pears?"},
        last_user="That is beyond what I know. ###OUT-OF-SCOPE###",
    )
    finished = verify_trajectory(COUNTERS, DB, BLUEPRINT, done)
    assert (finished.terminated, finished.accepted, finished.human_errors) == (True, True, [])


# -------------------------------------------------------------------------------------- broken blueprints


def test_a_ground_truth_calling_an_unknown_tool_is_a_warning_not_a_perfect_score():
    blueprint = {
        **BLUEPRINT,
        "actions": [*BLUEPRINT["actions"], {"name": "teleport", "kwargs": {}}, {"name": "teleport", "kwargs": {}}],
    }
    verdict = verify_trajectory(COUNTERS, DB, blueprint, SUCCESS)
    assert verdict.reward == 1.0  # tau-bench's reward: the unknown tool changed nothing in the replay
    assert verdict.warnings == ["ground-truth actions 1, 2: domain 'counters' has no tool 'teleport'"]
    assert verdict.record(0)["warnings"] == verdict.warnings


def test_a_failing_ground_truth_write_is_a_warning_and_a_failing_read_is_not():
    blueprint = {
        **BLUEPRINT,
        "actions": [
            {"name": "read", "kwargs": {"name": "plums"}},
            {"name": "add", "kwargs": {"name": "plums", "amount": 1}},
        ],
        "outputs": [],
    }
    verdict = verify_trajectory(
        COUNTERS, DB, blueprint, conversation({"role": "assistant", "content": "No plums here."})
    )
    assert verdict.reward == 1.0
    assert verdict.warnings == [
        "ground-truth action 1 (add) fails: Error: no such counter; the blueprint does not do what it asks"
    ]


def test_agent_calls_to_unknown_tools_are_the_agents_failure_not_a_warning():
    messages = conversation(
        call("teleport", "{}"),
        call("add", '{"name": "apples", "amount": 2}'),
        {"role": "assistant", "content": "5 apples"},
    )
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, messages)
    assert verdict.warnings == []
    assert verdict.details["agent_calls"][0] == {
        "name": "teleport",
        "arguments": {},
        "observation": "Unknown action teleport",
        "failed": True,
    }


def test_a_retail_blueprint_verified_as_airline_says_whose_tools_it_has():
    trajectory = example(0)
    airline = get_domain("airline")
    verdict = verify_trajectory(airline, airline.load(), trajectory["blueprint"], trajectory["messages"])
    assert verdict.warnings == [
        "ground-truth action 0: domain 'airline' has no tool 'find_user_id_by_email'",
        "ground-truth action 1: domain 'airline' has no tool 'get_order_details'",
        "ground-truth action 2: domain 'airline' has no tool 'cancel_pending_order'",
        "the blueprint's tools belong to domain 'retail', not 'airline'",
    ]


# -------------------------------------------------------------------------------- given ground-truth digest


@pytest.mark.parametrize(
    "messages",
    [
        SUCCESS,
        conversation(call("add", '{"name": "pears", "amount": 2}'), {"role": "assistant", "content": "5 apples"}),
        conversation({"role": "assistant", "content": "Bye."}, last_user="###STOP###"),
    ],
    ids=["success", "wrong-state", "premature-stop"],
)
def test_the_execution_stages_digest_gives_the_same_verdict_as_a_replay(messages):
    blueprint = Blueprint.model_validate(BLUEPRINT)
    digest = check_execution(COUNTERS, replay_blueprint(COUNTERS, DB, blueprint)).details["final_digest"]
    given = verify_trajectory(COUNTERS, DB, blueprint, messages, ground_truth_digest=digest)
    replayed = verify_trajectory(COUNTERS, DB, blueprint, messages)
    assert given.model_dump() == replayed.model_dump()
    assert given.details["ground_truth_digest"] == digest


def test_a_digest_of_another_database_is_named_as_such():
    verdict = verify_trajectory(COUNTERS, DB, BLUEPRINT, SUCCESS, ground_truth_digest="0" * 64)
    assert not verdict.state_match
    assert verdict.reasons == [
        f"the final database (digest {verdict.details['agent_digest'][:12]}) "
        "differs from the given ground-truth digest 000000000000, "
        "yet equals a fresh replay of the ground truth: the digest was computed on another database"
    ]


# ----------------------------------------------------------------------------------- tau-bench ground truth


def as_conversation(task: dict[str, Any]) -> list[dict[str, Any]]:
    """A task's ground-truth calls as the agent's turns, one reply holding every expected output, and a stop."""
    turns: list[dict[str, Any]] = [{"role": "user", "content": "Hello."}]
    for number, step in enumerate(task["actions"]):
        turns.append(call(step["name"], json.dumps(step["kwargs"]), call_id=f"call_{number}"))
        turns.append({"role": "tool", "tool_call_id": f"call_{number}", "content": "..."})
    return [
        *turns,
        {"role": "assistant", "content": "Done: " + "; ".join(task["outputs"])},
        {"role": "user", "content": "###STOP###"},
    ]


def test_taubench_ground_truth_played_back_earns_reward_1(taubench_dir, taubench_tasks):
    """Every retail dev and airline sample task, its ground truth played as a conversation: tau-bench's reward 1."""
    for domain_name, split in (("retail", "dev"), ("airline", "sample")):
        domain = get_domain(domain_name)
        db = domain.load(taubench_dir / domain_name)
        for index, task in enumerate(taubench_tasks(domain_name, split)):
            verdict = verify_trajectory(domain, db, task, as_conversation(task))
            assert (verdict.reward, verdict.warnings) == (1.0, []), (split, index, verdict.reasons)


def test_a_taubench_task_whose_ground_truth_write_fails_is_warned_about(taubench_dir, taubench_tasks):
    """Retail train task 24 pays with a gift card too small for the order: one of the 19 known failing writes."""
    task = taubench_tasks("retail", "train")[24]
    domain = get_domain("retail")
    verdict = verify_trajectory(domain, domain.load(taubench_dir / "retail"), task, as_conversation(task))
    assert verdict.reward == 1.0
    # The agent's copy of that call is refused too: the rules it breaks only through it are warnings as well.
    refused = "(the call was refused and changed nothing)"
    assert verdict.warnings == [
        "ground-truth action 0 (modify_pending_order_payment) fails: Error: insufficient gift card balance to pay for "
        "the order; the blueprint does not do what it asks",
        "[R10] action 0 (modify_pending_order_payment): gift card gift_card_8893815 holds 18, "
        f"less than the order amount 97.35 {refused}",
        "[R18] action 0 (modify_pending_order_payment) uses '#W7602708', "
        f"which no earlier tool output or user message contains {refused}",
        "[R18] action 0 (modify_pending_order_payment) uses 'gift_card_8893815', "
        f"which no earlier tool output or user message contains {refused}",
    ]
