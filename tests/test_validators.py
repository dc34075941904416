"""Validators: format, execution, policy stages, the stage runner, and the retail and airline policy rules.

Stage tests run on a small shelf domain built through the public SDK. Policy-rule tests hand each rule a
trace built by hand on a tiny database, so every rule is tested on exactly the situation it names and
independently of the tools' code. The curated-task tests at the end replay tau-bench's own tasks.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Annotated, Any, Literal, TypedDict

import pytest

from apigen_mt.simulators.domain import Domain, PolicyRule, get_domain
from apigen_mt.simulators.domains.airline import rules as airline_rules
from apigen_mt.simulators.domains.retail import rules as retail_rules
from apigen_mt.simulators.domains.telecom import rules as telecom_rules
from apigen_mt.simulators.state import diff_patch, state_digest
from apigen_mt.simulators.toolkit import Toolkit, tool
from apigen_mt.simulators.trace import ActionTrace, TracedCall, trace_calls, trace_conversation
from apigen_mt.simulators.types import Blueprint, ToolCall
from apigen_mt.validators.blueprint import parse_stages, validate_blueprint, validation_record
from apigen_mt.validators.execution import check_execution, replay_blueprint
from apigen_mt.validators.format import check_format
from apigen_mt.validators.policy import check_policy

# --------------------------------------------------------------------------------------------- shelf domain


class Tag(TypedDict):
    label: Annotated[str, "The tag text."]
    weight: Annotated[int, "How much the tag counts."]


class ShelfTools(Toolkit):
    @tool()
    def get_item(self, item_id: str) -> str:
        """Show one item.

        Args:
            item_id: The item id, such as 'a'.
        """
        item = self.db["items"].get(item_id)
        return "Error: item not found" if item is None else json.dumps(item)

    @tool(writes=True)
    def set_price(self, item_id: str, price: float) -> str:
        """Change an item's price.

        Args:
            item_id: The item id.
            price: The new price.
        """
        if item_id not in self.db["items"]:
            return "Error: item not found"
        self.db["items"][item_id]["price"] = price
        return "ok"

    @tool(writes=True)
    def tag(self, item_id: str, colour: Literal["red", "blue"], tags: list[Tag]) -> str:
        """Tag an item.

        Args:
            item_id: The item id.
            colour: The tag colour.
            tags: The tags to add.
        """
        self.db["items"][item_id].setdefault("tags", []).extend({**t, "colour": colour} for t in tags)
        return "tagged"

    @tool(terminates=True)
    def hand_over(self, summary: str) -> str:
        """Hand the conversation to a person.

        Args:
            summary: What the user needs.
        """
        return "Transfer successful"


def no_negative_price(trace: ActionTrace) -> list[str]:
    return [
        f"{c.label()} sets a negative price" for c in trace.calls if c.name == "set_price" and c.arguments["price"] < 0
    ]


def crashing_rule(trace: ActionTrace) -> list[str]:
    raise KeyError("price")


SHELF = Domain(
    name="shelf",
    description="A test shop shelf.",
    toolkit=ShelfTools,
    tables=("items",),
    policy="Prices are never negative.",
    generate=lambda seed: {},
    rules=(PolicyRule("S1", "Prices are never negative.", no_negative_price),),
)


def shelf_db() -> dict[str, Any]:
    return {"items": {"a": {"name": "Apple", "price": 2}, "b": {"name": "Bread", "price": 3.5}}}


def blueprint(*actions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"instruction": "Fix the shelf.", "actions": list(actions), "outputs": [], **fields}


def action(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# ------------------------------------------------------------------------------------- Phase 1's stage 1


def stage_one_of(*actions: dict[str, Any], **fields: Any):
    from apigen_mt.validators.blueprint import stage_one

    return stage_one(SHELF, shelf_db(), Blueprint.model_validate(blueprint(*actions, **fields)))


def test_stage_one_passes_a_clean_task_as_validate_does():
    verdicts = stage_one_of(action("get_item", item_id="a"), action("set_price", item_id="a", price=3))
    assert [(v.stage, v.passed) for v in verdicts] == [("format", True), ("execution", True), ("policy", True)]


def test_stage_one_refuses_repeated_calls_and_outputs_at_format():
    [verdict] = stage_one_of(action("get_item", item_id="a"), action("get_item", item_id="a"), outputs=["2", "2"])
    assert (verdict.stage, verdict.passed) == ("format", False)
    assert verdict.reasons == [
        "action 1 (get_item) repeats action 0 with the same arguments",
        "output '2' is listed more than once",
    ]


def test_stage_one_refuses_a_read_that_fails_which_validate_allows():
    raw = blueprint(action("get_item", item_id="zz"), action("set_price", item_id="a", price=3))
    assert all(v.passed for v in validate_blueprint(SHELF, shelf_db(), raw))  # curated tasks may try a lookup
    verdicts = stage_one_of(action("get_item", item_id="zz"), action("set_price", item_id="a", price=3))
    assert [(v.stage, v.passed) for v in verdicts] == [("format", True), ("execution", False)]
    assert verdicts[-1].reasons == [
        "action 0 (get_item) failed: Error: item not found; every call of a generated task must succeed"
    ]
    assert verdicts[-1].details["diff_patch"]  # the write still ran: the feedback can show its effect


def test_stage_one_names_the_rule_a_refused_write_breaks():
    verdicts = stage_one_of(action("set_price", item_id="zz", price=-1))
    assert verdicts[-1].stage == "execution" and not verdicts[-1].passed
    assert verdicts[-1].reasons[0] == "action 0 (set_price) failed: Error: item not found"
    assert any(reason.startswith("[S1]") for reason in verdicts[-1].reasons[1:]), verdicts[-1].reasons


# ----------------------------------------------------------------------------------------------- format


def test_format_accepts_a_valid_blueprint_in_either_spelling():
    raw = blueprint(
        action("set_price", item_id="a", price=2.5),
        {"name": "tag", "kwargs": {"item_id": "a", "colour": "red", "tags": [{"label": "fresh", "weight": 1}]}},
        outputs=["2.5"],
        user_id="u1",
        id="bp-1",
    )
    assert check_format(SHELF, raw).passed
    assert check_format(SHELF, Blueprint.model_validate(raw)).passed


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([], "a blueprint must be a JSON object with instruction and actions, got an array"),
        ({"actions": []}, "instruction must be a string, got null"),
        (blueprint(instruction="  "), "instruction is empty"),
        ({"instruction": "x", "actions": {}}, "actions must be a list of {name, arguments} objects, got an object"),
        (blueprint("set_price"), "action 0 must be an object {name, arguments}, got a string"),
        (blueprint({"arguments": {}}), "action 0 needs a tool name as a non-empty string, got null"),
        (
            blueprint({"name": "get_item"}),
            "action 0 (get_item) has no arguments object (use {} for a tool without parameters)",
        ),
        (
            blueprint({"name": "get_item", "arguments": {"item_id": "a"}, "kwargs": {"item_id": "a"}}),
            "action 0 (get_item) gives both arguments and kwargs; give one of them",
        ),
        (
            blueprint({"name": "get_item", "arguments": ["a"]}),
            "action 0 (get_item): arguments must be an object, got an array",
        ),
        (
            blueprint(action("get_weather", city="Paris")),
            "action 0 (get_weather): unknown tool 'get_weather'; shelf tools are get_item, hand_over, set_price, tag",
        ),
        (blueprint(action("set_price", item_id="a")), "action 0 (set_price): 'price' is a required property"),
        (
            blueprint(action("set_price", item_id="a", price="3")),
            "action 0 (set_price): argument price: '3' is not of type 'number'",
        ),
        (
            blueprint(action("get_item", item_id="a", verbose=True)),
            "action 0 (get_item): Additional properties are not allowed ('verbose' was unexpected)",
        ),
        (
            blueprint(action("tag", item_id="a", colour="green", tags=[])),
            "action 0 (tag): argument colour: 'green' is not one of ['red', 'blue']",
        ),
        (
            blueprint(action("tag", item_id="a", colour="red", tags=[{"label": "x", "weight": 1}, {"label": "y"}])),
            "action 0 (tag): argument tags[1]: 'weight' is a required property",
        ),
        (
            blueprint(action("tag", item_id="a", colour="red", tags=[{"label": "x", "weight": 1.5}])),
            "action 0 (tag): argument tags[0].weight: 1.5 is not of type 'integer'",
        ),
        (blueprint(outputs="2.5"), "outputs must be a list of strings, got a string"),
        (blueprint(outputs=["ok", 2.5]), "outputs[1] must be a string, got a number"),
        (blueprint(id=7), "id must be a string, got a number"),
        (blueprint(domain="airline"), "the blueprint is for domain 'airline' but is validated against 'shelf'"),
    ],
)
def test_format_names_what_is_wrong(raw, reason):
    verdict = check_format(SHELF, raw)
    assert verdict.stage == "format"
    assert not verdict.passed
    assert reason in verdict.reasons


def test_format_reports_every_problem_with_its_action_index():
    raw = blueprint(action("get_item", item_id="a"), action("set_price", item_id=1, price=2), action("nope"))
    reasons = check_format(SHELF, raw).reasons
    assert reasons[0] == "action 1 (set_price): argument item_id: 1 is not of type 'string'"
    assert reasons[1].startswith("action 2 (nope): unknown tool 'nope'")
    assert len(reasons) == 2


# -------------------------------------------------------------------------------------------- execution


def executed(raw: dict[str, Any], db=None):
    db = shelf_db() if db is None else db
    return check_execution(SHELF, replay_blueprint(SHELF, db, Blueprint.model_validate(raw)))


def test_execution_records_diff_digest_and_observations():
    db = shelf_db()
    verdict = executed(blueprint(action("get_item", item_id="a"), action("set_price", item_id="a", price=2.0)), db)
    assert verdict.passed and verdict.reasons == []
    assert verdict.details["diff_patch"] == [{"op": "replace", "path": "/items/a/price", "old": 2, "value": 2.0}]
    after = shelf_db()
    after["items"]["a"]["price"] = 2.0
    assert verdict.details["final_digest"] == state_digest(after)
    assert verdict.details["observations"] == ['{"name": "Apple", "price": 2}', "ok"]
    assert db == shelf_db() and isinstance(db["items"]["a"]["price"], int)  # the caller's database is untouched


def test_a_failing_write_rejects_with_index_tool_and_observation():
    verdict = executed(
        blueprint(action("set_price", item_id="a", price=1.0), action("set_price", item_id="z", price=1.0))
    )
    assert not verdict.passed
    assert verdict.reasons == ["action 1 (set_price) failed: Error: item not found"]


def test_a_failing_read_is_allowed_and_recorded():
    verdict = executed(blueprint(action("get_item", item_id="z"), action("set_price", item_id="a", price=1.0)))
    assert verdict.passed
    assert verdict.details["failed_reads"] == [{"index": 0, "name": "get_item", "observation": "Error: item not found"}]


def test_execution_rejects_unknown_tools_and_actions_after_a_terminating_tool():
    verdict = executed(blueprint(action("hand_over", summary="help"), action("get_weather")))
    assert verdict.reasons == [
        "action 0 (hand_over) ends the episode, yet 1 more action(s) follow it; put it last or remove it",
        "action 1 (get_weather): Unknown action get_weather; shelf has no such tool",
    ]
    assert executed(blueprint(action("set_price", item_id="b", price=1.0), action("hand_over", summary="x"))).passed


# ------------------------------------------------------------------------------------------ state diffs


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda db: db["items"]["a"].update(price=2.0),
            [{"op": "replace", "path": "/items/a/price", "old": 2, "value": 2.0}],
        ),
        (
            lambda db: db["items"]["b"].update(name="Rye"),
            [{"op": "replace", "path": "/items/b/name", "old": "Bread", "value": "Rye"}],
        ),
        (
            lambda db: db["items"].update(c={"name": "Cake", "price": 1}),
            [{"op": "add", "path": "/items/c", "value": {"name": "Cake", "price": 1}}],
        ),
        (lambda db: db["items"].pop("a"), [{"op": "remove", "path": "/items/a", "old": {"name": "Apple", "price": 2}}]),
        (lambda db: db.pop("items"), [{"op": "remove", "path": "/items", "old": shelf_db()["items"]}]),
        (lambda db: db["items"].update(a={"price": 2, "name": "Apple"}), []),  # key order only: no operation
        (lambda db: None, []),
    ],
)
def test_diff_patch_of_record_changes(change, expected):
    before = shelf_db()
    after = copy.deepcopy(before)
    change(after)
    assert diff_patch(before, after) == expected


def test_diff_patch_ignores_object_sharing():
    shared = [1, 2.5]
    before = {"t": {"r": {"p": [1, 2.5], "q": [1, 2.5]}}}
    after = {"t": {"r": {"p": shared, "q": shared}}}  # same values; only the object graph differs
    assert diff_patch(before, after) == []


def test_diff_patch_sees_a_number_type_change_in_a_record_equal_by_value():
    before = {"users": {f"u{i}": {"balance": i} for i in range(50)}}
    after = copy.deepcopy(before)
    after["users"]["u7"]["balance"] = 7.0
    assert diff_patch(before, after) == [{"op": "replace", "path": "/users/u7/balance", "old": 7, "value": 7.0}]


# ----------------------------------------------------------------------------------------------- traces


def test_trace_gives_each_call_the_database_it_ran_on():
    db = shelf_db()
    calls = [
        ToolCall(name="set_price", arguments={"item_id": "a", "price": 9.0}),
        ToolCall(name="get_item", arguments={"item_id": "a"}),
    ]
    trace = trace_calls(SHELF, db, calls, user_id="u1")
    assert trace.calls[0].before is db and trace.calls[0].before["items"]["a"]["price"] == 2
    assert trace.calls[1].before["items"]["a"]["price"] == 9.0
    assert trace.final["items"]["a"]["price"] == 9.0 and db == shelf_db()
    assert [c.writes for c in trace.calls] == [True, False] and not trace.episode


def test_conversation_trace_decodes_openai_tool_calls():
    messages = [
        {"role": "user", "content": "Price of a?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_item", "arguments": '{"item_id": "a"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "..."},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "set_price", "arguments": "{oops"}}],
        },
    ]
    trace = trace_conversation(SHELF, shelf_db(), messages)
    assert trace.episode and trace.messages[0]["content"] == "Price of a?"
    assert [(c.name, c.arguments, c.message_index) for c in trace.calls] == [
        ("get_item", {"item_id": "a"}, 1),
        ("set_price", {"__raw__": "{oops"}, 3),
    ]
    assert trace.calls[1].failed and trace.final == shelf_db()


# ------------------------------------------------------------------------------------ policy and runner


def test_policy_stage_reports_rule_ids():
    trace = replay_blueprint(
        SHELF, shelf_db(), Blueprint.model_validate(blueprint(action("set_price", item_id="a", price=-1.0)))
    )
    verdict = check_policy(SHELF, trace)
    assert not verdict.passed
    assert verdict.reasons == ["[S1] action 0 (set_price) sets a negative price"]
    assert verdict.details["rules"] == ["S1"]


def test_a_crashing_rule_fails_the_stage_with_its_id():
    domain = Domain(**{**SHELF.__dict__, "rules": (PolicyRule("S9", "crashes", crashing_rule),)})
    verdict = check_policy(domain, replay_blueprint(domain, shelf_db(), Blueprint.model_validate(blueprint())))
    assert verdict.reasons == ["[S9] the check crashed on this trace (KeyError: 'price'); treat as a bug in the rule"]


def test_a_call_is_refused_when_it_fails_and_leaves_the_database_as_it_was():
    airline = get_domain("airline")
    certificate_twice = book(
        payment_methods=[{"payment_id": "certificate_1", "amount": 100}, {"payment_id": "certificate_1", "amount": 50}]
    )
    calls = [
        ("get_reservation_details", {"reservation_id": "RES00"}),  # a mistyped id: a failed read
        book(payment_methods=[{"payment_id": "credit_card_1", "amount": 140}]),  # refused: the payment does not add up
        certificate_twice,  # fails after deleting the certificate (tau-bench's quirk): failed, not refused
        book(),
    ]
    trace = trace_calls(
        airline, AIRLINE, [ToolCall(name=name, arguments=arguments) for name, arguments in calls], episode=True
    )
    assert [(call.failed, call.refused) for call in trace.calls] == [
        (True, True),
        (True, True),
        (True, False),
        (False, False),
    ]
    assert "certificate_1" not in trace.calls[3].before["users"]["mia_1"]["payment_methods"]
    kept = trace.without_refused()
    assert [call.index for call in kept.calls] == [2, 3]
    assert [call.index for call in kept.earlier(kept.calls[1])] == [
        2
    ]  # indices, and so labels, stay those of the calls made


def airline_episode(*calls: tuple) -> ActionTrace:
    """An episode on the small airline database: the calls run through the real tools, after the user's details."""
    steps = [("get_user_details", {"user_id": "mia_1"}), *calls]
    return trace_calls(
        get_domain("airline"),
        AIRLINE,
        [ToolCall(name=name, arguments=arguments) for name, arguments in steps],
        episode=True,
    )


