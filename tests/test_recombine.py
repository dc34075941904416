"""Reverse task recombination on the real retail and airline domains and their generated data: grouping,
combination, the policy re-check of combined traces (and the airline rules that judge each write on the state
earlier writes left), the instruction rewrite, and the committee's second look."""

from __future__ import annotations

import asyncio
import json

import pytest

from apigen_mt.blueprints.loop import Phase1Models, Phase1Settings
from apigen_mt.blueprints.prompts import task_json
from apigen_mt.blueprints.proposer import INSTRUCTION_MAX_CHARS, ProposerSettings
from apigen_mt.blueprints.recombine import (
    INSTRUCTION_SCHEMA,
    candidate_groups,
    combine,
    dropped_details,
    instruction_request,
    parse_instruction,
    recombine,
    rewrite_instruction,
)
from apigen_mt.blueprints.review import CRITERIA
from apigen_mt.pipeline.engines.scripted import ScriptedChatModel
from apigen_mt.simulators.chat import ChatResponse, Completion
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.domains.airline.rules import cancellation_allowed, certificate_eligible
from apigen_mt.simulators.trace import trace_calls
from apigen_mt.simulators.types import Blueprint, Provenance, ToolCall
from apigen_mt.validators.blueprint import stage_one, validate_blueprint

RETAIL = get_domain("retail")


def conflicts(domain, db, combined: Blueprint) -> list[str]:
    """Why a combination fails stage 1 (with the rules' reasons after a refused write); empty when it passes."""
    return next((verdict.reasons for verdict in stage_one(domain, db, combined) if not verdict.passed), [])


AIRLINE = get_domain("airline")


@pytest.fixture(scope="module")
def retail_db():
    return RETAIL.load()


@pytest.fixture(scope="module")
def airline_db():
    return AIRLINE.load()


def part(
    id: str, instruction: str, *actions: tuple[str, dict], outputs=(), user="christine_king_9954", domain="retail"
):
    return Blueprint(
        id=id,
        domain=domain,
        user_id=user,
        instruction=instruction,
        actions=[ToolCall(name=name, arguments=arguments) for name, arguments in actions],
        outputs=list(outputs),
        provenance=Provenance(context_ids=[f"user:{user}", f"task:{id}"], seed=1),
    )


# In the generated retail data Christine King's #W1077442 is pending and #W6442327 delivered; both paid by
# credit_card_6668859. Each part below passes format, execution and policy on its own.
WHO = "You are Christine King (christine.king7156@example.com)."
PENDING, DELIVERED, CARD = "#W1077442", "#W6442327", "credit_card_6668859"
CANCEL = part(
    "cancel",
    f"{WHO} Cancel order {PENDING}: you ordered it by mistake.",
    ("cancel_pending_order", {"order_id": PENDING, "reason": "ordered by mistake"}),
)
ADDRESS = part(
    "address",
    f"{WHO} Ship order {PENDING} to 101 Elm Street, Apt 4, Salt Lake City, UT 84101, USA.",
    (
        "modify_pending_order_address",
        {
            "order_id": PENDING,
            "address1": "101 Elm Street",
            "address2": "Apt 4",
            "city": "Salt Lake City",
            "state": "UT",
            "country": "USA",
            "zip": "84101",
        },
    ),
)
BLENDER = part(
    "blender",
    f"{WHO} In order {PENDING}, change the blender to the other option; pay with your credit card.",
    (
        "modify_pending_order_items",
        {"order_id": PENDING, "item_ids": ["8509213895"], "new_item_ids": ["7136925962"], "payment_method_id": CARD},
    ),
)
DRYER = part(
    "dryer",
    f"{WHO} In order {PENDING}, change the hair dryer to the other option; pay with your credit card.",
    (
        "modify_pending_order_items",
        {"order_id": PENDING, "item_ids": ["2076693935"], "new_item_ids": ["4631070993"], "payment_method_id": CARD},
    ),
)
RETURN = part(
    "return",
    f"{WHO} Return the throw blanket of order {DELIVERED} to your credit card. Ask what it cost.",
    ("return_delivered_order_items", {"order_id": DELIVERED, "item_ids": ["7213609077"], "payment_method_id": CARD}),
    outputs=["59.66"],
)
EXCHANGE = part(
    "exchange",
    f"{WHO} Exchange the hair dryer of order {DELIVERED} for the other option. Ask what it cost.",
    (
        "exchange_delivered_order_items",
        {"order_id": DELIVERED, "item_ids": ["9786199536"], "new_item_ids": ["4631070993"], "payment_method_id": CARD},
    ),
    outputs=["88.34", "59.66"],
)

