"""The Phase-1 loop on the real retail and airline domains and their generated data: every stage, every
rejection path, feedback into the next round, bounded rounds, and system failures."""

from __future__ import annotations

import asyncio
import json

import pytest

from apigen_mt.blueprints.feedback import feedback_request, reasons_plan, summarise_feedback
from apigen_mt.blueprints.loop import Phase1Models, Phase1Settings, generate_blueprint, task_kind_problems
from apigen_mt.blueprints.proposer import ProposerSettings
from apigen_mt.blueprints.review import CRITERIA, ReviewSettings
from apigen_mt.blueprints.samplers import SampledContext
from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.simulators.chat import ChatResponse, ModelUnavailable
from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.toolkit import Toolkit, tool
from apigen_mt.simulators.types import Blueprint, ToolCall, Verdict

RETAIL = get_domain("retail")
AIRLINE = get_domain("airline")
USER = "christine_king_9954"  # in the generated retail data: #W1077442 pending, #W4081037 delivered
INSTRUCTION = (
    "You are Christine King (christine.king7156@example.com). Cancel your order #W1077442, ordered by mistake."
)
CANCEL = {"name": "cancel_pending_order", "arguments": {"order_id": "#W1077442", "reason": "ordered by mistake"}}
LOOKUP = {"name": "get_order_details", "arguments": {"order_id": "#W1077442"}}


@pytest.fixture(scope="module")
def retail_db():
    return RETAIL.load()


def context(domain: Domain, user_id: str, *tools: str) -> SampledContext:
    specs = {spec.name: spec for spec in domain.toolkit.specs()}
    return SampledContext(
        domain=domain.name,
        user_id=user_id,
        tools=[specs[name] for name in tools],
        walk=list(tools),
        records={},
        policy_excerpt="Only pending orders can be cancelled, for one of the two allowed reasons.",
        rules=[],
        persona=None,
        examples=[],
        context_ids=[f"user:{user_id}"],
        seed=11,
    )


RETAIL_CONTEXT = context(RETAIL, USER, "get_order_details", "cancel_pending_order")


def proposal(actions=(CANCEL,), instruction=INSTRUCTION, outputs=()) -> str:
    return json.dumps({"thought": "t", "instruction": instruction, "actions": list(actions), "outputs": list(outputs)})


def scores(reflection="Fine.", **zeros) -> str:
    return json.dumps({"reflection": reflection, **{criterion: zeros.get(criterion, 1) for criterion in CRITERIA}})


APPROVE = [scores()] * 3


class Roles:
    """Three scripted models, one per role, and the `Phase1Models` over them."""

    def __init__(self, proposals, reviews=(), plans=()) -> None:
        self.proposer = ScriptedChatModel(list(proposals), model_id="proposer")
        self.reviewer = ScriptedChatModel(list(reviews), model_id="reviewer")
        self.summariser = ScriptedChatModel(list(plans), model_id="summariser")
        self.models = Phase1Models(proposer=self.proposer, reviewers=[self.reviewer], summariser=self.summariser)

    def prompt(self, round: int) -> str:
        return self.proposer.requests[round].messages[-1].content


def run(roles: Roles, db, *, ctx=RETAIL_CONTEXT, domain=RETAIL, refusal=False, max_rounds=3, **settings):
    phase1 = Phase1Settings(max_rounds=max_rounds, **settings)
    return asyncio.run(generate_blueprint(ctx, domain, db, roles.models, phase1, refusal=refusal))


# --- accepted -------------------------------------------------------------------------------------------


def test_a_good_proposal_passes_every_stage_in_the_first_round(retail_db):
    roles = Roles([proposal(actions=[LOOKUP, CANCEL])], APPROVE)
    [record] = run(roles, retail_db)
    assert (record.round, record.status, record.failed_stage, record.reasons) == (0, "accepted", None, [])
    assert record.blueprint.user_id == USER and record.blueprint.provenance.round == 0
    assert any(op["path"] == "/orders/#W1077442/status" and op["value"] == "cancelled" for op in record.diff_patch)
    assert record.votes["decision"] == {criterion: 1 for criterion in CRITERIA} and record.votes["score"] == 1.0
    assert record.feedback is None and record.model_id == "proposer" and not record.refusal
    review_prompt = roles.reviewer.requests[0].messages[-1].content
    assert '"/orders/#W1077442/status"' in review_prompt  # the committee sees the diff_patch
    assert roles.summariser.requests == []
    json.dumps(record.model_dump(mode="json"))  # a shard row


