"""API dependency graph of the airline domain: which tool's output feeds which tool's input (spec section 4.2)."""

from apigen_mt.simulators.domain_types import ApiEdge

API_GRAPH: list[ApiEdge] = [
    ApiEdge("get_user_details", "get_reservation_details", "reservation_id from reservations"),
    ApiEdge(
        "get_user_details",
        "book_reservation",
        "user_id, payment_methods ids and balances, membership for bags, saved_passengers",
    ),
    ApiEdge("list_all_airports", "search_direct_flight", "IATA codes"),
    ApiEdge("list_all_airports", "search_onestop_flight", "IATA codes"),
    ApiEdge("search_direct_flight", "book_reservation", "flights[].flight_number and date; prices -> payment amounts"),
    ApiEdge("search_onestop_flight", "book_reservation", "flights[].flight_number and date; prices -> payment amounts"),
    ApiEdge("calculate", "book_reservation", "payment amount split"),
    ApiEdge(
        "get_reservation_details",
        "update_reservation_flights",
        "reservation_id, current flights to keep, cabin, passenger count",
    ),
    ApiEdge("search_direct_flight", "update_reservation_flights", "new flights"),
    ApiEdge("search_onestop_flight", "update_reservation_flights", "new flights"),
    ApiEdge("get_user_details", "update_reservation_flights", "payment_id"),
    ApiEdge(
        "get_reservation_details",
        "update_reservation_baggages",
        "reservation_id, current bag counts, cabin, passengers",
    ),
    ApiEdge("get_user_details", "update_reservation_baggages", "payment_id, membership"),
    ApiEdge("get_reservation_details", "update_reservation_passengers", "reservation_id, passenger count"),
    ApiEdge("get_user_details", "update_reservation_passengers", "saved_passengers / dob"),
    ApiEdge(
        "get_reservation_details",
        "cancel_reservation",
        "reservation_id, created_at, cabin, insurance, segments",
    ),
    ApiEdge("get_user_details", "send_certificate", "user_id, membership"),
    ApiEdge(
        "get_reservation_details",
        "send_certificate",
        "passenger count, insurance, cabin for the amount and eligibility",
    ),
]
