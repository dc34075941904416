"""What each write tool needs, per domain: the records that make it possible, and the policy that governs it.

This is the domain knowledge of the context samplers, kept in one table per domain. For each write tool:

- `table` and `possible`: the write acts on one of the user's own records in `table` (an order, a
  reservation) for which `possible(db, user, record)` holds, or, with `table` None, on the user alone
  (`possible(db, user, user)`). "Possible" means the call can succeed and obey the policy, so a proposer
  writing an ordinary task has what it needs; refusals are the proposer's business.
- `support`: further records the proposer needs to write the call's arguments (the products whose variants
  an exchange picks from, the flights a booking can take). Big records are shown with only the parts the
  task needs: a flight lists just the days the task refers to, never all thirty.
- `sections` and `rules`: the policy headings (`## ...` in policy.md) and rule ids that govern the write.
  Sections and rules that no write of the domain names are general (authentication, one tool call per turn)
  and apply to every task.

A domain without a table here has no such knowledge: its writes need only a user, and its whole policy applies.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from apigen_mt.simulators.domains.airline.rules import DAY_BEFORE_NOW
from apigen_mt.simulators.state import JSON

SampledRecord = tuple[str, str, JSON]  # (table, key, the record or the part of it the task needs)
Support = Callable[[JSON, JSON, random.Random], list[SampledRecord]]  # (db, target, rng) -> helpful records


def _no_support(db: JSON, target: JSON, rng: random.Random) -> list[SampledRecord]:
    return []


@dataclass(frozen=True)
class WriteNeed:
    table: str | None  # the table of the user's records the write acts on; None: the user alone
    possible: Callable[[JSON, JSON, JSON], bool]  # (db, user, target record or the user) -> the write can succeed
    sections: tuple[str, ...]  # policy.md headings, without the leading '## '
    rules: tuple[str, ...]  # PolicyRule ids
    support: Support = _no_support


# Retail.


def _pending(db: JSON, user: JSON, order: JSON) -> bool:
    return order["status"] == "pending"


def _delivered(db: JSON, user: JSON, order: JSON) -> bool:
    return order["status"] == "delivered"


def _has_other_variant(db: JSON, order: JSON) -> bool:
    """Some item of the order has another available variant of its product to swap to."""
    return any(
        variant_id != item["item_id"] and variant["available"]
        for item in order["items"]
        for variant_id, variant in db["products"][item["product_id"]]["variants"].items()
    )


def _swappable_pending(db: JSON, user: JSON, order: JSON) -> bool:
    return _pending(db, user, order) and _has_other_variant(db, order)


def _swappable_delivered(db: JSON, user: JSON, order: JSON) -> bool:
    return _delivered(db, user, order) and _has_other_variant(db, order)


def _repayable(db: JSON, user: JSON, order: JSON) -> bool:
    """Pending, paid once, and the user holds another method that can pay the whole amount."""
    history = order["payment_history"]
    if not _pending(db, user, order) or len(history) != 1 or history[0]["transaction_type"] != "payment":
        return False
    paid = history[0]
    return any(
        method_id != paid["payment_method_id"]
        and (method["source"] != "gift_card" or method["balance"] >= paid["amount"])
        for method_id, method in user["payment_methods"].items()
    )


def _anyone(db: JSON, user: JSON, target: JSON) -> bool:
    return True


def _ordered_products(db: JSON, order: JSON, rng: random.Random) -> list[SampledRecord]:
    product_ids = dict.fromkeys(item["product_id"] for item in order["items"])
    return [("products", product_id, db["products"][product_id]) for product_id in product_ids]


_CHANGE_ORDER = "Changing a pending order"
_ORDER_WRITE_RULES = ("R6", "R17")  # look the order up first; no write on processed or cancelled orders

RETAIL: dict[str, WriteNeed] = {
    "cancel_pending_order": WriteNeed(
        "orders", _pending, ("Cancelling a pending order",), (*_ORDER_WRITE_RULES, "R7", "R8", "R11")
    ),
    "modify_pending_order_address": WriteNeed("orders", _pending, (_CHANGE_ORDER,), (*_ORDER_WRITE_RULES, "R9", "R11")),
    "modify_pending_order_payment": WriteNeed(
        "orders", _repayable, (_CHANGE_ORDER,), (*_ORDER_WRITE_RULES, "R9", "R10", "R11")
    ),
    "modify_pending_order_items": WriteNeed(
        "orders",
        _swappable_pending,
        (_CHANGE_ORDER,),
        (*_ORDER_WRITE_RULES, "R9", "R11", "R12", "R13"),
        _ordered_products,
    ),
    "return_delivered_order_items": WriteNeed(
        "orders", _delivered, ("Returning items of a delivered order",), (*_ORDER_WRITE_RULES, "R14", "R15", "R16")
    ),
    "exchange_delivered_order_items": WriteNeed(
        "orders",
        _swappable_delivered,
        ("Exchanging items of a delivered order",),
        (*_ORDER_WRITE_RULES, "R12", "R13", "R16"),
        _ordered_products,
    ),
    "modify_user_address": WriteNeed(None, _anyone, ("Changing the customer's default address",), ()),
}


# Airline.

_FLOWN = ("landed", "flying")
_BOOKABLE_FLIGHTS = 3  # flight days offered for a booking: enough for a choice, few enough for the budget


def _day(db: JSON, segment: JSON) -> JSON:
    return db["flights"].get(segment["flight_number"], {}).get("dates", {}).get(segment["date"], {})


def _statuses(db: JSON, reservation: JSON) -> list[str | None]:
    return [_day(db, segment).get("status") for segment in reservation["flights"]]


def _active(db: JSON, user: JSON, reservation: JSON) -> bool:
    """Not cancelled and nothing flown yet: the reservation can still be changed."""
    return reservation.get("status") != "cancelled" and not any(
        status in _FLOWN for status in _statuses(db, reservation)
    )


def _cancellable(db: JSON, user: JSON, reservation: JSON) -> bool:
    """Active, and one of the policy's grounds holds (insurance is taken to cover the reason the user gives)."""
    return _active(db, user, reservation) and (
        reservation["created_at"] >= DAY_BEFORE_NOW
        or "cancelled" in _statuses(db, reservation)
        or reservation["cabin"] == "business"
        or reservation["insurance"] == "yes"
    )


