"""Seeded generator of the airline database, in tau-bench's exact layout (spec section 1.1).

`generate(seed)` builds 300 flights between 20 US airports over 2024-05-01..30, 500 users and 2,000
reservations. "Now" is `constants.NOW`: earlier dates have landed or been cancelled, today's flights
are landed, flying, on time or delayed depending on the hour, and later dates are bookable.
Everything comes from one `random.Random(seed)` plus a seeded Faker, so a seed gives the same bytes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apigen_mt.simulators.domains.airline.constants import (
    AIRPORTS,
    BOOKING_IDS,
    CERTIFICATE_IDS,
    FREE_BAGS,
    NOW,
    RESERVATION_ID_CHARS,
    RESERVATION_ID_LENGTH,
)
from apigen_mt.simulators.synthetic import IdMint, People, holders, spread, weighted

N_FLIGHTS = 300
N_USERS = 500
N_RESERVATIONS = 2000
N_TRAVELLERS = 800
N_ROUTE_PAIRS = 55  # airport pairs served in both directions

FIRST_DAY, LAST_DAY = 1, 30  # May 2024
TODAY = NOW.day
CABINS = ("basic_economy", "economy", "business")
CABIN_PRICE_BANDS = {"basic_economy": (50, 100), "economy": (100, 200), "business": (200, 500)}  # before scaling

MIN_ROUTE_MILES = 80  # the New York airports are not connected to each other

MEMBERSHIP_WEIGHTS = (("regular", 29), ("silver", 36), ("gold", 35))
CERTIFICATE_AMOUNTS = (100, 150, 250, 500)

# Reservations per user: weights for 0, 1, 2, ... (mean about 4).
RESERVATIONS_PER_USER_WEIGHTS = (10, 5, 15, 14, 16, 13, 10, 7, 4.5, 2.5, 2, 0.5, 0.3, 0.2)
# Day of May of a trip's first flight: busiest just after today, thinning towards both ends of the month.
FIRST_DAY_WEIGHTS = tuple((day, 1.0 + 3.0 * math.exp(-abs(day - 18) / 5.0)) for day in range(FIRST_DAY, 29))
MIN_LAYOVER, MAX_LAYOVER = 60, 8 * 60  # minutes
MAX_DETOUR = 1.5  # a one-stop trip flies at most this much farther than the direct distance (plus 250 miles)


def date_of(day: int) -> str:
    return f"2024-05-{day:02d}"


def clock(minutes: int) -> str:
    """`HH:MM:SS` of a time of day, with `+1` when it falls on the next day."""
    suffix = "+1" if minutes >= 24 * 60 else ""
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00{suffix}"


def iso(day: int, minutes: int) -> str:
    return (datetime(2024, 5, day) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S")


def _great_circle_miles(a: str, b: str) -> float:
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, AIRPORTS[code][1:])) for code in (a, b))
    cos_angle = math.sin(lat1) * math.sin(lat2) + math.cos(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return 3959.0 * math.acos(max(-1.0, min(1.0, cos_angle)))


MILES = {(a, b): _great_circle_miles(a, b) for a in AIRPORTS for b in AIRPORTS}


@dataclass(frozen=True)
class Schedule:
    """A flight's fixed data: times are minutes after midnight EST of the departure day."""

    number: str
    origin: str
    destination: str
    departs: int
    arrives: int


def route_pairs(rng: random.Random) -> list[tuple[str, str]]:
    """Served airport pairs: every airport gets at least two partners, then random pairs up to the target."""
    codes = list(AIRPORTS)
    candidates = [(a, b) for i, a in enumerate(codes) for b in codes[i + 1 :] if MILES[a, b] >= MIN_ROUTE_MILES]
    chosen: list[tuple[str, str]] = []
    for code in codes:
        partners = [pair for pair in candidates if code in pair and pair not in chosen]
        while sum(code in pair for pair in chosen) < 2:
            pair = rng.choice(partners)
            partners.remove(pair)
            chosen.append(pair)
    rest = [pair for pair in candidates if pair not in chosen]
    chosen += rng.sample(rest, k=N_ROUTE_PAIRS - len(chosen))
    return chosen


