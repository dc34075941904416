"""What each airline write needs: the user's reservation in the right state, the flights a booking or change
can take, and the policy sections and rules that govern it (see `apigen_mt.simulators.needs`)."""

from __future__ import annotations

import random

from apigen_mt.simulators.domains.airline.constants import DAY_BEFORE_NOW
from apigen_mt.simulators.needs import SampledRecord, WriteNeed
from apigen_mt.simulators.state import JSON

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

WRITE_NEEDS: dict[str, WriteNeed] = {
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
