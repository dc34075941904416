"""The airline domain's tools: tau-bench's 14 airline tools, observation for observation.

Behaviour follows the project's tau-bench compatibility spec (section 2.B), known defects included:
bookings and flight changes never touch seat counts, cancellations restore no balances, the stored
cabin never changes, and the one-stop search mislabels overnight connections. The descriptions are
our own words; names, types, enums and required lists match tau-bench's.
"""

from __future__ import annotations

import copy
import json
from typing import Annotated, Any, Literal, TypedDict

from apigen_mt.simulators.arithmetic import calculate as evaluate_arithmetic
from apigen_mt.simulators.domains.airline.constants import (
    AIRPORTS,
    BOOKING_IDS,
    BOOKING_TIME,
    CERTIFICATE_IDS,
    INSURANCE_FEE_PER_PASSENGER,
    NONFREE_BAG_FEE,
)
from apigen_mt.simulators.toolkit import PythonCallArguments, Toolkit, tool

Cabin = Literal["basic_economy", "economy", "business"]

# Balances that can run out; credit cards are never checked or debited.
STORED_VALUE_SOURCES = ("gift_card", "certificate")


class FlightSegment(TypedDict):
    flight_number: Annotated[str, "Number of the flight, for example 'HAT001'."]
    date: Annotated[str, "Day the flight departs, written 'YYYY-MM-DD', for example '2024-05-01'."]


class Passenger(TypedDict):
    first_name: Annotated[str, "Given name of the traveller, for example 'Noah'."]
    last_name: Annotated[str, "Family name of the traveller, for example 'Brown'."]
    dob: Annotated[str, "Birth date of the traveller, written 'YYYY-MM-DD', for example '1990-01-01'."]


class PaymentShare(TypedDict):
    payment_id: Annotated[
        str,
        "Id of a payment method saved in the user's profile, for example 'credit_card_7815826', "
        "'gift_card_7815826' or 'certificate_7815826'.",
    ]
    amount: Annotated[float, "How much to charge to this payment method."]


def _flight_listing(flight: dict[str, Any], day: str) -> dict[str, Any]:
    """A flight's fields other than its calendar, followed by the fields of its record for `day`."""
    listing = {key: value for key, value in flight.items() if key != "dates"}
    listing.update(flight["dates"][day])
    return listing


