"""Telecom policy rules: each on a hand-made trace over a tiny database, then a whole blueprint
the policy stage rejects.

Hand-made traces test each rule on exactly the situation it names, independently of the tools' code. T3 (one
tool call per turn) is the shared `one_call_per_turn`, tested with the other domains' in test_validators.
"""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.domains.telecom import rules
from apigen_mt.simulators.trace import ActionTrace, TracedCall, trace_calls
from apigen_mt.simulators.types import ToolCall
from apigen_mt.validators.blueprint import validate_blueprint
from apigen_mt.validators.policy import check_policy

WRITES = {"change_plan", "buy_data_topup", "set_roaming", "pay_bill", "waive_late_fee", "suspend_line", "resume_line"}


def line(line_id: str, user: str, plan: str, status: str = "active", **fields: Any) -> dict[str, Any]:
    record = {
        "line_id": line_id,
        "user_id": user,
        "phone_number": f"555-{line_id}",
        "plan_id": plan,
        "status": status,
        "roaming": False,
        "data_used_gb": 1.0,
        "topups": [],
        "last_plan_change": "2024-01-01",
        **fields,
    }
    return record


def bill(bill_id: str, user: str, status: str, amount: float = 50.0, waived: bool = False) -> dict[str, Any]:
    return {"bill_id": bill_id, "user_id": user, "amount": amount, "status": status, "late_fee_waived": waived}


def topup(date: str) -> dict[str, Any]:
    return {"size_gb": 1, "price": 5.0, "payment_method_id": "credit_card_1", "date": date}


DB = {
    "plans": {
        "basic_2": {"plan_id": "basic_2", "data_gb": 2, "roaming": False, "available": True},
        "plus_30": {"plan_id": "plus_30", "data_gb": 30, "roaming": True, "available": True},
        "unlimited": {"plan_id": "unlimited", "data_gb": None, "roaming": True, "available": True},
    },
    "lines": {
        "L1": line("L1", "ann", "plus_30", data_used_gb=12.0, topups=[topup("2025-02-20")]),
        "L2": line(
            "L2",
            "ann",
            "basic_2",
            data_used_gb=4.0,
            last_plan_change="2025-03-05",
            topups=[topup("2025-03-02"), topup("2025-03-04"), topup("2025-03-09")],
        ),
        "L3": line("L3", "ann", "plus_30", "suspended", suspension_reason="non-payment"),
        "L4": line("L4", "ann", "plus_30", "suspended", suspension_reason="travel"),
        "L5": line("L5", "cy", "plus_30"),
        "L9": line("L9", "bob", "plus_30"),
    },
    "bills": {
        "B1": bill("B1", "ann", "overdue", 65.0),
        "B2": bill("B2", "ann", "paid", waived=True),
        "B5": bill("B5", "cy", "overdue"),
        "B9": bill("B9", "bob", "due"),
    },
    "users": {
        "ann": {
            "pin": "1111",
            "lines": ["L1", "L2", "L3", "L4"],
            "bills": ["B1", "B2"],
            "payment_methods": {
                "credit_card_1": {"source": "credit_card", "id": "credit_card_1"},
                "account_credit_1": {"source": "account_credit", "balance": 10.0, "id": "account_credit_1"},
            },
        },
        "bob": {
            "pin": "2222",
            "lines": ["L9"],
            "bills": ["B9"],
            "payment_methods": {"credit_card_9": {"source": "credit_card", "id": "credit_card_9"}},
        },
        "cy": {"pin": "3333", "lines": ["L5"], "bills": ["B5"], "payment_methods": {}},
    },
}


def traced(*calls: tuple, user_id: str | None = "ann", episode: bool = False) -> ActionTrace:
    """Each call is `(name, arguments[, observation])`; every call sees DB, and an `Error:` observation failed."""
    built = [
        TracedCall(
            index=index,
            call=ToolCall(name=name, arguments=arguments),
            observation=(rest or ["{}"])[0],
            failed=(rest or ["{}"])[0].startswith("Error:"),
            writes=name in WRITES,
            before=DB,
        )
        for index, (name, arguments, *rest) in enumerate(calls)
    ]
    return ActionTrace(calls=tuple(built), initial=DB, final=DB, user_id=user_id, episode=episode)


def check(rule_id: str, trace: ActionTrace) -> list[str]:
    (rule,) = [rule for rule in rules.RULES if rule.id == rule_id]
    return rule.check(trace)


AUTH = ("authenticate_user", {"phone_number": "555-L1", "pin": "1111"}, "ann")


