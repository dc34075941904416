"""Airline policy rules as code (taubench-domains.md section 3.2). "Now" is `constants.NOW`.

Implemented: every rule that actions, arguments and data decide, including those the tools already enforce
(TE), which still catch an agent that tries: A2 (episodes with messages), A3-A7, A9, A10, A12-A14, A16, A17,
and the data parts of A19 and A20. Left out: A1, A15 (need reading the dialogue), A8, A11, A18 (structural:
no tool can break them), A21, A22 (soft).

Blueprints versus episodes (see `apigen_mt.simulators.trace`):
- A3. The conversation's user is the blueprint's `user_id` (in an episode without one, the first user whose
  details the agent fetched). Bookings, certificates and writes on reservations must be for that user. That
  get_user_details comes before a booking and get_reservation_details before a write on a reservation is
  checked in episodes only: ground truth may leave the reads out.
- "Effective cabin". update_reservation_flights never stores a new cabin (a tau-bench quirk), so after a
  cabin change in the same trace the cabin the traveller now flies is that call's `cabin`. A7 (free bags),
  A9 (basic economy), A16 (business may cancel) and A19 (business earns a certificate) read the effective
  cabin, so each write is judged on the state the earlier writes left; the stored one would, for example,
  keep a reservation upgraded out of basic economy frozen forever, or refuse to cancel it.
- A16 allows a cancellation with insurance without checking the reason is health or weather (only the
  dialogue says); A19/A20 consider the reservations the trace names for that user, or all of the user's
  reservations when it names none (a blueprint may omit the lookups).
- A call the environment refused (an error observation, the database unchanged) counts in an episode only
  for the rules whose attempt is itself forbidden; the comment above `RULES` gives the decision per rule.
  What the rules read from a trace (effective cabin, segments, itineraries) is in `trips.py`.

Ground truth that breaks these rules, in tau-bench's 25 sample airline tasks (upstream warns some airline
tasks are outdated): task 10 cancels an economy reservation without insurance booked two weeks earlier
(A16); task 16 sends the delayed-flight certificate without changing or cancelling the reservation (A20);
task 19 changes the destination LGA to JFK (A10) and, like task 23, charges bags the allowance covers (A7;
taubench-domains.md section 6 item 6). The rules follow the policy; those tasks are reported, not exempted.
"""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.domain_types import PolicyRule
from apigen_mt.simulators.domains.airline.constants import (
    DAY_BEFORE_NOW,
    FREE_BAGS,
    INSURANCE_FEE_PER_PASSENGER,
    NONFREE_BAG_FEE,
)
from apigen_mt.simulators.domains.airline.trips import (
    RESERVATION_WRITES,
    conversation_user,
    effective_cabin,
    flight_segments,
    flight_status,
    flights_change,
    itinerary_problems,
    reservations_written,
)
from apigen_mt.simulators.trace import ActionTrace, TracedCall, lookup, one_call_per_turn

CHANGES = RESERVATION_WRITES  # what, done first, makes a delayed flight's certificate due (A20)
MAX_PASSENGERS = 5
PAYMENT_LIMITS = {"certificate": 1, "credit_card": 1, "gift_card": 3}


def know_the_user(trace: ActionTrace) -> list[str]:
    user = conversation_user(trace)
    if user is None:
        return ["the user is never identified: give the blueprint a user_id, or fetch the user's details first"]
    problems = []
    for call in trace.calls:
        if call.name in ("book_reservation", "send_certificate"):
            named = call.arguments.get("user_id")
            # An id that names no user (a typo the tool refuses) acts for nobody.
            if named != user and lookup(call.before.get("users"), named) is not None:
                problems.append(f"{call.label()} is for user {named!r}, but the conversation is with {user!r}")
            elif (
                call.name == "book_reservation"
                and trace.episode
                and not trace.succeeded_before(call, "get_user_details", user_id=user)
            ):
                problems.append(f"{call.label()} books before the user's details were fetched with get_user_details")
    for call, reservation_id, reservation in reservations_written(trace, RESERVATION_WRITES):
        if reservation.get("user_id") != user:
            problems.append(
                f"{call.label()} changes reservation {reservation_id} of user {reservation.get('user_id')!r}, "
                f"but the conversation is with {user!r}"
            )
        if trace.episode and not trace.succeeded_before(call, "get_reservation_details", reservation_id=reservation_id):
            problems.append(
                f"{call.label()} changes reservation {reservation_id} without get_reservation_details for it first"
            )
    return problems


