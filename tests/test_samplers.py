"""Phase 1 context samplers on the retail, airline and telecom domains' own generated data."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import re
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from apigen_mt.blueprints.personas import load_personas
from apigen_mt.blueprints.samplers import SampledContext, SamplerSettings, example_tasks, sample_context
from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.domains.telecom.constants import CYCLE_START, TOPUP_PRICES
from apigen_mt.simulators.domains.telecom.rules import BILL_WRITES, LINE_WRITES
from apigen_mt.simulators.types import Blueprint, ToolCall
from apigen_mt.validators.blueprint import validate_blueprint

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("retail", "airline", "telecom")
SEEDS = range(60)
ALL_ON = {"policy_frequency": 1.0, "persona_frequency": 1.0, "example_frequency": 1.0}
ALL_OFF = {"policy_frequency": 0.0, "persona_frequency": 0.0, "example_frequency": 0.0}
NOW = "2024-05-15T15:00:00"


@pytest.fixture(scope="module", params=DOMAINS)
def setup(request: pytest.FixtureRequest) -> tuple[Domain, dict[str, Any]]:
    domain = get_domain(request.param)
    return domain, domain.load()


def contexts(domain: Domain, db: dict[str, Any], **settings: Any) -> list[SampledContext]:
    return [sample_context(domain, db, seed=seed, settings=SamplerSettings(**settings)) for seed in SEEDS]


def edges(domain: Domain) -> set[tuple[str, str]]:
    return {(edge.source, edge.target) for edge in domain.api_graph}


def size(records: dict[str, dict[str, Any]]) -> int:
    return sum(len(json.dumps(record)) for table in records.values() for record in table.values())


def test_the_same_seed_gives_the_same_context_and_seeds_differ(setup):
    domain, db = setup
    first = contexts(domain, db, **ALL_ON)
    assert first == contexts(domain, db, **ALL_ON)
    assert len({(context.user_id, tuple(context.walk)) for context in first}) >= len(SEEDS) * 0.8
    assert len({context.persona for context in first}) >= len(SEEDS) * 0.6


def test_walks_follow_graph_edges_and_end_in_writes(setup):
    domain, db = setup
    specs = {spec.name: spec for spec in domain.toolkit.specs()}
    graph = edges(domain)
    write_counts, first_writes = Counter(), set()
    for context in contexts(domain, db, max_writes=3, walk_length=(1, 3)):
        assert [spec.name for spec in context.tools] == context.walk
        assert context.tools == [specs[name] for name in context.walk]
        reads = [name for name in context.walk if not specs[name].writes]
        writes = context.walk[len(reads) :]
        assert writes and all(specs[name].writes for name in writes), context.walk  # reads first, writes last
        assert len(set(writes)) == len(writes) <= 3 and len(reads) <= 3
        path = [*reads, writes[0]]
        assert all(pair in graph for pair in itertools.pairwise(path)), context.walk
        assert all(any((read, write) in graph for read in reads) for write in writes[1:]), context.walk
        assert context.context_ids[0] == "walk:" + ">".join(context.walk)
        write_counts[len(writes)] += 1
        first_writes.add(writes[0])
    assert set(write_counts) == {1, 2, 3}
    assert len(first_writes) >= len([spec for spec in specs.values() if spec.writes]) - 1


def test_records_hold_the_user_and_their_own_records_within_the_budget(setup):
    domain, db = setup
    for context in contexts(domain, db):
        assert context.records["users"] == {context.user_id: db["users"][context.user_id]}
        assert context.context_ids[1] == f"user:{context.user_id}"
        assert size(context.records) <= SamplerSettings().context_budget_chars
        owned = [
            record for table, records in context.records.items() if table != "users" for record in records.values()
        ]
        assert all(record["user_id"] == context.user_id for record in owned if "user_id" in record)
        for table, records in context.records.items():
            for key, record in records.items():
                assert f"{table.removesuffix('s')}:{key}" in context.context_ids
                if table != "flights":  # flights are shown with only the days the task needs
                    assert record == db[table][key]
    context = contexts(domain, db)[0]
    context.records["users"][context.user_id]["email"] = "changed"
    assert db["users"][context.user_id]["email"] != "changed"  # records are copies


def test_a_tiny_budget_keeps_only_the_user_and_the_records_written(setup):
    domain, db = setup
    needs = domain.write_needs
    for context in contexts(domain, db, context_budget_chars=1):
        on_records = [name for name in context.walk if name in needs and needs[name].table is not None]
        assert sum(len(records) for table, records in context.records.items() if table != "users") == len(on_records)


def qualifies(db: dict[str, Any], user: dict[str, Any], write: str, record: dict[str, Any]) -> bool:
    """Written from the policy, independently of the domain's write needs: can `write` act on `record` for this user?"""
    if "order_id" in record:
        return record["status"] == ("pending" if "pending" in write else "delivered")
    if "line_id" in record or "bill_id" in record:
        return telecom_qualifies(db, user, write, record)
    statuses = {
        db["flights"][segment["flight_number"]]["dates"][segment["date"]]["status"] for segment in record["flights"]
    }
    if write == "send_certificate":
        eligible = user["membership"] != "regular" or record["insurance"] == "yes" or record["cabin"] == "business"
        return eligible and bool(statuses & {"cancelled", "delayed"})
    unflown = not statuses & {"landed", "flying"}
    if write == "cancel_reservation":
        grounds = record["created_at"] >= "2024-05-14T15:00:00" or "cancelled" in statuses
        return unflown and (grounds or record["cabin"] == "business" or record["insurance"] == "yes")
    return unflown


