"""What each telecom write needs: a line or bill of the user in a state the tool and the policy allow, the plans
a call's arguments pick from, and the policy sections and rules that govern it (see `apigen_mt.simulators.needs`).

"Possible" reads the same facts the rules do (`constants.py`, `rules.topups_this_cycle`), so a sampled
write can succeed and pass the policy stage: a waiver is never proposed for a customer without an overdue
bill, nor a resume for a line suspended for non-payment.
"""

from __future__ import annotations

import random

from apigen_mt.simulators.domains.telecom.constants import (
    CUSTOMER_SUSPENSIONS,
    CYCLE_START,
    LATE_FEE_WAIVERS,
    MAX_TOPUPS_PER_CYCLE,
    TOPUP_PRICES,
)
from apigen_mt.simulators.domains.telecom.rules import topups_this_cycle
from apigen_mt.simulators.needs import SampledRecord, WriteNeed
from apigen_mt.simulators.state import JSON


def _bills(db: JSON, user: JSON) -> list[JSON]:
    return [db["bills"][bill_id] for bill_id in user["bills"]]


def _can_pay(user: JSON, amount: float) -> bool:
    """A card or bank account pays anything; account credit only up to its balance (T11)."""
    return any(
        method["source"] != "account_credit" or method["balance"] >= amount
        for method in user["payment_methods"].values()
    )


def _active(db: JSON, user: JSON, line: JSON) -> bool:
    return line["status"] == "active"


def _toppable(db: JSON, user: JSON, line: JSON) -> bool:
    """Active, on a limited plan, below the cycle's top-up cap (T7), and the smallest top-up is affordable."""
    return (
        _active(db, user, line)
        and db["plans"][line["plan_id"]]["data_gb"] is not None
        and len(topups_this_cycle(line)) < MAX_TOPUPS_PER_CYCLE
        and _can_pay(user, min(TOPUP_PRICES.values()))
    )


def _plans_to_move_to(db: JSON, line: JSON) -> list[str]:
    """Offered plans other than the line's that cover this cycle's usage (T6) and allow roaming if it is on."""
    topped_up = sum(topup["size_gb"] for topup in topups_this_cycle(line))
    return [
        plan_id
        for plan_id, plan in db["plans"].items()
        if plan["available"]
        and plan_id != line["plan_id"]
        and (plan["roaming"] or not line["roaming"])
        and (plan["data_gb"] is None or plan["data_gb"] + topped_up >= line["data_used_gb"])
    ]


def _plan_changeable(db: JSON, user: JSON, line: JSON) -> bool:
    """Active, no plan change yet this cycle (T5), and a plan to move to."""
    return (
        _active(db, user, line)
        and line["last_plan_change"] < CYCLE_START.isoformat()
        and bool(_plans_to_move_to(db, line))
    )


def _roaming_switchable(db: JSON, user: JSON, line: JSON) -> bool:
    """Roaming on, which can always be turned off; or off on an active line whose plan allows it, for a customer
    with no overdue bill (T8)."""
    if line["roaming"]:
        return True
    return (
        _active(db, user, line)
        and db["plans"][line["plan_id"]]["roaming"]
        and not any(bill["status"] == "overdue" for bill in _bills(db, user))
    )


def _payable(db: JSON, user: JSON, bill: JSON) -> bool:
    return bill["status"] != "paid" and _can_pay(user, bill["amount"])


def _waivable(db: JSON, user: JSON, bill: JSON) -> bool:
    """Overdue, so it carries a late fee, and the customer has no waiver left over from an earlier bill (T9)."""
    waived = sum(other["late_fee_waived"] for other in _bills(db, user))
    return bill["status"] == "overdue" and waived < LATE_FEE_WAIVERS


def _resumable(db: JSON, user: JSON, line: JSON) -> bool:
    """Suspended at the customer's request; a line suspended for non-payment resumes only by paying (T10)."""
    return line["status"] == "suspended" and line.get("suspension_reason") in CUSTOMER_SUSPENSIONS


def _line_plan(db: JSON, line: JSON, rng: random.Random) -> list[SampledRecord]:
    return [("plans", line["plan_id"], db["plans"][line["plan_id"]])]


def _line_plan_and_new_plans(db: JSON, line: JSON, rng: random.Random) -> list[SampledRecord]:
    """The line's plan, then the plans it can move to, from which the proposer picks the new plan_id."""
    new_plans = [("plans", plan_id, db["plans"][plan_id]) for plan_id in _plans_to_move_to(db, line)]
    return _line_plan(db, line, rng) + new_plans


_BILLS = "Bills and payments"
_SUSPENSIONS = "Suspending and resuming a line"

WRITE_NEEDS: dict[str, WriteNeed] = {
    "change_plan": WriteNeed("lines", _plan_changeable, ("Changing a plan",), ("T5", "T6"), _line_plan_and_new_plans),
    "buy_data_topup": WriteNeed("lines", _toppable, ("Data top-ups",), ("T7", "T11"), _line_plan),
    "set_roaming": WriteNeed("lines", _roaming_switchable, ("Roaming",), ("T8",), _line_plan),
    "pay_bill": WriteNeed("bills", _payable, (_BILLS,), ("T10", "T11")),
    "waive_late_fee": WriteNeed("bills", _waivable, (_BILLS, "Late fees"), ("T9",)),
    "suspend_line": WriteNeed("lines", _active, (_SUSPENSIONS,), ()),
    "resume_line": WriteNeed("lines", _resumable, (_SUSPENSIONS, _BILLS), ("T10",)),
}