def test_a_refused_call_warns_where_the_attempt_breaks_nothing_and_rejects_where_it_is_forbidden():
    short_payment = book(payment_methods=[{"payment_id": "credit_card_1", "amount": 140}])
    corrected = airline_episode(short_payment, book())
    verdict = check_policy(get_domain("airline"), corrected)
    assert verdict.passed and verdict.reasons == []
    assert verdict.details["warnings"] == [
        "[A5] action 1 (book_reservation): the payments add up to 140, but the reservation costs 150 "
        "(the call was refused and changed nothing)"
    ]
    # A14: the tool always refuses a change in the number of passengers, and trying it is what the policy forbids.
    one_passenger = [{"first_name": "Mia", "last_name": "Li", "dob": "1990-04-05"}]
    fewer = airline_episode(
        look_up("RES004"), ("update_reservation_passengers", {"reservation_id": "RES004", "passengers": one_passenger})
    )
    assert fewer.calls[2].refused
    verdict = check_policy(get_domain("airline"), fewer)
    assert verdict.reasons == [
        "[A14] action 2 (update_reservation_passengers) gives 1 passengers for RES004, which has 2; "
        "the number of passengers cannot change"
    ]
    assert verdict.details["warnings"] == []
    # Ground truth gets no such leniency: its refused write is a violation (and fails the execution stage).
    blueprint_trace = replay_blueprint(
        get_domain("airline"),
        AIRLINE,
        Blueprint.model_validate(
            {
                "user_id": "mia_1",
                "instruction": "Book.",
                "actions": [{"name": name, "arguments": arguments} for name, arguments in (short_payment, book())],
            }
        ),
    )
    assert check_policy(get_domain("airline"), blueprint_trace).reasons == [
        "[A5] action 0 (book_reservation): the payments add up to 140, but the reservation costs 150"
    ]


