"""The review committee: request and schema, reading reviews, majority votes with ties, errors, threshold."""

from __future__ import annotations

import asyncio
import json

import pytest
from jsonschema import Draft202012Validator

from apigen_mt.blueprints.review import (
    CRITERIA,
    ReviewSettings,
    parse_review,
    review,
    review_request,
    review_schema,
)
from apigen_mt.pipeline.engines.scripted import RawText, ScriptedChatModel
from apigen_mt.simulators.chat import ChatResponse, ModelUnavailable
from apigen_mt.simulators.types import Blueprint, ToolCall

BLUEPRINT = Blueprint(
    user_id="christine_king_9954",
    instruction="You are Christine King. Cancel order #W1077442, which you ordered by mistake.",
    actions=[
        ToolCall(name="cancel_pending_order", arguments={"order_id": "#W1077442", "reason": "ordered by mistake"})
    ],
)
DIFF = [{"op": "replace", "path": "/orders/#W1077442/status", "value": "cancelled", "old": "pending"}]
POLICY = "## Cancelling a pending order\nOnly pending orders can be cancelled."


def scores(correctness=1, completeness=1, satisfaction=1, creativity=1, reflection="Fine.") -> str:
    return json.dumps(
        {
            "reflection": reflection,
            "correctness": correctness,
            "completeness": completeness,
            "satisfaction": satisfaction,
            "creativity": creativity,
        }
    )


def _run(models, settings: ReviewSettings, refusal: bool = False):
    return asyncio.run(review(models, BLUEPRINT, DIFF, POLICY, settings, refusal=refusal))


def test_schema_and_request():
    schema = review_schema(512)
    Draft202012Validator.check_schema(schema)
    assert list(schema["properties"]) == ["reflection", *CRITERIA]  # reflection before the scores
    assert not Draft202012Validator(schema).is_valid(json.loads(scores(reflection="and so on " * 200)))
    # A smaller budget caps the reflection harder, so that the scores still fit.
    assert review_schema(128)["properties"]["reflection"]["maxLength"] < schema["properties"]["reflection"]["maxLength"]
    request = review_request(BLUEPRINT, DIFF, POLICY, ReviewSettings(temperature=0.3, max_tokens=200))
    assert request.json_schema == review_schema(200) and request.reply_format == "text"
    assert (request.sampling.temperature, request.sampling.max_tokens) == (0.3, 200)
    system, user = request.messages[0].content, request.messages[1].content
    assert all(criterion in system for criterion in CRITERIA)
    assert "only for certain reasons" in system  # what no rule sees, e.g. an insured cancellation's reason
    assert POLICY in user and BLUEPRINT.instruction in user and '"/orders/#W1077442/status"' in user
    assert "refusal" not in user


def test_reviewers_see_the_records_the_calls_touch_as_they_were_before():
    from apigen_mt.blueprints.prompts import RECORDS_MAX_CHARS, records_text, touched_records
    from apigen_mt.simulators.domain import get_domain

    domain = get_domain("retail")
    db = domain.load()
    order_id = next(iter(db["orders"]))
    user_id = db["orders"][order_id]["user_id"]
    task = Blueprint(
        user_id=user_id,
        instruction="Cancel it.",
        actions=[
            ToolCall(name="get_user_details", arguments={"user_id": user_id}),
            ToolCall(name="cancel_pending_order", arguments={"order_id": order_id, "reason": "ordered by mistake"}),
        ],
    )
    records = touched_records(db, task)
    assert list(records) == [f"users/{user_id}", f"orders/{order_id}"]
    assert records[f"orders/{order_id}"] == db["orders"][order_id]  # "reason" names no record: left out
    user = review_request(task, DIFF, POLICY, records=records).messages[1].content
    assert "# Records the calls touch, before the task" in user
    assert f"orders/{order_id}: {json.dumps(db['orders'][order_id], ensure_ascii=False)}" in user
    many = {f"orders/{key}": value for key, value in db["orders"].items()}
    text = records_text(many)
    assert len(text) <= RECORDS_MAX_CHARS + 100 and text.endswith("more record(s) left out for length)")
    assert "# Records" not in review_request(BLUEPRINT, DIFF, POLICY).messages[1].content


def test_a_refusal_and_an_empty_diff_are_explained_to_the_reviewer():
    user = review_request(BLUEPRINT, [], POLICY, refusal=True).messages[1].content
    assert "(empty: the database is unchanged)" in user and "# This task is a refusal" in user


@pytest.mark.parametrize(
    "text",
    [
        scores(completeness=0, reflection="No reason given."),
        f"The instruction lacks a reason.\n<scores>{scores(completeness=0, reflection='No reason given.')}</scores>",
        f"Thinking...\n```json\n{scores(completeness=0, reflection='No reason given.')}\n```",
    ],
    ids=["structured", "scores-tag", "fenced"],
)
def test_parse_review_reads_every_form(text):
    parsed = parse_review(text)
    assert parsed is not None and parsed.reflection == "No reason given."
    assert parsed.scores == {"correctness": 1, "completeness": 0, "satisfaction": 1, "creativity": 1}


@pytest.mark.parametrize(
    "text",
    [
        "Looks good to me.",
        json.dumps({"reflection": "ok", "correctness": 1, "completeness": 1, "satisfaction": 1}),  # one missing
        scores(correctness=2),
        scores(correctness="1"),
        json.dumps({**json.loads(scores()), "creativity": True}),
        json.dumps({**json.loads(scores()), "reflection": 5}),
        "[1, 1, 1, 1]",
    ],
)
def test_parse_review_refuses_anything_but_0_or_1_for_every_criterion(text):
    assert parse_review(text) is None