def passengers_listed(trace: ActionTrace) -> list[str]:
    problems = []
    for call in trace.calls_of("book_reservation"):
        passengers = call.arguments.get("passengers")
        if not isinstance(passengers, list) or not 1 <= len(passengers) <= MAX_PASSENGERS:
            count = len(passengers) if isinstance(passengers, list) else "no"
            problems.append(f"{call.label()} books {count} passengers; a reservation has 1 to {MAX_PASSENGERS}")
            continue
        for position, passenger in enumerate(passengers):
            missing = [
                key
                for key in ("first_name", "last_name", "dob")
                if not (isinstance(passenger, dict) and isinstance(passenger.get(key), str) and passenger[key].strip())
            ]
            if missing:
                problems.append(f"{call.label()}: passenger {position} lacks {', '.join(missing)}")
    return problems


def _booking_price(db: Any, arguments: dict[str, Any]) -> int | float | None:
    """What book_reservation charges, or None when a flight cannot be priced (A6 reports why)."""
    segments = flight_segments(arguments.get("flights"))
    passengers = arguments.get("passengers")
    nonfree = arguments.get("nonfree_baggages")
    if segments is None or not isinstance(passengers, list) or not isinstance(nonfree, (int, float)):
        return None
    total: int | float = 0
    for flight_number, date in segments:
        record = lookup((lookup(db.get("flights"), flight_number) or {}).get("dates"), date) or {}
        price = lookup(record.get("prices"), arguments.get("cabin"))
        if record.get("status") != "available" or price is None:
            return None
        total += price * len(passengers)
    if arguments.get("insurance") == "yes":
        total += INSURANCE_FEE_PER_PASSENGER * len(passengers)
    return total + NONFREE_BAG_FEE * nonfree


def booking_payment(trace: ActionTrace) -> list[str]:
    problems = []
    for call in trace.calls_of("book_reservation"):
        user = lookup(call.before.get("users"), call.arguments.get("user_id"))
        entries = call.arguments.get("payment_methods")
        if user is None or not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            continue  # an unknown user or malformed payments fail in the tool itself
        counts = {source: 0 for source in PAYMENT_LIMITS}
        paid: int | float = 0
        for entry in entries:
            method_id, amount = entry.get("payment_id"), entry.get("amount")
            method = lookup(user.get("payment_methods"), method_id)
            if method is None:
                problems.append(f"{call.label()}: payment method {method_id!r} is not in the user's profile")
                continue
            source = method.get("source")
            counts[source] = counts.get(source, 0) + 1
            if isinstance(amount, (int, float)):
                paid += amount
                if source in ("gift_card", "certificate") and method.get("amount", 0) < amount:
                    problems.append(
                        f"{call.label()}: {method_id} holds {method.get('amount')}, "
                        f"less than the {amount} charged to it"
                    )
        for source, limit in PAYMENT_LIMITS.items():
            if counts[source] > limit:
                problems.append(
                    f"{call.label()} uses {counts[source]} {source.replace('_', ' ')}s; at most {limit} per reservation"
                )
        price = _booking_price(call.before, call.arguments)
        if price is not None and paid != price:
            problems.append(f"{call.label()}: the payments add up to {paid}, but the reservation costs {price}")
    return problems


def booked_itinerary(trace: ActionTrace) -> list[str]:
    problems = []
    for call in trace.calls_of("book_reservation"):
        for flight_number, date in flight_segments(call.arguments.get("flights")) or []:
            status = flight_status(call.before, flight_number, date)
            if status != "available":
                shown = "does not fly that day" if status is None else f"is {status!r}"
                problems.append(
                    f"{call.label()}: flight {flight_number} on {date} {shown}; only 'available' flights can be booked"
                )
        arguments = call.arguments
        found = itinerary_problems(
            call.before,
            arguments.get("flights"),
            arguments.get("origin"),
            arguments.get("destination"),
            arguments.get("flight_type"),
        )
        problems.extend(f"{call.label()}: {problem}" for problem in found)
    return problems