def test_a_failed_call_that_changed_the_database_is_judged_in_full():
    certificate_twice = book(
        payment_methods=[{"payment_id": "certificate_1", "amount": 100}, {"payment_id": "certificate_1", "amount": 50}]
    )
    verdict = check_policy(get_domain("airline"), airline_episode(certificate_twice))
    assert verdict.reasons == ["[A5] action 1 (book_reservation) uses 2 certificates; at most 1 per reservation"]


def test_validation_stops_at_the_first_failing_stage():
    bad_format = blueprint(action("set_price", item_id="a"))
    assert [(v.stage, v.passed) for v in validate_blueprint(SHELF, shelf_db(), bad_format)] == [("format", False)]
    bad_write = blueprint(action("set_price", item_id="z", price=1.0))
    assert [(v.stage, v.passed) for v in validate_blueprint(SHELF, shelf_db(), bad_write)] == [
        ("format", True),
        ("execution", False),
    ]
    bad_policy = blueprint(action("set_price", item_id="a", price=-1.0))
    verdicts = validate_blueprint(SHELF, shelf_db(), bad_policy)
    assert [(v.stage, v.passed) for v in verdicts] == [("format", True), ("execution", True), ("policy", False)]
    good = blueprint(action("set_price", item_id="a", price=1.0), id="bp-7")
    verdicts = validate_blueprint(SHELF, shelf_db(), good)
    assert all(v.passed for v in verdicts) and len(verdicts) == 3
    assert validation_record(4, good, verdicts) == {
        "index": 4,
        "id": "bp-7",
        "accepted": True,
        "failed_stage": None,
        "reasons": [],
        "diff_patch": [{"op": "replace", "path": "/items/a/price", "old": 2, "value": 1.0}],
    }


def test_validation_record_of_a_rejected_blueprint():
    raw = blueprint(action("set_price", item_id="a", price=-1.0))
    record = validation_record(0, raw, validate_blueprint(SHELF, shelf_db(), raw))
    assert record["accepted"] is False and record["failed_stage"] == "policy" and record["id"] is None
    assert record["reasons"] == ["[S1] action 0 (set_price) sets a negative price"]
    assert record["diff_patch"][0]["path"] == "/items/a/price"
    only_format = validation_record(1, [], validate_blueprint(SHELF, shelf_db(), [], ["format"]))
    assert only_format["failed_stage"] == "format" and only_format["diff_patch"] is None


def test_stage_selection():
    assert parse_stages("policy, format") == ("format", "policy")
    with pytest.raises(ValueError, match="unknown validation stage"):
        parse_stages("format,review")
    with pytest.raises(ValueError, match="no validation stage given"):
        parse_stages(" , ")
    # Without the format stage, a blueprint that does not even parse still fails, as a format problem.
    verdicts = validate_blueprint(SHELF, shelf_db(), {"instruction": "x", "actions": "none"}, ["execution"])
    assert [(v.stage, v.passed) for v in verdicts] == [("format", False)]
    assert verdicts[0].reasons == ["actions: Input should be a valid list"]
    # ...while tool-argument problems are left to the environment.
    verdicts = validate_blueprint(
        SHELF, shelf_db(), blueprint(action("set_price", item_id="a", price="1")), ["execution"]
    )
    assert [v.stage for v in verdicts] == ["execution"]


# ------------------------------------------------------------------------------ hand-made trace builder


def traced(db: Any, *calls: tuple, user_id: str | None = None, episode: bool = False, messages=None) -> ActionTrace:
    """A trace built by hand: each call is `(name, arguments[, observation[, message index]])`.

    Every call sees `db`; an observation starting with `Error:` marks the call failed.
    """
    built = []
    for index, (name, arguments, *rest) in enumerate(calls):
        observation = rest[0] if rest else "{}"
        built.append(
            TracedCall(
                index=index,
                call=ToolCall(name=name, arguments=arguments),
                observation=observation,
                failed=observation.startswith("Error:"),
                writes=name.startswith(("cancel", "modify", "return", "exchange", "book", "update", "send")),
                before=db,
                message_index=rest[1] if len(rest) > 1 else None,
                refused=observation.startswith("Error:"),  # every call sees `db`: a failed one changed nothing
            )
        )
    return ActionTrace(calls=tuple(built), initial=db, final=db, user_id=user_id, episode=episode, messages=messages)


def violations(rules, rule_id: str, trace: ActionTrace) -> list[str]:
    (rule,) = [rule for rule in rules.RULES if rule.id == rule_id]
    return rule.check(trace)