# --- stage 1: parse, kind, format, execution, policy ---------------------------------------------------


def test_an_unreadable_proposal_is_a_format_rejection_and_its_problem_is_the_next_plan(retail_db):
    roles = Roles(["I would cancel the order for her.", proposal()], APPROVE)
    first, second = run(roles, retail_db)
    assert (first.status, first.failed_stage, first.blueprint) == ("rejected", "format", None)
    assert "neither a JSON object" in first.reasons[0] and first.text == "I would cancel the order for her."
    assert roles.summariser.requests == []  # nothing to reflect on but the problem itself
    assert second.feedback == reasons_plan(Verdict(stage="format", passed=False, reasons=first.reasons))
    assert "# Your previous attempt could not be used" in roles.prompt(1) and first.reasons[0] in roles.prompt(1)
    assert (second.status, second.round, second.blueprint.provenance.round) == ("accepted", 1, 1)


def test_format_feedback_reaches_the_next_round_with_the_previous_task(retail_db):
    bad = {"name": "cancel_pending_order", "arguments": {**CANCEL["arguments"], "note": "asap"}}
    plan = "<plan>1. Remove the note argument from cancel_pending_order.</plan>"
    roles = Roles([proposal(actions=[bad]), proposal()], APPROVE, [plan])
    first, second = run(roles, retail_db)
    assert (first.status, first.failed_stage) == ("rejected", "format")
    assert any("note" in reason for reason in first.reasons)
    summary_prompt = roles.summariser.requests[0].messages[-1].content
    assert "# Rejected by: the format check" in summary_prompt and first.reasons[0] in summary_prompt
    assert second.feedback.startswith("1. Remove the note argument from cancel_pending_order.")
    assert first.reasons[0] in second.feedback  # stage-1 reasons travel word for word
    prompt = roles.prompt(1)
    assert "# What to improve\n1. Remove the note argument" in prompt
    assert "# Your previous attempt" in prompt and '"note": "asap"' in prompt
    assert second.status == "accepted"


def test_a_failing_write_is_an_execution_rejection(retail_db):
    delivered = {"name": "cancel_pending_order", "arguments": {"order_id": "#W4081037", "reason": "no longer needed"}}
    [record] = run(Roles([proposal(actions=[delivered])]), retail_db, max_rounds=0)
    assert (record.status, record.failed_stage) == ("rejected", "execution")
    assert "cancel_pending_order" in record.reasons[0] and "failed" in record.reasons[0]
    assert record.diff_patch == [] and record.votes is None


def test_a_rule_violation_is_a_policy_rejection(retail_db):
    someone_elses = {
        "name": "cancel_pending_order",
        "arguments": {"order_id": "#W7997738", "reason": "no longer needed"},
    }
    [record] = run(Roles([proposal(actions=[someone_elses])]), retail_db, max_rounds=0)
    assert (record.status, record.failed_stage) == ("rejected", "policy")
    assert any(reason.startswith("[R3]") and "berta_raman_3895" in reason for reason in record.reasons)


def test_a_task_no_agent_could_fail_is_rejected(retail_db):
    [record] = run(Roles([proposal(actions=[LOOKUP])]), retail_db, max_rounds=0)
    assert (record.status, record.failed_stage) == ("rejected", "format")
    assert "neither changes the database nor expects an output" in record.reasons[0]


def test_a_task_without_any_call_is_rejected_even_with_outputs(retail_db):
    [record] = run(Roles([proposal(actions=[], outputs=["pending"])]), retail_db, max_rounds=0)
    assert (record.status, record.failed_stage) == ("rejected", "format")
    assert record.reasons[0].startswith("the task has no actions")


def test_an_information_request_answers_in_outputs(retail_db):
    roles = Roles(
        [proposal(actions=[LOOKUP], instruction="Ask for the status of #W1077442.", outputs=["pending"])], APPROVE
    )
    [record] = run(roles, retail_db)
    assert record.status == "accepted" and record.diff_patch == []


# --- refusal tasks --------------------------------------------------------------------------------------


def test_a_refusal_that_writes_is_rejected(retail_db):
    [record] = run(Roles([proposal()]), retail_db, refusal=True, max_rounds=0)
    assert (record.status, record.failed_stage, record.refusal) == ("rejected", "format", True)
    reason = "action 0 (cancel_pending_order) changes the database, but in a refusal task the agent declines and "
    assert record.reasons == [reason + "changes nothing"]


