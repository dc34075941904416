"""Telecom policy rules as code: the parts of `policy.md` that actions, arguments and the data decide.

Some rules repeat a check the tools already make (T10, T11), so an agent that tries is still caught; the others
are limits only the policy sets. Left out: asking for confirmation before a write and saying only what the
tools showed (they need reading the dialogue).

Blueprints versus episodes (see `apigen_mt.simulators.trace`): a blueprint's ground truth may leave out the
authentication and the lookups, and its `user_id` stands for the customer the agent will have authenticated;
so T1 only asks that this user exists, and T4 (look a record up before changing it) applies to episodes only.
Every rule reads the records as they were when each call ran (`call.before`), so a second plan change or a
fourth top-up in the same trace is judged on what the earlier calls left. A call the environment refused (an
error observation, the database unchanged) counts in an episode only for the rules whose attempt is itself
forbidden; the comment above `RULES` gives the decision per rule.
"""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.authentication import Authentication
from apigen_mt.simulators.domain_types import PolicyRule
from apigen_mt.simulators.domains.telecom.constants import (
    CYCLE_START,
    LATE_FEE_WAIVERS,
    MAX_TOPUPS_PER_CYCLE,
    NON_PAYMENT,
    TOPUP_PRICES,
)
from apigen_mt.simulators.trace import ActionTrace, TracedCall, calls_on_records, lookup, one_call_per_turn

NO_AUTHENTICATION_NEEDED = frozenset({"authenticate_user", "list_plans", "transfer_to_human_agents"})
LINE_WRITES = frozenset({"change_plan", "buy_data_topup", "set_roaming", "suspend_line", "resume_line"})
BILL_WRITES = frozenset({"pay_bill", "waive_late_fee"})
AUTHENTICATION = Authentication(
    tools=frozenset({"authenticate_user"}),
    exempt=NO_AUTHENTICATION_NEEDED,
    records=(("lines", "line_id"), ("bills", "bill_id")),
    too_early="{call} runs before the customer is authenticated with authenticate_user",
    no_user="the blueprint names no user_id and none of its actions authenticates one",
    unknown_user="user_id {user!r} is not a customer in the database, so nobody can be authenticated",
    foreign_record="{call} touches {kind} {record_id} of {owner!r}, but the conversation is with {user!r}",
)


def _lines(trace: ActionTrace, names: frozenset[str] | set[str]) -> list[tuple[TracedCall, str, dict[str, Any]]]:
    return calls_on_records(trace, names, "lines", "line_id")


def _bills(trace: ActionTrace, names: frozenset[str] | set[str]) -> list[tuple[TracedCall, str, dict[str, Any]]]:
    return calls_on_records(trace, names, "bills", "bill_id")


def _owner_bills(call: TracedCall, user_id: Any) -> list[dict[str, Any]]:
    bills = call.before.get("bills") or {}
    return [bill for bill in bills.values() if isinstance(bill, dict) and bill.get("user_id") == user_id]


def look_up_first(trace: ActionTrace) -> list[str]:
    if not trace.episode:
        return []
    problems = [
        f"{call.label()} changes line {line_id} without a get_line_details call for it first"
        for call, line_id, _ in _lines(trace, LINE_WRITES)
        if not trace.succeeded_before(call, "get_line_details", line_id=line_id)
    ]
    problems += [
        f"{call.label()} acts on bill {bill_id} without a get_bill_details call for it first"
        for call, bill_id, _ in _bills(trace, BILL_WRITES)
        if not trace.succeeded_before(call, "get_bill_details", bill_id=bill_id)
    ]
    return problems


def plan_once_per_cycle(trace: ActionTrace) -> list[str]:
    return [
        f"{call.label()} changes the plan of line {line_id}, last changed on {line.get('last_plan_change')}; "
        f"a line changes plan at most once per billing cycle (since {CYCLE_START.isoformat()})"
        for call, line_id, line in _lines(trace, {"change_plan"})
        if str(line.get("last_plan_change", "")) >= CYCLE_START.isoformat()
    ]


def topups_this_cycle(line: dict[str, Any]) -> list[dict[str, Any]]:
    topups = line.get("topups")
    if not isinstance(topups, list):
        return []
    return [
        topup for topup in topups if isinstance(topup, dict) and str(topup.get("date", "")) >= CYCLE_START.isoformat()
    ]


def plan_covers_usage(trace: ActionTrace) -> list[str]:
    problems = []
    for call, line_id, line in _lines(trace, {"change_plan"}):
        plan = lookup(call.before.get("plans"), call.arguments.get("plan_id"))
        used = line.get("data_used_gb")
        if plan is None or plan.get("data_gb") is None or not isinstance(used, (int, float)):
            continue  # an unknown plan fails in the tool; an unlimited one covers any usage
        allowance = plan["data_gb"] + sum(topup.get("size_gb", 0) for topup in topups_this_cycle(line))
        if used > allowance:
            problems.append(
                f"{call.label()} moves line {line_id}, which used {used} GB this cycle, to {plan.get('plan_id')} "
                f"with {allowance} GB including top-ups; the new plan must cover the data already used"
            )
    return problems