def make_schedules(rng: random.Random) -> list[Schedule]:
    routes = [leg for a, b in route_pairs(rng) for leg in ((a, b), (b, a))]
    per_route = [1 + extra for extra in spread(rng, len(routes), N_FLIGHTS - len(routes), (30, 35, 20, 10, 5))]
    directed = [route for route, count in zip(routes, per_route) for _ in range(count)]
    rng.shuffle(directed)
    # Departures on the hour or half hour, busier by day, with some red-eyes.
    hour_weights = [1.0 if hour < 5 else 3.0 if hour < 22 else 2.0 for hour in range(24)]
    schedules = []
    for index, (origin, destination) in enumerate(directed, start=1):
        # Block time: half an hour on the ground plus cruising at about 500 mph, in half-hour steps.
        duration = max(60, 30 * round((30 + MILES[origin, destination] / 8.3) / 30))
        departs = 60 * rng.choices(range(24), weights=hour_weights)[0] + rng.choice((0, 0, 0, 30))
        schedules.append(Schedule(f"HAT{index:03d}", origin, destination, departs, departs + duration))
    return schedules


def timed(status: str, day: int, departs: int, arrives: int) -> dict[str, Any]:
    """A date record of a flight that is not on sale: its times are actual once they have happened."""
    departure = "actual" if status in ("landed", "flying") else "estimated"
    arrival = "actual" if status == "landed" else "estimated"
    return {
        "status": status,
        f"{departure}_departure_time_est": iso(day, departs),
        f"{arrival}_arrival_time_est": iso(day, arrives),
    }


def date_record(rng: random.Random, flight: Schedule, day: int, fare_scale: float) -> dict[str, Any]:
    duration = flight.arrives - flight.departs
    if day > TODAY:
        # The cabins' price bands do not overlap, so basic economy <= economy <= business on every day.
        return {
            "status": "available",
            "available_seats": {cabin: rng.randint(0, 20) for cabin in CABINS},
            "prices": {cabin: round(rng.uniform(*CABIN_PRICE_BANDS[cabin]) * fare_scale) for cabin in CABINS},
        }
    if day < TODAY:
        if rng.random() < 0.09:
            return {"status": "cancelled"}
        departs = flight.departs + round(rng.triangular(-25, 40, 0))
        arrives = departs + duration + round(rng.triangular(-25, 25, -5))
        return timed("landed", day, departs, arrives)
    now = NOW.hour * 60 + NOW.minute
    if flight.departs < now:
        departs = flight.departs + round(rng.triangular(-25, 40, 0))
        arrives = departs + duration + round(rng.triangular(-25, 25, -5))
        if arrives <= now:
            return timed("landed", day, departs, arrives)
        if departs <= now:
            return timed("flying", day, departs, arrives)
        return timed("delayed", day, departs, arrives)  # it should have left already but is still at the gate
    if rng.random() < 0.4:
        departs = flight.departs + rng.randint(30, 180)
        status = "delayed"
    else:
        departs = max(now, flight.departs + rng.randint(-10, 10))
        status = "on time"
    arrives = departs + duration + rng.randint(-10, 10)
    return timed(status, day, departs, arrives)


def make_flights(rng: random.Random, schedules: list[Schedule]) -> dict[str, dict[str, Any]]:
    flights = {}
    for flight in schedules:
        # Longer flights cost more, and some routes are dearer than others of the same length.
        fare_scale = (0.8 + (flight.arrives - flight.departs) / 600) * rng.uniform(0.85, 1.15)
        flights[flight.number] = {
            "flight_number": flight.number,
            "origin": flight.origin,
            "destination": flight.destination,
            "scheduled_departure_time_est": clock(flight.departs),
            "scheduled_arrival_time_est": clock(flight.arrives),
            "dates": {
                date_of(day): date_record(rng, flight, day, fare_scale) for day in range(FIRST_DAY, LAST_DAY + 1)
            },
        }
    return flights


def make_payment_methods(people: People) -> dict[str, dict[str, Any]]:
    rng = people.rng
    sources = []
    # Everyone can pay with at least one credit card or gift card; certificates come on top.
    while not any(source in ("credit_card", "gift_card") for source in sources):
        sources = (
            ["credit_card"] * rng.choices((0, 1, 2), weights=(35, 50, 15))[0]
            + ["gift_card"] * rng.choices((0, 1, 2), weights=(45, 45, 10))[0]
            + ["certificate"] * rng.choices((0, 1, 2), weights=(45, 40, 15))[0]
        )
    rng.shuffle(sources)
    methods: dict[str, dict[str, Any]] = {}
    for source in sources:
        if source == "credit_card":
            method = people.credit_card()
        elif source == "gift_card":
            method = {"source": "gift_card", "amount": rng.randint(0, 300), "id": people.payment_id("gift_card")}
        else:
            amount = rng.choice(CERTIFICATE_AMOUNTS)
            method = {"source": "certificate", "amount": amount, "id": people.payment_id("certificate")}
        methods[method["id"]] = method
    return methods