# Dolores Dixon (gold) holds 42CYZI: basic economy, booked 2024-05-10, no insurance, flight HAT058 available.
BASIC, DOLORES = "42CYZI", "dolores_dixon_7237"
UPGRADE_CALL = (
    "update_reservation_flights",
    {
        "reservation_id": BASIC,
        "cabin": "business",
        "payment_id": "credit_card_7237278",
        "flights": [{"flight_number": "HAT058", "date": "2024-05-24"}],
    },
)
CANCEL_TRIP_CALL = ("cancel_reservation", {"reservation_id": BASIC})
UPGRADE = part(
    "upgrade",
    f"You are Dolores Dixon. Upgrade reservation {BASIC} to business, paying by credit card.",
    UPGRADE_CALL,
    user=DOLORES,
    domain="airline",
)
CANCEL_TRIP = part(
    "cancel-trip",
    f"You are Dolores Dixon. Cancel reservation {BASIC}.",
    CANCEL_TRIP_CALL,
    user=DOLORES,
    domain="airline",
)
# Gold in basic economy: two bags free, so a third is paid; in business all three are free.
BAGS = part(
    "bags",
    f"You are Dolores Dixon. Take three bags in total on reservation {BASIC}.",
    (
        "update_reservation_baggages",
        {"reservation_id": BASIC, "total_baggages": 3, "nonfree_baggages": 1, "payment_id": "credit_card_7237278"},
    ),
    user=DOLORES,
    domain="airline",
)


def passes_alone(domain, db, *parts: Blueprint) -> bool:
    return all(validate_blueprint(domain, db, blueprint)[-1].passed for blueprint in parts)


def rule_ids(reasons: list[str]) -> set[str]:
    return {reason.split("]")[0] + "]" for reason in reasons if reason.startswith("[")}


# --- grouping ----------------------------------------------------------------------------------------------


def test_groups_are_disjoint_and_share_user_and_domain():
    others = [part(f"ned-{n}", "You are Ned.", user="ned_1") for n in range(2)]
    anonymous = Blueprint(id="anon", domain="retail", instruction="x", actions=[])
    blueprints = [CANCEL, ADDRESS, BLENDER, *others, UPGRADE, anonymous, ADDRESS]  # ADDRESS listed twice
    groups = candidate_groups(blueprints, seed=3)
    assert [[member.user_id for member in group] for group in groups] == [
        ["christine_king_9954", "christine_king_9954"],  # three blueprints: one pair, one left alone
        ["ned_1", "ned_1"],  # airline's Dolores has one blueprint only; the user-less one cannot be grouped
    ]
    assert len({member.id for member in groups[0]}) == 2 and {member.id for member in groups[1]} == {"ned-0", "ned-1"}


def test_groups_depend_on_the_seed_only():
    blueprints = [CANCEL, ADDRESS, BLENDER, DRYER, RETURN, EXCHANGE]
    first = candidate_groups(blueprints, seed=5)
    assert candidate_groups(list(reversed(blueprints)), seed=5) == first  # the input's order does not matter
    assert len(first) == 3 and all(len(group) == 2 for group in first)
    by_seed = {
        tuple(member.id for group in candidate_groups(blueprints, seed=seed) for member in group) for seed in range(8)
    }
    assert len(by_seed) > 1  # another seed, other groups
    assert [len(group) for group in candidate_groups(blueprints, size=4, seed=5)] == [4]
    with pytest.raises(ValueError, match="at least 2"):
        candidate_groups(blueprints, size=1, seed=5)


# --- combining ---------------------------------------------------------------------------------------------