# ------------------------------------------------------------------------------------------ retail rules


def retail_db() -> dict[str, Any]:
    def order(order_id, user, status, items, method="credit_card_1", amount=15.0):
        return {
            "order_id": order_id,
            "user_id": user,
            "address": {},
            "items": items,
            "fulfillments": [],
            "status": status,
            "payment_history": [{"transaction_type": "payment", "amount": amount, "payment_method_id": method}],
        }

    shirt = {"name": "T-Shirt", "product_id": "p1", "item_id": "i1", "price": 10.0, "options": {"size": "S"}}
    mug = {"name": "Mug", "product_id": "p2", "item_id": "m1", "price": 5.0, "options": {}}
    return {
        "orders": {
            "#W1": order("#W1", "ann_1", "pending", [shirt, mug]),
            "#W2": order("#W2", "ann_1", "delivered", [shirt], amount=10.0),
            "#W3": order("#W3", "ann_1", "processed", [shirt]),
            "#W4": order("#W4", "ann_1", "cancelled", [shirt]),
            "#W9": order("#W9", "bob_2", "pending", [mug], method="credit_card_2"),
        },
        "products": {
            "p1": {
                "name": "T-Shirt",
                "product_id": "p1",
                "variants": {
                    "i1": {"item_id": "i1", "options": {"size": "S"}, "available": True, "price": 10.0},
                    "i2": {"item_id": "i2", "options": {"size": "M"}, "available": True, "price": 15.0},
                    "i3": {"item_id": "i3", "options": {"size": "L"}, "available": False, "price": 12.0},
                },
            },
            "p2": {
                "name": "Mug",
                "product_id": "p2",
                "variants": {
                    "m1": {"item_id": "m1", "options": {}, "available": True, "price": 5.0},
                    "m2": {"item_id": "m2", "options": {}, "available": True, "price": 6.0},
                },
            },
        },
        "users": {
            "ann_1": {
                "name": {"first_name": "Ann", "last_name": "Lee"},
                "email": "ann@example.com",
                "orders": ["#W1", "#W2", "#W3", "#W4"],
                "payment_methods": {
                    "credit_card_1": {"source": "credit_card", "id": "credit_card_1"},
                    "gift_card_1": {"source": "gift_card", "balance": 20, "id": "gift_card_1"},
                    "paypal_1": {"source": "paypal", "id": "paypal_1"},
                },
            },
            "bob_2": {
                "name": {"first_name": "Bob", "last_name": "Ray"},
                "email": "bob@example.com",
                "orders": ["#W9"],
                "payment_methods": {"credit_card_2": {"source": "credit_card", "id": "credit_card_2"}},
            },
        },
    }


RETAIL = retail_db()


def retail(*calls: tuple, **kwargs: Any) -> ActionTrace:
    return traced(RETAIL, *calls, **{"user_id": "ann_1", **kwargs})


def modify_items(order_id="#W1", old=("i1",), new=("i2",), method="credit_card_1"):
    return (
        "modify_pending_order_items",
        {"order_id": order_id, "item_ids": list(old), "new_item_ids": list(new), "payment_method_id": method},
    )


def exchange(order_id="#W2", old=("i1",), new=("i2",), method="credit_card_1"):
    return (
        "exchange_delivered_order_items",
        {"order_id": order_id, "item_ids": list(old), "new_item_ids": list(new), "payment_method_id": method},
    )


def cancel(order_id="#W1", reason="no longer needed"):
    return ("cancel_pending_order", {"order_id": order_id, "reason": reason})


def give_back(order_id="#W2", method="credit_card_1"):
    return ("return_delivered_order_items", {"order_id": order_id, "item_ids": ["i1"], "payment_method_id": method})


def test_r1_episode_needs_a_find_user_call_first():
    late = retail(
        ("get_order_details", {"order_id": "#W1"}),
        ("find_user_id_by_email", {"email": "ann@example.com"}, "ann_1"),
        episode=True,
    )
    assert violations(retail_rules, "R1", late) == [
        "action 0 (get_order_details) runs before the user is authenticated; first find the user id with "
        "find_user_id_by_email or find_user_id_by_name_zip"
    ]
    failed = retail(
        ("find_user_id_by_email", {"email": "x@y"}, "Error: user not found"),
        ("get_user_details", {"user_id": "ann_1"}),
        episode=True,
    )
    assert len(violations(retail_rules, "R1", failed)) == 1
    good = retail(
        ("think", {"thought": "hm"}),
        ("find_user_id_by_email", {"email": "ann@example.com"}, "ann_1"),
        ("get_order_details", {"order_id": "#W1"}),
        episode=True,
    )
    assert violations(retail_rules, "R1", good) == []


def test_r1_blueprint_relies_on_its_user_id():
    assert violations(retail_rules, "R1", retail(cancel())) == []
    assert violations(retail_rules, "R1", retail(cancel(), user_id=None)) == [
        "the blueprint names no user_id and none of its actions finds one, so no user can be authenticated"
    ]
    assert violations(retail_rules, "R1", retail(cancel(), user_id="zed_9")) == [
        "user_id 'zed_9' is not a user of the database, so the user cannot be authenticated"
    ]
    found = retail(
        ("find_user_id_by_name_zip", {"first_name": "Ann", "last_name": "Lee", "zip": "1"}, "ann_1"),
        cancel(),
        user_id=None,
    )
    assert violations(retail_rules, "R1", found) == []


def test_r3_one_user_per_conversation():
    trace = retail(cancel("#W9"), ("get_user_details", {"user_id": "bob_2"}), cancel("#W1"))
    assert violations(retail_rules, "R3", trace) == [
        "action 0 (cancel_pending_order) touches order #W9 of user 'bob_2', but the conversation is with 'ann_1'",
        "action 1 (get_user_details) uses user_id 'bob_2', but the conversation is with 'ann_1'",
    ]
    episode = retail(
        ("find_user_id_by_email", {"email": "bob@example.com"}, "bob_2"),
        ("get_order_details", {"order_id": "#W9"}),
        episode=True,
    )
    assert violations(retail_rules, "R3", episode) == []
    # A mistyped user id (the tool finds nobody) reaches no other user's data.
    assert (
        violations(retail_rules, "R3", retail(("get_user_details", {"user_id": "ann_l"}, "Error: user not found")))
        == []
    )


def turn_messages(*assistant_turns: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "hi"}, *assistant_turns]


def call_entry(name: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(("rules", "rule_id"), [(retail_rules, "R5"), (airline_rules, "A2"), (telecom_rules, "T3")])
def test_one_tool_call_per_turn_and_text_beside_a_call_allowed(rules, rule_id):
    bad = turn_messages(
        {"role": "assistant", "content": None, "tool_calls": [call_entry("think"), call_entry("think")]},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [call_entry("think"), call_entry("think"), call_entry("think")],
        },
    )
    assert violations(rules, rule_id, traced(RETAIL, episode=True, messages=bad)) == [
        "message 1 makes 2 tool calls in one turn; make one call at a time",
        "message 2 makes 3 tool calls in one turn; make one call at a time",
    ]
    # tau-bench's user never sees text that accompanies a call: as stored, and as repaired (the call alone).
    good = turn_messages(
        {"role": "assistant", "content": "Let me check that for you.", "tool_calls": [call_entry("think")]},
        {"role": "assistant", "content": "", "tool_calls": [call_entry("think")]},
        {"role": "assistant", "content": "Done."},
    )
    assert violations(rules, rule_id, traced(RETAIL, episode=True, messages=good)) == []
    assert violations(rules, rule_id, traced(RETAIL)) == []  # no messages, nothing to judge