def _bag_allowance_problem(membership: Any, cabin: Any, passengers: int, total: Any, nonfree: Any) -> str | None:
    free = lookup(lookup(FREE_BAGS, membership), cabin)
    if free is None or not isinstance(total, int) or not isinstance(nonfree, int):
        return None
    expected = max(0, total - free * passengers)
    if nonfree == expected:
        return None
    return (
        f"{total} bags for {passengers} passenger(s), {membership} member in {cabin} ({free} free each): "
        f"nonfree_baggages should be {expected}, not {nonfree}"
    )


def baggage_allowance(trace: ActionTrace) -> list[str]:
    problems = []
    for call in trace.calls_of("book_reservation"):
        arguments = call.arguments
        user = lookup(call.before.get("users"), arguments.get("user_id")) or {}
        passengers = arguments.get("passengers")
        count = len(passengers) if isinstance(passengers, list) else 0
        problem = _bag_allowance_problem(
            user.get("membership"),
            arguments.get("cabin"),
            count,
            arguments.get("total_baggages"),
            arguments.get("nonfree_baggages"),
        )
        if problem:
            problems.append(f"{call.label()}: {problem}")
    for call, reservation_id, reservation in reservations_written(trace, {"update_reservation_baggages"}):
        user = lookup(call.before.get("users"), reservation.get("user_id")) or {}
        problem = _bag_allowance_problem(
            user.get("membership"),
            effective_cabin(trace, call, reservation_id, reservation),
            len(reservation.get("passengers", [])),
            call.arguments.get("total_baggages"),
            call.arguments.get("nonfree_baggages"),
        )
        if problem:
            problems.append(f"{call.label()}: {problem}")
    return problems


def basic_economy_fixed(trace: ActionTrace) -> list[str]:
    return [
        f"{call.label()} changes the flights of basic economy reservation {reservation_id}; only its cabin may change"
        for call, reservation_id, reservation in reservations_written(trace, {"update_reservation_flights"})
        if effective_cabin(trace, call, reservation_id, reservation) == "basic_economy"
        and flights_change(call, reservation)
    ]


def same_trip(trace: ActionTrace) -> list[str]:
    problems = []
    for call, reservation_id, reservation in reservations_written(trace, {"update_reservation_flights"}):
        segments = flight_segments(call.arguments.get("flights"))
        # Flights that cannot be read or do not exist are refused by the tool and move nobody: a typo, not a new route.
        if not segments or any(lookup(call.before.get("flights"), number) is None for number, _ in segments):
            continue
        if not flights_change(call, reservation):
            continue
        found = itinerary_problems(
            call.before,
            call.arguments.get("flights"),
            reservation.get("origin"),
            reservation.get("destination"),
            reservation.get("flight_type"),
        )
        problems.extend(f"{call.label()} on {reservation_id}: {problem}" for problem in found)
    return problems


def change_payment(trace: ActionTrace) -> list[str]:
    problems = []
    for call, _, reservation in reservations_written(trace, {"update_reservation_flights"}):
        payment_id = call.arguments.get("payment_id")
        user = lookup(call.before.get("users"), reservation.get("user_id")) or {}
        method = lookup(user.get("payment_methods"), payment_id)
        if method is None:
            problems.append(f"{call.label()}: payment method {payment_id!r} is not in the user's profile")
        elif method.get("source") not in ("gift_card", "credit_card"):
            problems.append(f"{call.label()} pays with {payment_id}; flight changes take one gift card or credit card")
    return problems