def test_combine_concatenates_actions_merges_outputs_and_names_the_parents():
    combined = combine([RETURN, EXCHANGE], RETAIL)
    assert [call.name for call in combined.actions] == [
        "return_delivered_order_items",
        "exchange_delivered_order_items",
    ]
    assert combined.outputs == ["59.66", "88.34"]  # the shared output once
    assert combined.provenance.parents == ["return", "exchange"]
    assert combined.provenance.context_ids == ["user:christine_king_9954", "task:return", "task:exchange"]
    assert (combined.domain, combined.user_id, combined.id) == ("retail", "christine_king_9954", None)
    assert combined.instruction == f"{RETURN.instruction}\n\n{EXCHANGE.instruction}"
    combined.actions[0].arguments["order_id"] = "#W0"
    assert RETURN.actions[0].arguments["order_id"] == DELIVERED  # the parts are not shared


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ([CANCEL], "at least 2"),
        ([CANCEL, UPGRADE], "share domain and user"),
        ([CANCEL, CANCEL.model_copy(update={"id": None})], "needs an id"),
    ],
)
def test_combine_refuses_what_is_not_one_users_task(group, message):
    with pytest.raises(ValueError, match=message):
        combine(group, RETAIL)


# --- the policy re-check -----------------------------------------------------------------------------------


def test_compatible_parts_pass_the_recheck(retail_db):
    assert passes_alone(RETAIL, retail_db, ADDRESS, BLENDER, RETURN)
    assert conflicts(RETAIL, retail_db, combine([ADDRESS, BLENDER], RETAIL)) == []  # the address first, then items once
    assert conflicts(RETAIL, retail_db, combine([BLENDER, RETURN], RETAIL)) == []  # two orders


def test_two_item_modifications_of_one_order_conflict(retail_db):
    assert passes_alone(RETAIL, retail_db, BLENDER, DRYER)
    reasons = conflicts(RETAIL, retail_db, combine([BLENDER, DRYER], RETAIL))
    assert reasons[0] == "action 1 (modify_pending_order_items) failed: Error: non-pending order cannot be modified"
    assert rule_ids(reasons) == {"[R9]", "[R11]"}
    assert any(f"after order {PENDING}'s items were already modified" in reason for reason in reasons)


def test_a_change_after_modified_items_conflicts(retail_db):
    assert passes_alone(RETAIL, retail_db, BLENDER, CANCEL, ADDRESS)
    assert rule_ids(conflicts(RETAIL, retail_db, combine([BLENDER, CANCEL], RETAIL))) == {"[R7]", "[R11]"}
    assert rule_ids(conflicts(RETAIL, retail_db, combine([BLENDER, ADDRESS], RETAIL))) == {"[R9]", "[R11]"}


def test_a_return_and_an_exchange_of_one_order_conflict(retail_db):
    assert passes_alone(RETAIL, retail_db, RETURN, EXCHANGE)
    reasons = conflicts(RETAIL, retail_db, combine([RETURN, EXCHANGE], RETAIL))
    assert rule_ids(reasons) == {"[R16]"} and "already had a return or exchange" in reasons[-1]


def test_returning_and_cancelling_one_order_conflict(retail_db):
    """The paper's example. On one database an order is pending or delivered, never both, so parts that pass
    alone never make this pair; the rules catch it all the same, in either order."""
    cancel_delivered = part(
        "cancel-delivered",
        f"{WHO} Cancel order {DELIVERED}.",
        ("cancel_pending_order", {"order_id": DELIVERED, "reason": "no longer needed"}),
    )
    assert rule_ids(conflicts(RETAIL, retail_db, combine([RETURN, cancel_delivered], RETAIL))) == {"[R7]"}
    return_pending = part(
        "return-pending",
        f"{WHO} Return the blender of {PENDING}.",
        ("return_delivered_order_items", {"order_id": PENDING, "item_ids": ["8509213895"], "payment_method_id": CARD}),
    )
    assert rule_ids(conflicts(RETAIL, retail_db, combine([CANCEL, return_pending], RETAIL))) == {"[R14]", "[R17]"}


def test_upgrade_then_cancel_is_allowed_and_a_cancel_alone_is_not(airline_db):
    cancel_alone = validate_blueprint(AIRLINE, airline_db, CANCEL_TRIP)[-1]
    assert (cancel_alone.stage, rule_ids(cancel_alone.reasons)) == ("policy", {"[A16]"})
    assert passes_alone(AIRLINE, airline_db, UPGRADE)
    assert conflicts(AIRLINE, airline_db, combine([UPGRADE, CANCEL_TRIP], AIRLINE)) == []