def test_a_missing_reflection_reads_as_empty():
    parsed = parse_review(json.dumps({criterion: 1 for criterion in CRITERIA}))
    assert parsed is not None and parsed.reflection == ""


def test_k3_majority_per_criterion_round_robin_over_models():
    first = ScriptedChatModel([scores(creativity=0, reflection="Too plain."), scores(satisfaction=0)], model_id="a")
    second = ScriptedChatModel([scores(creativity=0, reflection="Routine.")], model_id="b")
    verdict = _run([first, second], ReviewSettings(reviewers=3))
    assert (len(first.requests), len(second.requests)) == (2, 1)  # reviewers 1 and 3 ask a, reviewer 2 asks b
    assert verdict.decision == {"correctness": 1, "completeness": 1, "satisfaction": 1, "creativity": 0}
    assert verdict.score == 0.75 and verdict.passed  # threshold 0.75 is reached, not exceeded
    ballots = verdict.votes["ballots"]
    assert [(ballot["model"], ballot["reflection"]) for ballot in ballots] == [
        ("a", "Too plain."),
        ("b", "Routine."),
        ("a", "Fine."),
    ]
    json.dumps(verdict.votes)  # the votes column is plain JSON


def test_a_tie_counts_as_not_met():
    model = ScriptedChatModel([scores(correctness=0, completeness=0), scores(completeness=0), scores(), scores()])
    verdict = _run([model], ReviewSettings(reviewers=4))
    assert verdict.decision["correctness"] == 1  # 3 of 4
    assert verdict.decision["completeness"] == 0  # 2 of 4: a tie
    assert verdict.score == 0.75


def test_below_the_threshold_fails_with_each_reviewers_objection_as_reasons():
    model = ScriptedChatModel(
        [
            scores(completeness=0, reflection="The insured cancellation gives no health or weather reason."),
            scores(completeness=0, creativity=0, reflection="No covered reason; also routine."),
            scores(),
        ],
        model_id="judge",
    )
    verdict = _run([model], ReviewSettings(reviewers=3, threshold=0.8))
    assert verdict.score == 0.75 and not verdict.passed
    as_verdict = verdict.as_verdict()
    assert as_verdict.stage == "review" and not as_verdict.passed
    assert as_verdict.details == {"score": 0.75, "votes": verdict.votes}
    assert as_verdict.reasons == [
        "the review score 0.75 is below the threshold 0.80; the committee voted 0 on completeness",
        "reviewer 1 (judge) voted 0 on completeness: The insured cancellation gives no health or weather reason.",
        "reviewer 2 (judge) voted 0 on completeness, creativity: No covered reason; also routine.",
        "reviewer 3 (judge) voted 1 on every criterion: Fine.",
    ]


def test_correctness_must_win_its_majority_whatever_the_average():
    model = ScriptedChatModel(
        [scores(correctness=0, reflection="The calls do not do what it asks."), scores(correctness=0), scores()]
    )
    verdict = _run([model], ReviewSettings(reviewers=3))
    assert verdict.score == 0.75 and not verdict.passed  # the average alone would pass
    assert verdict.as_verdict().reasons[0] == "the committee voted 0 on correctness, which every task must pass"
    assert _run([ScriptedChatModel([scores(correctness=0)] * 2 + [scores()])], ReviewSettings(required=())).passed
    with pytest.raises(ValueError, match="unknown review criteria elegance"):
        ReviewSettings(required=("elegance",))


def test_a_passing_verdict_has_no_reasons():
    verdict = _run([ScriptedChatModel([scores()] * 3)], ReviewSettings())
    assert verdict.passed and verdict.score == 1.0 and verdict.as_verdict().reasons == []


def test_reviewer_errors_are_recorded_and_left_out_of_the_vote():
    model = ScriptedChatModel(
        [
            ChatResponse(error="timeout after 60 s"),
            RawText("I think it is fine", finish_reason="length"),
            scores(creativity=0),
        ],
        model_id="judge",
    )
    verdict = _run([model], ReviewSettings(reviewers=3))
    assert verdict.decision == {"correctness": 1, "completeness": 1, "satisfaction": 1, "creativity": 0}
    assert verdict.errors[0] == "reviewer 1 (judge): timeout after 60 s"
    assert (
        verdict.errors[1].startswith("reviewer 2 (judge): the reply is not a review") and "cut off" in verdict.errors[1]
    )
    assert [sorted(ballot) for ballot in verdict.votes["ballots"]] == [
        ["error", "model"],
        ["error", "model"],
        ["model", "reflection", "scores"],
    ]


def test_no_readable_review_gives_no_verdict():
    model = ScriptedChatModel([ChatResponse(error="HTTP 503"), "no idea"], model_id="judge")
    verdict = _run([model], ReviewSettings(reviewers=2))
    assert verdict.score is None and not verdict.passed and verdict.decision == {}
    reasons = verdict.as_verdict().reasons
    assert reasons[0] == "no reviewer gave a readable review" and reasons[1] == "reviewer 1 (judge): HTTP 503"


def test_a_dead_engine_propagates_and_an_empty_committee_is_refused():
    with pytest.raises(ModelUnavailable):
        _run([ScriptedChatModel([ModelUnavailable("engine gone")] * 3)], ReviewSettings())
    with pytest.raises(ValueError, match="at least one reviewer"):
        _run([], ReviewSettings())