def bags_only_added(trace: ActionTrace) -> list[str]:
    problems = []
    for call, reservation_id, reservation in reservations_written(trace, {"update_reservation_baggages"}):
        for key in ("total_baggages", "nonfree_baggages"):
            new, current = call.arguments.get(key), reservation.get(key)
            if isinstance(new, (int, float)) and isinstance(current, (int, float)) and new < current:
                problems.append(
                    f"{call.label()} lowers {key} of {reservation_id} from {current} to {new}; bags can only be added"
                )
    return problems


def passenger_count_kept(trace: ActionTrace) -> list[str]:
    return [
        f"{call.label()} gives {len(call.arguments['passengers'])} passengers for {reservation_id}, which has "
        f"{len(reservation.get('passengers', []))}; the number of passengers cannot change"
        for call, reservation_id, reservation in reservations_written(trace, {"update_reservation_passengers"})
        if isinstance(call.arguments.get("passengers"), list)
        and len(call.arguments["passengers"]) != len(reservation.get("passengers", []))
    ]


def cancellation_allowed(trace: ActionTrace) -> list[str]:
    problems = []
    for call, reservation_id, reservation in reservations_written(trace, {"cancel_reservation"}):
        airline_cancelled = any(
            flight_status(call.before, f.get("flight_number"), f.get("date")) == "cancelled"
            for f in reservation.get("flights", [])
        )
        cabin = effective_cabin(trace, call, reservation_id, reservation)
        if (
            str(reservation.get("created_at", "")) >= DAY_BEFORE_NOW
            or airline_cancelled
            or cabin == "business"
            or reservation.get("insurance") == "yes"
        ):
            continue
        problems.append(
            f"{call.label()} cancels {reservation_id} ({cabin}, booked {reservation.get('created_at')}, "
            "no insurance, no cancelled flight); only bookings of the last 24 hours, business cabins, insured trips "
            "or trips with a flight the airline cancelled can be cancelled"
        )
    return problems


def nothing_flown(trace: ActionTrace) -> list[str]:
    problems = []
    for call, reservation_id, reservation in reservations_written(trace, {"cancel_reservation"}):
        flown = [
            f"{f.get('flight_number')} on {f.get('date')} ({status})"
            for f in reservation.get("flights", [])
            if (status := flight_status(call.before, f.get("flight_number"), f.get("date"))) in ("landed", "flying")
        ]
        if flown:
            problems.append(
                f"{call.label()} cancels {reservation_id}, but {', '.join(flown)} is already flown; transfer instead"
            )
    return problems


def _complaint_candidates(trace: ActionTrace, call: TracedCall, user_id: str, user: dict[str, Any]) -> list[str]:
    """The user's reservations the trace names before `call`; all the user's reservations when it names none."""
    reservations = call.before.get("reservations") or {}
    named = []
    for earlier in trace.earlier(call):
        reservation_id = earlier.arguments.get("reservation_id")
        if reservation_id not in named and (lookup(reservations, reservation_id) or {}).get("user_id") == user_id:
            named.append(reservation_id)
    return named or [r for r in user.get("reservations", []) if lookup(reservations, r) is not None]


def certificate_eligible(trace: ActionTrace) -> list[str]:
    problems = []
    for call in trace.calls_of("send_certificate"):
        user_id = call.arguments.get("user_id")
        user = lookup(call.before.get("users"), user_id)
        if user is None or user.get("membership") in ("silver", "gold"):
            continue
        reservations = call.before.get("reservations") or {}
        candidates = _complaint_candidates(trace, call, user_id, user)
        if not any(
            reservations[r].get("insurance") == "yes" or effective_cabin(trace, call, r, reservations[r]) == "business"
            for r in candidates
        ):
            problems.append(
                f"{call.label()} compensates {user_id}, a regular member whose reservations in question "
                f"({', '.join(candidates) or 'none'}) have neither insurance nor a business cabin"
            )
    return problems