def test_a_write_the_tool_accepts_can_still_conflict(airline_db):
    """The paid third bag is right in basic economy, wrong after the upgrade: a pure policy conflict."""
    assert passes_alone(AIRLINE, airline_db, UPGRADE, BAGS)
    assert conflicts(AIRLINE, airline_db, combine([UPGRADE, BAGS], AIRLINE)) == [
        "[A7] action 1 (update_reservation_baggages): 3 bags for 1 passenger(s), "
        "gold member in business (3 free each): nonfree_baggages should be 0, not 1"
    ]
    assert conflicts(AIRLINE, airline_db, combine([BAGS, UPGRADE], AIRLINE)) == []


# --- airline rules judge each write on the state earlier writes left ------------------------------------------


def test_a16_reads_the_cabin_an_earlier_flight_update_left(airline_db):
    upgrade, cancel = (ToolCall(name=name, arguments=arguments) for name, arguments in (UPGRADE_CALL, CANCEL_TRIP_CALL))
    assert cancellation_allowed(trace_calls(AIRLINE, airline_db, [upgrade, cancel], user_id=DOLORES)) == []
    assert cancellation_allowed(trace_calls(AIRLINE, airline_db, [cancel], user_id=DOLORES)) == [
        f"action 0 (cancel_reservation) cancels {BASIC} (basic_economy, booked 2024-05-10T04:18:41, no insurance, no "
        "cancelled flight); only bookings of the last 24 hours, business cabins, insured trips or trips with a flight "
        "the airline cancelled can be cancelled"
    ]
    failed_upgrade = upgrade.model_copy(update={"arguments": {**upgrade.arguments, "payment_id": "credit_card_0"}})
    assert len(cancellation_allowed(trace_calls(AIRLINE, airline_db, [failed_upgrade, cancel], user_id=DOLORES))) == 1
    # The other way: BUZU0X, an old uninsured business booking, may be cancelled until it is moved to economy.
    business = ToolCall(name="cancel_reservation", arguments={"reservation_id": "BUZU0X"})
    downgrade = ToolCall(
        name="update_reservation_flights",
        arguments={
            "reservation_id": "BUZU0X",
            "cabin": "economy",
            "payment_id": "credit_card_3535278",
            "flights": [{"flight_number": "HAT145", "date": "2024-05-18"}],
        },
    )
    assert cancellation_allowed(trace_calls(AIRLINE, airline_db, [business], user_id="robert_roberts_4890")) == []
    downgraded = trace_calls(AIRLINE, airline_db, [downgrade, business], user_id="robert_roberts_4890")
    assert not downgraded.calls[0].failed and "(economy," in cancellation_allowed(downgraded)[0]


def test_a19_reads_the_cabin_an_earlier_flight_update_left(airline_db):
    """Jagat Thompson, a regular member, holds BY3V1M in basic economy without insurance."""
    look = ToolCall(name="get_reservation_details", arguments={"reservation_id": "BY3V1M"})
    upgrade = ToolCall(
        name="update_reservation_flights",
        arguments={
            "reservation_id": "BY3V1M",
            "cabin": "business",
            "payment_id": "credit_card_3580612",
            "flights": [
                {"flight_number": number, "date": date}
                for number, date in (
                    ("HAT271", "2024-05-23"),
                    ("HAT179", "2024-05-23"),
                    ("HAT132", "2024-05-24"),
                    ("HAT067", "2024-05-24"),
                )
            ],
        },
    )
    certificate = ToolCall(name="send_certificate", arguments={"user_id": "jagat_thompson_2225", "amount": 100})
    assert len(certificate_eligible(trace_calls(AIRLINE, airline_db, [look, certificate]))) == 1
    upgraded = trace_calls(AIRLINE, airline_db, [upgrade, certificate])
    assert not upgraded.calls[0].failed and certificate_eligible(upgraded) == []


# --- the new instruction -----------------------------------------------------------------------------------

NEW = (
    f"{WHO} Return the throw blanket of order {DELIVERED} to your credit card and ask what it cost. Then exchange "
    "the hair dryer of that order for the other option and ask what it cost."
)
RETURN_AND_BLENDER = (
    f"{WHO} Return the throw blanket of order {DELIVERED} to your credit card and ask what it cost. Also, in order "
    f"{PENDING}, change the blender to the other option and pay with your credit card."
)