def make_users(people: People) -> dict[str, dict[str, Any]]:
    rng = people.rng
    people.payment_ids.reserve(CERTIFICATE_IDS)  # so send_certificate always has one free
    users: dict[str, dict[str, Any]] = {}
    while len(users) < N_USERS:
        first, last = people.name()
        user_id = people.user_id(first, last)
        n_saved = rng.choices((0, 1, 2, 3), weights=(10, 55, 30, 5))[0]
        users[user_id] = {
            "name": {"first_name": first, "last_name": last},
            "address": people.address(),
            "email": people.email(first, last),
            "dob": people.dob(1950, 2002),
            "payment_methods": make_payment_methods(people),
            "saved_passengers": [passenger(people) for _ in range(n_saved)],
            "membership": weighted(rng, MEMBERSHIP_WEIGHTS),
            "reservations": [],
        }
    return users


def passenger(people: People) -> dict[str, str]:
    first, last = people.name()
    return {"first_name": first, "last_name": last, "dob": people.dob(1950, 2018)}


Legs = list[tuple[Schedule, int]]  # flights of a trip with the day of May each one flies


class Itineraries:
    """Chains of flights (direct or with one stop) between airports on given days, timed to connect."""

    def __init__(self, rng: random.Random, schedules: list[Schedule]) -> None:
        self.rng = rng
        self.from_airport: dict[str, list[Schedule]] = {code: [] for code in AIRPORTS}
        for flight in schedules:
            self.from_airport[flight.origin].append(flight)
        self.onward = {flight.number: self._connections(flight) for flight in schedules}

    def _connections(self, first: Schedule) -> list[Schedule]:
        """Flights onward from `first` that leave 1-8 h after it lands (on the next day for overnight flights)
        and do not make a passenger fly far out of the way."""
        landed = first.arrives % (24 * 60)
        return [
            second
            for second in self.from_airport[first.destination]
            if second.destination != first.origin
            and MIN_LAYOVER <= second.departs - landed <= MAX_LAYOVER
            and MILES[first.origin, first.destination] + MILES[first.destination, second.destination]
            <= MAX_DETOUR * MILES[first.origin, second.destination] + 250
        ]

    def outbound(self, origin: str, day: int) -> Legs | None:
        """A direct or one-stop trip from `origin` leaving on `day`, as (flight, day) legs; None if none fits."""
        first = self.rng.choice(self.from_airport[origin])
        if self.rng.random() < 0.2:
            return [(first, day)]
        seconds = self.onward[first.number]
        if not seconds:
            return None
        return [(first, day), (self.rng.choice(seconds), day + first.arrives // (24 * 60))]

    def between(self, origin: str, destination: str, day: int) -> Legs | None:
        """A direct or one-stop trip from `origin` to `destination` leaving on `day`; None if there is none."""
        direct = [flight for flight in self.from_airport[origin] if flight.destination == destination]
        one_stop = [
            (first, second)
            for first in self.from_airport[origin]
            if first.destination != destination
            for second in self.onward[first.number]
            if second.destination == destination
        ]
        if direct and (not one_stop or self.rng.random() < 0.35):
            return [(self.rng.choice(direct), day)]
        if not one_stop:
            return None
        first, second = self.rng.choice(one_stop)
        return [(first, day), (second, day + first.arrives // (24 * 60))]


def trip(rng: random.Random, routes: Itineraries, round_trip: bool) -> tuple[Legs, Legs]:
    """The outbound legs and, for a round trip, the legs back home a few days later (else no legs)."""
    while True:
        origin = rng.choice(list(AIRPORTS))
        day = weighted(rng, FIRST_DAY_WEIGHTS)
        legs = routes.outbound(origin, day)
        if legs is None or legs[-1][1] > LAST_DAY:
            continue
        if not round_trip:
            return legs, []
        last_flight, last_day = legs[-1]
        back_day = last_day + last_flight.arrives // (24 * 60) + rng.randint(1, 6)
        back = routes.between(legs[-1][0].destination, origin, back_day)
        if back is not None and back[-1][1] <= LAST_DAY:
            return legs, back


def segment_price(rng: random.Random, flight: dict[str, Any], date: str, cabin: str) -> int:
    """The fare of that day when it is still on sale, otherwise a fare the flight sells at on another day."""
    record = flight["dates"][date]
    if record["status"] == "available":
        return record["prices"][cabin]
    return flight["dates"][date_of(rng.randint(TODAY + 1, LAST_DAY))]["prices"][cabin]


def booked_at(rng: random.Random, first_departure: datetime) -> str:
    """A booking time before the first departure and before now, at most a few weeks earlier."""
    latest = min(first_departure - timedelta(hours=2), NOW - timedelta(seconds=1))
    earliest = max(datetime(2024, 4, 28), first_departure - timedelta(days=16))
    if earliest >= latest:
        earliest = latest - timedelta(days=1)
    seconds = rng.randint(0, int((latest - earliest).total_seconds()))
    return (earliest + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def make_reservation(
    rng: random.Random,
    travellers_pool: list[dict[str, str]],
    routes: Itineraries,
    flights: dict[str, dict[str, Any]],
    reservation_id: str,
    user_id: str,
    user: dict[str, Any],
) -> dict[str, Any]:
    round_trip = rng.random() < 0.48
    outbound, back = trip(rng, routes, round_trip)
    cabin = rng.choice(CABINS)
    n_passengers = rng.choices((1, 2, 3, 4), weights=(46, 33, 16, 5))[0]

    travellers = []
    if rng.random() < 0.8:
        travellers.append({**user["name"], "dob": user["dob"]})
    companions = [dict(saved) for saved in user["saved_passengers"]]
    rng.shuffle(companions)
    while len(travellers) < n_passengers:
        companion = companions.pop() if companions and rng.random() < 0.5 else dict(rng.choice(travellers_pool))
        if companion not in travellers:
            travellers.append(companion)

    segments = []
    for flight, day in outbound + back:
        record = flights[flight.number]
        segments.append(
            {
                "origin": flight.origin,
                "destination": flight.destination,
                "flight_number": flight.number,
                "date": date_of(day),
                "price": segment_price(rng, record, date_of(day), cabin),
            }
        )

    insurance = "yes" if rng.random() < 0.5 else "no"
    bags_each = rng.choices((0, 1, 2, 3), weights=(45, 35, 15, 5), k=n_passengers)
    total_bags = sum(bags_each)
    nonfree_bags = max(0, total_bags - FREE_BAGS[user["membership"]][cabin] * n_passengers)

    total = 0
    for segment in segments:
        total += segment["price"] * n_passengers
    if insurance == "yes":
        total += 30 * n_passengers
    total += 50 * nonfree_bags
    payable = [key for key, method in user["payment_methods"].items() if method["source"] != "certificate"]

    first_flight, first_day = outbound[0]
    return {
        "reservation_id": reservation_id,
        "user_id": user_id,
        "origin": first_flight.origin,
        "destination": outbound[-1][0].destination,
        "flight_type": "round_trip" if round_trip else "one_way",
        "cabin": cabin,
        "flights": segments,
        "passengers": travellers,
        "payment_history": [{"payment_id": rng.choice(payable), "amount": total}],
        "created_at": booked_at(rng, datetime(2024, 5, first_day) + timedelta(minutes=first_flight.departs)),
        "total_baggages": total_bags,
        "nonfree_baggages": nonfree_bags,
        "insurance": insurance,
    }


def generate(seed: int) -> dict[str, Any]:
    """A full airline database for `seed`: `{"flights": ..., "reservations": ..., "users": ...}`."""
    rng = random.Random(seed)
    people = People(seed, rng)
    schedules = make_schedules(rng)
    flights = make_flights(rng, schedules)
    users = make_users(people)
    routes = Itineraries(rng, schedules)
    # Companions who are not saved in a profile come from one pool, so some people travel more than once.
    travellers_pool = [passenger(people) for _ in range(N_TRAVELLERS)]

    bookers = holders(rng, list(users), N_RESERVATIONS, RESERVATIONS_PER_USER_WEIGHTS)
    reservation_ids = IdMint(rng)
    reservation_ids.reserve(BOOKING_IDS)  # so a booking never overwrites a generated reservation
    reservations: dict[str, dict[str, Any]] = {}
    for user_id in bookers:
        reservation_id = reservation_ids.fresh(
            lambda r: "".join(r.choice(RESERVATION_ID_CHARS) for _ in range(RESERVATION_ID_LENGTH))
        )
        user = users[user_id]
        reservation = make_reservation(rng, travellers_pool, routes, flights, reservation_id, user_id, user)
        reservations[reservation_id] = reservation
        user["reservations"].append(reservation_id)
    return {"flights": flights, "reservations": reservations, "users": users}