def test_r6_order_details_before_acting_in_an_episode():
    find = ("find_user_id_by_email", {"email": "ann@example.com"}, "ann_1")
    assert violations(retail_rules, "R6", retail(find, cancel(), episode=True)) == [
        "action 1 (cancel_pending_order) acts on order #W1 without a get_order_details call for it first"
    ]
    failed_lookup = ("get_order_details", {"order_id": "#W1"}, "Error: order not found")
    assert len(violations(retail_rules, "R6", retail(find, failed_lookup, cancel(), episode=True))) == 1
    assert (
        violations(retail_rules, "R6", retail(find, ("get_order_details", {"order_id": "#W1"}), cancel(), episode=True))
        == []
    )
    assert violations(retail_rules, "R6", retail(cancel())) == []  # a blueprint leaves the lookups to the agent


def test_r7_cancel_only_pending():
    assert violations(retail_rules, "R7", retail(cancel("#W2"))) == [
        "action 0 (cancel_pending_order) cancels order #W2 whose status is 'delivered'; only 'pending' orders qualify"
    ]
    assert violations(retail_rules, "R7", retail(cancel("#W1"))) == []


def test_r8_cancel_reason():
    assert violations(retail_rules, "R8", retail(cancel(reason="changed my mind"))) == [
        "action 0 (cancel_pending_order) gives reason 'changed my mind'; "
        "it must be one of 'no longer needed', 'ordered by mistake'"
    ]
    assert violations(retail_rules, "R8", retail(cancel(reason="ordered by mistake"))) == []


def test_r9_modify_only_pending():
    address = {
        "address1": "1 Main St",
        "address2": "",
        "city": "Austin",
        "state": "TX",
        "country": "USA",
        "zip": "78701",
    }
    assert violations(retail_rules, "R9", retail(("modify_pending_order_address", {"order_id": "#W2", **address}))) == [
        "action 0 (modify_pending_order_address) modifies order #W2 whose status is 'delivered'; "
        "only 'pending' orders qualify"
    ]
    assert (
        violations(retail_rules, "R9", retail(("modify_pending_order_address", {"order_id": "#W1", **address}))) == []
    )


def change_payment(method: str, order_id: str = "#W1"):
    return ("modify_pending_order_payment", {"order_id": order_id, "payment_method_id": method})


def test_r10_new_payment_method():
    assert violations(retail_rules, "R10", retail(change_payment("credit_card_1"))) == [
        "action 0 (modify_pending_order_payment): credit_card_1 already pays for order #W1; pick a different method"
    ]
    assert violations(retail_rules, "R10", retail(change_payment("credit_card_2"))) == [
        "action 0 (modify_pending_order_payment): payment method 'credit_card_2' is not in the profile of 'ann_1'"
    ]
    poor = copy.deepcopy(RETAIL)
    poor["users"]["ann_1"]["payment_methods"]["gift_card_1"]["balance"] = 14
    assert violations(retail_rules, "R10", traced(poor, change_payment("gift_card_1"))) == [
        "action 0 (modify_pending_order_payment): gift card gift_card_1 holds 14, less than the order amount 15.0"
    ]
    assert violations(retail_rules, "R10", retail(change_payment("gift_card_1"))) == []


def test_r11_items_modified_once_and_nothing_after():
    assert violations(retail_rules, "R11", retail(modify_items(), change_payment("paypal_1"))) == [
        "action 1 (modify_pending_order_payment) comes after order #W1's items were already modified; "
        "items are modified once, all in one call, and the order cannot be changed or cancelled afterwards"
    ]
    failed_first = traced(
        RETAIL,
        (*modify_items(method="gift_card_9"), "Error: payment method not found"),
        modify_items(),
        user_id="ann_1",
    )
    assert violations(retail_rules, "R11", failed_first) == []  # a refused call did not modify anything


def test_r12_new_items_are_different_available_variants_of_the_same_product():
    bad = retail(modify_items(old=["i1", "m1"], new=["i1", "i2"]), exchange(new=["i3"]))
    assert violations(retail_rules, "R12", bad) == [
        "action 0 (modify_pending_order_items): new item i1 (position 0) is the same as the item it replaces",
        "action 0 (modify_pending_order_items): new item i2 (position 1) is not a variant of 'Mug', "
        "the product of item m1",
        "action 1 (exchange_delivered_order_items): new item i3 (position 0) is not available",
    ]
    assert violations(retail_rules, "R12", retail(modify_items(old=["i9"], new=["i2"]))) == [
        "action 0 (modify_pending_order_items): item i9 (position 0) is not in order #W1"
    ]
    assert violations(retail_rules, "R12", retail(modify_items(old=["i1", "m1"], new=["i2", "m2"]), exchange())) == []


def test_r13_price_difference_paid_by_the_users_method():
    assert violations(retail_rules, "R13", retail(exchange(method="credit_card_2"))) == [
        "action 0 (exchange_delivered_order_items): payment method 'credit_card_2' is not in the profile of 'ann_1'"
    ]
    poor = copy.deepcopy(RETAIL)
    poor["users"]["ann_1"]["payment_methods"]["gift_card_1"]["balance"] = 4
    assert violations(retail_rules, "R13", traced(poor, modify_items(method="gift_card_1"))) == [
        "action 0 (modify_pending_order_items): gift card gift_card_1 holds 4, less than the price difference 5.0"
    ]
    # A refund (new item cheaper) needs no balance.
    assert (
        violations(retail_rules, "R13", traced(poor, modify_items(old=["m1"], new=["m1"], method="gift_card_1"))) == []
    )
    assert violations(retail_rules, "R13", retail(modify_items(method="gift_card_1"))) == []


def test_r14_return_only_delivered():
    assert violations(retail_rules, "R14", retail(give_back("#W1"))) == [
        "action 0 (return_delivered_order_items) returns items of order #W1 whose status is 'pending'; "
        "only 'delivered' orders qualify"
    ]
    assert violations(retail_rules, "R14", retail(give_back("#W2"))) == []


def test_r15_return_refund_goes_to_the_original_method_or_a_gift_card():
    assert violations(retail_rules, "R15", retail(give_back(method="paypal_1"))) == [
        "action 0 (return_delivered_order_items) refunds to 'paypal_1'; a return refunds to the original method "
        "'credit_card_1' or to a gift card of the user"
    ]
    assert (
        violations(retail_rules, "R15", retail(give_back(method="gift_card_1"), give_back(method="credit_card_1")))
        == []
    )


def test_r16_one_exchange_or_return_per_delivered_order():
    assert violations(retail_rules, "R16", retail(exchange("#W1"))) == [
        "action 0 (exchange_delivered_order_items) exchanges items of order #W1 whose status is 'pending'; "
        "only 'delivered' orders qualify"
    ]
    assert violations(retail_rules, "R16", retail(give_back(), exchange())) == [
        "action 1 (exchange_delivered_order_items): order #W2 already had a return or exchange; "
        "one per delivered order, all items in one call"
    ]
    assert violations(retail_rules, "R16", retail(exchange())) == []


def test_r17_no_write_on_processed_or_cancelled_orders():
    assert violations(retail_rules, "R17", retail(cancel("#W3"), give_back("#W4"))) == [
        "action 0 (cancel_pending_order) writes to order #W3 whose status is 'processed'; "
        "processed and cancelled orders get no write",
        "action 1 (return_delivered_order_items) writes to order #W4 whose status is 'cancelled'; "
        "processed and cancelled orders get no write",
    ]
    assert violations(retail_rules, "R17", retail(cancel("#W1"), give_back("#W2"))) == []


def test_r18_ids_in_writes_come_from_tool_output_or_the_user():
    messages = [
        {"role": "user", "content": "I am ann@example.com and want to cancel an order."},
        {"role": "assistant", "tool_calls": [call_entry("find_user_id_by_email")]},
        {"role": "assistant", "tool_calls": [call_entry("cancel_pending_order")]},
    ]
    find = ("find_user_id_by_email", {"email": "ann@example.com"}, "ann_1", 1)
    invented = retail(find, (*cancel("#W1"), "{}", 2), episode=True, messages=messages)
    assert violations(retail_rules, "R18", invented) == [
        "action 1 (cancel_pending_order) uses '#W1', which no earlier tool output or user message contains"
    ]
    heard = [{**messages[0], "content": "Please cancel #W1."}, *messages[1:]]
    assert violations(retail_rules, "R18", retail(find, (*cancel("#W1"), "{}", 2), episode=True, messages=heard)) == []
    looked_up = retail(
        find,
        ("get_user_details", {"user_id": "ann_1"}, json.dumps(RETAIL["users"]["ann_1"]), 2),
        (*cancel("#W1"), "{}", 2),
        episode=True,
        messages=messages,
    )
    assert violations(retail_rules, "R18", looked_up) == []