def test_the_instruction_request_shows_every_part_and_caps_the_reply():
    combined = combine([ADDRESS, BLENDER], RETAIL)
    request = instruction_request(combined, [ADDRESS, BLENDER])
    assert request.json_schema == INSTRUCTION_SCHEMA
    assert INSTRUCTION_SCHEMA["properties"]["instruction"]["maxLength"] == INSTRUCTION_MAX_CHARS
    prompt = request.messages[-1].content
    assert f"# Part 1\n{task_json(ADDRESS)}" in prompt and f"# Part 2\n{task_json(BLENDER)}" in prompt
    assert "user id: christine_king_9954" in prompt and request.sampling.seed is None
    seeded = ProposerSettings(seed=7, structured=False)
    first = instruction_request(combined, [ADDRESS, BLENDER], seeded)
    assert first.json_schema is None and first.sampling.seed is not None
    assert first.sampling.seed == instruction_request(combined, [ADDRESS, BLENDER], seeded).sampling.seed
    assert (
        first.sampling.seed
        != instruction_request(combine([BLENDER, ADDRESS], RETAIL), [BLENDER, ADDRESS], seeded).sampling.seed
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps({"instruction": "  You are Ann.  "}), "You are Ann."),
        ('Here it is:\n```json\n{"instruction": "You are Ann."}\n```', "You are Ann."),
        (json.dumps({"instruction": "   "}), None),
        (json.dumps({"text": "You are Ann."}), None),
        ('["You are Ann."]', None),
        ('{"instruction": "You are', None),
        ("You are Ann.", None),
    ],
)
def test_parse_instruction(text, expected):
    assert parse_instruction(text) == expected


def test_dropped_details_are_the_id_like_values_a_part_gave():
    parts = [ADDRESS, BLENDER]
    kept = f"{WHO} Ship {PENDING} to 101 Elm Street, Apt 4, Salt Lake City, UT 84101, USA, then change the blender."
    assert dropped_details(kept, parts) == []
    # Apt 4 has a digit too; item ids the parts never mention are not asked for.
    assert dropped_details(f"{WHO} Ship order {PENDING} to your new address.", parts) == [
        "101 Elm Street",
        "Apt 4",
        "84101",
    ]


def test_the_rewrite_replaces_the_interim_instruction():
    combined = combine([RETURN, EXCHANGE], RETAIL)
    model = ScriptedChatModel(
        [Completion(text=json.dumps({"instruction": NEW}), prompt_tokens=40, completion_tokens=9)]
    )
    result = asyncio.run(rewrite_instruction(model, combined, [RETURN, EXCHANGE]))
    assert (result.problem, result.error, result.model_id) == (None, None, "scripted")
    assert result.blueprint == combined.model_copy(update={"instruction": NEW})
    assert (result.prompt_tokens, result.completion_tokens) == (40, 9)


@pytest.mark.parametrize(
    ("reply", "problem", "error"),
    [
        ("Sure! You want to return and exchange.", 'not a JSON object {"instruction": str}', None),
        (
            json.dumps({"instruction": f"{WHO} Return something and exchange something."}),
            f"leaves out details the parts give: {DELIVERED}",
            None,
        ),
        (ChatResponse(error="HTTP 500"), None, "HTTP 500"),
    ],
)
def test_an_unusable_rewrite_says_why(reply, problem, error):
    result = asyncio.run(
        rewrite_instruction(ScriptedChatModel([reply]), combine([RETURN, EXCHANGE], RETAIL), [RETURN, EXCHANGE])
    )
    assert result.blueprint is None
    for found, expected in ((result.problem, problem), (result.error, error)):
        assert found is None if expected is None else expected in found


# --- the whole step: re-check, rewrite, stages 2 and 3 --------------------------------------------------------


def scores(reflection="Fine.", **zeros) -> str:
    return json.dumps({"reflection": reflection, **{criterion: zeros.get(criterion, 1) for criterion in CRITERIA}})


