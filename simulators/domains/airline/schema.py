"""The records of the airline tables, stated once as TypedDicts; their JSON Schemas check data folders at load.

Every field of tau-bench's data is required, since the tools and rules read them all. The `status` a
cancellation adds is optional, and other extra keys are allowed, so a database saved after an episode
loads too. Closed vocabularies (cabin, membership, flight status, payment source) are enums: the tools
and rules use them as keys, where an unknown value would fail in the middle of a blueprint.
"""

from typing import Literal, NotRequired, TypedDict

from apigen_mt.simulators.domains.airline.tools import Cabin, Passenger
from apigen_mt.simulators.records import Address, CreditCard, Name
from apigen_mt.simulators.toolkit import json_schema_of


class Seats(TypedDict):
    basic_economy: int
    economy: int
    business: int


# A flight's record for one day; which fields it has depends on its status.
class AvailableDay(TypedDict):
    status: Literal["available"]
    available_seats: Seats
    prices: Seats


class LandedDay(TypedDict):
    status: Literal["landed"]
    actual_departure_time_est: str
    actual_arrival_time_est: str


class CancelledDay(TypedDict):
    status: Literal["cancelled"]


class ExpectedDay(TypedDict):
    status: Literal["on time", "delayed"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


class FlyingDay(TypedDict):
    status: Literal["flying"]
    actual_departure_time_est: str
    estimated_arrival_time_est: str


class Flight(TypedDict):
    flight_number: str
    origin: str
    destination: str
    scheduled_departure_time_est: str
    scheduled_arrival_time_est: str
    dates: dict[str, AvailableDay | LandedDay | CancelledDay | ExpectedDay | FlyingDay]


class Segment(TypedDict):
    origin: str
    destination: str
    flight_number: str
    date: str
    price: int


class Payment(TypedDict):
    payment_id: str
    amount: float


class Reservation(TypedDict):
    reservation_id: str
    user_id: str
    origin: str
    destination: str
    flight_type: Literal["one_way", "round_trip"]
    cabin: Cabin
    flights: list[Segment]
    passengers: list[Passenger]
    payment_history: list[Payment]
    created_at: str
    total_baggages: int
    nonfree_baggages: int
    insurance: Literal["yes", "no"]
    status: NotRequired[Literal["cancelled"]]


class StoredValue(TypedDict):
    # Unlike retail's gift cards, the balance is called `amount`.
    source: Literal["gift_card", "certificate"]
    amount: float
    id: str


class User(TypedDict):
    name: Name
    address: Address
    email: str
    dob: str
    payment_methods: dict[str, CreditCard | StoredValue]
    saved_passengers: list[Passenger]
    membership: Literal["regular", "silver", "gold"]
    reservations: list[str]


RECORD_SCHEMAS = {
    "flights": json_schema_of(Flight, "airline Flight"),
    "reservations": json_schema_of(Reservation, "airline Reservation"),
    "users": json_schema_of(User, "airline User"),
}
