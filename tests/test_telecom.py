"""The telecom domain, built with the public SDK only: its tools, generated data, policy text,
example tasks and samplers.

Its rules are tested in test_telecom_rules.py; determinism, record schemas and property tests of `step` run in
the shared modules (test_generators, test_data_schemas, test_environment_properties) with the other domains.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from datetime import date
from typing import Any

import pytest

from apigen_mt.blueprints.samplers import SamplerSettings, example_tasks, sample_context
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.domains.telecom import constants
from apigen_mt.simulators.environment import Environment, StepResult
from apigen_mt.validators.blueprint import validate_blueprint

DOMAIN = get_domain("telecom")
TODAY = constants.TODAY.isoformat()
CYCLE_START = constants.CYCLE_START.isoformat()


@pytest.fixture(scope="module")
def db() -> dict[str, Any]:
    return DOMAIN.load()


def run(env: Environment, name: str, **arguments: Any) -> StepResult:
    return env.step({"name": name, "arguments": arguments})


def first(db: dict[str, Any], table: str, wanted) -> tuple[str, dict[str, Any]]:
    return next((key, record) for key, record in db[table].items() if wanted(record))


def owner_overdue(db: dict[str, Any], user_id: str) -> list[str]:
    return [bill_id for bill_id in db["users"][user_id]["bills"] if db["bills"][bill_id]["status"] == "overdue"]


# ---------------------------------------------------------------- the domain as declared


def test_tools_reads_and_writes():
    specs = {spec.name: spec for spec in DOMAIN.toolkit.specs()}
    writes = {name for name, spec in specs.items() if spec.writes}
    assert writes == {
        "buy_data_topup",
        "change_plan",
        "pay_bill",
        "resume_line",
        "set_roaming",
        "suspend_line",
        "waive_late_fee",
    }
    assert set(specs) - writes == {
        "authenticate_user",
        "get_bill_details",
        "get_line_details",
        "get_user_details",
        "list_plans",
        "transfer_to_human_agents",
    }
    assert [name for name, spec in specs.items() if spec.terminates] == ["transfer_to_human_agents"]
    # Enums come from the constants, not from a second list.
    assert specs["buy_data_topup"].parameters["properties"]["size_gb"]["enum"] == list(constants.TOPUP_PRICES)
    assert specs["suspend_line"].parameters["properties"]["reason"]["enum"] == list(constants.CUSTOMER_SUSPENSIONS)


def test_every_write_is_fed_by_a_read_and_every_edge_names_real_tools():
    specs = {spec.name: spec for spec in DOMAIN.toolkit.specs()}
    for edge in DOMAIN.api_graph:
        assert edge.source in specs and edge.target in specs and not specs[edge.source].writes, edge
    fed = {edge.target for edge in DOMAIN.api_graph}
    assert {name for name, spec in specs.items() if spec.writes} <= fed


def test_the_policy_shows_every_fact_of_the_constants_module():
    facts = constants.policy_facts()
    assert "{" not in DOMAIN.policy and "}" not in DOMAIN.policy  # every placeholder was filled
    for value in facts.values():
        assert value in DOMAIN.policy
    assert "$15.00" in DOMAIN.policy and "5 GB for $20.00" in DOMAIN.policy
    headings = re.findall(r"(?m)^## (.+)$", DOMAIN.policy)
    assert headings[:2] == ["How you work", "What is in our records"] and len(headings) == 8


# ---------------------------------------------------------------- generated data


def test_generated_records_are_consistent(db):
    users, lines, bills, plans = db["users"], db["lines"], db["bills"], db["plans"]
    assert len(users) == 300 and len(bills) == 3 * len(users) and len(plans) == 7
    assert len({line["phone_number"] for line in lines.values()}) == len(lines)
    for user_id, user in users.items():
        assert re.fullmatch(rf"\d{{{constants.PIN_DIGITS}}}", user["pin"])
        assert [key for key, line in lines.items() if line["user_id"] == user_id] == user["lines"]
        assert [key for key, bill in bills.items() if bill["user_id"] == user_id] == user["bills"]
        too_long = any(
            bills[b]["status"] == "overdue"
            and (constants.TODAY - date.fromisoformat(bills[b]["due"])).days > constants.SUSPEND_AFTER_DAYS
            for b in user["bills"]
        )
        for line_id in user["lines"]:
            assert (lines[line_id].get("suspension_reason") == constants.NON_PAYMENT) == too_long, line_id
    for line_id, line in lines.items():
        plan = plans[line["plan_id"]]
        methods = users[line["user_id"]]["payment_methods"]
        assert line["line_id"] == line_id and ("suspension_reason" in line) == (line["status"] == "suspended")
        assert not (line["roaming"] and (line["status"] == "suspended" or not plan["roaming"]))
        assert line["last_plan_change"] < TODAY and len(line["topups"]) <= constants.MAX_TOPUPS_PER_CYCLE
        for topup in line["topups"]:
            assert CYCLE_START <= topup["date"] < TODAY and topup["payment_method_id"] in methods
            assert topup["price"] == constants.TOPUP_PRICES[topup["size_gb"]]
        if plan["data_gb"] is not None:
            assert line["data_used_gb"] <= plan["data_gb"] + sum(topup["size_gb"] for topup in line["topups"])
    for bill_id, bill in bills.items():
        assert bill["bill_id"] == bill_id and bill["amount"] == round(sum(item["amount"] for item in bill["items"]), 2)
        past_due = bill["due"] < TODAY
        assert bill["status"] in (("paid", "overdue") if past_due else ("paid", "due"))
        fees = [item["amount"] for item in bill["items"] if item["description"].startswith("late fee")]
        assert fees == ([constants.LATE_FEE, -constants.LATE_FEE] if bill["late_fee_waived"] else fees)
        assert bill["status"] != "overdue" or fees == [constants.LATE_FEE]
        assert [payment["amount"] for payment in bill["payments"]] == (
            [bill["amount"]] if bill["status"] == "paid" else []
        )
        for payment in bill["payments"]:
            assert payment["payment_method_id"] in users[bill["user_id"]]["payment_methods"] and payment["date"] < TODAY


def test_the_data_holds_every_situation_the_policy_covers(db):
    lines, bills = db["lines"].values(), db["bills"].values()
    reasons = Counter(line.get("suspension_reason") for line in lines)
    assert all(reasons[reason] >= 5 for reason in ("non-payment", *constants.CUSTOMER_SUSPENSIONS))
    assert sum(len(line["topups"]) == constants.MAX_TOPUPS_PER_CYCLE for line in lines) >= 5
    assert sum(line["last_plan_change"] >= CYCLE_START for line in lines) >= 20
    assert (
        sum(bill["late_fee_waived"] for bill in bills) >= 5 and sum(bill["status"] == "overdue" for bill in bills) >= 20
    )
    sources = Counter(method["source"] for user in db["users"].values() for method in user["payment_methods"].values())
    assert set(sources) == {"credit_card", "bank_account", "account_credit"}


# ---------------------------------------------------------------- tools


def test_authentication_needs_a_phone_number_and_the_pin(db):
    env = DOMAIN.environment(db)
    _, line = first(db, "lines", lambda line: True)
    pin = db["users"][line["user_id"]]["pin"]
    area, exchange, number = line["phone_number"].split("-")
    assert (
        run(env, "authenticate_user", phone_number=f"({area}) {exchange} {number}", pin=pin).observation
        == line["user_id"]
    )
    wrong_pin = f"{(int(pin) + 1) % 10000:04d}"
    for phone, code in ((line["phone_number"], wrong_pin), ("000-555-0000", pin), ("", pin)):
        assert (
            run(env, "authenticate_user", phone_number=phone, pin=code).observation
            == "Error: no customer has this phone number and PIN"
        )


def test_change_plan(db):
    env = DOMAIN.environment(db)
    line_id, line = first(
        db,
        "lines",
        lambda line: line["status"] == "active" and line["plan_id"] == "standard_10" and not line["roaming"],
    )
    changed = json.loads(run(env, "change_plan", line_id=line_id, plan_id="plus_30").observation)
    assert (changed["plan_id"], changed["last_plan_change"]) == ("plus_30", TODAY)
    assert (
        run(env, "change_plan", line_id=line_id, plan_id="plus_30").observation
        == f"Error: line {line_id} is already on plan plus_30"
    )
    assert (
        run(env, "change_plan", line_id=line_id, plan_id="classic_5").observation
        == "Error: plan classic_5 is no longer offered"
    )
    assert run(env, "change_plan", line_id=line_id, plan_id="gold").observation == "Error: plan not found"
    roaming_id, _ = first(db, "lines", lambda line: line["roaming"])
    assert "turn roaming off" in run(env, "change_plan", line_id=roaming_id, plan_id="basic_2").observation
    suspended_id, _ = first(db, "lines", lambda line: line["status"] == "suspended")
    assert run(env, "change_plan", line_id=suspended_id, plan_id="plus_30").failed


def test_data_topup_charges_the_method_and_refuses_unlimited_lines(db):
    env = DOMAIN.environment(db)

    def limited(line_id: str) -> bool:
        line = db["lines"][line_id]
        return line["status"] == "active" and db["plans"][line["plan_id"]]["data_gb"] is not None

    def credit(user: dict[str, Any]) -> str | None:
        return next(
            (
                key
                for key, m in user["payment_methods"].items()
                if m["source"] == "account_credit" and m["balance"] >= 20
            ),
            None,
        )

    user_id, user = first(db, "users", lambda user: credit(user) and any(map(limited, user["lines"])))
    credit_id, line_id = credit(user), next(filter(limited, user["lines"]))
    balance = user["payment_methods"][credit_id]["balance"]
    line = json.loads(run(env, "buy_data_topup", line_id=line_id, size_gb=5, payment_method_id=credit_id).observation)
    assert line["topups"][-1] == {"size_gb": 5, "price": 20.0, "payment_method_id": credit_id, "date": TODAY}
    assert env.db["users"][user_id]["payment_methods"][credit_id]["balance"] == round(balance - 20.0, 2)
    env.db["users"][user_id]["payment_methods"][credit_id]["balance"] = 1.0
    before = json.dumps(env.db)
    assert (
        "holds $1.00, less than $35.00"
        in run(env, "buy_data_topup", line_id=line_id, size_gb=10, payment_method_id=credit_id).observation
    )
    assert run(
        env, "buy_data_topup", line_id=line_id, size_gb=2, payment_method_id=credit_id
    ).failed  # not a size on offer
    assert json.dumps(env.db) == before
    unlimited_id, _ = first(db, "lines", lambda line: line["status"] == "active" and line["plan_id"] == "unlimited")
    assert (
        "unlimited data"
        in run(env, "buy_data_topup", line_id=unlimited_id, size_gb=1, payment_method_id=credit_id).observation
    )


def test_roaming_on_and_off(db):
    env = DOMAIN.environment(db)
    line_id, _ = first(
        db, "lines", lambda line: line["status"] == "active" and line["plan_id"] == "plus_30" and not line["roaming"]
    )
    assert json.loads(run(env, "set_roaming", line_id=line_id, enabled=True).observation)["roaming"] is True
    assert (
        run(env, "set_roaming", line_id=line_id, enabled=True).observation
        == f"Error: roaming is already on on line {line_id}"
    )
    assert json.loads(run(env, "set_roaming", line_id=line_id, enabled=False).observation)["roaming"] is False
    basic_id, _ = first(db, "lines", lambda line: line["status"] == "active" and line["plan_id"] == "basic_2")
    assert (
        run(env, "set_roaming", line_id=basic_id, enabled=True).observation
        == f"Error: plan basic_2 of line {basic_id} has no roaming"
    )


def test_paying_the_last_overdue_bill_resumes_lines_suspended_for_non_payment(db):
    env = DOMAIN.environment(db)
    user_id = next(key for key in db["users"] if len(owner_overdue(db, key)) == 2)
    user = db["users"][user_id]
    older, newer = owner_overdue(db, user_id)
    method = next(key for key, m in user["payment_methods"].items() if m["source"] != "account_credit")
    paid = json.loads(run(env, "pay_bill", bill_id=older, payment_method_id=method).observation)
    assert paid["bill"]["status"] == "paid" and paid["resumed_lines"] == []  # another bill is still overdue
    assert paid["bill"]["payments"][-1] == {
        "payment_method_id": method,
        "amount": db["bills"][older]["amount"],
        "date": TODAY,
    }
    assert (
        run(env, "pay_bill", bill_id=older, payment_method_id=method).observation
        == f"Error: bill {older} is already paid"
    )
    resumed = json.loads(run(env, "pay_bill", bill_id=newer, payment_method_id=method).observation)["resumed_lines"]
    assert resumed == user["lines"] and all(env.db["lines"][l]["status"] == "active" for l in resumed)
    assert all("suspension_reason" not in env.db["lines"][l] for l in resumed)


def test_waiving_a_late_fee(db):
    env = DOMAIN.environment(db)
    bill_id, bill = first(db, "bills", lambda bill: bill["status"] == "overdue")
    waived = json.loads(run(env, "waive_late_fee", bill_id=bill_id).observation)
    assert waived["amount"] == round(bill["amount"] - constants.LATE_FEE, 2) and waived["late_fee_waived"] is True
    assert waived["items"][-1] == {"description": "late fee waived", "amount": -constants.LATE_FEE}
    assert (
        run(env, "waive_late_fee", bill_id=bill_id).observation
        == f"Error: the late fee of bill {bill_id} is already waived"
    )
    paid_id, _ = first(db, "bills", lambda bill: bill["status"] == "paid")
    assert (
        run(env, "waive_late_fee", bill_id=paid_id).observation
        == f"Error: bill {paid_id} is not overdue, so it carries no late fee"
    )


def test_suspend_and_resume(db):
    env = DOMAIN.environment(db)
    line_id, _ = first(db, "lines", lambda line: line["roaming"])
    suspended = json.loads(run(env, "suspend_line", line_id=line_id, reason="travel").observation)
    assert (suspended["status"], suspended["suspension_reason"], suspended["roaming"]) == ("suspended", "travel", False)
    assert (
        run(env, "suspend_line", line_id=line_id, reason="travel").observation
        == f"Error: line {line_id} is already suspended (travel)"
    )
    assert run(
        env, "suspend_line", line_id=line_id, reason="non-payment"
    ).failed  # billing's reason, not the customer's
    resumed = json.loads(run(env, "resume_line", line_id=line_id).observation)
    assert resumed["status"] == "active" and "suspension_reason" not in resumed
    assert run(env, "resume_line", line_id=line_id).observation == f"Error: line {line_id} is not suspended"
    unpaid_id, _ = first(db, "lines", lambda line: line.get("suspension_reason") == "non-payment")
    assert "resumes once the overdue bills are paid" in run(env, "resume_line", line_id=unpaid_id).observation


# ---------------------------------------------------------------- example tasks and samplers


def test_example_tasks_pass_every_validation_stage_and_cover_every_write(db):
    shipped = example_tasks(DOMAIN)
    assert len(shipped) >= 6
    for index, task in enumerate(shipped):
        verdicts = validate_blueprint(DOMAIN, db, task)
        assert [(v.stage, v.passed) for v in verdicts] == [("format", True), ("execution", True), ("policy", True)], (
            index,
            verdicts,
        )
    used = {action.name for task in shipped for action in task.actions}
    assert {spec.name for spec in DOMAIN.toolkit.specs() if spec.writes} <= used


def test_samplers_walk_the_graph_to_writes_and_show_the_shipped_examples(db):
    settings = SamplerSettings(max_writes=3, example_frequency=1.0, policy_frequency=1.0)
    contexts = [sample_context(DOMAIN, db, seed=seed, settings=settings) for seed in range(40)]
    assert contexts == [sample_context(DOMAIN, db, seed=seed, settings=settings) for seed in range(40)]
    specs = {spec.name: spec for spec in DOMAIN.toolkit.specs()}
    graph = {(edge.source, edge.target) for edge in DOMAIN.api_graph}
    shipped = example_tasks(DOMAIN)
    for context in contexts:
        reads = [name for name in context.walk if not specs[name].writes]
        writes = context.walk[len(reads) :]
        assert writes and all(specs[name].writes for name in writes)
        assert all(pair in graph for pair in itertools.pairwise([*reads, writes[0]])), context.walk
        assert context.records["users"] == {context.user_id: db["users"][context.user_id]}
        assert context.examples and all(example in shipped for example in context.examples)
        # The general sections and rules, and those of the walk's writes only (telecom's write needs).
        headings = re.findall(r"(?m)^## (.+)$", context.policy_excerpt)
        assert headings[:2] == ["How you work", "What is in our records"]
        assert ("Late fees" in headings) == ("waive_late_fee" in context.walk), context.walk
        assert ("Roaming" in headings) == ("set_roaming" in context.walk), context.walk
        rule_ids = [rule.split(":")[0] for rule in context.rules]
        assert rule_ids[:4] == ["T1", "T2", "T3", "T4"] and ("T9" in rule_ids) == ("waive_late_fee" in context.walk)
    assert {len(context.walk) - sum(not specs[n].writes for n in context.walk) for context in contexts} == {1, 2, 3}