class Roles:
    def __init__(self, rewrites=(), reviews=()) -> None:
        self.proposer = ScriptedChatModel(list(rewrites), model_id="proposer")
        self.reviewer = ScriptedChatModel(list(reviews), model_id="reviewer")
        self.summariser = ScriptedChatModel([], model_id="summariser")
        self.models = Phase1Models(proposer=self.proposer, reviewers=[self.reviewer], summariser=self.summariser)


def run(roles: Roles, group, domain, db):
    return asyncio.run(recombine(group, domain, db, roles.models, Phase1Settings()))


def test_a_combination_the_committee_approves_is_accepted(retail_db):
    roles = Roles([json.dumps({"instruction": RETURN_AND_BLENDER})], [scores()] * 3)
    [record] = run(roles, [RETURN, BLENDER], RETAIL, retail_db)
    assert (record.round, record.status, record.failed_stage, record.reasons) == (0, "accepted", None, [])
    assert record.blueprint.instruction == RETURN_AND_BLENDER and record.blueprint.provenance.parents == [
        "return",
        "blender",
    ]
    assert record.model_id == "proposer" and record.votes["score"] == 1.0
    paths = {op["path"] for op in record.diff_patch}
    assert f"/orders/{DELIVERED}/status" in paths and f"/orders/{PENDING}/status" in paths  # both parts' writes
    review_prompt = roles.reviewer.requests[0].messages[-1].content
    assert json.dumps(RETURN_AND_BLENDER) in review_prompt and "return_delivered_order_items" in review_prompt
    assert roles.summariser.requests == []
    json.dumps(record.model_dump(mode="json"))  # a shard row


def test_the_committee_can_refuse_the_combination(retail_db):
    doubt = scores("The customer never says which option the blender should become.", completeness=0, correctness=0)
    roles = Roles([json.dumps({"instruction": RETURN_AND_BLENDER})], [doubt, doubt, scores()])
    [record] = run(roles, [RETURN, BLENDER], RETAIL, retail_db)
    assert (record.status, record.failed_stage) == ("rejected", "review")
    assert "voted 0 on correctness, completeness" in record.reasons[0]
    assert any("which option the blender" in reason for reason in record.reasons)
    assert record.blueprint.provenance.parents == ["return", "blender"]


def test_a_conflict_is_rejected_at_policy_before_any_model_is_asked(retail_db):
    roles = Roles()
    [record] = run(roles, [BLENDER, DRYER], RETAIL, retail_db)
    assert (record.status, record.failed_stage) == ("rejected", "policy")
    assert rule_ids(record.reasons) == {"[R9]", "[R11]"}
    assert record.blueprint == combine([BLENDER, DRYER], RETAIL) and record.blueprint.provenance.parents == [
        "blender",
        "dryer",
    ]
    assert roles.proposer.requests == [] and roles.reviewer.requests == []


def test_an_unusable_instruction_is_rejected_at_format_and_never_reviewed(retail_db):
    roles = Roles(["I'd combine them."])
    [record] = run(roles, [RETURN, BLENDER], RETAIL, retail_db)
    assert (record.status, record.failed_stage, record.text) == ("rejected", "format", "I'd combine them.")
    assert "not a JSON object" in record.reasons[0] and roles.reviewer.requests == []
    assert (
        record.blueprint.instruction == combine([RETURN, BLENDER], RETAIL).instruction
    )  # the interim one, kept for the row


def test_a_backend_failure_fails_the_record(retail_db):
    [record] = run(Roles([ChatResponse(error="HTTP 500")]), [RETURN, BLENDER], RETAIL, retail_db)
    assert record.status == "failed" and record.reasons == ["the rewriter's backend failed: HTTP 500"]


def test_upgrade_then_cancel_recombines_end_to_end(airline_db):
    instruction = f"You are Dolores Dixon. Upgrade reservation {BASIC} to business by credit card, then cancel it."
    roles = Roles([json.dumps({"instruction": instruction})], [scores()] * 3)
    [record] = run(roles, [UPGRADE, CANCEL_TRIP], AIRLINE, airline_db)
    assert (record.status, record.blueprint.instruction) == ("accepted", instruction)
    assert {"op": "add", "path": f"/reservations/{BASIC}/status", "value": "cancelled"} in record.diff_patch
    with pytest.raises(ValueError, match="domain 'airline', not 'retail'"):
        run(Roles(), [UPGRADE, CANCEL_TRIP], RETAIL, airline_db)