def test_t1_authenticate_first():
    early = traced(("list_plans", {}), ("get_line_details", {"line_id": "L1"}), AUTH, episode=True)
    assert check("T1", early) == [
        "action 1 (get_line_details) runs before the customer is authenticated with authenticate_user"
    ]
    refused = (
        "authenticate_user",
        {"phone_number": "555-L1", "pin": "0000"},
        "Error: no customer has this phone number and PIN",
    )
    assert len(check("T1", traced(refused, ("get_line_details", {"line_id": "L1"}), episode=True))) == 1
    assert check("T1", traced(("list_plans", {}), AUTH, ("get_line_details", {"line_id": "L1"}), episode=True)) == []
    assert check("T1", traced(("get_line_details", {"line_id": "L1"}))) == []  # a blueprint relies on its user_id
    assert check("T1", traced(user_id="zed")) == [
        "user_id 'zed' is not a customer in the database, so nobody can be authenticated"
    ]
    assert check("T1", traced(AUTH, user_id=None)) == []


def test_t2_one_customer():
    trace = traced(
        ("set_roaming", {"line_id": "L9", "enabled": True}),
        ("get_user_details", {"user_id": "bob"}),
        ("pay_bill", {"bill_id": "B9", "payment_method_id": "credit_card_9"}),
    )
    assert check("T2", trace) == [
        "action 0 (set_roaming) touches line L9 of 'bob', but the conversation is with 'ann'",
        "action 1 (get_user_details) uses user_id 'bob', but the conversation is with 'ann'",
        "action 2 (pay_bill) touches bill B9 of 'bob', but the conversation is with 'ann'",
    ]
    assert (
        check(
            "T2", traced(("set_roaming", {"line_id": "L1", "enabled": True}), ("get_bill_details", {"bill_id": "B1"}))
        )
        == []
    )


def test_t4_look_a_record_up_before_changing_it_in_an_episode():
    blind = traced(
        AUTH,
        ("suspend_line", {"line_id": "L1", "reason": "travel"}),
        ("waive_late_fee", {"bill_id": "B1"}),
        episode=True,
    )
    assert check("T4", blind) == [
        "action 1 (suspend_line) changes line L1 without a get_line_details call for it first",
        "action 2 (waive_late_fee) acts on bill B1 without a get_bill_details call for it first",
    ]
    looked = traced(
        AUTH,
        ("get_line_details", {"line_id": "L1"}),
        ("suspend_line", {"line_id": "L1", "reason": "travel"}),
        episode=True,
    )
    assert check("T4", looked) == []
    assert (
        check("T4", traced(("suspend_line", {"line_id": "L1", "reason": "travel"}))) == []
    )  # blueprints may skip reads


def test_t5_one_plan_change_per_cycle():
    assert check("T5", traced(("change_plan", {"line_id": "L2", "plan_id": "plus_30"}))) == [
        "action 0 (change_plan) changes the plan of line L2, last changed on 2025-03-05; "
        "a line changes plan at most once per billing cycle (since 2025-03-01)"
    ]
    assert check("T5", traced(("change_plan", {"line_id": "L1", "plan_id": "unlimited"}))) == []


def test_t6_the_new_plan_covers_the_data_used():
    assert check("T6", traced(("change_plan", {"line_id": "L1", "plan_id": "basic_2"}))) == [
        "action 0 (change_plan) moves line L1, which used 12.0 GB this cycle, to basic_2 with 2 GB including top-ups; "
        "the new plan must cover the data already used"
    ]  # L1's top-up of February does not count
    assert (
        check("T6", traced(("change_plan", {"line_id": "L2", "plan_id": "basic_2"}))) == []
    )  # 2 GB + 3 top-ups >= 4 GB
    assert check("T6", traced(("change_plan", {"line_id": "L1", "plan_id": "unlimited"}))) == []


def test_t7_top_up_cap():
    buy = {"size_gb": 1, "payment_method_id": "credit_card_1"}
    assert check("T7", traced(("buy_data_topup", {"line_id": "L2", **buy}))) == [
        "action 0 (buy_data_topup) would be top-up 4 of this cycle on line L2; at most 3 per line per cycle"
    ]
    assert check("T7", traced(("buy_data_topup", {"line_id": "L1", **buy}))) == []


def test_t8_roaming_needs_settled_bills():
    assert check("T8", traced(("set_roaming", {"line_id": "L1", "enabled": True}))) == [
        "action 0 (set_roaming) turns roaming on for line L1 while bill B1 is overdue; roaming needs every bill settled"
    ]
    assert check("T8", traced(("set_roaming", {"line_id": "L1", "enabled": False}))) == []
    assert check("T8", traced(("set_roaming", {"line_id": "L9", "enabled": True}), user_id="bob")) == []


def test_t9_one_late_fee_waiver_per_customer():
    assert check("T9", traced(("waive_late_fee", {"bill_id": "B1"}))) == [
        "action 0 (waive_late_fee) waives the late fee of bill B1, but 'ann' already had B2 waived; "
        "at most 1 waiver(s) per customer"
    ]
    assert check("T9", traced(("waive_late_fee", {"bill_id": "B5"}), user_id="cy")) == []


