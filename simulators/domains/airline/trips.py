"""What the airline rules read from a trace: the reservations written, flight statuses and segments, the cabin a
traveller now flies, the conversation's user and whether flights form a trip (see `rules.py`)."""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.trace import ActionTrace, TracedCall, calls_on_records, lookup

RESERVATION_WRITES = frozenset(
    {"cancel_reservation", "update_reservation_baggages", "update_reservation_flights", "update_reservation_passengers"}
)


def reservations_written(
    trace: ActionTrace, names: frozenset[str] | set[str]
) -> list[tuple[TracedCall, str, dict[str, Any]]]:
    return calls_on_records(trace, names, "reservations", "reservation_id")


def flight_status(db: Any, flight_number: Any, date: Any) -> str | None:
    flight = lookup(db.get("flights"), flight_number) or {}
    return (lookup(flight.get("dates"), date) or {}).get("status")


def flight_segments(flights: Any) -> list[tuple[Any, Any]] | None:
    if not isinstance(flights, list) or not all(isinstance(f, dict) for f in flights):
        return None
    return [(f.get("flight_number"), f.get("date")) for f in flights]


def effective_cabin(trace: ActionTrace, call: TracedCall, reservation_id: str, reservation: dict[str, Any]) -> Any:
    changes = [
        earlier.arguments.get("cabin")
        for earlier in trace.earlier(call)
        if earlier.name == "update_reservation_flights"
        and not earlier.failed
        and earlier.arguments.get("reservation_id") == reservation_id
    ]
    return changes[-1] if changes else reservation.get("cabin")


def conversation_user(trace: ActionTrace) -> str | None:
    if trace.user_id is not None:
        return trace.user_id
    for call in trace.calls:
        if call.name == "get_user_details" and not call.failed and isinstance(call.arguments.get("user_id"), str):
            return call.arguments["user_id"]
    return None


def itinerary_problems(db: Any, flights: Any, origin: Any, destination: Any, flight_type: Any) -> list[str]:
    """Why these segments do not form a one-way or round trip from `origin` to `destination` (A6, A10)."""
    segments = flight_segments(flights)
    if not segments:
        return ["no flights are given"]
    legs = []
    for flight_number, _ in segments:
        flight = lookup(db.get("flights"), flight_number)
        if flight is None:
            return [f"flight {flight_number!r} does not exist"]
        legs.append((flight_number, flight.get("origin"), flight.get("destination")))
    problems = [
        f"{first[0]} arrives at {first[2]} but the next flight {second[0]} leaves from {second[1]}"
        for first, second in zip(legs, legs[1:])
        if first[2] != second[1]
    ]
    if legs[0][1] != origin:
        problems.append(f"the first flight {legs[0][0]} leaves from {legs[0][1]}, not from the origin {origin}")
    if flight_type == "one_way":
        if legs[-1][2] != destination:
            problems.append(f"the one-way trip ends at {legs[-1][2]}, not at the destination {destination}")
    elif flight_type == "round_trip":
        if destination not in [leg[2] for leg in legs[:-1]]:
            problems.append(f"the round trip never reaches the destination {destination} before returning")
        if legs[-1][2] != origin:
            problems.append(f"the round trip ends at {legs[-1][2]}, not back at the origin {origin}")
    else:
        problems.append(f"flight_type {flight_type!r} is neither 'one_way' nor 'round_trip'")
    return problems


def flights_change(call: TracedCall, reservation: dict[str, Any]) -> bool:
    current = [(f.get("flight_number"), f.get("date")) for f in reservation.get("flights", [])]
    return flight_segments(call.arguments.get("flights")) != current