class AirlineTools(PythonCallArguments, Toolkit):
    """Users, flights and reservations of tau-bench's airline; `self.db` has keys flights, reservations, users."""

    def _change_payment(self, reservation: dict[str, Any], payment_id: str, amount: Any) -> dict[str, Any] | str:
        """The user's saved method that pays `amount` for a change to `reservation`, or the refusal.
        Certificates never pay for changes; a gift card must hold at least `amount`."""
        saved = self.db["users"][reservation["user_id"]]["payment_methods"]
        if payment_id not in saved:
            return "Error: payment method not found"
        method = saved[payment_id]
        if method["source"] == "certificate":
            return "Error: certificate cannot be used to update reservation"
        if method["source"] == "gift_card" and method["amount"] < amount:
            return "Error: gift card balance is not enough"
        return method

    def _stamp_new_segment(self, segment: dict[str, Any], cabin: str, travellers: int) -> str | None:
        """Check that a segment can be sold in `cabin` to `travellers` people, then write its fare and route
        onto it. Returns the refusal, or None once `price`, `origin` and `destination` are set."""
        number = segment["flight_number"]
        if number not in self.db["flights"]:
            return f"Error: flight {number} not found"
        flight = self.db["flights"][number]
        if segment["date"] not in flight["dates"]:
            return f"Error: flight {number} not found on date {segment['date']}"
        day = flight["dates"][segment["date"]]
        if day["status"] != "available":
            return f"Error: flight {number} not available on date {segment['date']}"
        # An unknown cabin fails here as a KeyError naming it, which is tau-bench's observation too.
        if day["available_seats"][cabin] < travellers:
            return f"Error: not enough seats on flight {number}"
        segment["price"] = day["prices"][cabin]
        segment["origin"] = flight["origin"]
        segment["destination"] = flight["destination"]
        return None

    @tool(writes=True)
    def book_reservation(
        self,
        user_id: str,
        origin: str,
        destination: str,
        flight_type: Literal["one_way", "round_trip"],
        cabin: Cabin,
        flights: list[FlightSegment],
        passengers: list[Passenger],
        payment_methods: list[PaymentShare],
        total_baggages: int,
        nonfree_baggages: int,
        insurance: Literal["yes", "no"],
    ) -> str:
        """Create a new reservation for a user and charge it to the user's saved payment methods.

        Args:
            user_id: Id of the user the trip is booked for, for example 'sara_doe_496'.
            origin: Three-letter IATA code of the airport the trip starts from, for example 'SFO'.
            destination: Three-letter IATA code of the airport the trip goes to, for example 'JFK'.
            flight_type: Whether the trip is one way or a round trip.
            cabin: Cabin class, the same for every flight of the reservation.
            flights: Every flight of the trip, in travel order.
            passengers: Every person travelling on the reservation.
            payment_methods: How the total is split over the user's payment methods; the shares must add
                up to the total price.
            total_baggages: How many checked bags the reservation includes in all.
            nonfree_baggages: How many of those checked bags are paid for.
            insurance: Whether travel insurance is bought.
        """
        users, reservations = self.db["users"], self.db["reservations"]
        if user_id not in users:
            return "Error: user not found"
        user = users[user_id]
        reservation_id = next((rid for rid in BOOKING_IDS[:-1] if rid not in reservations), BOOKING_IDS[-1])
        reservation = {
            "reservation_id": reservation_id,
            "user_id": user_id,
            "origin": origin,
            "destination": destination,
            "flight_type": flight_type,
            "cabin": cabin,
            "flights": copy.deepcopy(flights),
            "passengers": passengers,
            "payment_history": payment_methods,
            "created_at": BOOKING_TIME,
            "total_baggages": total_baggages,
            "nonfree_baggages": nonfree_baggages,
            "insurance": insurance,
        }
        travellers = len(passengers)
        total = 0
        for segment in reservation["flights"]:
            refusal = self._stamp_new_segment(segment, cabin, travellers)
            if refusal is not None:
                return refusal
            total += segment["price"] * travellers
        if insurance == "yes":
            total += INSURANCE_FEE_PER_PASSENGER * travellers
        total += NONFREE_BAG_FEE * nonfree_baggages

        saved = user["payment_methods"]
        # Each share is checked on its own against the current balance; repeated ids are not summed.
        for share in payment_methods:
            payment_id, amount = share["payment_id"], share["amount"]
            if payment_id not in saved:
                return f"Error: payment method {payment_id} not found"
            method = saved[payment_id]
            if method["source"] in STORED_VALUE_SOURCES and method["amount"] < amount:
                return f"Error: not enough balance in payment method {payment_id}"
        paid = sum(share["amount"] for share in payment_methods)
        if paid != total:
            return f"Error: payment amount does not add up, total price is {total}, but paid {paid}"

        # A certificate listed twice passes the checks above, is deleted on its first use and then raises
        # KeyError on its second: tau-bench keeps the charges already made and stores no reservation.
        for share in payment_methods:
            payment_id = share["payment_id"]
            method = saved[payment_id]
            if method["source"] == "gift_card":
                method["amount"] -= share["amount"]
            elif method["source"] == "certificate":
                del saved[payment_id]
        reservations[reservation_id] = reservation
        user["reservations"].append(reservation_id)
        return json.dumps(reservation)

    @tool()
    def calculate(self, expression: str) -> str:
        """Work out an arithmetic expression and return the result rounded to two decimals.

        Args:
            expression: The arithmetic to evaluate, for example '(120 + 35) * 2'. Only digits, the operators
                +, -, *, /, parentheses, decimal points and spaces are accepted.
        """
        return evaluate_arithmetic(expression)

    @tool(writes=True)
    def cancel_reservation(self, reservation_id: str) -> str:
        """Cancel an entire reservation, recording a refund for every payment made on it.

        Args:
            reservation_id: The reservation's six-character id, for example 'ZFA04Y'.
        """
        reservations = self.db["reservations"]
        if reservation_id not in reservations:
            return "Error: reservation not found"
        reservation = reservations[reservation_id]
        # Refunds are only recorded: no balance is restored and no seat is released.
        refunds = [
            {"payment_id": payment["payment_id"], "amount": -payment["amount"]}
            for payment in reservation["payment_history"]
        ]
        reservation["payment_history"].extend(refunds)
        reservation["status"] = "cancelled"
        return json.dumps(reservation)

    @tool()
    def get_reservation_details(self, reservation_id: str) -> str:
        """Look up a reservation: its flights, passengers, payments, baggage and insurance.

        Args:
            reservation_id: The reservation's six-character id, for example '8JX2WO'.
        """
        reservations = self.db["reservations"]
        if reservation_id not in reservations:
            # tau-bench's wording for a missing reservation (sic).
            return "Error: user not found"
        return json.dumps(reservations[reservation_id])

    @tool()
    def get_user_details(self, user_id: str) -> str:
        """Look up a user's profile: contact details, payment methods, saved passengers, membership and
        reservation ids.

        Args:
            user_id: The user's id, for example 'sara_doe_496'.
        """
        users = self.db["users"]
        if user_id not in users:
            return "Error: user not found"
        return json.dumps(users[user_id])

    @tool()
    def list_all_airports(self) -> str:
        """List the airports served, as IATA codes mapped to their city names."""
        return json.dumps({code: city for code, (city, _, _) in AIRPORTS.items()})

    @tool()
    def search_direct_flight(self, origin: str, destination: str, date: str) -> str:
        """Find nonstop flights from one airport to another that can still be booked on a given day.

        Args:
            origin: Three-letter code of the departure airport, for example 'JFK'.
            destination: Three-letter code of the arrival airport, for example 'LAX'.
            date: Day of travel, written 'YYYY-MM-DD', for example '2024-01-01'.
        """
        matches = [
            _flight_listing(flight, date)
            for flight in self.db["flights"].values()
            if flight["origin"] == origin
            and flight["destination"] == destination
            and date in flight["dates"]
            and flight["dates"][date]["status"] == "available"
        ]
        return json.dumps(matches)

    @tool()
    def search_onestop_flight(self, origin: str, destination: str, date: str) -> str:
        """Find connections with exactly one change of plane from one airport to another, starting on a
        given day; each result lists both flights.

        Args:
            origin: Three-letter code of the departure airport, for example 'JFK'.
            destination: Three-letter code of the final arrival airport, for example 'LAX'.
            date: Day the first flight departs, written 'YYYY-MM-DD', for example '2024-05-01'.
        """
        flights = self.db["flights"]
        connections = []
        for first in flights.values():
            if first["origin"] != origin:
                continue
            for second in flights.values():
                if second["destination"] != destination or second["origin"] != first["destination"]:
                    continue
                # tau-bench's next-day arithmetic: month fixed at 05, day not zero-padded, no month rollover.
                if "+1" in first["scheduled_arrival_time_est"]:
                    second_date = f"2024-05-{int(date[-2:]) + 1}"
                else:
                    second_date = date
                # Plain string comparison, so a '+1' arrival sorts after the same clock time.
                if first["scheduled_arrival_time_est"] > second["scheduled_departure_time_est"]:
                    continue
                if (
                    date in first["dates"]
                    and second_date in second["dates"]
                    and first["dates"][date]["status"] == "available"
                    and second["dates"][second_date]["status"] == "available"
                ):
                    first_leg = _flight_listing(first, date)
                    first_leg["date"] = date
                    # tau-bench shows the second flight's status, seats and prices for the first leg's day,
                    # even when it is labelled with the next day.
                    second_leg = _flight_listing(second, date)
                    second_leg["date"] = second_date
                    connections.append([first_leg, second_leg])
        return json.dumps(connections)

    @tool(writes=True)
    def send_certificate(self, user_id: str, amount: float) -> str | None:
        """Give a user a travel certificate worth the stated amount, as compensation. Use with care.

        Args:
            user_id: Id of the user who receives the certificate, for example 'sara_doe_496'.
            amount: Value of the certificate.
        """
        users = self.db["users"]
        if user_id not in users:
            return "Error: user not found"
        saved = users[user_id]["payment_methods"]
        for certificate_id in CERTIFICATE_IDS:
            if certificate_id not in saved:
                saved[certificate_id] = {"source": "certificate", "amount": amount, "id": certificate_id}
                return f"Certificate {certificate_id} added to user {user_id} with amount {amount}."
        # All three ids are taken: tau-bench returns nothing here, and the environment flags it.
        return None

    @tool()
    def think(self, thought: str) -> str:
        """Write down a line of reasoning. Nothing is looked up or changed; use it to work through a hard
        case before acting.

        Args:
            thought: The reasoning to note.
        """
        return ""

    @tool(terminates=True)
    def transfer_to_human_agents(self, summary: str) -> str:
        """Hand the conversation over to a human agent together with a summary of the issue. Do this only
        when the user explicitly asks for a human, or when the request cannot be handled with these tools.

        Args:
            summary: A short account of what the user needs and what has been done so far.
        """
        return "Transfer successful"

    @tool(writes=True)
    def update_reservation_baggages(
        self, reservation_id: str, total_baggages: int, nonfree_baggages: int, payment_id: str
    ) -> str:
        """Change how many checked bags a reservation includes, charging for added paid bags.

        Args:
            reservation_id: The reservation's six-character id, for example 'ZFA04Y'.
            total_baggages: The new total number of checked bags on the reservation.
            nonfree_baggages: The new number of those bags that are paid for.
            payment_id: Id of a payment method saved in the user's profile, for example 'credit_card_7815826',
                'gift_card_7815826' or 'certificate_7815826'.
        """
        reservations = self.db["reservations"]
        if reservation_id not in reservations:
            return "Error: reservation not found"
        reservation = reservations[reservation_id]
        # Only added paid bags cost money; removing bags refunds nothing.
        fee = NONFREE_BAG_FEE * max(0, nonfree_baggages - reservation["nonfree_baggages"])
        method = self._change_payment(reservation, payment_id, fee)
        if isinstance(method, str):
            return method
        reservation["total_baggages"] = total_baggages
        reservation["nonfree_baggages"] = nonfree_baggages
        if method["source"] == "gift_card":
            method["amount"] -= fee
        if fee != 0:
            reservation["payment_history"].append({"payment_id": payment_id, "amount": fee})
        return json.dumps(reservation)

    @tool(writes=True)
    def update_reservation_flights(
        self, reservation_id: str, cabin: Cabin, flights: list[FlightSegment], payment_id: str
    ) -> str:
        """Replace the flights of a reservation, or move it to another cabin, settling the fare difference
        with one saved payment method.

        Args:
            reservation_id: The reservation's six-character id, for example 'ZFA04Y'.
            cabin: Cabin class wanted for the whole reservation.
            flights: The complete list of flights the reservation should have afterwards, unchanged ones
                included.
            payment_id: Id of a payment method saved in the user's profile, for example 'credit_card_7815826',
                'gift_card_7815826' or 'certificate_7815826'.
        """
        reservations = self.db["reservations"]
        if reservation_id not in reservations:
            return "Error: reservation not found"
        reservation = reservations[reservation_id]
        segments = copy.deepcopy(flights)
        travellers = len(reservation["passengers"])
        total = 0
        for segment in segments:
            # A segment the reservation already has, in an unchanged cabin, keeps its booked fare and needs
            # no availability check. The keys are read lazily, in tau-bench's order, so that a segment
            # missing `date` fails (or not) exactly where it does there.
            kept = next(
                (
                    booked
                    for booked in reservation["flights"]
                    if booked["flight_number"] == segment["flight_number"]
                    and booked["date"] == segment["date"]
                    and cabin == reservation["cabin"]
                ),
                None,
            )
            if kept is not None:
                total += kept["price"] * travellers
                segment["price"] = kept["price"]
                segment["origin"] = kept["origin"]
                segment["destination"] = kept["destination"]
                continue
            refusal = self._stamp_new_segment(segment, cabin, travellers)
            if refusal is not None:
                return refusal
            total += segment["price"] * travellers
        total -= sum(booked["price"] for booked in reservation["flights"]) * travellers

        method = self._change_payment(reservation, payment_id, total)
        if isinstance(method, str):
            return method
        # A negative total is a refund: it credits a gift card and is recorded as a negative payment.
        if method["source"] == "gift_card":
            method["amount"] -= total
        # The requested cabin is deliberately not stored: tau-bench keeps the old one.
        reservation["flights"] = segments
        if total != 0:
            reservation["payment_history"].append({"payment_id": payment_id, "amount": total})
        return json.dumps(reservation)

    @tool(writes=True)
    def update_reservation_passengers(self, reservation_id: str, passengers: list[Passenger]) -> str:
        """Replace the passenger details of a reservation; the number of passengers must stay the same.

        Args:
            reservation_id: The reservation's six-character id, for example 'ZFA04Y'.
            passengers: The full new list of travellers, one entry for each current passenger.
        """
        reservations = self.db["reservations"]
        if reservation_id not in reservations:
            return "Error: reservation not found"
        reservation = reservations[reservation_id]
        if len(passengers) != len(reservation["passengers"]):
            return "Error: number of passengers does not match"
        reservation["passengers"] = passengers
        return json.dumps(reservation)