def test_a_refusal_without_writes_leaves_the_database_unchanged_and_the_reviewers_know(retail_db):
    ask = "You are Christine King. Cancel your delivered order #W4081037; accept it when the agent says no."
    lookup = {"name": "get_order_details", "arguments": {"order_id": "#W4081037"}}
    roles = Roles([proposal(actions=[lookup], instruction=ask)], APPROVE)
    [record] = run(roles, retail_db, refusal=True)
    assert (record.status, record.diff_patch, record.refusal) == ("accepted", [], True)
    assert "# This task is a refusal" in roles.prompt(0)
    assert "# This task is a refusal" in roles.reviewer.requests[0].messages[-1].content
    write_schemas = json.dumps(roles.proposer.requests[0].json_schema)
    assert "cancel_pending_order" not in write_schemas and "get_order_details" in write_schemas


class CounterTools(Toolkit):
    @tool()  # not marked as writing, yet it does: a domain bug the refusal check must not trust
    def peek(self, key: str) -> str:
        """Read a counter.

        Args:
            key: The counter's name.
        """
        self.db["counters"][key] += 1
        return str(self.db["counters"][key])


COUNTERS = Domain(
    name="counters", description="Counters.", toolkit=CounterTools, tables=("counters",), policy="", generate=dict
)


def test_a_refusal_that_changes_the_database_through_a_read_is_rejected():
    ctx = context(COUNTERS, "u1", "peek")
    roles = Roles([proposal(actions=[{"name": "peek", "arguments": {"key": "a"}}], instruction="Ask for more.")])
    [record] = run(roles, {"counters": {"a": 1}}, ctx=ctx, domain=COUNTERS, refusal=True, max_rounds=0)
    assert (record.status, record.failed_stage) == ("rejected", "execution")
    assert record.reasons == ["a refusal task must leave the database unchanged, but its actions make 1 change(s)"]


def test_task_kind_problems_of_a_refusal_that_changes_nothing():
    blueprint = Blueprint(instruction="x", actions=[ToolCall(name="get_order_details", arguments={})])
    assert task_kind_problems(blueprint, frozenset({"cancel_pending_order"}), refusal=True) == []


def test_a_refusal_without_any_lookup_is_refused():
    # Seen with SmolLM2: an empty refusal with a garbled instruction passed a weak committee.
    blind = Blueprint(instruction="x", actions=[])
    [reason] = task_kind_problems(blind, frozenset({"cancel_pending_order"}), refusal=True)
    assert reason.startswith("a refusal task needs the lookups that show why the request is refused")


# --- stages 2 and 3: committee, threshold, reflection ---------------------------------------------------


def test_below_the_threshold_the_reflections_become_the_plan_and_a_revision_is_accepted(retail_db):
    doubts = [
        scores("The instruction names no email.", completeness=0),
        scores("No email given.", completeness=0),
        scores(),
    ]
    roles = Roles([proposal(), proposal()], [*doubts, *APPROVE], ["<plan>1. Give the email.</plan>"])
    first, second = run(roles, retail_db, review=ReviewSettings(threshold=1.0))
    assert (first.status, first.failed_stage) == ("rejected", "review")
    assert first.votes["decision"]["completeness"] == 0 and first.votes["score"] == 0.75
    assert "reviewer 1 (reviewer) voted 0 on completeness: The instruction names no email." in first.reasons
    summary_prompt = roles.summariser.requests[0].messages[-1].content
    assert "# Rejected by: the review check" in summary_prompt and "No email given." in summary_prompt
    assert second.feedback == "1. Give the email."  # a review plan is the summary alone
    assert "# What to improve\n1. Give the email." in roles.prompt(1)
    assert (second.status, second.round) == ("accepted", 1)