def certificate_amount(trace: ActionTrace) -> list[str]:
    problems = []
    for call in trace.calls_of("send_certificate"):
        user_id, amount = call.arguments.get("user_id"), call.arguments.get("amount")
        user = lookup(call.before.get("users"), user_id)
        if user is None or not isinstance(amount, (int, float)):
            continue
        reservations = call.before.get("reservations") or {}
        cases = []
        due = False
        for reservation_id in _complaint_candidates(trace, call, user_id, user):
            reservation = reservations[reservation_id]
            statuses = {
                flight_status(call.before, f.get("flight_number"), f.get("date"))
                for f in reservation.get("flights", [])
            }
            passengers = len(reservation.get("passengers", []))
            if "cancelled" in statuses:
                cases.append(f"{reservation_id} has a cancelled flight: 100 x {passengers} = {100 * passengers}")
                due = due or amount == 100 * passengers
            if "delayed" in statuses:
                changed = any(
                    earlier.name in CHANGES
                    and not earlier.failed
                    and earlier.arguments.get("reservation_id") == reservation_id
                    for earlier in trace.earlier(call)
                )
                when = (
                    "after it was changed or cancelled"
                    if changed
                    else "only after changing or cancelling it, which has not happened"
                )
                cases.append(f"{reservation_id} has a delayed flight: 50 x {passengers} = {50 * passengers}, {when}")
                due = due or (changed and amount == 50 * passengers)
        if not due:
            problems.append(
                f"{call.label()} sends {amount}, which fits no compensation case"
                + (
                    f" ({'; '.join(cases)})"
                    if cases
                    else ": none of the user's reservations in question has a cancelled or delayed flight"
                )
            )
    return problems


# `refused_calls_count` (a refused call: error observation, database unchanged). True where the attempt is
# the write the policy forbids, whatever the tool answered: acting for another user or before reading them
# (A3), changing a basic economy trip's flights (A9) or a trip's route (A10), removing bags (A13), changing
# the number of passengers (A14: the tool always refuses it, so only the attempt can break it), cancelling a
# non-refundable or flown trip (A16, A17), sending a certificate not due (A19, A20). False where the write
# is allowed and a refused call only got its details wrong, then corrected: passengers (A4), payments (A5,
# A12), flights not on sale (A6), the bag count (A7). A2 judges messages, not calls.
RULES: list[PolicyRule] = [
    PolicyRule(
        "A2", "One tool call per turn (text beside a call is allowed: the user never sees it).", one_call_per_turn
    ),
    PolicyRule("A3", "Know the user and the reservation first; act only on that user's reservations.", know_the_user),
    PolicyRule(
        "A4",
        "A booking has 1 to 5 passengers, each with first name, last name and date of birth.",
        passengers_listed,
        refused_calls_count=False,
    ),
    PolicyRule(
        "A5",
        "Booking payment: profile methods only, at most 1 certificate, 1 credit card, 3 gift cards; it adds up.",
        booking_payment,
        refused_calls_count=False,
    ),
    PolicyRule(
        "A6",
        "Booked flights are available and form the requested one-way or round trip.",
        booked_itinerary,
        refused_calls_count=False,
    ),
    PolicyRule(
        "A7",
        "Non-free bags are the bags beyond the membership and cabin allowance.",
        baggage_allowance,
        refused_calls_count=False,
    ),
    PolicyRule("A9", "Basic economy flights cannot be changed (the cabin can).", basic_economy_fixed),
    PolicyRule("A10", "Changed flights keep the reservation's origin, destination and trip type.", same_trip),
    PolicyRule(
        "A12",
        "Flight changes are paid with one gift card or credit card from the profile.",
        change_payment,
        refused_calls_count=False,
    ),
    PolicyRule("A13", "Bags can be added, never removed.", bags_only_added),
    PolicyRule("A14", "The number of passengers cannot change.", passenger_count_kept),
    PolicyRule(
        "A16",
        "Cancel only within 24 h of booking, after an airline cancellation, in business, or with insurance.",
        cancellation_allowed,
    ),
    PolicyRule("A17", "Cancel only trips with no flown segment.", nothing_flown),
    PolicyRule(
        "A19", "Certificates only for silver/gold members, insured trips or business cabins.", certificate_eligible
    ),
    PolicyRule(
        "A20",
        "Certificate: 100 x passengers for a cancelled flight, 50 x passengers for a delayed one after a change.",
        certificate_amount,
    ),
]