# ----------------------------------------------------------------------------------------- airline rules


def airline_db() -> dict[str, Any]:
    def flight(number, origin, destination, dates):
        return {
            "flight_number": number,
            "origin": origin,
            "destination": destination,
            "scheduled_departure_time_est": "06:00:00",
            "scheduled_arrival_time_est": "09:00:00",
            "dates": dates,
        }

    def available(economy):
        return {
            "status": "available",
            "available_seats": {"basic_economy": 9, "economy": 9, "business": 9},
            "prices": {"basic_economy": economy // 2, "economy": economy, "business": economy * 3},
        }

    def reservation(rid, user, cabin, flight_type, origin, destination, segments, passengers=1, **extra):
        return {
            "reservation_id": rid,
            "user_id": user,
            "origin": origin,
            "destination": destination,
            "flight_type": flight_type,
            "cabin": cabin,
            "flights": [{"flight_number": n, "date": d} for n, d in segments],
            "passengers": [{"first_name": f"P{i}", "last_name": "X", "dob": "1990-01-01"} for i in range(passengers)],
            "payment_history": [],
            "created_at": "2024-05-01T10:00:00",
            "total_baggages": 1,
            "nonfree_baggages": 0,
            "insurance": "no",
            **extra,
        }

    return {
        "flights": {
            "HAT001": flight(
                "HAT001",
                "JFK",
                "ORD",
                {
                    "2024-05-20": available(100),
                    "2024-05-15": {"status": "landed"},
                    "2024-05-10": {"status": "cancelled"},
                },
            ),
            "HAT002": flight(
                "HAT002", "ORD", "SEA", {"2024-05-20": available(80), "2024-05-15": {"status": "delayed"}}
            ),
            "HAT003": flight("HAT003", "SEA", "JFK", {"2024-05-25": available(120)}),
            "HAT004": flight("HAT004", "JFK", "SEA", {"2024-05-20": available(150)}),
        },
        "reservations": {
            "RES001": reservation(
                "RES001",
                "mia_1",
                "economy",
                "one_way",
                "JFK",
                "SEA",
                [("HAT001", "2024-05-20"), ("HAT002", "2024-05-20")],
            ),
            "RES002": reservation(
                "RES002",
                "mia_1",
                "basic_economy",
                "round_trip",
                "JFK",
                "SEA",
                [("HAT004", "2024-05-20"), ("HAT003", "2024-05-25")],
                created_at="2024-05-14T20:00:00",
            ),
            "RES003": reservation("RES003", "mia_1", "business", "one_way", "JFK", "ORD", [("HAT001", "2024-05-15")]),
            "RES004": reservation(
                "RES004",
                "mia_1",
                "economy",
                "one_way",
                "ORD",
                "SEA",
                [("HAT002", "2024-05-15")],
                passengers=2,
                insurance="yes",
            ),
            "RES005": reservation("RES005", "ned_2", "economy", "one_way", "JFK", "SEA", [("HAT004", "2024-05-20")]),
            "RES006": reservation("RES006", "mia_1", "economy", "one_way", "JFK", "ORD", [("HAT001", "2024-05-10")]),
        },
        "users": {
            "mia_1": {
                "name": {"first_name": "Mia", "last_name": "Li"},
                "membership": "regular",
                "reservations": ["RES001", "RES002", "RES003", "RES004", "RES006"],
                "payment_methods": {
                    "credit_card_1": {"source": "credit_card", "id": "credit_card_1"},
                    "credit_card_2": {"source": "credit_card", "id": "credit_card_2"},
                    "certificate_1": {"source": "certificate", "amount": 100, "id": "certificate_1"},
                    "certificate_2": {"source": "certificate", "amount": 100, "id": "certificate_2"},
                    **{
                        f"gift_card_{i}": {"source": "gift_card", "amount": 50, "id": f"gift_card_{i}"}
                        for i in range(1, 5)
                    },
                },
            },
            "ned_2": {
                "name": {"first_name": "Ned", "last_name": "Ko"},
                "membership": "gold",
                "reservations": ["RES005"],
                "payment_methods": {"credit_card_9": {"source": "credit_card", "id": "credit_card_9"}},
            },
        },
    }


AIRLINE = airline_db()


def airline(*calls: tuple, **kwargs: Any) -> ActionTrace:
    return traced(AIRLINE, *calls, **{"user_id": "mia_1", **kwargs})


def book(**changes: Any):
    arguments = {
        "user_id": "mia_1",
        "origin": "JFK",
        "destination": "SEA",
        "flight_type": "one_way",
        "cabin": "economy",
        "flights": [{"flight_number": "HAT004", "date": "2024-05-20"}],
        "passengers": [{"first_name": "Mia", "last_name": "Li", "dob": "1990-04-05"}],
        "payment_methods": [{"payment_id": "credit_card_1", "amount": 150}],
        "total_baggages": 1,
        "nonfree_baggages": 0,
        "insurance": "no",
    }
    return ("book_reservation", {**arguments, **changes})


def update_flights(
    rid="RES001",
    cabin="economy",
    segments=(("HAT001", "2024-05-20"), ("HAT002", "2024-05-20")),
    payment="credit_card_1",
):
    flights = [{"flight_number": n, "date": d} for n, d in segments]
    return (
        "update_reservation_flights",
        {"reservation_id": rid, "cabin": cabin, "flights": flights, "payment_id": payment},
    )


def bags(rid="RES001", total=1, nonfree=0, payment="credit_card_1"):
    return (
        "update_reservation_baggages",
        {"reservation_id": rid, "total_baggages": total, "nonfree_baggages": nonfree, "payment_id": payment},
    )


def cancel_trip(rid: str):
    return ("cancel_reservation", {"reservation_id": rid})


def certificate(amount, user="mia_1"):
    return ("send_certificate", {"user_id": user, "amount": amount})


def look_up(rid: str):
    return ("get_reservation_details", {"reservation_id": rid})


def test_a3_the_conversation_user_and_their_reservations():
    trace = airline(cancel_trip("RES005"), book(user_id="ned_2"), certificate(100, user="ned_2"))
    assert violations(airline_rules, "A3", trace) == [
        "action 1 (book_reservation) is for user 'ned_2', but the conversation is with 'mia_1'",
        "action 2 (send_certificate) is for user 'ned_2', but the conversation is with 'mia_1'",
        "action 0 (cancel_reservation) changes reservation RES005 of user 'ned_2', "
        "but the conversation is with 'mia_1'",
    ]
    assert (
        violations(airline_rules, "A3", airline(cancel_trip("RES002"), book())) == []
    )  # ground truth may skip the reads
    assert (
        violations(airline_rules, "A3", airline(book(user_id="mia_l"))) == []
    )  # a typo names nobody: the tool refuses it
    assert violations(airline_rules, "A3", airline(cancel_trip("RES002"), user_id=None)) == [
        "the user is never identified: give the blueprint a user_id, or fetch the user's details first"
    ]


def test_a3_episode_reads_come_first():
    trace = airline(book(), cancel_trip("RES002"), episode=True)
    assert violations(airline_rules, "A3", trace) == [
        "action 0 (book_reservation) books before the user's details were fetched with get_user_details",
        "action 1 (cancel_reservation) changes reservation RES002 without get_reservation_details for it first",
    ]
    good = airline(
        ("get_user_details", {"user_id": "mia_1"}),
        book(),
        look_up("RES002"),
        cancel_trip("RES002"),
        episode=True,
        user_id=None,
    )
    assert violations(airline_rules, "A3", good) == []


def test_a4_passengers():
    trace = airline(
        book(passengers=[]),
        book(passengers=[{"first_name": "A", "last_name": "B", "dob": "1990-01-01"}] * 6),
        book(passengers=[{"first_name": "A", "last_name": " "}]),
    )
    assert violations(airline_rules, "A4", trace) == [
        "action 0 (book_reservation) books 0 passengers; a reservation has 1 to 5",
        "action 1 (book_reservation) books 6 passengers; a reservation has 1 to 5",
        "action 2 (book_reservation): passenger 0 lacks last_name, dob",
    ]
    assert violations(airline_rules, "A4", airline(book())) == []


def test_a5_booking_payment():
    two_certificates = [{"payment_id": "certificate_1", "amount": 50}, {"payment_id": "certificate_2", "amount": 100}]
    four_gift_cards = [{"payment_id": f"gift_card_{i}", "amount": 30} for i in range(1, 5)] + [
        {"payment_id": "credit_card_1", "amount": 30}
    ]
    trace = airline(
        book(payment_methods=two_certificates),
        book(payment_methods=four_gift_cards),
        book(payment_methods=[{"payment_id": "credit_card_9", "amount": 150}]),
        book(
            payment_methods=[{"payment_id": "gift_card_1", "amount": 60}, {"payment_id": "credit_card_1", "amount": 90}]
        ),
    )
    assert violations(airline_rules, "A5", trace) == [
        "action 0 (book_reservation) uses 2 certificates; at most 1 per reservation",
        "action 1 (book_reservation) uses 4 gift cards; at most 3 per reservation",
        "action 2 (book_reservation): payment method 'credit_card_9' is not in the user's profile",
        "action 2 (book_reservation): the payments add up to 0, but the reservation costs 150",
        "action 3 (book_reservation): gift_card_1 holds 50, less than the 60 charged to it",
    ]
    # 2 passengers x 150 + 2 x 30 insurance + 1 paid bag x 50 = 410.
    priced = book(
        passengers=[{"first_name": "A", "last_name": "B", "dob": "1990-01-01"}] * 2,
        insurance="yes",
        total_baggages=3,
        nonfree_baggages=1,
        payment_methods=[
            {"payment_id": "certificate_1", "amount": 100},
            {"payment_id": "credit_card_1", "amount": 310},
        ],
    )
    assert violations(airline_rules, "A5", airline(priced)) == []


def test_a6_booked_flights_form_the_trip():
    one_leg_short = book(flights=[{"flight_number": "HAT001", "date": "2024-05-20"}])
    landed = book(
        flights=[{"flight_number": "HAT001", "date": "2024-05-15"}, {"flight_number": "HAT002", "date": "2024-05-20"}]
    )
    no_return = book(flight_type="round_trip")
    assert violations(airline_rules, "A6", airline(one_leg_short, landed, no_return)) == [
        "action 0 (book_reservation): the one-way trip ends at ORD, not at the destination SEA",
        "action 1 (book_reservation): flight HAT001 on 2024-05-15 is 'landed'; only 'available' flights can be booked",
        "action 2 (book_reservation): the round trip never reaches the destination SEA before returning",
        "action 2 (book_reservation): the round trip ends at SEA, not back at the origin JFK",
    ]
    connecting = book(
        flights=[{"flight_number": "HAT001", "date": "2024-05-20"}, {"flight_number": "HAT002", "date": "2024-05-20"}]
    )
    round_trip = book(
        flight_type="round_trip",
        flights=[{"flight_number": "HAT004", "date": "2024-05-20"}, {"flight_number": "HAT003", "date": "2024-05-25"}],
    )
    assert violations(airline_rules, "A6", airline(connecting, round_trip)) == []


def test_a7_bag_allowance_in_bookings_and_updates():
    trace = airline(book(total_baggages=2, nonfree_baggages=0), bags(total=2, nonfree=0))
    assert violations(airline_rules, "A7", trace) == [
        "action 0 (book_reservation): 2 bags for 1 passenger(s), regular member in economy (1 free each): "
        "nonfree_baggages should be 1, not 0",
        "action 1 (update_reservation_baggages): 2 bags for 1 passenger(s), "
        "regular member in economy (1 free each): nonfree_baggages should be 1, not 0",
    ]
    assert (
        violations(airline_rules, "A7", airline(book(total_baggages=2, nonfree_baggages=1), bags(total=2, nonfree=1)))
        == []
    )
    # After an upgrade to business (which the tool never stores) the business allowance applies.
    upgraded = airline(update_flights(cabin="business"), bags(total=2, nonfree=0))
    assert violations(airline_rules, "A7", upgraded) == []


def test_a9_basic_economy_flights_stay():
    other_day = (("HAT004", "2024-05-20"), ("HAT003", "2024-05-25"))
    moved = update_flights(
        "RES002",
        cabin="basic_economy",
        segments=(("HAT001", "2024-05-20"), ("HAT002", "2024-05-20"), ("HAT003", "2024-05-25")),
    )
    assert violations(airline_rules, "A9", airline(moved)) == [
        "action 0 (update_reservation_flights) changes the flights of basic economy reservation RES002; "
        "only its cabin may change"
    ]
    upgrade_then_move = airline(update_flights("RES002", cabin="economy", segments=other_day), moved)
    assert violations(airline_rules, "A9", upgrade_then_move) == []


def test_a10_changed_flights_keep_the_trip():
    assert violations(airline_rules, "A10", airline(update_flights(segments=(("HAT001", "2024-05-20"),)))) == [
        "action 0 (update_reservation_flights) on RES001: the one-way trip ends at ORD, not at the destination SEA"
    ]
    assert violations(airline_rules, "A10", airline(update_flights(segments=(("HAT004", "2024-05-20"),)))) == []
    # A flight that does not exist (a typo the tool refuses) is no new route.
    assert (
        violations(
            airline_rules, "A10", airline(update_flights(segments=(("HAT01", "2024-05-20"), ("HAT002", "2024-05-20"))))
        )
        == []
    )


def test_a12_flight_change_payment():
    trace = airline(update_flights(payment="certificate_1"), update_flights(payment="credit_card_9"))
    assert violations(airline_rules, "A12", trace) == [
        "action 0 (update_reservation_flights) pays with certificate_1; "
        "flight changes take one gift card or credit card",
        "action 1 (update_reservation_flights): payment method 'credit_card_9' is not in the user's profile",
    ]
    assert violations(airline_rules, "A12", airline(update_flights(payment="gift_card_2"))) == []


def test_a13_bags_only_added():
    assert violations(airline_rules, "A13", airline(bags(total=0, nonfree=0))) == [
        "action 0 (update_reservation_baggages) lowers total_baggages of RES001 from 1 to 0; bags can only be added"
    ]
    assert violations(airline_rules, "A13", airline(bags(total=3, nonfree=2))) == []


def test_a14_passenger_count_kept():
    two = [{"first_name": "A", "last_name": "B", "dob": "1990-01-01"}] * 2
    assert violations(
        airline_rules,
        "A14",
        airline(("update_reservation_passengers", {"reservation_id": "RES001", "passengers": two})),
    ) == [
        "action 0 (update_reservation_passengers) gives 2 passengers for RES001, which has 1; "
        "the number of passengers cannot change"
    ]
    assert (
        violations(
            airline_rules,
            "A14",
            airline(("update_reservation_passengers", {"reservation_id": "RES004", "passengers": two})),
        )
        == []
    )


def test_a16_cancellation_allowed():
    assert violations(airline_rules, "A16", airline(cancel_trip("RES001"))) == [
        "action 0 (cancel_reservation) cancels RES001 "
        "(economy, booked 2024-05-01T10:00:00, no insurance, no cancelled flight); "
        "only bookings of the last 24 hours, business cabins, insured trips "
        "or trips with a flight the airline cancelled can be cancelled"
    ]
    # Within 24 hours, business cabin, insured, airline-cancelled flight.
    allowed = airline(cancel_trip("RES002"), cancel_trip("RES003"), cancel_trip("RES004"), cancel_trip("RES006"))
    assert violations(airline_rules, "A16", allowed) == []


def test_a17_nothing_flown():
    assert violations(airline_rules, "A17", airline(cancel_trip("RES003"))) == [
        "action 0 (cancel_reservation) cancels RES003, but HAT001 on 2024-05-15 (landed) is already flown; "
        "transfer instead"
    ]
    assert violations(airline_rules, "A17", airline(cancel_trip("RES002"))) == []


def test_a19_certificate_eligibility():
    assert violations(airline_rules, "A19", airline(look_up("RES001"), certificate(50))) == [
        "action 1 (send_certificate) compensates mia_1, a regular member whose reservations in question (RES001) "
        "have neither insurance nor a business cabin"
    ]
    assert violations(airline_rules, "A19", airline(look_up("RES004"), certificate(100))) == []
    assert violations(airline_rules, "A19", airline(certificate(100, user="ned_2"), user_id="ned_2")) == []


def test_a20_certificate_amount():
    assert violations(airline_rules, "A20", airline(look_up("RES006"), certificate(150))) == [
        "action 1 (send_certificate) sends 150, which fits no compensation case "
        "(RES006 has a cancelled flight: 100 x 1 = 100)"
    ]
    assert violations(airline_rules, "A20", airline(look_up("RES006"), certificate(100))) == []
    assert violations(airline_rules, "A20", airline(look_up("RES004"), certificate(100))) == [
        "action 1 (send_certificate) sends 100, which fits no compensation case "
        "(RES004 has a delayed flight: 50 x 2 = 100, only after changing or cancelling it, which has not happened)"
    ]
    assert violations(airline_rules, "A20", airline(look_up("RES004"), cancel_trip("RES004"), certificate(100))) == []
    assert violations(airline_rules, "A20", airline(look_up("RES002"), certificate(100))) == [
        "action 1 (send_certificate) sends 100, which fits no compensation case: none of the user's reservations in "
        "question has a cancelled or delayed flight"
    ]


JUNK = [None, 7, 2.5, True, "x", "#W1", "RES001", [], ["i1"], [None], [{"flight_number": ["HAT001"]}], {}, {"a": 1}]


@pytest.mark.parametrize(("domain_name", "db"), [("retail", RETAIL), ("airline", AIRLINE), ("telecom", None)])
def test_rules_survive_arguments_of_any_shape(domain_name, db):
    """An agent can send anything; a rule reports or ignores it but never crashes."""
    domain = get_domain(domain_name)
    db = domain.load() if db is None else db
    names = list(domain.toolkit.tools())
    for round_number in range(len(JUNK)):
        calls = [
            (
                name,
                {
                    param: JUNK[(round_number + offset) % len(JUNK)]
                    for offset, param in enumerate(domain.toolkit.tools()[name].params)
                },
            )
            for name in names
        ]
        for episode in (False, True):
            trace = traced(
                db, *calls, user_id=JUNK[round_number] if isinstance(JUNK[round_number], str) else None, episode=episode
            )
            for rule in domain.rules:
                assert isinstance(rule.check(trace), list)


def test_every_rule_has_a_test_above():
    tested = {
        "R1",
        "R3",
        "R5",
        "R6",
        "R7",
        "R8",
        "R9",
        "R10",
        "R11",
        "R12",
        "R13",
        "R14",
        "R15",
        "R16",
        "R17",
        "R18",
        "A2",
        "A3",
        "A4",
        "A5",
        "A6",
        "A7",
        "A9",
        "A10",
        "A12",
        "A13",
        "A14",
        "A16",
        "A17",
        "A19",
        "A20",
    }
    assert {rule.id for rule in [*retail_rules.RULES, *airline_rules.RULES]} == tested


# ------------------------------------------------------------------------------------ tau-bench curated


@pytest.fixture(scope="module")
def curated(taubench_dir, taubench_tasks):
    """Every curated task through all three stages, once for the tests below.

    This replays 545 tasks on the full tau-bench databases and takes tens of seconds on 2 cores: each task
    copies the database (~20 ms for retail), hashes its final state and diffs it, as the pipeline does.
    """
    results = {}
    for domain_name, split in (("retail", "train"), ("retail", "dev"), ("airline", "sample")):
        domain = get_domain(domain_name)
        db = domain.load(taubench_dir / domain_name)
        tasks = taubench_tasks(domain_name, split)
        results[split] = (tasks, [validate_blueprint(domain, db, task) for task in tasks])
    return results


def stage_failures(verdicts_per_task, stage: str) -> dict[int, list[str]]:
    return {
        index: verdicts[-1].reasons
        for index, verdicts in enumerate(verdicts_per_task)
        if not verdicts[-1].passed and verdicts[-1].stage == stage
    }


def test_curated_tasks_pass_format(curated):
    for split, (_, verdicts_per_task) in curated.items():
        assert stage_failures(verdicts_per_task, "format") == {}, split


def test_retail_train_execution_rejects_exactly_the_failing_writes(curated):
    tasks, verdicts_per_task = curated["train"]
    rejected = stage_failures(verdicts_per_task, "execution")
    assert len(rejected) == 19 and len(tasks) - len(rejected) == 481
    for index, reasons in rejected.items():
        observations = verdicts_per_task[index][-1].details["observations"]
        for reason in reasons:
            match = re.fullmatch(r"action (\d+) \((\w+)\) failed: (Error: .*)", reason)
            assert match, reason
            position, name, observation = int(match[1]), match[2], match[3]
            assert tasks[index]["actions"][position]["name"] == name
            assert observations[position] == observation
            assert "insufficient gift card balance" in observation  # the known cause of all 19


def test_dev_and_airline_tasks_execute(curated):
    for split in ("dev", "sample"):
        assert stage_failures(curated[split][1], "execution") == {}, split


def test_retail_policy_rejects_only_items_paired_with_themselves(curated):
    """tau-bench's train tasks include "modify X to {}" requests, whose ground truth pairs an item with itself.

    The policy says a new item must be a different option of the same product (R12), so those are refused;
    every other executable train task and every dev task complies with every retail rule.
    """
    tasks, verdicts_per_task = curated["train"]
    self_paired = {
        index
        for index, task in enumerate(tasks)
        for act in task["actions"]
        if act["name"] in ("modify_pending_order_items", "exchange_delivered_order_items")
        and any(old == new for old, new in zip(act["kwargs"]["item_ids"], act["kwargs"]["new_item_ids"]))
    }
    executable = set(range(len(tasks))) - set(stage_failures(verdicts_per_task, "execution"))
    refused = stage_failures(verdicts_per_task, "policy")
    assert set(refused) == self_paired & executable
    assert all(
        re.fullmatch(r"\[R12\] .* is the same as the item it replaces", r)
        for reasons in refused.values()
        for r in reasons
    )
    assert stage_failures(curated["dev"][1], "policy") == {}


def test_airline_policy_conflicts_are_the_known_outdated_tasks(curated):
    """The airline sample's ground truth breaks the wiki in four tasks (see the airline rules module)."""
    refused = stage_failures(curated["sample"][1], "policy")
    assert {index: sorted(r.split("]")[0] + "]" for r in reasons) for index, reasons in refused.items()} == {
        10: ["[A16]"],  # cancels an old economy booking without insurance
        16: ["[A20]"],  # delayed-flight certificate without a change or cancellation
        19: ["[A10]", "[A7]"],  # destination LGA -> JFK; one bag charged within the allowance
        23: ["[A7]"],  # two bags charged within a gold member's allowance
    }
