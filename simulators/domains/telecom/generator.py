"""Seeded generator of the telecom database: the plan catalogue, customers, their lines and their recent bills.

`generate(seed)` builds 300 customers with one to four lines each and, per customer, the bills of the three
months before the current cycle. Everything is consistent with `constants.TODAY`: bills past their due date
are paid or overdue (with a late fee), a bill overdue for longer than `SUSPEND_AFTER_DAYS` has suspended all
the customer's lines for non-payment, and usage, top-ups and plan changes of the running cycle are dated
within it. Everything is drawn from one `random.Random(seed)` and the seeded Faker of `People`, so the same
seed gives the same bytes; no global random state or clock is read.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from apigen_mt.simulators.domains.telecom.constants import (
    BILL_DUE_DAY,
    CUSTOMER_SUSPENSIONS,
    CYCLE_START,
    LATE_FEE,
    NON_PAYMENT,
    PIN_DIGITS,
    ROAMING_DAILY_FEE,
    SUSPEND_AFTER_DAYS,
    TODAY,
    TOPUP_PRICES,
)
from apigen_mt.simulators.synthetic import IdMint, People, weighted

N_USERS = 300
BILLED_MONTHS = 3
LINES_PER_USER_WEIGHTS = ((1, 50), (2, 28), (3, 15), (4, 7))

# (plan_id, name, monthly fee, data GB or None for unlimited, roaming, offered, share of lines on it)
PLANS = (
    ("talk_text", "Talk & Text", 15.0, 0, False, False, 5),
    ("basic_2", "Basic 2 GB", 20.0, 2, False, True, 15),
    ("classic_5", "Classic 5 GB", 28.0, 5, True, False, 10),
    ("standard_10", "Standard 10 GB", 35.0, 10, True, True, 25),
    ("plus_30", "Plus 30 GB", 50.0, 30, True, True, 20),
    ("unlimited", "Unlimited", 70.0, None, True, True, 17),
    ("unlimited_max", "Unlimited Max", 90.0, None, True, True, 8),
)
DEVICE_MODELS = (
    "Pixel 8",
    "Pixel 7a",
    "iPhone 15",
    "iPhone 13",
    "Galaxy S24",
    "Galaxy A54",
    "Moto G Power",
    "OnePlus 12",
)
BANKS = ("First Federal", "Citizens Union", "Harbor Savings", "Pinecrest Credit Union", "Lakeside Bank")
PAYMENT_SOURCE_WEIGHTS = (("credit_card", 50), ("bank_account", 30), ("account_credit", 20))
TOPUPS_THIS_CYCLE_WEIGHTS = ((0, 70), (1, 14), (2, 8), (3, 8))  # some lines already at the cap
# Chance that a bill is paid, by whether its due date has passed; the rest are overdue or still due.
PAID_AFTER_DUE = 0.88
PAID_BEFORE_DUE = 0.45
PAID_LATE = 0.12  # of paid bills past their due date: paid after it, with a late fee
WAIVED = 0.5  # of late fees on paid bills: waived by an agent at the time


def _day_between(rng: random.Random, first: date, last: date) -> str:
    return (first + timedelta(days=rng.randint(0, max(0, (last - first).days)))).isoformat()


def make_plans() -> dict[str, dict[str, Any]]:
    return {
        plan_id: {
            "plan_id": plan_id,
            "name": name,
            "monthly_fee": fee,
            "data_gb": data,
            "roaming": roaming,
            "available": offered,
        }
        for plan_id, name, fee, data, roaming, offered, _ in PLANS
    }


def make_payment_methods(people: People) -> dict[str, dict[str, Any]]:
    rng = people.rng
    methods: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for _ in range(rng.choices((1, 2, 3), weights=(55, 35, 10))[0]):
        # Several cards are allowed, but one bank account and one account credit at most.
        source = weighted(rng, tuple(pair for pair in PAYMENT_SOURCE_WEIGHTS if pair[0] not in taken))
        if source == "credit_card":
            method = people.credit_card()
        elif source == "bank_account":
            method = {
                "source": source,
                "bank": rng.choice(BANKS),
                "last_four": f"{rng.randint(0, 9999):04d}",
                "id": people.payment_id(source),
            }
            taken.add(source)
        else:
            balance = float(rng.choice((0, 5, 10, 20, 25, 40, 60, 100)))
            method = {"source": source, "balance": balance, "id": people.payment_id(source)}
            taken.add(source)
        methods[method["id"]] = method
    return methods


def make_line(rng: random.Random, ids: IdMint, line_id: str, user_id: str, methods: list[str]) -> dict[str, Any]:
    plan = weighted(rng, tuple((plan, plan[-1]) for plan in PLANS))
    plan_id, data_gb, has_roaming = plan[0], plan[3], plan[4]
    topups = []
    if data_gb is not None:
        for _ in range(weighted(rng, TOPUPS_THIS_CYCLE_WEIGHTS)):
            size = rng.choice(list(TOPUP_PRICES))
            topups.append(
                {
                    "size_gb": size,
                    "price": TOPUP_PRICES[size],
                    "payment_method_id": rng.choice(methods),
                    "date": _day_between(rng, CYCLE_START, TODAY - timedelta(days=1)),
                }
            )
    if data_gb is None:
        used = round(rng.uniform(0, 80), 1)
    else:
        allowance = data_gb + sum(topup["size_gb"] for topup in topups)
        # Some lines have used up their data: the reason for most top-up requests.
        used = float(allowance) if rng.random() < 0.2 else round(rng.uniform(0, allowance), 1)
    recent = rng.random() < 0.2
    changed = (
        _day_between(rng, CYCLE_START, TODAY - timedelta(days=1))
        if recent
        else _day_between(rng, TODAY - timedelta(days=730), CYCLE_START - timedelta(days=1))
    )
    return {
        "line_id": line_id,
        "user_id": user_id,
        "phone_number": ids.fresh(lambda r: f"{r.randint(201, 989)}-555-{r.randint(0, 9999):04d}"),
        "plan_id": plan_id,
        "status": "active",
        "roaming": has_roaming and rng.random() < 0.15,
        "data_used_gb": used,
        "topups": topups,
        "last_plan_change": changed,
        "device": {"model": rng.choice(DEVICE_MODELS), "imei": ids.digits(15)},
    }


def _suspend(line: dict[str, Any], reason: str) -> None:
    line["status"] = "suspended"
    line["roaming"] = False
    line["suspension_reason"] = reason


def make_bill(
    rng: random.Random,
    bill_id: str,
    user_id: str,
    month: date,
    lines: list[dict[str, Any]],
    plans: dict[str, Any],
    methods: list[str],
) -> dict[str, Any]:
    issued = (month + timedelta(days=31)).replace(day=1)
    due = issued.replace(day=BILL_DUE_DAY)
    items = []
    for line in lines:
        plan = plans[line["plan_id"]]
        items.append({"description": f"{plan['name']} plan, {line['phone_number']}", "amount": plan["monthly_fee"]})
        if plan["roaming"] and rng.random() < 0.12:
            days = rng.randint(1, 7)
            items.append(
                {"description": f"roaming, {days} days, {line['phone_number']}", "amount": days * ROAMING_DAILY_FEE}
            )
        if plan["data_gb"] is not None and rng.random() < 0.15:
            size = rng.choice(list(TOPUP_PRICES))
            items.append(
                {"description": f"data top-up {size} GB, {line['phone_number']}", "amount": TOPUP_PRICES[size]}
            )
    past_due = due < TODAY
    paid = rng.random() < (PAID_AFTER_DUE if past_due else PAID_BEFORE_DUE)
    late = past_due and (not paid or rng.random() < PAID_LATE)
    waived = late and paid and rng.random() < WAIVED
    if late:
        items.append({"description": "late fee", "amount": LATE_FEE})
    if waived:
        items.append({"description": "late fee waived", "amount": -LATE_FEE})
    amount = round(sum(item["amount"] for item in items), 2)
    payments = []
    if paid:
        yesterday = TODAY - timedelta(days=1)
        first, last = (due + timedelta(days=1), yesterday) if late else (issued, min(due, yesterday))
        payments.append(
            {"payment_method_id": rng.choice(methods), "amount": amount, "date": _day_between(rng, first, last)}
        )
    return {
        "bill_id": bill_id,
        "user_id": user_id,
        "period": month.strftime("%Y-%m"),
        "issued": issued.isoformat(),
        "due": due.isoformat(),
        "items": items,
        "amount": amount,
        "status": "paid" if paid else "overdue" if past_due else "due",
        "late_fee_waived": waived,
        "payments": payments,
    }


def billed_months() -> list[date]:
    """The first day of each billed month, oldest first: the months before the current cycle."""
    months = [CYCLE_START]
    for _ in range(BILLED_MONTHS):
        months.insert(0, (months[0] - timedelta(days=1)).replace(day=1))
    return months[:-1]


def generate(seed: int) -> dict[str, Any]:
    """A full telecom database for `seed`: `{"bills": ..., "lines": ..., "plans": ..., "users": ...}`."""
    rng = random.Random(seed)
    people = People(seed, rng)
    plans = make_plans()
    line_ids, bill_ids, numbers = IdMint(rng), IdMint(rng), IdMint(rng)
    users: dict[str, dict[str, Any]] = {}
    lines: dict[str, dict[str, Any]] = {}
    bills: dict[str, dict[str, Any]] = {}
    while len(users) < N_USERS:
        first, last = people.name()
        user_id = people.user_id(first, last)
        methods = make_payment_methods(people)
        user = {
            "name": {"first_name": first, "last_name": last},
            "email": people.email(first, last),
            "address": people.address(),
            "pin": f"{rng.randint(0, 10**PIN_DIGITS - 1):0{PIN_DIGITS}d}",
            "payment_methods": methods,
            "lines": [],
            "bills": [],
        }
        own = [
            make_line(rng, numbers, line_ids.digits(6, prefix="L"), user_id, list(methods))
            for _ in range(weighted(rng, LINES_PER_USER_WEIGHTS))
        ]
        for month in billed_months():
            bill = make_bill(rng, bill_ids.digits(7, prefix="B"), user_id, month, own, plans, list(methods))
            bills[bill["bill_id"]] = bill
            user["bills"].append(bill["bill_id"])
        unpaid_too_long = any(
            bill["status"] == "overdue" and (TODAY - date.fromisoformat(bill["due"])).days > SUSPEND_AFTER_DAYS
            for bill in (bills[bill_id] for bill_id in user["bills"])
        )
        for line in own:
            if unpaid_too_long:
                _suspend(line, NON_PAYMENT)
            elif rng.random() < 0.07:
                _suspend(line, rng.choice(CUSTOMER_SUSPENSIONS))
            lines[line["line_id"]] = line
            user["lines"].append(line["line_id"])
        users[user_id] = user
    return {"bills": bills, "lines": lines, "plans": plans, "users": users}