def _compensable(db: JSON, user: JSON, reservation: JSON) -> bool:
    """A cancelled or delayed flight, and a user the policy lets receive a certificate."""
    disrupted = any(status in ("cancelled", "delayed") for status in _statuses(db, reservation))
    eligible = (
        user["membership"] in ("silver", "gold")
        or reservation["insurance"] == "yes"
        or reservation["cabin"] == "business"
    )
    return disrupted and eligible


def _can_pay(db: JSON, user: JSON, target: JSON) -> bool:
    return bool(user["payment_methods"])


def _flight_days(db: JSON, flight_number: str, dates: list[str]) -> SampledRecord:
    """A flight with only the given days."""
    flight = db["flights"][flight_number]
    shown = {
        key: ({date: flight["dates"][date] for date in dates} if key == "dates" else value)
        for key, value in flight.items()
    }
    return ("flights", flight_number, shown)


def _reserved_flights(db: JSON, reservation: JSON, rng: random.Random) -> list[SampledRecord]:
    return [
        _flight_days(db, segment["flight_number"], [segment["date"]])
        for segment in reservation["flights"]
        if _day(db, segment)
    ]


def _reserved_and_alternative_flights(db: JSON, reservation: JSON, rng: random.Random) -> list[SampledRecord]:
    """The reserved flights, then other flights of the same routes open for booking on the same days."""
    alternatives = [
        _flight_days(db, number, [segment["date"]])
        for segment in reservation["flights"]
        for number, flight in db["flights"].items()
        if number != segment["flight_number"]
        and (flight["origin"], flight["destination"]) == (segment["origin"], segment["destination"])
        and flight["dates"].get(segment["date"], {}).get("status") == "available"
    ]
    return _reserved_flights(db, reservation, rng) + alternatives


def _bookable_flights(db: JSON, user: JSON, rng: random.Random) -> list[SampledRecord]:
    open_days = [
        (number, date)
        for number, flight in db["flights"].items()
        for date, day in flight["dates"].items()
        if day["status"] == "available"
    ]
    chosen = rng.sample(open_days, min(_BOOKABLE_FLIGHTS, len(open_days)))
    return [_flight_days(db, number, [date]) for number, date in chosen]


_CHANGE_RESERVATION = "Changing a reservation"

AIRLINE: dict[str, WriteNeed] = {
    "book_reservation": WriteNeed(
        None, _can_pay, ("Booking a new reservation",), ("A4", "A5", "A6", "A7"), _bookable_flights
    ),
    "cancel_reservation": WriteNeed(
        "reservations", _cancellable, ("Cancelling a reservation",), ("A16", "A17"), _reserved_flights
    ),
    "update_reservation_flights": WriteNeed(
        "reservations", _active, (_CHANGE_RESERVATION,), ("A9", "A10", "A12"), _reserved_and_alternative_flights
    ),
    "update_reservation_baggages": WriteNeed("reservations", _active, (_CHANGE_RESERVATION,), ("A7", "A13")),
    "update_reservation_passengers": WriteNeed("reservations", _active, (_CHANGE_RESERVATION,), ("A14",)),
    "send_certificate": WriteNeed("reservations", _compensable, ("Compensation",), ("A19", "A20"), _reserved_flights),
}

NEEDS: Mapping[str, Mapping[str, WriteNeed]] = {"retail": RETAIL, "airline": AIRLINE}

# A write of a domain without a table: any user can make it, and no record is known to help.
USER_ONLY = WriteNeed(None, _anyone, (), ())
