"""The seeded retail and airline databases: tau-bench's layout, sizes, integrity, determinism, tool use.

The telecom domain shares the determinism and example-task tests here; its data's integrity is in test_telecom.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.domains.airline import generator as airline_generator
from apigen_mt.simulators.domains.retail import generator as retail_generator
from apigen_mt.simulators.domains.telecom import generator as telecom_generator

NOW = "2024-05-15T15:00:00"
AIRPORTS = [
    "SFO",
    "JFK",
    "LAX",
    "ORD",
    "DFW",
    "DEN",
    "SEA",
    "ATL",
    "MIA",
    "BOS",
    "PHX",
    "IAH",
    "LAS",
    "MCO",
    "EWR",
    "CLT",
    "MSP",
    "DTW",
    "PHL",
    "LGA",
]
DATES = [f"2024-05-{day:02d}" for day in range(1, 31)]
FREE_BAGS = {
    "regular": {"basic_economy": 0, "economy": 1, "business": 2},
    "silver": {"basic_economy": 1, "economy": 2, "business": 3},
    "gold": {"basic_economy": 2, "economy": 3, "business": 3},
}
TABLES = {"retail": ("orders", "products", "users"), "airline": ("flights", "reservations", "users")}
# Paths (see `signature`) whose objects are keyed by ids or free-form option names rather than fixed fields.
MAP_PATHS = {
    "retail": {
        "orders",
        "products",
        "products.*.variants",
        "orders.*.items[].options",
        "products.*.variants.*.options",
        "users",
        "users.*.payment_methods",
    },
    "airline": {"flights", "flights.*.dates", "reservations", "users", "users.*.payment_methods"},
}


# The default databases, as the domains load them (generated once per process, then copied).
@pytest.fixture(scope="module")
def retail() -> dict[str, Any]:
    return get_domain("retail").load(None)


@pytest.fixture(scope="module")
def airline() -> dict[str, Any]:
    return get_domain("airline").load(None)


def _taubench(taubench_dir: Path, domain: str) -> dict[str, Any]:
    return {table: json.loads((taubench_dir / domain / f"{table}.json").read_text()) for table in TABLES[domain]}


def signature(value: Any, maps: set[str], path: str = "", found: dict[str, set] | None = None) -> dict[str, set]:
    """For every path in the data: the JSON types seen there and, for fixed-field objects, their key orders.

    Objects listed in `maps` are keyed by ids, so their keys are replaced by `*`; list elements are `[]`.
    """
    found = {} if found is None else found
    kinds = found.setdefault(path, set())
    if isinstance(value, dict):
        if path in maps:
            kinds.add("map")
            for item in value.values():
                signature(item, maps, f"{path}.*" if path else "*", found)
        else:
            kinds.add(("object", tuple(value)))
            for key, item in value.items():
                signature(item, maps, f"{path}.{key}" if path else key, found)
    elif isinstance(value, list):
        kinds.add("list")
        for item in value:
            signature(item, maps, f"{path}[]", found)
    else:
        kinds.add(type(value).__name__)
    return found


# ---------------------------------------------------------------- layout against tau-bench's own files


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_layout_equals_taubench(domain: str, taubench_dir: Path, retail, airline) -> None:
    ours = {"retail": retail, "airline": airline}[domain]
    theirs = _taubench(taubench_dir, domain)
    assert list(ours) == list(TABLES[domain])
    for table in TABLES[domain]:
        mine = signature(ours[table], MAP_PATHS[domain], table)
        reference = signature(theirs[table], MAP_PATHS[domain], table)
        assert set(mine) == set(reference), f"{domain}.{table}: paths differ: {set(mine) ^ set(reference)}"
        for path in reference:
            assert mine[path] == reference[path], f"{domain} {path}: ours {mine[path]} vs tau-bench {reference[path]}"


def test_key_orders_follow_the_spec(retail, airline) -> None:
    order = next(iter(retail["orders"].values()))
    assert list(order) == ["order_id", "user_id", "address", "items", "fulfillments", "status", "payment_history"]
    assert list(order["address"]) == ["address1", "address2", "city", "country", "state", "zip"]
    assert list(order["items"][0]) == ["name", "product_id", "item_id", "price", "options"]
    product = next(iter(retail["products"].values()))
    assert list(product) == ["name", "product_id", "variants"]
    assert list(next(iter(product["variants"].values()))) == ["item_id", "options", "available", "price"]
    assert list(next(iter(retail["users"].values()))) == ["name", "address", "email", "payment_methods", "orders"]
    reservation = next(iter(airline["reservations"].values()))
    assert list(reservation) == [
        "reservation_id",
        "user_id",
        "origin",
        "destination",
        "flight_type",
        "cabin",
        "flights",
        "passengers",
        "payment_history",
        "created_at",
        "total_baggages",
        "nonfree_baggages",
        "insurance",
    ]
    assert list(reservation["flights"][0]) == ["origin", "destination", "flight_number", "date", "price"]
    assert list(next(iter(airline["users"].values()))) == [
        "name",
        "address",
        "email",
        "dob",
        "payment_methods",
        "saved_passengers",
        "membership",
        "reservations",
    ]


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "generator", [retail_generator, airline_generator, telecom_generator], ids=["retail", "airline", "telecom"]
)
def test_same_seed_same_bytes_other_seed_other_data(generator, retail, airline) -> None:
    telecom = get_domain("telecom").load(None)
    loaded = {retail_generator: retail, airline_generator: airline, telecom_generator: telecom}[generator]  # seed 0
    random.seed(12345)  # the generator must not read the global random state...
    global_state = random.getstate()
    again = generator.generate(0)
    assert random.getstate() == global_state  # ...nor advance it
    assert json.dumps(again) == json.dumps(loaded)
    other = generator.generate(7)
    assert json.dumps(other) != json.dumps(loaded)
    assert set(other["users"]) != set(loaded["users"])


# ---------------------------------------------------------------- retail


def test_retail_sizes_and_ids(retail) -> None:
    orders, products, users = retail["orders"], retail["products"], retail["users"]
    assert (len(orders), len(products), len(users)) == (1000, 50, 500)
    variants = [variant for product in products.values() for variant in product["variants"].values()]
    assert 400 <= len(variants) <= 800
    assert all(re.fullmatch(r"#W\d{7}", key) and orders[key]["order_id"] == key for key in orders)
    assert all(re.fullmatch(r"\d{10}", key) and products[key]["product_id"] == key for key in products)
    item_ids = [variant["item_id"] for variant in variants]
    assert all(re.fullmatch(r"\d{10}", item_id) for item_id in item_ids)
    assert len(set(item_ids)) == len(item_ids) and not set(item_ids) & set(products)
    assert all(re.fullmatch(r"[a-z]+_[a-z]+_\d{4}", key) for key in users)
    assert len({product["name"] for product in products.values()}) == 50


def test_retail_catalogue_is_sane(retail) -> None:
    for product in retail["products"].values():
        variants = product["variants"]
        assert all(key == variant["item_id"] for key, variant in variants.items())
        assert sum(variant["available"] for variant in variants.values()) >= 2, product["name"]
        option_keys = {tuple(variant["options"]) for variant in variants.values()}
        assert len(option_keys) == 1, f"{product['name']} variants have different option names"
        options = [tuple(variant["options"].values()) for variant in variants.values()]
        assert len(set(options)) == len(options), f"{product['name']} has two variants with the same options"
        prices = [variant["price"] for variant in variants.values()]
        assert all(isinstance(price, float) and price > 0 and round(price, 2) == price for price in prices)
        assert max(prices) <= 2 * min(prices), f"{product['name']} variant prices vary too much"


def test_retail_users_are_unique_and_pay_with_their_own_methods(retail) -> None:
    users = retail["users"]
    emails = [user["email"].lower() for user in users.values()]
    assert len(set(emails)) == len(emails)
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+\d{4}@example\.com", email) for email in emails)
    triples = [
        (u["name"]["first_name"].lower(), u["name"]["last_name"].lower(), u["address"]["zip"]) for u in users.values()
    ]
    assert len(set(triples)) == len(triples)
    all_methods = [method_id for user in users.values() for method_id in user["payment_methods"]]
    assert len(set(all_methods)) == len(all_methods)
    for user_id, user in users.items():
        first, last = user["name"]["first_name"], user["name"]["last_name"]
        assert user_id.startswith(f"{first}_{last}_".lower())
        assert re.fullmatch(r"\d{5}", user["address"]["zip"]) and user["address"]["country"] == "USA"
        assert user["payment_methods"], user_id
        for method_id, method in user["payment_methods"].items():
            assert method["id"] == method_id and re.fullmatch(rf"{method['source']}_\d{{7}}", method_id)
            if method["source"] == "gift_card":
                assert isinstance(method["balance"], int) and method["balance"] >= 0
            if method["source"] == "credit_card":
                assert re.fullmatch(r"\d{4}", method["last_four"])


def test_retail_orders_are_consistent(retail) -> None:
    orders, products, users = retail["orders"], retail["products"], retail["users"]
    file_position = {order_id: index for index, order_id in enumerate(orders)}
    for user_id, user in users.items():
        mine = [order_id for order_id, order in orders.items() if order["user_id"] == user_id]
        assert user["orders"] == mine, user_id  # exactly the user's orders, in file order
    assert sum(not user["orders"] for user in users.values()) > 0  # some customers never ordered
    assert all(sorted(user["orders"], key=file_position.get) == user["orders"] for user in users.values())
    tracking = []
    for order_id, order in orders.items():
        assert order["user_id"] in users
        assert 1 <= len(order["items"]) <= 5
        total = 0
        for item in order["items"]:
            variant = products[item["product_id"]]["variants"][item["item_id"]]
            assert item["name"] == products[item["product_id"]]["name"]
            assert (item["price"], item["options"]) == (variant["price"], variant["options"])
            total += item["price"]
        payment = order["payment_history"][0]
        assert payment["transaction_type"] == "payment" and payment["amount"] == round(total, 2)
        assert payment["payment_method_id"] in users[order["user_id"]]["payment_methods"]
        if order["status"] == "cancelled":
            assert order["payment_history"][1:] == [{**payment, "transaction_type": "refund"}]
        else:
            assert len(order["payment_history"]) == 1
        if order["status"] == "pending":
            assert order["fulfillments"] == []
        else:
            (fulfillment,) = order["fulfillments"]
            assert fulfillment["item_ids"] == [item["item_id"] for item in order["items"]]
            assert all(re.fullmatch(r"\d{12}", tracking_id) for tracking_id in fulfillment["tracking_id"])
            tracking += fulfillment["tracking_id"]
    assert len(set(tracking)) == len(tracking)


def test_retail_status_mix_is_like_taubench(retail) -> None:
    statuses = Counter(order["status"] for order in retail["orders"].values())
    for status, share in retail_generator.STATUS_SHARES:
        assert abs(statuses[status] / 1000 - share) < 0.03, statuses
    assert set(statuses) == {"pending", "processed", "delivered", "cancelled"}


# ---------------------------------------------------------------- airline


def test_airline_flights(airline) -> None:
    flights = airline["flights"]
    assert list(flights) == [f"HAT{index:03d}" for index in range(1, 301)]
    assert sorted({flight["origin"] for flight in flights.values()}) == sorted(AIRPORTS)
    assert sorted({flight["destination"] for flight in flights.values()}) == sorted(AIRPORTS)
    overnight = 0
    for number, flight in flights.items():
        assert flight["flight_number"] == number and flight["origin"] != flight["destination"]
        departure, arrival = flight["scheduled_departure_time_est"], flight["scheduled_arrival_time_est"]
        assert re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:00", departure)
        assert re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:00(\+1)?", arrival)
        overnight += arrival.endswith("+1")
        assert arrival.endswith("+1") or arrival > departure
        assert list(flight["dates"]) == DATES
        for date, record in flight["dates"].items():
            _check_date_record(date, record)
    assert 10 <= overnight <= 80


def _check_date_record(date: str, record: dict[str, Any]) -> None:
    status = record["status"]
    if date > "2024-05-15":
        assert list(record) == ["status", "available_seats", "prices"] and status == "available"
        seats, prices = record["available_seats"], record["prices"]
        assert list(seats) == list(prices) == ["basic_economy", "economy", "business"]
        assert all(isinstance(n, int) and 0 <= n <= 20 for n in seats.values())
        assert all(isinstance(p, int) for p in prices.values())
        assert 0 < prices["basic_economy"] <= prices["economy"] <= prices["business"]
    elif date < "2024-05-15":
        assert status in ("landed", "cancelled")
        if status == "landed":
            assert list(record) == ["status", "actual_departure_time_est", "actual_arrival_time_est"]
            assert record["actual_departure_time_est"] < record["actual_arrival_time_est"] <= NOW
    else:
        assert status in ("landed", "flying", "on time", "delayed")
        if status == "landed":
            assert record["actual_departure_time_est"] < record["actual_arrival_time_est"] <= NOW
        elif status == "flying":
            assert list(record) == ["status", "actual_departure_time_est", "estimated_arrival_time_est"]
            assert record["actual_departure_time_est"] <= NOW < record["estimated_arrival_time_est"]
        else:
            assert list(record) == ["status", "estimated_departure_time_est", "estimated_arrival_time_est"]
            assert NOW <= record["estimated_departure_time_est"] < record["estimated_arrival_time_est"]


def test_airline_day_15_has_every_status(airline) -> None:
    today = Counter(flight["dates"]["2024-05-15"]["status"] for flight in airline["flights"].values())
    assert set(today) == {"landed", "flying", "on time", "delayed"}
    before = Counter(flight["dates"][date]["status"] for flight in airline["flights"].values() for date in DATES[:14])
    assert 0.03 < before["cancelled"] / sum(before.values()) < 0.2


def test_airline_users(airline) -> None:
    users = airline["users"]
    assert len(users) == 500
    emails = [user["email"].lower() for user in users.values()]
    assert len(set(emails)) == len(emails)
    reserved_ids = {"certificate_3221322", "certificate_3221323", "certificate_3221324"}
    for user_id, user in users.items():
        assert re.fullmatch(r"[a-z]+_[a-z]+_\d{4}", user_id)
        assert user["membership"] in ("regular", "silver", "gold")
        assert re.fullmatch(r"(19[5-9]\d|200[0-2])-\d\d-\d\d", user["dob"])
        assert any(method["source"] in ("credit_card", "gift_card") for method in user["payment_methods"].values())
        for method_id, method in user["payment_methods"].items():
            assert method["id"] == method_id and re.fullmatch(rf"{method['source']}_\d{{7}}", method_id)
            assert method_id not in reserved_ids  # send_certificate must find a free id
            if method["source"] in ("gift_card", "certificate"):
                assert isinstance(method["amount"], int) and method["amount"] >= 0
        for saved in user["saved_passengers"]:
            assert list(saved) == ["first_name", "last_name", "dob"]


def _departure(flight: dict[str, Any], date: str) -> datetime:
    return datetime.fromisoformat(f"{date}T{flight['scheduled_departure_time_est']}")


def _arrival(flight: dict[str, Any], date: str) -> datetime:
    clock = flight["scheduled_arrival_time_est"]
    return datetime.fromisoformat(f"{date}T{clock[:8]}") + timedelta(days=clock.endswith("+1"))


def test_airline_reservations_are_consistent(airline) -> None:
    flights, reservations, users = airline["flights"], airline["reservations"], airline["users"]
    assert len(reservations) == 2000
    for user_id, user in users.items():
        assert user["reservations"] == [rid for rid, r in reservations.items() if r["user_id"] == user_id]
    for reservation_id, reservation in reservations.items():
        assert reservation["reservation_id"] == reservation_id and re.fullmatch(r"[A-Z0-9]{6}", reservation_id)
        assert reservation_id not in ("HATHAT", "HATHAU", "HATHAV")  # book_reservation's own ids
        user = users[reservation["user_id"]]
        segments = reservation["flights"]
        n = len(reservation["passengers"])
        assert 1 <= n <= 5 and all(list(p) == ["first_name", "last_name", "dob"] for p in reservation["passengers"])
        assert reservation["cabin"] in ("basic_economy", "economy", "business")
        for segment in segments:
            flight = flights[segment["flight_number"]]
            assert (segment["origin"], segment["destination"]) == (flight["origin"], flight["destination"])
            record = flight["dates"][segment["date"]]
            assert isinstance(segment["price"], int) and segment["price"] > 0
            if record["status"] == "available":
                assert segment["price"] == record["prices"][reservation["cabin"]]
        for earlier, later in zip(segments, segments[1:]):
            assert earlier["destination"] == later["origin"]
            lands = _arrival(flights[earlier["flight_number"]], earlier["date"])
            assert lands < _departure(flights[later["flight_number"]], later["date"])
        stops = [segment["destination"] for segment in segments]
        assert segments[0]["origin"] == reservation["origin"]
        if reservation["flight_type"] == "one_way":
            assert len(segments) <= 2 and stops[-1] == reservation["destination"]
        else:
            assert reservation["flight_type"] == "round_trip" and 2 <= len(segments) <= 4
            assert stops[-1] == reservation["origin"] and reservation["destination"] in stops[:-1]
            assert stops.index(reservation["destination"]) <= 1
        assert "status" not in reservation
        total = sum(segment["price"] for segment in segments) * n
        total += 30 * n if reservation["insurance"] == "yes" else 0
        assert reservation["insurance"] in ("yes", "no")
        free = FREE_BAGS[user["membership"]][reservation["cabin"]] * n
        assert reservation["nonfree_baggages"] == max(0, reservation["total_baggages"] - free)
        total += 50 * reservation["nonfree_baggages"]
        (payment,) = reservation["payment_history"]
        assert payment["amount"] == total and isinstance(payment["amount"], int)
        assert user["payment_methods"][payment["payment_id"]]["source"] in ("credit_card", "gift_card")
        created = reservation["created_at"]
        assert re.fullmatch(r"2024-0[45]-\d\dT\d\d:\d\d:\d\d", created) and created < NOW
        assert datetime.fromisoformat(created) < _departure(flights[segments[0]["flight_number"]], segments[0]["date"])


def test_airline_reservation_mix(airline) -> None:
    reservations = list(airline["reservations"].values())
    kinds = Counter((r["flight_type"], len(r["flights"])) for r in reservations)
    assert {("one_way", 1), ("one_way", 2), ("round_trip", 2), ("round_trip", 4)} <= set(kinds)
    assert 0.35 < sum(r["flight_type"] == "one_way" for r in reservations) / 2000 < 0.65
    assert set(Counter(r["cabin"] for r in reservations)) == {"basic_economy", "economy", "business"}
    recent = sum(r["created_at"] >= "2024-05-14T15:00:00" for r in reservations)
    assert recent > 20  # enough bookings within 24 h for the free-cancellation rule to matter
    future = sum(r["flights"][0]["date"] > "2024-05-15" for r in reservations)
    assert 0.4 < future / 2000 < 0.9


# ---------------------------------------------------------------- the tools on generated data


def _run(env, name: str, **arguments: Any):
    return env.step({"name": name, "arguments": arguments})


def _listed(observation: str) -> Any:
    return json.loads(observation)


def test_retail_tools_work_on_generated_data(retail) -> None:
    env = get_domain("retail").environment(retail)
    orders, users = retail["orders"], retail["users"]
    pending_id, pending = next((k, o) for k, o in orders.items() if o["status"] == "pending")
    user_id = pending["user_id"]
    user = users[user_id]
    assert _run(env, "find_user_id_by_email", email=user["email"].upper()).observation == user_id
    name, zip_code = user["name"], user["address"]["zip"]
    found = _run(
        env, "find_user_id_by_name_zip", first_name=name["first_name"], last_name=name["last_name"], zip=zip_code
    )
    assert found.observation == user_id
    assert _listed(_run(env, "get_order_details", order_id=pending_id).observation) == pending

    # Switch the first item to another available variant, paying with the card or account the order used.
    item = pending["items"][0]
    variants = retail["products"][item["product_id"]]["variants"]
    new_item_id = next(key for key, v in variants.items() if v["available"] and key != item["item_id"])
    method = user["payment_methods"][pending["payment_history"][0]["payment_method_id"]]
    modified = _run(
        env,
        "modify_pending_order_items",
        order_id=pending_id,
        item_ids=[item["item_id"]],
        new_item_ids=[new_item_id],
        payment_method_id=method["id"],
    )
    if method["source"] == "gift_card" and variants[new_item_id]["price"] - item["price"] > method["balance"]:
        assert modified.observation == "Error: insufficient gift card balance to pay for the new item"
    else:
        assert not modified.failed, modified.observation
        assert _listed(modified.observation)["status"] == "pending (item modified)"

    other_id = next(k for k, o in orders.items() if o["status"] == "pending" and k != pending_id)
    cancelled = _run(env, "cancel_pending_order", order_id=other_id, reason="no longer needed")
    assert not cancelled.failed and _listed(cancelled.observation)["status"] == "cancelled"
    delivered_id, delivered = next((k, o) for k, o in orders.items() if o["status"] == "delivered")
    returned = _run(
        env,
        "return_delivered_order_items",
        order_id=delivered_id,
        item_ids=[delivered["items"][0]["item_id"]],
        payment_method_id=delivered["payment_history"][0]["payment_method_id"],
    )
    assert not returned.failed, returned.observation
    assert set(_listed(_run(env, "list_all_product_types").observation).values()) == set(retail["products"])


def test_airline_tools_work_on_generated_data(airline) -> None:
    env = get_domain("airline").environment(airline)
    assert list(_listed(_run(env, "list_all_airports").observation)) == AIRPORTS
    # Every flight is on sale on 2024-05-20, so the search lists exactly the flights of the route.
    route = next(iter(airline["flights"].values()))
    origin, destination = route["origin"], route["destination"]
    found = _listed(
        _run(env, "search_direct_flight", origin=origin, destination=destination, date="2024-05-20").observation
    )
    expected = [
        key for key, f in airline["flights"].items() if (f["origin"], f["destination"]) == (origin, destination)
    ]
    assert [f["flight_number"] for f in found] == expected

    user_id, user = next(
        (key, u)
        for key, u in airline["users"].items()
        if any(m["source"] == "credit_card" for m in u["payment_methods"].values())
    )
    card = next(m["id"] for m in user["payment_methods"].values() if m["source"] == "credit_card")
    bookable = next(f for f in found if f["available_seats"]["economy"] >= 1)
    booked = _run(
        env,
        "book_reservation",
        user_id=user_id,
        origin=origin,
        destination=destination,
        flight_type="one_way",
        cabin="economy",
        flights=[{"flight_number": bookable["flight_number"], "date": "2024-05-20"}],
        passengers=[{**user["name"], "dob": user["dob"]}],
        payment_methods=[{"payment_id": card, "amount": bookable["prices"]["economy"]}],
        total_baggages=0,
        nonfree_baggages=0,
        insurance="no",
    )
    assert not booked.failed, booked.observation
    assert _listed(booked.observation)["reservation_id"] == "HATHAT"

    certificate = _run(env, "send_certificate", user_id=user_id, amount=100)
    assert certificate.observation == f"Certificate certificate_3221322 added to user {user_id} with amount 100."
    reservation_id = user["reservations"][0] if user["reservations"] else "HATHAT"
    assert not _run(env, "cancel_reservation", reservation_id=reservation_id).failed


def test_onestop_search_finds_generated_connections(airline) -> None:
    """Connections in reservations respect the timing rule that search_onestop_flight uses."""
    env = get_domain("airline").environment(airline)
    connecting = [
        reservation["flights"]
        for reservation in airline["reservations"].values()
        if reservation["flight_type"] == "one_way"
        and len(reservation["flights"]) == 2
        and reservation["flights"][0]["date"] > "2024-05-15"  # the search lists only flights on sale
    ]
    assert len(connecting) >= 25
    for first, second in connecting[:25]:
        search = _run(
            env, "search_onestop_flight", origin=first["origin"], destination=second["destination"], date=first["date"]
        )
        pairs = [
            (leg1["flight_number"], leg2["flight_number"], leg2["date"]) for leg1, leg2 in _listed(search.observation)
        ]
        assert (first["flight_number"], second["flight_number"], second["date"]) in pairs


# ---------------------------------------------------------------- example tasks


@pytest.mark.parametrize("name", ["retail", "airline", "telecom"])
def test_example_tasks_replay_without_errors(name: str) -> None:
    domain = get_domain(name)
    tasks = json.loads(files(f"apigen_mt.simulators.domains.{name}").joinpath("example_tasks.json").read_text())
    assert len(tasks) >= 6
    db = domain.load(None)
    writes = {spec.name for spec in domain.toolkit.specs() if spec.writes}
    for index, task in enumerate(tasks):
        assert list(task) == ["user_id", "instruction", "actions", "outputs"]
        assert task["user_id"] in db["users"]
        env = domain.environment(db)
        observations = []
        for action in task["actions"]:
            result = env.step(action)
            assert not result.failed, f"task {index}: {action['name']} -> {result.observation}"
            observations.append(result.observation)
        changed = env.db != db
        if any(action["name"] in writes for action in task["actions"]):
            assert changed, f"task {index} calls a write tool but changes nothing"
        else:
            assert not changed and task["outputs"], f"task {index} is read-only, so it must expect outputs"
        for output in task["outputs"]:
            # Outputs are what the agent must tell the user, so they have to come from what the tools showed.
            shown = " ".join(observations).lower()
            assert output.lower() in shown, f"task {index}: output {output!r} is in no observation"