def topup_cap(trace: ActionTrace) -> list[str]:
    return [
        f"{call.label()} would be top-up {len(topups_this_cycle(line)) + 1} of this cycle on line {line_id}; "
        f"at most {MAX_TOPUPS_PER_CYCLE} per line per cycle"
        for call, line_id, line in _lines(trace, {"buy_data_topup"})
        if len(topups_this_cycle(line)) >= MAX_TOPUPS_PER_CYCLE
    ]


def roaming_needs_settled_bills(trace: ActionTrace) -> list[str]:
    problems = []
    for call, line_id, line in _lines(trace, {"set_roaming"}):
        if call.arguments.get("enabled") is not True:
            continue
        overdue = [
            bill.get("bill_id") for bill in _owner_bills(call, line.get("user_id")) if bill.get("status") == "overdue"
        ]
        if overdue:
            problems.append(
                f"{call.label()} turns roaming on for line {line_id} "
                f"while bill {', '.join(map(str, overdue))} is overdue; roaming needs every bill settled"
            )
    return problems


def one_late_fee_waiver(trace: ActionTrace) -> list[str]:
    problems = []
    for call, bill_id, bill in _bills(trace, {"waive_late_fee"}):
        owner_bills = _owner_bills(call, bill.get("user_id"))
        waived = [other.get("bill_id") for other in owner_bills if other.get("late_fee_waived") is True]
        if len(waived) >= LATE_FEE_WAIVERS:
            problems.append(
                f"{call.label()} waives the late fee of bill {bill_id}, but {bill.get('user_id')!r} already had "
                f"{', '.join(map(str, waived))} waived; at most {LATE_FEE_WAIVERS} waiver(s) per customer"
            )
    return problems


def non_payment_resumes_by_paying(trace: ActionTrace) -> list[str]:
    return [
        f"{call.label()} resumes line {line_id}, suspended for non-payment; "
        "it resumes only when the overdue bills are paid"
        for call, line_id, line in _lines(trace, {"resume_line"})
        if line.get("suspension_reason") == NON_PAYMENT
    ]


def own_payment_method(trace: ActionTrace) -> list[str]:
    problems = []
    charged = [
        (call, record, TOPUP_PRICES.get(size) if isinstance(size := call.arguments.get("size_gb"), int) else None)
        for call, _, record in _lines(trace, {"buy_data_topup"})
    ] + [(call, record, record.get("amount")) for call, _, record in _bills(trace, {"pay_bill"})]
    for call, record, amount in sorted(charged, key=lambda entry: entry[0].index):
        owner = lookup(call.before.get("users"), record.get("user_id")) or {}
        method_id = call.arguments.get("payment_method_id")
        method = lookup(owner.get("payment_methods"), method_id)
        if method is None:
            problems.append(
                f"{call.label()}: payment method {method_id!r} is not in the profile of {record.get('user_id')!r}"
            )
        elif (
            method.get("source") == "account_credit"
            and isinstance(amount, (int, float))
            and method.get("balance", 0) < amount
        ):
            problems.append(
                f"{call.label()}: account credit {method_id} holds {method.get('balance')}, less than {amount}"
            )
    return problems


# `refused_calls_count` (a refused call: error observation, database unchanged). True where the attempt is
# the write or the step the policy forbids, whatever the tool answered: acting before authentication (T1),
# for another customer (T2) or on a line or bill not looked up (T4), and every limit of T5-T10 (a second
# plan change, a top-up past the cap, roaming with a bill overdue, a second waiver, resuming a line
# suspended for non-payment, which the tool always refuses). False where a refused call only named a
# payment method that cannot pay, then corrected (T11). T3 judges messages, not calls.
RULES: list[PolicyRule] = [
    PolicyRule(
        "T1",
        "Authenticate the customer with phone number and PIN before any other tool.",
        AUTHENTICATION.authenticate_first,
    ),
    PolicyRule(
        "T2",
        "Serve one customer: every user id, line and bill belongs to the authenticated customer.",
        AUTHENTICATION.one_user,
    ),
    PolicyRule(
        "T3", "One tool call per turn (text beside a call is allowed: the user never sees it).", one_call_per_turn
    ),
    PolicyRule("T4", "Look a line or bill up before changing it.", look_up_first),
    PolicyRule("T5", "A line changes plan at most once per billing cycle.", plan_once_per_cycle),
    PolicyRule("T6", "A new limited plan must cover the data the line already used this cycle.", plan_covers_usage),
    PolicyRule("T7", f"At most {MAX_TOPUPS_PER_CYCLE} data top-ups per line per billing cycle.", topup_cap),
    PolicyRule(
        "T8", "Roaming is turned on only when none of the customer's bills is overdue.", roaming_needs_settled_bills
    ),
    PolicyRule("T9", f"At most {LATE_FEE_WAIVERS} late-fee waiver(s) per customer.", one_late_fee_waiver),
    PolicyRule(
        "T10",
        "A line suspended for non-payment resumes only by paying the overdue bills.",
        non_payment_resumes_by_paying,
    ),
    PolicyRule(
        "T11",
        "Payments use the customer's own methods; account credit must cover the charge.",
        own_payment_method,
        refused_calls_count=False,
    ),
]