def telecom_qualifies(db: dict[str, Any], user: dict[str, Any], write: str, record: dict[str, Any]) -> bool:
    if ("line_id" in record) != (write in LINE_WRITES):
        return False
    bills = [db["bills"][bill_id] for bill_id in user["bills"]]
    if write == "pay_bill":
        return record["status"] in ("due", "overdue")
    if write == "waive_late_fee":
        return record["status"] == "overdue" and not any(bill["late_fee_waived"] for bill in bills)
    if write == "resume_line":
        return record["status"] == "suspended" and record["suspension_reason"] in ("travel", "lost or stolen device")
    if write == "set_roaming" and not record["roaming"]:
        allowed = db["plans"][record["plan_id"]]["roaming"]
        return record["status"] == "active" and allowed and all(bill["status"] != "overdue" for bill in bills)
    if write == "buy_data_topup":
        cycle_topups = [topup for topup in record["topups"] if topup["date"] >= CYCLE_START.isoformat()]
        return (
            record["status"] == "active"
            and db["plans"][record["plan_id"]]["data_gb"] is not None
            and len(cycle_topups) < 3
        )
    if write == "change_plan":
        return record["status"] == "active" and record["last_plan_change"] < CYCLE_START.isoformat()
    if write == "set_roaming":
        return True  # roaming is on, and can always be turned off
    return record["status"] == "active"  # suspend_line


def test_the_user_can_make_every_sampled_write(setup):
    domain, db = setup
    for context in contexts(domain, db, max_writes=3, context_budget_chars=1):
        user = db["users"][context.user_id]
        needs = domain.write_needs
        on_records = [name for name in context.walk if name in needs and needs[name].table]
        shown = [
            record for table, records in context.records.items() if table != "users" for record in records.values()
        ]
        assert len(shown) == len(on_records)  # one distinct record per write
        for write in on_records:
            assert any(qualifies(db, user, write, record) for record in shown), (write, context.context_ids)
        if "book_reservation" in context.walk:
            assert user["payment_methods"]