def test_an_insured_cancellation_without_a_covered_reason_passes_the_rules_and_falls_to_the_committee():
    db = AIRLINE.load()
    airline_context = context(AIRLINE, "xiuying_berry_4022", "get_reservation_details", "cancel_reservation")
    vague = "Your user id is xiuying_berry_4022. Cancel reservation RDAZS9; you have travel insurance."
    cancel = {"name": "cancel_reservation", "arguments": {"reservation_id": "RDAZS9"}}
    reflection = "The insurance covers only health or weather reasons, and the instruction gives none."
    roles = Roles(
        [proposal(actions=[cancel], instruction=vague)], [scores(reflection, completeness=0)] * 2 + [scores()]
    )
    # At the default threshold (0.75) one criterion voted 0 still passes; this committee demands all four.
    [record] = run(roles, db, ctx=airline_context, domain=AIRLINE, max_rounds=0, review=ReviewSettings(threshold=1.0))
    assert record.diff_patch  # stage 1 passed: the cancellation ran and no rule objected
    assert (record.status, record.failed_stage) == ("rejected", "review")
    assert any(reflection in reason for reason in record.reasons)


@pytest.mark.parametrize(("domain", "max_rounds", "proposals"), [(RETAIL, None, 4), (AIRLINE, None, 6), (RETAIL, 1, 2)])
def test_rounds_are_bounded(domain, max_rounds, proposals):
    roles = Roles(["no task here"] * 10)
    ctx = RETAIL_CONTEXT if domain is RETAIL else context(AIRLINE, "xiuying_berry_4022", "cancel_reservation")
    records = run(roles, {}, ctx=ctx, domain=domain, max_rounds=max_rounds)
    assert [record.round for record in records] == list(range(proposals))
    assert all(record.status == "rejected" for record in records) and len(roles.proposer.requests) == proposals


# --- system failures ------------------------------------------------------------------------------------


def test_a_proposer_backend_error_fails_the_context_without_a_revision(retail_db):
    roles = Roles([ChatResponse(error="HTTP 502")])
    [record] = run(roles, retail_db)
    assert (record.status, record.failed_stage) == ("failed", None)
    assert record.reasons == ["the proposer's backend failed: HTTP 502"]


def test_a_committee_without_a_readable_review_fails_at_the_review_stage(retail_db):
    roles = Roles([proposal()], [ChatResponse(error="timeout")] * 3)
    [record] = run(roles, retail_db)
    assert (record.status, record.failed_stage) == ("failed", "review")
    assert record.reasons[0] == "no reviewer gave a readable review" and len(record.votes["ballots"]) == 3


def test_a_dead_engine_propagates(retail_db):
    with pytest.raises(ModelUnavailable):
        run(Roles([ModelUnavailable("engine restarting")]), retail_db)


def test_the_context_must_belong_to_the_domain(retail_db):
    with pytest.raises(ValueError, match="sampled for domain 'retail', not 'airline'"):
        run(Roles([]), retail_db, domain=AIRLINE)


def test_default_rounds_follow_the_paper():
    assert (Phase1Settings().rounds_for("retail"), Phase1Settings().rounds_for("airline")) == (3, 5)
    assert Phase1Settings(max_rounds=0).rounds_for("airline") == 0
    with pytest.raises(ValueError):
        Phase1Settings(proposer=ProposerSettings(), rounds=2)


# --- the feedback summariser ----------------------------------------------------------------------------

FAILED_POLICY = Verdict(
    stage="policy", passed=False, reasons=["[R3] cancel_pending_order touches another user's order"]
)
TASK = Blueprint(instruction=INSTRUCTION, actions=[ToolCall(name=CANCEL["name"], arguments=CANCEL["arguments"])])


def test_a_summariser_failure_falls_back_to_the_reasons():
    model = ScriptedChatModel([ChatResponse(error="HTTP 500"), "   "])
    expected = (
        "The policy check rejected the task. Fix each of these points:\n"
        "1. [R3] cancel_pending_order touches another user's order"
    )
    assert asyncio.run(summarise_feedback(model, TASK, FAILED_POLICY)) == expected
    assert asyncio.run(summarise_feedback(model, TASK, FAILED_POLICY)) == expected  # an empty plan too


def test_a_plan_cut_off_before_its_closing_tag_still_counts():
    model = ScriptedChatModel(["Thinking.\n<plan>1. Use the customer's own order."])
    plan = asyncio.run(summarise_feedback(model, TASK, Verdict(stage="review", passed=False, reasons=["r"])))
    assert plan == "1. Use the customer's own order."


def test_the_feedback_request_is_greedy_text():
    request = feedback_request(TASK, FAILED_POLICY)
    assert request.json_schema is None and request.sampling.temperature == 0.0
    assert "<plan></plan>" in request.messages[0].content and INSTRUCTION in request.messages[1].content