def test_t10_non_payment_suspensions_resume_by_paying():
    assert check("T10", traced(("resume_line", {"line_id": "L3"}), ("resume_line", {"line_id": "L4"}))) == [
        "action 0 (resume_line) resumes line L3, suspended for non-payment; "
        "it resumes only when the overdue bills are paid"
    ]


def test_t11_payments_from_own_methods_with_enough_credit():
    trace = traced(
        ("pay_bill", {"bill_id": "B1", "payment_method_id": "credit_card_9"}),
        ("pay_bill", {"bill_id": "B1", "payment_method_id": "account_credit_1"}),
        ("buy_data_topup", {"line_id": "L1", "size_gb": 10, "payment_method_id": "account_credit_1"}),
        ("buy_data_topup", {"line_id": "L1", "size_gb": 1, "payment_method_id": "account_credit_1"}),
        ("pay_bill", {"bill_id": "B1", "payment_method_id": "credit_card_1"}),
    )
    assert check("T11", trace) == [
        "action 0 (pay_bill): payment method 'credit_card_9' is not in the profile of 'ann'",
        "action 1 (pay_bill): account credit account_credit_1 holds 10.0, less than 65.0",
        "action 2 (buy_data_topup): account credit account_credit_1 holds 10.0, less than 35.0",
    ]


def test_a_refused_call_rejects_for_a_forbidden_attempt_and_warns_for_a_wrong_payment():
    """Through the real tools: resuming a line suspended for non-payment (always refused, and the attempt is what
    T10 forbids) against paying a bill with a method the customer does not have, then with one they do (T11)."""
    domain = get_domain("telecom")
    calls = [
        ("authenticate_user", {"phone_number": "555-L3", "pin": "1111"}),
        ("get_line_details", {"line_id": "L3"}),
        ("resume_line", {"line_id": "L3"}),
        ("get_bill_details", {"bill_id": "B1"}),
        ("pay_bill", {"bill_id": "B1", "payment_method_id": "credit_card_9"}),
        ("pay_bill", {"bill_id": "B1", "payment_method_id": "credit_card_1"}),
    ]
    trace = trace_calls(
        domain, DB, [ToolCall(name=name, arguments=arguments) for name, arguments in calls], episode=True
    )
    assert [call.refused for call in trace.calls] == [False, False, True, False, True, False]
    verdict = check_policy(domain, trace)
    assert verdict.reasons == [
        "[T10] action 2 (resume_line) resumes line L3, suspended for non-payment; "
        "it resumes only when the overdue bills are paid"
    ]
    assert verdict.details["warnings"] == [
        "[T11] action 4 (pay_bill): payment method 'credit_card_9' is not in the profile of 'ann' "
        "(the call was refused and changed nothing)"
    ]


def test_every_rule_is_tested():
    tested = {"T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11"}  # T3: see the module docstring
    assert {rule.id for rule in rules.RULES} == tested


# ---------------------------------------------------------------- whole blueprints through the policy stage


def test_the_policy_stage_rejects_blueprints_that_break_a_rule():
    domain = get_domain("telecom")
    db = domain.load()
    users, bills = db["users"], db["bills"]
    # A customer who already had a late fee waived asks for another one: the tool allows it, the policy does not.
    user_id = next(
        u
        for u, user in users.items()
        if any(bills[b]["late_fee_waived"] for b in user["bills"])
        and any(bills[b]["status"] == "overdue" for b in user["bills"])
    )
    overdue = next(b for b in users[user_id]["bills"] if bills[b]["status"] == "overdue")
    again = {
        "user_id": user_id,
        "instruction": "Waive my late fee.",
        "actions": [{"name": "waive_late_fee", "arguments": {"bill_id": overdue}}],
    }
    verdicts = validate_blueprint(domain, db, again)
    assert [(v.stage, v.passed) for v in verdicts] == [("format", True), ("execution", True), ("policy", False)]
    assert len(verdicts[-1].reasons) == 1 and verdicts[-1].reasons[0].startswith("[T9] action 0 (waive_late_fee)")
    # Two plan changes of one line: the second is judged on the records the first left.
    line_id = next(
        l
        for l, line in db["lines"].items()
        if line["status"] == "active"
        and line["plan_id"] == "standard_10"
        and not line["roaming"]
        and line["last_plan_change"] < "2025-03-01"
        and line["data_used_gb"] <= 10
    )
    twice = {
        "user_id": db["lines"][line_id]["user_id"],
        "instruction": "Change my plan, then change it again.",
        "actions": [
            {"name": "change_plan", "arguments": {"line_id": line_id, "plan_id": "plus_30"}},
            {"name": "change_plan", "arguments": {"line_id": line_id, "plan_id": "standard_10"}},
        ],
    }
    reasons = validate_blueprint(domain, db, twice)[-1].reasons
    assert [reason.split(" (")[0] for reason in reasons] == ["[T5] action 1"]