def telecom_calls(db: dict[str, Any], user: dict[str, Any], write: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Calls that make `write` on `record`: one per new plan for a plan change, else one,
    paid by a method that covers it."""
    key = {"line_id": record["line_id"]} if write in LINE_WRITES else {"bill_id": record["bill_id"]}
    price = record["amount"] if write == "pay_bill" else TOPUP_PRICES[1]
    method = next(
        (
            m_id
            for m_id, m in user["payment_methods"].items()
            if m["source"] != "account_credit" or m["balance"] >= price
        ),
        None,
    )
    choices = {
        "change_plan": [{"plan_id": plan_id} for plan_id in db["plans"] if plan_id != record.get("plan_id")],
        "buy_data_topup": [{"size_gb": 1, "payment_method_id": method}],
        "pay_bill": [{"payment_method_id": method}],
        "set_roaming": [{"enabled": not record.get("roaming")}],
        "suspend_line": [{"reason": "travel"}],
    }.get(write, [{}])
    return [{"name": write, "arguments": {**key, **arguments}} for arguments in choices]


def test_every_sampled_telecom_context_has_a_ground_truth_the_validators_accept():
    domain = get_domain("telecom")
    db = domain.load()
    for context in contexts(domain, db, max_writes=3, context_budget_chars=1):
        user = db["users"][context.user_id]
        writes = [name for name in context.walk if name in LINE_WRITES | BILL_WRITES]
        shown = [
            (table, record)
            for table, records in context.records.items()
            if table != "users"
            for record in records.values()
        ]
        # The context does not say which shown record each write acts on: some assignment (and plan) must pass.
        blueprints = [
            {"user_id": context.user_id, "instruction": "Do it.", "actions": list(actions)}
            for order in itertools.permutations(shown)
            if [table for table, _ in order] == ["lines" if write in LINE_WRITES else "bills" for write in writes]
            for actions in itertools.product(
                *(telecom_calls(db, user, write, record) for write, (_, record) in zip(writes, order, strict=True))
            )
        ]
        assert any(all(v.passed for v in validate_blueprint(domain, db, blueprint)) for blueprint in blueprints), (
            context.context_ids
        )


def test_a_cancel_pending_order_context_can_be_executed():
    domain = get_domain("retail")
    db = domain.load()
    context = next(
        context
        for seed in range(200)
        if "cancel_pending_order"
        in (
            context := sample_context(
                domain, db, seed=seed, settings=SamplerSettings(max_writes=1, context_budget_chars=1)
            )
        ).walk
    )
    (order_id,) = context.records["orders"]
    result = domain.environment(db).step(
        {"name": "cancel_pending_order", "arguments": {"order_id": order_id, "reason": "no longer needed"}}
    )
    assert not result.failed, result.observation


def test_writes_nobody_can_make_are_never_sampled():
    domain = get_domain("retail")
    db = domain.load()
    for order in db["orders"].values():
        order["status"] = "cancelled"
    for context in contexts(domain, db, max_writes=3):
        assert [spec.name for spec in context.tools if spec.writes] == ["modify_user_address"]
    with pytest.raises(ValueError, match="no user .* can make any"):
        sample_context(domain, {**db, "users": {}}, seed=0, settings=SamplerSettings())
    with pytest.raises(ValueError, match="no users table"):
        sample_context(domain, {"orders": {}}, seed=0, settings=SamplerSettings())


def test_frequencies_zero_and_one_are_respected(setup):
    domain, db = setup
    pool = load_personas()
    for on, off in zip(contexts(domain, db, **ALL_ON), contexts(domain, db, **ALL_OFF), strict=True):
        assert on.persona in pool and on.examples and on.policy_excerpt and on.rules
        assert off.persona is None and off.examples == [] and off.policy_excerpt == "" and off.rules == []
        # Skipping optional samplers leaves the walk, the user and the records alone.
        assert (on.walk, on.user_id, on.records) == (off.walk, off.user_id, off.records)
        assert [i for i in on.context_ids if not i.startswith(("rule:", "persona:", "example:"))] == off.context_ids
    halfway = contexts(domain, db, persona_frequency=0.5)
    assert 0.25 < sum(context.persona is not None for context in halfway) / len(halfway) < 0.75


def test_writes_without_a_declared_need_go_to_any_user_under_the_general_policy():
    telecom = get_domain("telecom")
    db = telecom.load()
    bare = dataclasses.replace(telecom, write_needs={})
    for context in contexts(bare, db, context_budget_chars=1):
        assert set(context.records) == {"users"}  # no record is known to be the one written
        assert context.policy_excerpt == telecom.policy.strip() and len(context.rules) == len(telecom.rules)
    waiver = telecom.write_needs["waive_late_fee"]
    partial = dataclasses.replace(telecom, write_needs={"waive_late_fee": waiver})
    for context in contexts(partial, db, context_budget_chars=1):
        headings = re.findall(r"(?m)^## (.+)$", context.policy_excerpt)
        assert "Roaming" in headings  # named by no declared need, so general
        assert ("Late fees" in headings) == ("waive_late_fee" in context.walk)
        bills = list(context.records.get("bills", {}).values())
        assert [bill["status"] for bill in bills] == (["overdue"] if "waive_late_fee" in context.walk else [])


@pytest.mark.parametrize(
    ("name", "write", "title", "sections", "rules"),
    [
        (
            "retail",
            "cancel_pending_order",
            "# Retail customer service policy",
            ["Cancelling a pending order"],
            ["R1", "R3", "R5", "R6", "R7", "R8", "R11", "R17", "R18"],
        ),
        (
            "telecom",
            "waive_late_fee",
            "# Mobile operator customer support policy",
            ["Bills and payments", "Late fees"],
            ["T1", "T2", "T3", "T4", "T9"],
        ),
    ],
)
def test_policy_excerpt_keeps_general_sections_and_those_of_the_writes(name, write, title, sections, rules):
    domain = get_domain(name)
    db = domain.load()
    context = next(
        context
        for seed in range(200)
        if (context := sample_context(domain, db, seed=seed, settings=SamplerSettings(max_writes=1))).walk[-1] == write
    )
    headings = re.findall(r"(?m)^## (.+)$", context.policy_excerpt)
    assert headings == ["How you work", "What is in our records", *sections]
    assert context.policy_excerpt.startswith(title)
    assert [rule.split(":")[0] for rule in context.rules] == rules


@pytest.mark.parametrize("name", DOMAINS)
def test_every_write_has_needs_naming_real_sections_and_rules(name):
    domain = get_domain(name)
    assert set(domain.write_needs) == {spec.name for spec in domain.toolkit.specs() if spec.writes}
    headings = set(re.findall(r"(?m)^## (.+)$", domain.policy))
    rule_ids = {rule.id for rule in domain.rules}
    for need in domain.write_needs.values():
        assert set(need.sections) <= headings and set(need.rules) <= rule_ids
        assert need.table is None or need.table in domain.tables


def test_examples_come_from_accepted_blueprints_and_keep_one_curated_task(setup):
    domain, db = setup
    shipped = example_tasks(domain)
    assert shipped and all(task.domain == domain.name for task in shipped)
    settings = SamplerSettings(example_frequency=1.0, examples=2)
    fallback = sample_context(domain, db, seed=1, settings=settings)
    assert len(fallback.examples) == 2 and all(example in shipped for example in fallback.examples)
    assert [i for i in fallback.context_ids if i.startswith("example:")] == [
        f"example:task-{shipped.index(example)}" for example in fallback.examples
    ]

    def accepted(index: int, domain_name: str) -> Blueprint:
        action = ToolCall(name="think", arguments={"thought": str(index)})
        return Blueprint(id=f"{domain_name}-{index}", domain=domain_name, instruction=f"task {index}", actions=[action])

    other = accepted(0, "elsewhere")
    mine = accepted(1, domain.name)
    topped_up = sample_context(domain, db, seed=1, settings=settings, accepted=[other, mine])
    assert topped_up.examples[0] == mine and topped_up.examples[1] in shipped
    assert f"example:{domain.name}-1" in topped_up.context_ids
    # However many blueprints the run accepted, one curated example stays, so the proposer cannot drift to its own.
    plenty = [accepted(index, domain.name) for index in range(5)]
    for seed in range(5):
        mixed = sample_context(domain, db, seed=seed, settings=settings, accepted=plenty)
        assert len(mixed.examples) == 2
        assert sum(example in plenty for example in mixed.examples) == 1
        assert sum(example in shipped for example in mixed.examples) == 1
    one = sample_context(
        domain, db, seed=1, settings=SamplerSettings(example_frequency=1.0, examples=1), accepted=plenty
    )
    assert len(one.examples) == 1 and one.examples[0] in shipped


def test_settings_are_checked():
    with pytest.raises(ValidationError):
        SamplerSettings(walk_length=(3, 1))
    with pytest.raises(ValidationError):
        SamplerSettings(max_writes=4)
    with pytest.raises(ValidationError):
        SamplerSettings(persona_frequency=1.5)
    with pytest.raises(ValidationError):
        SamplerSettings(refusal_share=0.1)  # the proposer's setting, not the samplers'
    assert SamplerSettings.model_validate({"walk_length": [2, 2]}).walk_length == (2, 2)


def test_the_persona_pool_ships_and_its_script_reproduces_it(tmp_path):
    pool = load_personas()
    assert len(set(pool)) >= 150 and all(isinstance(persona, str) and 40 < len(persona) < 300 for persona in pool)
    spec = importlib.util.spec_from_file_location("make_personas", REPO / "scripts" / "make_personas.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([str(tmp_path / "personas.json")])
    shipped = files("apigen_mt.blueprints").joinpath("personas.json").read_bytes()
    assert (tmp_path / "personas.json").read_bytes() == shipped
