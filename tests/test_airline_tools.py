"""The airline tools against the tau-bench compatibility spec (taubench-domains §0, §1, §2.B, §5, §6).

Every call goes through `Environment.step`, as an agent's would. Expected observations are either the
spec's literal strings and digests, or records rebuilt here from the unmodified data by the spec's
rules, independently of the tools' code.
"""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.domains.airline.tools import AirlineTools
from apigen_mt.simulators.state import state_digest
from tests.taubench_state import taubench_hash

INITIAL_TUPLE_HASH = "4587e6b48ad2b2c4f3e1fecb40aabec7bb2286513273b8f8cec3f5865222f290"
INITIAL_JSON_SHA = "9ab3635c8e275dcb1b79a2dc1ec3df27f26700f0e0982900dd5666824b63af77"

MIA = "mia_li_3668"
MIA_CARD = "credit_card_4421486"
OMAR_CARD = "credit_card_2929732"
LIAM = "liam_sanchez_8204"
LIAM_GIFT = "gift_card_3371116"  # balance 300
LIAM_CERTIFICATE = "certificate_4009020"

A_V1 = {
    "user_id": MIA,
    "origin": "JFK",
    "destination": "SEA",
    "flight_type": "one_way",
    "cabin": "economy",
    "flights": [{"flight_number": "HAT136", "date": "2024-05-20"}, {"flight_number": "HAT039", "date": "2024-05-20"}],
    "passengers": [{"first_name": "Mia", "last_name": "Li", "dob": "1990-04-05"}],
    "payment_methods": [{"payment_id": "certificate_7504069", "amount": 250}, {"payment_id": MIA_CARD, "amount": 5}],
    "total_baggages": 3,
    "nonfree_baggages": 0,
    "insurance": "no",
}
A_V3_FLIGHTS = [{"flight_number": "HAT028", "date": "2024-05-21"}, {"flight_number": "HAT277", "date": "2024-05-21"}]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def booking(**changes):
    """A-V1's arguments with some replaced (deep-copied, so tests never share argument objects)."""
    return copy.deepcopy({**A_V1, **changes})


def free_booking(**changes):
    """A booking with no flights, no insurance and no paid bags: it costs 0 and needs no payment."""
    return booking(**{"flights": [], "payment_methods": [], **changes})


@pytest.fixture(scope="module")
def domain():
    return get_domain("airline")


@pytest.fixture(scope="module")
def base_db(domain, taubench_dir):
    return domain.load(taubench_dir / "airline")


@pytest.fixture
def env(domain, base_db):
    """A private environment on a fresh copy of tau-bench's airline data."""
    return domain.environment(base_db)


@pytest.fixture(scope="module")
def _shared_pristine(domain, base_db):
    return {"env": domain.environment(base_db)}


# id(environment) -> length of its log when its state was last asserted to be the initial one.
_seen_initial_at: dict[int, int] = {}


@pytest.fixture
def pristine(_shared_pristine, domain, base_db):
    """One environment shared by the tests whose calls must change nothing (copying 5 MB per test is slow).
    Tests assert the state still has the initial digest; if a test changed it, the environment is replaced."""
    env = _shared_pristine["env"]
    yield env
    if _seen_initial_at.get(id(env)) != len(env.log) and env.digest() != INITIAL_JSON_SHA:
        _seen_initial_at.pop(id(env), None)
        _shared_pristine["env"] = domain.environment(base_db)


def assert_initial_state(env):
    assert env.digest() == INITIAL_JSON_SHA
    _seen_initial_at[id(env)] = len(env.log)


def run(env, name, **arguments):
    return env.step({"name": name, "arguments": arguments})


def expect_refusal(env, name, expected, **arguments):
    """The call answers `expected`, is marked failed, and leaves the state exactly as it was."""
    before = env.digest()
    result = run(env, name, **arguments)
    assert result.observation == expected
    assert result.failed and not result.terminated
    assert env.digest() == before


def refuse_on_initial(env, name, expected, **arguments):
    """`expect_refusal` on the shared pristine environment, whose digest before the call is the initial one."""
    result = run(env, name, **arguments)
    assert result.observation == expected
    assert result.failed and not result.terminated
    assert_initial_state(env)


def listing(flight, day):
    """A flight as the searches show it: its fields except `dates`, then its record for `day`."""
    shown = {key: value for key, value in flight.items() if key != "dates"}
    shown.update(flight["dates"][day])
    return shown


# ---------------------------------------------------------------------------------------------------------
# Data, tool list, graph


def test_initial_state_digests(base_db):
    assert taubench_hash(base_db) == INITIAL_TUPLE_HASH
    assert state_digest(base_db) == INITIAL_JSON_SHA
    assert list(base_db) == ["flights", "reservations", "users"]


EXPECTED_TOOLS = {
    # name: (class name, [(param, type, enum or None)], writes, terminates)
    "book_reservation": (
        "BookReservation",
        [
            ("user_id", "string", None),
            ("origin", "string", None),
            ("destination", "string", None),
            ("flight_type", "string", ["one_way", "round_trip"]),
            ("cabin", "string", ["basic_economy", "economy", "business"]),
            ("flights", "array", None),
            ("passengers", "array", None),
            ("payment_methods", "array", None),
            ("total_baggages", "integer", None),
            ("nonfree_baggages", "integer", None),
            ("insurance", "string", ["yes", "no"]),
        ],
        True,
        False,
    ),
    "calculate": ("Calculate", [("expression", "string", None)], False, False),
    "cancel_reservation": ("CancelReservation", [("reservation_id", "string", None)], True, False),
    "get_reservation_details": ("GetReservationDetails", [("reservation_id", "string", None)], False, False),
    "get_user_details": ("GetUserDetails", [("user_id", "string", None)], False, False),
    "list_all_airports": ("ListAllAirports", [], False, False),
    "search_direct_flight": (
        "SearchDirectFlight",
        [("origin", "string", None), ("destination", "string", None), ("date", "string", None)],
        False,
        False,
    ),
    "search_onestop_flight": (
        "SearchOnestopFlight",
        [("origin", "string", None), ("destination", "string", None), ("date", "string", None)],
        False,
        False,
    ),
    "send_certificate": ("SendCertificate", [("user_id", "string", None), ("amount", "number", None)], True, False),
    "think": ("Think", [("thought", "string", None)], False, False),
    "transfer_to_human_agents": ("TransferToHumanAgents", [("summary", "string", None)], False, True),
    "update_reservation_baggages": (
        "UpdateReservationBaggages",
        [
            ("reservation_id", "string", None),
            ("total_baggages", "integer", None),
            ("nonfree_baggages", "integer", None),
            ("payment_id", "string", None),
        ],
        True,
        False,
    ),
    "update_reservation_flights": (
        "UpdateReservationFlights",
        [
            ("reservation_id", "string", None),
            ("cabin", "string", ["basic_economy", "economy", "business"]),
            ("flights", "array", None),
            ("payment_id", "string", None),
        ],
        True,
        False,
    ),
    "update_reservation_passengers": (
        "UpdateReservationPassengers",
        [("reservation_id", "string", None), ("passengers", "array", None)],
        True,
        False,
    ),
}

FLIGHT_ITEM = {"flight_number": "string", "date": "string"}
PASSENGER_ITEM = {"first_name": "string", "last_name": "string", "dob": "string"}
PAYMENT_ITEM = {"payment_id": "string", "amount": "number"}


def test_tool_list_matches_the_spec():
    specs = AirlineTools.specs()
    assert [spec.name for spec in specs] == list(EXPECTED_TOOLS)  # §2.B heading order = class-name order
    for spec in specs:
        _, params, writes, terminates = EXPECTED_TOOLS[spec.name]
        properties = spec.parameters["properties"]
        assert spec.parameters["type"] == "object"
        assert list(properties) == [name for name, _, _ in params], spec.name
        assert spec.parameters["required"] == [name for name, _, _ in params], spec.name
        for name, kind, enum in params:
            assert properties[name]["type"] == kind, (spec.name, name)
            assert properties[name].get("enum") == enum, (spec.name, name)
        assert (spec.writes, spec.terminates) == (writes, terminates), spec.name
        assert spec.description


@pytest.mark.parametrize(
    ("tool", "param", "item"),
    [
        ("book_reservation", "flights", FLIGHT_ITEM),
        ("book_reservation", "passengers", PASSENGER_ITEM),
        ("book_reservation", "payment_methods", PAYMENT_ITEM),
        ("update_reservation_flights", "flights", FLIGHT_ITEM),
        ("update_reservation_passengers", "passengers", PASSENGER_ITEM),
    ],
)
def test_array_item_schemas(tool, param, item):
    items = AirlineTools.tools()[tool].spec.parameters["properties"][param]["items"]
    assert items["type"] == "object"
    assert {name: schema["type"] for name, schema in items["properties"].items()} == item
    assert list(items["properties"]) == list(item)
    assert items["required"] == list(item)
    assert all(schema.get("description") for schema in items["properties"].values())


def test_every_parameter_with_a_taubench_description_has_one():
    undescribed_upstream = {
        ("book_reservation", "flight_type"),
        ("book_reservation", "cabin"),
        ("book_reservation", "insurance"),
        ("update_reservation_flights", "cabin"),
    }
    for spec in AirlineTools.specs():
        for name, schema in spec.parameters["properties"].items():
            if (spec.name, name) not in undescribed_upstream:
                assert schema.get("description"), (spec.name, name)


def test_api_graph_edges(domain):
    tools = {spec.name for spec in AirlineTools.specs()}
    edges = {(edge.source, edge.target) for edge in domain.api_graph}
    assert len(edges) == len(domain.api_graph) == 18
    assert all(source in tools and target in tools for source, target in edges)
    assert {
        ("get_user_details", "get_reservation_details"),
        ("list_all_airports", "search_onestop_flight"),
        ("search_onestop_flight", "book_reservation"),
        ("calculate", "book_reservation"),
        ("get_reservation_details", "cancel_reservation"),
        ("get_reservation_details", "send_certificate"),
    } <= edges
    assert all(edge.carries for edge in domain.api_graph)


# ---------------------------------------------------------------------------------------------------------
# §1.3: calls that never reach a tool


@pytest.mark.parametrize("tool", [name for name, (_, params, _, _) in EXPECTED_TOOLS.items() if params])
def test_missing_arguments_use_the_class_name(pristine, tool):
    class_name, params, _, _ = EXPECTED_TOOLS[tool]
    names = [f"'{name}'" for name, _, _ in params]
    if len(names) == 1:
        listed, count = names[0], "1 required positional argument"
    elif len(names) == 2:
        listed, count = f"{names[0]} and {names[1]}", "2 required positional arguments"
    else:
        listed, count = ", ".join(names[:-1]) + f", and {names[-1]}", f"{len(names)} required positional arguments"
    refuse_on_initial(pristine, tool, f"Error: {class_name}.invoke() missing {count}: {listed}")


def test_missing_arguments_are_listed_in_declaration_order(pristine):
    refuse_on_initial(
        pristine,
        "update_reservation_baggages",
        "Error: UpdateReservationBaggages.invoke() missing 3 required positional arguments: "
        "'reservation_id', 'total_baggages', and 'payment_id'",
        nonfree_baggages=1,
    )


def test_unexpected_argument_is_reported_before_missing_ones(pristine):
    refuse_on_initial(
        pristine,
        "send_certificate",
        "Error: SendCertificate.invoke() got an unexpected keyword argument 'foo'",
        foo=1,
        bar=2,
    )
    refuse_on_initial(
        pristine,
        "list_all_airports",
        "Error: ListAllAirports.invoke() got an unexpected keyword argument 'city'",
        city="Boston",
    )


def test_unknown_action(pristine):
    result = run(pristine, "get_weather", city="Boston")
    assert result.observation == "Unknown action get_weather"
    assert not result.terminated
    assert_initial_state(pristine)


# ---------------------------------------------------------------------------------------------------------
# book_reservation (§2.B.1)


def expected_booking(db, reservation_id, arguments):
    """The record a successful booking stores, rebuilt by the spec's rules from the unmodified data."""
    flights = []
    for segment in arguments["flights"]:
        flight = db["flights"][segment["flight_number"]]
        stamped = dict(segment)
        stamped["price"] = flight["dates"][segment["date"]]["prices"][arguments["cabin"]]
        stamped["origin"] = flight["origin"]
        stamped["destination"] = flight["destination"]
        flights.append(stamped)
    return {
        "reservation_id": reservation_id,
        "user_id": arguments["user_id"],
        "origin": arguments["origin"],
        "destination": arguments["destination"],
        "flight_type": arguments["flight_type"],
        "cabin": arguments["cabin"],
        "flights": flights,
        "passengers": arguments["passengers"],
        "payment_history": arguments["payment_methods"],
        "created_at": "2024-05-15T15:00:00",
        "total_baggages": arguments["total_baggages"],
        "nonfree_baggages": arguments["nonfree_baggages"],
        "insurance": arguments["insurance"],
    }


def test_a_v1_booking(env, base_db):
    result = run(env, "book_reservation", **booking())
    assert not result.failed
    assert sha(result.observation) == "2ea4178360865ac23aeb7ac57f09cbbdcec8aa7466bd04240bc652ae52d8d0aa"
    assert result.observation == json.dumps(expected_booking(base_db, "HATHAT", A_V1))
    assert [segment["price"] for segment in json.loads(result.observation)["flights"]] == [152, 103]
    assert taubench_hash(env.db) == "a825bc534ee4abad2f0f36d5d162989dcbae16dd509bd675feb7e9ffc86a1001"
    user = env.db["users"][MIA]
    assert "certificate_7504069" not in user["payment_methods"]
    assert user["payment_methods"][MIA_CARD] == base_db["users"][MIA]["payment_methods"][MIA_CARD]
    assert user["reservations"] == [*base_db["users"][MIA]["reservations"], "HATHAT"]
    assert list(env.db["reservations"])[-1] == "HATHAT"
    assert "status" not in env.db["reservations"]["HATHAT"]
    # Seats are never decremented.
    assert state_digest(env.db["flights"]) == state_digest(base_db["flights"])
    # The certificate is gone, so the same booking again fails on it, and changes nothing.
    expect_refusal(env, "book_reservation", "Error: payment method certificate_7504069 not found", **booking())


def test_booking_ids_are_fixed_and_the_third_is_reused(env):
    ids = []
    for origin in ("AAA", "BBB", "CCC", "DDD"):
        ids.append(
            json.loads(run(env, "book_reservation", **free_booking(origin=origin)).observation)["reservation_id"]
        )
    assert ids == ["HATHAT", "HATHAU", "HATHAV", "HATHAV"]
    assert env.db["reservations"]["HATHAV"]["origin"] == "DDD"  # the fourth overwrote the third
    assert len(env.db["reservations"]) == 2003
    assert env.db["users"][MIA]["reservations"][-4:] == ["HATHAT", "HATHAU", "HATHAV", "HATHAV"]


def test_booking_ids_are_shared_across_users(env):
    run(env, "book_reservation", **free_booking())
    result = run(env, "book_reservation", **free_booking(user_id=LIAM))
    assert json.loads(result.observation)["reservation_id"] == "HATHAU"
    assert env.db["users"][LIAM]["reservations"][-1] == "HATHAU"


def test_booking_prices_insurance_and_bags(env, base_db):
    passengers = [{"first_name": "A", "last_name": "B", "dob": "1990-01-01"}] * 2
    fare = base_db["flights"]["HAT136"]["dates"]["2024-05-20"]["prices"]["economy"]
    total = fare * 2 + 30 * 2 + 50 * 2
    arguments = booking(
        flights=[{"flight_number": "HAT136", "date": "2024-05-20"}],
        passengers=passengers,
        insurance="yes",
        nonfree_baggages=2,
        payment_methods=[{"payment_id": MIA_CARD, "amount": total - 1}],
    )
    expect_refusal(
        env,
        "book_reservation",
        f"Error: payment amount does not add up, total price is {total}, but paid {total - 1}",
        **arguments,
    )
    arguments["payment_methods"] = [{"payment_id": MIA_CARD, "amount": total}]
    result = run(env, "book_reservation", **arguments)
    assert result.observation == json.dumps(expected_booking(base_db, "HATHAT", arguments))


def test_booking_with_no_flights_costs_insurance_and_bags_only(env):
    passengers = [{"first_name": "A", "last_name": "B", "dob": "1990-01-01"}] * 3
    arguments = free_booking(passengers=passengers, insurance="yes", nonfree_baggages=1)
    expect_refusal(
        env, "book_reservation", "Error: payment amount does not add up, total price is 140, but paid 0", **arguments
    )
    arguments["payment_methods"] = [{"payment_id": MIA_CARD, "amount": 140}]
    assert not run(env, "book_reservation", **arguments).failed


def test_booking_any_insurance_value_other_than_yes_is_free(env):
    result = run(env, "book_reservation", **free_booking(insurance="maybe"))
    assert json.loads(result.observation)["insurance"] == "maybe"


def test_booking_sum_is_compared_numerically_and_floats_are_kept(env, pristine):
    refuse_on_initial(
        pristine,
        "book_reservation",
        "Error: payment amount does not add up, total price is 255, but paid 255.5",
        **booking(
            payment_methods=[
                {"payment_id": "certificate_7504069", "amount": 250},
                {"payment_id": MIA_CARD, "amount": 5.5},
            ]
        ),
    )
    arguments = booking(
        payment_methods=[{"payment_id": "certificate_7504069", "amount": 250}, {"payment_id": MIA_CARD, "amount": 5.0}]
    )
    result = run(env, "book_reservation", **arguments)
    assert not result.failed
    assert '{"payment_id": "credit_card_4421486", "amount": 5.0}' in result.observation
    assert env.db["reservations"]["HATHAT"]["payment_history"][1]["amount"] == 5.0
    assert type(env.db["reservations"]["HATHAT"]["payment_history"][1]["amount"]) is float


def test_booking_debits_gift_cards_without_rounding_and_deletes_partly_used_certificates(env, base_db):
    fare = base_db["flights"]["HAT136"]["dates"]["2024-05-20"]["prices"]["economy"]
    arguments = booking(
        user_id=LIAM,
        flights=[{"flight_number": "HAT136", "date": "2024-05-20"}],
        payment_methods=[
            {"payment_id": LIAM_GIFT, "amount": 100.3},
            {"payment_id": LIAM_CERTIFICATE, "amount": 10},
            {"payment_id": "credit_card_7979469", "amount": fare - 110.3},
        ],
    )
    # The float shares must add up exactly in Python for the booking to pass.
    assert sum(share["amount"] for share in arguments["payment_methods"]) == fare
    assert not run(env, "book_reservation", **arguments).failed
    saved = env.db["users"][LIAM]["payment_methods"]
    assert saved[LIAM_GIFT]["amount"] == 300 - 100.3
    assert repr(saved[LIAM_GIFT]["amount"]) == repr(300 - 100.3)
    assert LIAM_CERTIFICATE not in saved  # 140 of its 150 were left; deleted anyway
    assert saved["credit_card_7979469"] == base_db["users"][LIAM]["payment_methods"]["credit_card_7979469"]
    assert list(saved) == [key for key in base_db["users"][LIAM]["payment_methods"] if key != LIAM_CERTIFICATE]


def test_booking_checks_each_share_alone_so_a_gift_card_can_go_negative(env):
    arguments = free_booking(
        user_id=LIAM,
        nonfree_baggages=8,
        payment_methods=[{"payment_id": LIAM_GIFT, "amount": 200}, {"payment_id": LIAM_GIFT, "amount": 200}],
    )
    assert not run(env, "book_reservation", **arguments).failed
    assert env.db["users"][LIAM]["payment_methods"][LIAM_GIFT]["amount"] == -100


def test_booking_keeps_supplied_keys_and_order(env):
    arguments = free_booking(
        flights=[{"date": "2024-05-20", "flight_number": "HAT136", "price": 1, "note": "window"}],
        passengers=[{"first_name": "", "last_name": "Li", "dob": "not a date", "seat": "12A"}],
        payment_methods=[{"amount": 152, "payment_id": MIA_CARD, "memo": "x"}],
        origin="XXX",
        destination="YYY",
        flight_type="multi_city",
        total_baggages=-4,
    )
    record = json.loads(run(env, "book_reservation", **arguments).observation)
    assert list(record["flights"][0].items()) == [
        ("date", "2024-05-20"),
        ("flight_number", "HAT136"),
        ("price", 152),
        ("note", "window"),
        ("origin", "JFK"),
        ("destination", "ATL"),
    ]
    assert record["passengers"] == arguments["passengers"]
    assert list(record["payment_history"][0]) == ["amount", "payment_id", "memo"]
    assert (record["origin"], record["destination"], record["flight_type"], record["total_baggages"]) == (
        "XXX",
        "YYY",
        "multi_city",
        -4,
    )


def test_booking_escapes_non_ascii(env):
    arguments = free_booking(passengers=[{"first_name": "Zoë", "last_name": "Ørsted", "dob": "1990-01-01"}])
    observation = run(env, "book_reservation", **arguments).observation
    assert '"first_name": "Zo\\u00eb", "last_name": "\\u00d8rsted"' in observation


def test_booking_an_unknown_cabin_with_no_flights_is_stored_as_given(env):
    assert json.loads(run(env, "book_reservation", **free_booking(cabin="first")).observation)["cabin"] == "first"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"user_id": "nobody_1"}, "Error: user not found"),
        # The user is checked before anything else.
        ({"user_id": "nobody_1", "flights": [{"flight_number": "HAT999"}]}, "Error: user not found"),
        ({"flights": [{"flight_number": "HAT999", "date": "2024-05-20"}]}, "Error: flight HAT999 not found"),
        (
            {"flights": [{"flight_number": "HAT136", "date": "2024-06-01"}]},
            "Error: flight HAT136 not found on date 2024-06-01",
        ),
        (
            {"flights": [{"flight_number": "HAT136", "date": "2024-05-10"}]},
            "Error: flight HAT136 not available on date 2024-05-10",
        ),
        (
            {"flights": [{"flight_number": "HAT136", "date": "2024-05-15"}]},
            "Error: flight HAT136 not available on date 2024-05-15",
        ),
        (
            {"cabin": "economy", "flights": [{"flight_number": "HAT002", "date": "2024-05-24"}]},
            "Error: not enough seats on flight HAT002",
        ),
        ({"cabin": "first"}, "Error: 'first'"),
        # Segments are checked in order; the first bad one is reported.
        (
            {
                "flights": [
                    {"flight_number": "HAT136", "date": "2024-05-20"},
                    {"flight_number": "HAT998", "date": "x"},
                    {"flight_number": "HAT999", "date": "x"},
                ]
            },
            "Error: flight HAT998 not found",
        ),
        ({"flights": [{"date": "2024-05-20"}]}, "Error: 'flight_number'"),
        # `date` is read only once the flight is known.
        ({"flights": [{"flight_number": "HAT999"}]}, "Error: flight HAT999 not found"),
        ({"flights": [{"flight_number": "HAT136"}]}, "Error: 'date'"),
        # Flights are checked before payments.
        (
            {"flights": [{"flight_number": "HAT999", "date": "2024-05-20"}], "payment_methods": []},
            "Error: flight HAT999 not found",
        ),
        (
            {"payment_methods": [{"payment_id": "credit_card_0000000", "amount": 255}]},
            "Error: payment method credit_card_0000000 not found",
        ),
        # Another user's method is not the user's.
        (
            {"payment_methods": [{"payment_id": OMAR_CARD, "amount": 255}]},
            f"Error: payment method {OMAR_CARD} not found",
        ),
        (
            {
                "payment_methods": [
                    {"payment_id": "certificate_4856383", "amount": 150},
                    {"payment_id": MIA_CARD, "amount": 105},
                ]
            },
            "Error: not enough balance in payment method certificate_4856383",
        ),
        # Each share is checked before the sum.
        (
            {"payment_methods": [{"payment_id": "certificate_4856383", "amount": 101}]},
            "Error: not enough balance in payment method certificate_4856383",
        ),
        ({"payment_methods": [{"amount": 255}]}, "Error: 'payment_id'"),
        # Both keys of a share are read before its id is looked up.
        ({"payment_methods": [{"payment_id": "credit_card_0000000"}]}, "Error: 'amount'"),
        ({"payment_methods": []}, "Error: payment amount does not add up, total price is 255, but paid 0"),
        (
            {"payment_methods": [{"payment_id": MIA_CARD, "amount": 300}]},
            "Error: payment amount does not add up, total price is 255, but paid 300",
        ),
        ({"insurance": "yes"}, "Error: payment amount does not add up, total price is 285, but paid 255"),
    ],
)
def test_booking_refusals_change_nothing(pristine, changes, expected):
    refuse_on_initial(pristine, "book_reservation", expected, **booking(**changes))


def test_booking_gift_card_balance_check(pristine):
    refuse_on_initial(
        pristine,
        "book_reservation",
        f"Error: not enough balance in payment method {LIAM_GIFT}",
        **free_booking(user_id=LIAM, nonfree_baggages=7, payment_methods=[{"payment_id": LIAM_GIFT, "amount": 350}]),
    )


def test_a_v8_duplicate_certificate_partial_mutation(env, base_db):
    arguments = booking(
        payment_methods=[
            {"payment_id": "certificate_4856383", "amount": 100},
            {"payment_id": "certificate_4856383", "amount": 100},
            {"payment_id": MIA_CARD, "amount": 55},
        ]
    )
    result = run(env, "book_reservation", **arguments)
    assert result.observation == "Error: 'certificate_4856383'"
    assert result.failed
    assert taubench_hash(env.db) == "49830e1277fbe946d1a8514d1fc1660185a26ae7eac8c4205af4c92c0d8262de"
    assert "certificate_4856383" not in env.db["users"][MIA]["payment_methods"]
    assert "HATHAT" not in env.db["reservations"]
    assert env.db["users"][MIA]["reservations"] == base_db["users"][MIA]["reservations"]


def test_partial_mutation_keeps_earlier_gift_card_debits(env):
    arguments = free_booking(
        user_id=LIAM,
        nonfree_baggages=6,
        payment_methods=[
            {"payment_id": LIAM_GIFT, "amount": 100},
            {"payment_id": LIAM_CERTIFICATE, "amount": 100},
            {"payment_id": LIAM_CERTIFICATE, "amount": 100},
        ],
    )
    assert run(env, "book_reservation", **arguments).observation == f"Error: '{LIAM_CERTIFICATE}'"
    assert env.db["users"][LIAM]["payment_methods"][LIAM_GIFT]["amount"] == 200
    assert LIAM_CERTIFICATE not in env.db["users"][LIAM]["payment_methods"]
    assert "HATHAT" not in env.db["reservations"]


# ---------------------------------------------------------------------------------------------------------
# calculate, think, transfer (§2.B.2, §2.B.10, §2.B.11)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(457.81 + 3203.76) * 2", "7323.14"),
        ("2 + 2", "4.0"),
        ("1 / 3", "0.33"),
        ("1e5", "Error: invalid characters in expression"),
        ("1/0", "Error: division by zero"),
        ("(1+2", "Error: '(' was never closed (<string>, line 1)"),
    ],
)
def test_calculate(pristine, expression, expected):
    result = run(pristine, "calculate", expression=expression)
    assert result.observation == expected
    assert result.failed == expected.startswith("Error:")
    assert_initial_state(pristine)


def test_think_returns_empty_and_changes_nothing(pristine):
    result = run(pristine, "think", thought="The user wants a cheaper flight.")
    assert result.observation == "" and not result.failed and not result.terminated
    assert_initial_state(pristine)


def test_transfer_terminates(pristine):
    result = run(pristine, "transfer_to_human_agents", summary="User wants to change the passenger count.")
    assert result.observation == "Transfer successful"
    assert result.terminated and not result.failed
    assert_initial_state(pristine)


# ---------------------------------------------------------------------------------------------------------
# cancel_reservation (§2.B.3)


def test_a_v2_cancel(env, base_db):
    result = run(env, "cancel_reservation", reservation_id="4WQ150")
    expected = copy.deepcopy(base_db["reservations"]["4WQ150"])
    expected["payment_history"].append({"payment_id": "gift_card_3576581", "amount": -4986})
    expected["status"] = "cancelled"
    assert result.observation == json.dumps(expected)
    assert list(json.loads(result.observation))[-1] == "status"
    assert taubench_hash(env.db) == "fc58afd7e7e777e540c40ff73d52c7f41430728936b9c345d7f517f7e511b928"
    assert env.db["users"]["chen_jackson_3290"] == base_db["users"]["chen_jackson_3290"]  # no balance restored


def test_cancel_twice_negates_every_entry_again(env):
    run(env, "cancel_reservation", reservation_id="4WQ150")
    record = json.loads(run(env, "cancel_reservation", reservation_id="4WQ150").observation)
    assert [entry["amount"] for entry in record["payment_history"]] == [4986, -4986, -4986, 4986]
    assert list(record).count("status") == 1 and list(record)[-1] == "status"


def test_cancel_negates_zero_by_type(env):
    arguments = booking(
        payment_methods=[
            {"payment_id": MIA_CARD, "amount": 0.0},
            {"payment_id": "credit_card_1955700", "amount": 0},
            {"payment_id": "certificate_7504069", "amount": 250},
            {"payment_id": MIA_CARD, "amount": 5},
        ]
    )
    assert not run(env, "book_reservation", **arguments).failed
    observation = run(env, "cancel_reservation", reservation_id="HATHAT").observation
    assert observation.endswith(
        '{"payment_id": "credit_card_4421486", "amount": -0.0}, {"payment_id": "credit_card_1955700", "amount": 0}, '
        '{"payment_id": "certificate_7504069", "amount": -250}, {"payment_id": "credit_card_4421486", "amount": -5}], '
        '"created_at": "2024-05-15T15:00:00", "total_baggages": 3, "nonfree_baggages": 0, "insurance": "no", '
        '"status": "cancelled"}'
    )


def test_cancel_unknown_reservation(pristine):
    refuse_on_initial(pristine, "cancel_reservation", "Error: reservation not found", reservation_id="ZZZZZZ")


# ---------------------------------------------------------------------------------------------------------
# Lookups (§2.B.4 - §2.B.6)


def test_get_reservation_details(pristine, base_db):
    result = run(pristine, "get_reservation_details", reservation_id="4WQ150")
    assert result.observation == json.dumps(base_db["reservations"]["4WQ150"])
    assert not result.failed
    refuse_on_initial(pristine, "get_reservation_details", "Error: user not found", reservation_id="ZZZZZZ")


def test_get_reservation_details_sees_new_bookings(env):
    booked = run(env, "book_reservation", **booking()).observation
    assert run(env, "get_reservation_details", reservation_id="HATHAT").observation == booked


def test_get_user_details(pristine, base_db):
    result = run(pristine, "get_user_details", user_id=MIA)
    assert result.observation == json.dumps(base_db["users"][MIA])
    refuse_on_initial(pristine, "get_user_details", "Error: user not found", user_id="nobody_1")
    refuse_on_initial(pristine, "get_user_details", "Error: user not found", user_id="Mia_Li_3668")


def test_list_all_airports(pristine, base_db):
    observation = run(pristine, "list_all_airports").observation
    assert sha(observation) == "01d5742ada6b9d555879bf2677a99c8d0ffa80e66221bec5484112857b62a1a3"
    assert observation.startswith('{"SFO": "San Francisco", "JFK": "New York", ')
    airports = json.loads(observation)
    served = {flight[end] for flight in base_db["flights"].values() for end in ("origin", "destination")}
    assert set(airports) == served and len(airports) == 20
    assert airports["LGA"] == "LaGuardia"
    assert_initial_state(pristine)


# ---------------------------------------------------------------------------------------------------------
# Searches (§2.B.7, §2.B.8)


def test_search_direct_flight(pristine, base_db):
    observation = run(pristine, "search_direct_flight", origin="JFK", destination="SEA", date="2024-05-20").observation
    assert sha(observation) == "9d0965ba1dcb5c1db281d7a859d843ffa635c38236e2a4b804ea872e0a8e4456"
    expected = [
        listing(flight, "2024-05-20")
        for flight in base_db["flights"].values()
        if flight["origin"] == "JFK"
        and flight["destination"] == "SEA"
        and flight["dates"]["2024-05-20"]["status"] == "available"
    ]
    assert len(expected) == 2
    assert observation == json.dumps(expected)
    assert list(json.loads(observation)[0]) == [
        "flight_number",
        "origin",
        "destination",
        "scheduled_departure_time_est",
        "scheduled_arrival_time_est",
        "status",
        "available_seats",
        "prices",
    ]
    assert_initial_state(pristine)


@pytest.mark.parametrize(
    ("origin", "destination", "date"),
    [
        ("jfk", "SEA", "2024-05-20"),  # case-sensitive
        ("JFK", "SEA", "2024-05-10"),  # landed: not available
        ("JFK", "SEA", "2024-05-15"),  # today's flights are no longer bookable
        ("JFK", "SEA", "2024-06-01"),  # no such date
        ("JFK", "JFK", "2024-05-20"),
    ],
)
def test_search_direct_flight_without_matches(pristine, origin, destination, date):
    result = run(pristine, "search_direct_flight", origin=origin, destination=destination, date=date)
    assert result.observation == "[]" and not result.failed
    assert_initial_state(pristine)


def test_search_onestop_flight_vectors(pristine):
    jfk_sea = run(pristine, "search_onestop_flight", origin="JFK", destination="SEA", date="2024-05-20").observation
    assert sha(jfk_sea) == "01ee9877b2e2f9146880fed80b50f169b0803be6707d401d8c26cbae1207dc6c"
    assert len(json.loads(jfk_sea)) == 4
    lga_sfo = run(pristine, "search_onestop_flight", origin="LGA", destination="SFO", date="2024-05-20").observation
    assert sha(lga_sfo) == "71871d201167c6351bc3342d7f3f74683ee3e7556d14aaf4e5150a12a5c12f15"
    assert len(json.loads(lga_sfo)) == 23
    assert_initial_state(pristine)


def test_search_onestop_overnight_leg_shows_the_wrong_day(pristine, base_db):
    connections = json.loads(
        run(pristine, "search_onestop_flight", origin="LGA", destination="SFO", date="2024-05-20").observation
    )
    first, second = next(pair for pair in connections if [leg["flight_number"] for leg in pair] == ["HAT002", "HAT009"])
    assert first == {**listing(base_db["flights"]["HAT002"], "2024-05-20"), "date": "2024-05-20"}
    assert second["date"] == "2024-05-21"
    assert second["prices"] == {"basic_economy": 57, "economy": 175, "business": 461}
    assert second == {**listing(base_db["flights"]["HAT009"], "2024-05-20"), "date": "2024-05-21"}
    assert list(second)[-1] == "date"
    assert_initial_state(pristine)


def test_search_onestop_loses_overnight_connections_at_month_end(pristine):
    on_29 = json.loads(
        run(pristine, "search_onestop_flight", origin="LGA", destination="SFO", date="2024-05-29").observation
    )
    on_30 = json.loads(
        run(pristine, "search_onestop_flight", origin="LGA", destination="SFO", date="2024-05-30").observation
    )
    assert any("+1" in first["scheduled_arrival_time_est"] for first, _ in on_29)
    assert on_30 and not any("+1" in first["scheduled_arrival_time_est"] for first, _ in on_30)
    assert_initial_state(pristine)


def test_search_onestop_int_error_on_a_non_numeric_day(pristine):
    # Reached as soon as an overnight first leg has a connection (HAT002 -> HAT009 does).
    refuse_on_initial(
        pristine,
        "search_onestop_flight",
        "Error: invalid literal for int() with base 10: 'xx'",
        origin="LGA",
        destination="SFO",
        date="2024-05-xx",
    )


@pytest.mark.parametrize("date", ["2024-05--1", "2024-05- 9", "5"])
def test_search_onestop_int_accepts_signs_and_spaces(pristine, date):
    result = run(pristine, "search_onestop_flight", origin="LGA", destination="SFO", date=date)
    assert result.observation == "[]" and not result.failed
    assert_initial_state(pristine)


def test_search_onestop_without_overnight_candidates_never_parses_the_day(pristine):
    # JFK -> SEA connections on this data have no overnight first leg, so the bad day never reaches int().
    result = run(pristine, "search_onestop_flight", origin="JFK", destination="SEA", date="2024-05-xx")
    assert result.observation == "[]"
    assert_initial_state(pristine)


def _flight(number, origin, destination, departs, arrives, dates):
    return {
        "flight_number": number,
        "origin": origin,
        "destination": destination,
        "scheduled_departure_time_est": departs,
        "scheduled_arrival_time_est": arrives,
        "dates": dates,
    }


def _open(price):
    return {
        "status": "available",
        "available_seats": {"basic_economy": 9, "economy": 9, "business": 9},
        "prices": {"basic_economy": price, "economy": price + 1, "business": price + 2},
    }


def test_search_onestop_time_comparison_is_plain_string_order(domain):
    days = {"2024-05-20": _open(10), "2024-05-21": _open(20)}
    flights = {
        "F1": _flight("F1", "AAA", "BBB", "08:00:00", "12:00:00", days),
        "F2": _flight("F2", "BBB", "CCC", "12:00:00", "14:00:00", days),  # equal time: kept
        "F3": _flight("F3", "BBB", "CCC", "11:59:59", "14:00:00", days),  # departs before F1 lands
        "F4": _flight("F4", "AAA", "BBB", "22:00:00", "01:00:00+1", days),
        "F5": _flight("F5", "BBB", "CCC", "01:00:00", "03:00:00", days),  # "01:00:00+1" > "01:00:00"
        "F6": _flight(
            "F6", "BBB", "CCC", "09:00:00", "11:00:00", {"2024-05-20": _open(30), "2024-05-21": {"status": "cancelled"}}
        ),
        "F7": _flight("F7", "BBB", "DDD", "13:00:00", "15:00:00", days),  # wrong destination
    }
    env = domain.environment({"flights": flights, "reservations": {}, "users": {}})
    connections = json.loads(
        run(env, "search_onestop_flight", origin="AAA", destination="CCC", date="2024-05-20").observation
    )
    assert [[leg["flight_number"] for leg in pair] for pair in connections] == [
        ["F1", "F2"],
        ["F4", "F2"],
        ["F4", "F3"],
    ]
    overnight_second = connections[1][1]
    assert overnight_second["date"] == "2024-05-21" and overnight_second["prices"]["basic_economy"] == 10
    # F6 is cancelled on the 21st, so the overnight connection to it is dropped even though its 20th is open.
    assert not any(pair[1]["flight_number"] == "F6" for pair in connections)


def test_search_onestop_second_leg_missing_the_first_day_raises(domain):
    flights = {
        "F1": _flight("F1", "AAA", "BBB", "22:00:00", "01:00:00+1", {"2024-05-20": _open(10)}),
        "F2": _flight("F2", "BBB", "CCC", "09:00:00", "11:00:00", {"2024-05-21": _open(20)}),
    }
    env = domain.environment({"flights": flights, "reservations": {}, "users": {}})
    result = run(env, "search_onestop_flight", origin="AAA", destination="CCC", date="2024-05-20")
    assert result.observation == "Error: '2024-05-20'" and result.failed


def test_search_onestop_day_arithmetic_is_unpadded(domain):
    flights = {
        "F1": _flight("F1", "AAA", "BBB", "22:00:00", "01:00:00+1", {"2024-05-05": _open(10)}),
        "F2": _flight(
            "F2",
            "BBB",
            "CCC",
            "09:00:00",
            "11:00:00",
            {"2024-05-05": _open(20), "2024-05-06": _open(30), "2024-05-6": _open(40)},
        ),
    }
    env = domain.environment({"flights": flights, "reservations": {}, "users": {}})
    (pair,) = json.loads(
        run(env, "search_onestop_flight", origin="AAA", destination="CCC", date="2024-05-05").observation
    )
    assert pair[1]["date"] == "2024-05-6"
    assert pair[1]["prices"]["basic_economy"] == 20


# ---------------------------------------------------------------------------------------------------------
# send_certificate (§2.B.9)


def test_a_v5_certificates(env):
    messages = [run(env, "send_certificate", user_id=MIA, amount=150).observation]
    assert taubench_hash(env.db) == "e47becd4d44002fb11eaa97ac7e4627a74076924f4bcaea6460520765c4ea237"
    messages += [run(env, "send_certificate", user_id=MIA, amount=150).observation for _ in range(2)]
    assert messages == [
        f"Certificate certificate_322132{digit} added to user {MIA} with amount 150." for digit in (2, 3, 4)
    ]
    saved = env.db["users"][MIA]["payment_methods"]
    assert list(saved)[-3:] == ["certificate_3221322", "certificate_3221323", "certificate_3221324"]
    assert saved["certificate_3221322"] == {"source": "certificate", "amount": 150, "id": "certificate_3221322"}
    # tau-bench returns nothing here (its step crashes); the environment flags it and nothing changes.
    expect_refusal(env, "send_certificate", "Error: send_certificate returned no result", user_id=MIA, amount=150)


def test_certificate_amount_keeps_its_type_and_is_not_validated(env):
    assert run(env, "send_certificate", user_id=MIA, amount=150.0).observation == (
        "Certificate certificate_3221322 added to user mia_li_3668 with amount 150.0."
    )
    assert type(env.db["users"][MIA]["payment_methods"]["certificate_3221322"]["amount"]) is float
    assert run(env, "send_certificate", user_id=LIAM, amount=-2.5).observation == (
        f"Certificate certificate_3221322 added to user {LIAM} with amount -2.5."
    )


def test_certificate_id_is_freed_when_a_booking_uses_it(env):
    run(env, "send_certificate", user_id=MIA, amount=255)
    arguments = booking(payment_methods=[{"payment_id": "certificate_3221322", "amount": 255}])
    assert not run(env, "book_reservation", **arguments).failed
    assert run(env, "send_certificate", user_id=MIA, amount=50).observation == (
        f"Certificate certificate_3221322 added to user {MIA} with amount 50."
    )


def test_certificate_for_unknown_user(pristine):
    refuse_on_initial(pristine, "send_certificate", "Error: user not found", user_id="nobody_1", amount=100)


# ---------------------------------------------------------------------------------------------------------
# update_reservation_baggages (§2.B.12)


def test_a_v4_baggages(env, base_db):
    result = run(
        env,
        "update_reservation_baggages",
        reservation_id="JG7FMM",
        total_baggages=5,
        nonfree_baggages=2,
        payment_id=OMAR_CARD,
    )
    expected = copy.deepcopy(base_db["reservations"]["JG7FMM"])
    expected.update(total_baggages=5, nonfree_baggages=2)
    expected["payment_history"].append({"payment_id": OMAR_CARD, "amount": 100})
    assert result.observation == json.dumps(expected)
    assert taubench_hash(env.db) == "e58c7bca082f412c5e5e4032d7927f00ce6487fe9cd8f399f39504e34243ea70"


def test_a_v7_gift_card_too_small(pristine):
    refuse_on_initial(
        pristine,
        "update_reservation_baggages",
        "Error: gift card balance is not enough",
        reservation_id="JG7FMM",
        total_baggages=4,
        nonfree_baggages=1,
        payment_id="gift_card_3481935",
    )


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"reservation_id": "ZZZZZZ", "payment_id": OMAR_CARD}, "Error: reservation not found"),
        ({"reservation_id": "JG7FMM", "payment_id": "credit_card_0000000"}, "Error: payment method not found"),
        ({"reservation_id": "JG7FMM", "payment_id": "credit_card_7979469"}, "Error: payment method not found"),
        (
            {"reservation_id": "Q17Y7B", "payment_id": LIAM_CERTIFICATE},
            "Error: certificate cannot be used to update reservation",
        ),
        # A certificate is refused even when nothing is charged.
        (
            {"reservation_id": "Q17Y7B", "payment_id": LIAM_CERTIFICATE, "nonfree_baggages": 0},
            "Error: certificate cannot be used to update reservation",
        ),
        (
            {"reservation_id": "Q17Y7B", "payment_id": LIAM_GIFT, "nonfree_baggages": 7},
            "Error: gift card balance is not enough",
        ),
    ],
)
def test_baggage_refusals_change_nothing(pristine, arguments, expected):
    call = {"total_baggages": 3, "nonfree_baggages": 2, **arguments}
    refuse_on_initial(pristine, "update_reservation_baggages", expected, **call)


def test_baggages_paid_by_gift_card(env):
    result = run(
        env,
        "update_reservation_baggages",
        reservation_id="Q17Y7B",
        total_baggages=3,
        nonfree_baggages=6,
        payment_id=LIAM_GIFT,
    )
    assert not result.failed
    assert env.db["users"][LIAM]["payment_methods"][LIAM_GIFT]["amount"] == 0  # 300 - 50 * 6: exact balance passes
    assert env.db["reservations"]["Q17Y7B"]["payment_history"][-1] == {"payment_id": LIAM_GIFT, "amount": 300}


def test_baggages_can_be_reduced_for_free(env, base_db):
    result = run(
        env,
        "update_reservation_baggages",
        reservation_id="Q17Y7B",
        total_baggages=0,
        nonfree_baggages=0,
        payment_id=LIAM_GIFT,
    )
    record = json.loads(result.observation)
    assert (record["total_baggages"], record["nonfree_baggages"]) == (0, 0)
    assert record["payment_history"] == base_db["reservations"]["Q17Y7B"]["payment_history"]
    amount = env.db["users"][LIAM]["payment_methods"][LIAM_GIFT]["amount"]
    assert amount == 300 and type(amount) is int


def test_baggages_only_charge_for_added_paid_bags(env):
    run(
        env,
        "update_reservation_baggages",
        reservation_id="JG7FMM",
        total_baggages=5,
        nonfree_baggages=2,
        payment_id=OMAR_CARD,
    )
    run(
        env,
        "update_reservation_baggages",
        reservation_id="JG7FMM",
        total_baggages=5,
        nonfree_baggages=1,
        payment_id=OMAR_CARD,
    )
    record = json.loads(
        run(
            env,
            "update_reservation_baggages",
            reservation_id="JG7FMM",
            total_baggages=5,
            nonfree_baggages=3,
            payment_id=OMAR_CARD,
        ).observation
    )
    assert [entry["amount"] for entry in record["payment_history"]] == [7136, 100, 100]


def test_baggages_of_a_cancelled_reservation_can_still_change(env):
    run(env, "cancel_reservation", reservation_id="JG7FMM")
    record = json.loads(
        run(
            env,
            "update_reservation_baggages",
            reservation_id="JG7FMM",
            total_baggages=4,
            nonfree_baggages=1,
            payment_id=OMAR_CARD,
        ).observation
    )
    assert record["status"] == "cancelled" and record["nonfree_baggages"] == 1
    assert list(record)[-1] == "status"


# ---------------------------------------------------------------------------------------------------------
# update_reservation_flights (§2.B.13)


def test_a_v3_cabin_change_is_charged_but_not_stored(env, base_db):
    result = run(
        env,
        "update_reservation_flights",
        reservation_id="JG7FMM",
        cabin="economy",
        flights=A_V3_FLIGHTS,
        payment_id=OMAR_CARD,
    )
    assert sha(result.observation) == "9e4260a3c5e6612e14f696b4c34a2f3b6a6308d8f4663fcd39cef8efbf8e07c7"
    assert taubench_hash(env.db) == "1943d4e05d1a0cadc986be0360610e965c7a64707a3b679e1c82cb8c16fa127b"
    after_first = env.digest()
    record = json.loads(result.observation)
    assert record["cabin"] == "business"
    assert [segment["price"] for segment in record["flights"]] == [140, 101]
    assert record["payment_history"][-1] == {"payment_id": OMAR_CARD, "amount": -6594}  # (241 - 3538) * 2
    # Later calls compare against the stored (old) cabin: "business" now keeps the economy fares.
    again = run(
        env,
        "update_reservation_flights",
        reservation_id="JG7FMM",
        cabin="business",
        flights=A_V3_FLIGHTS,
        payment_id=OMAR_CARD,
    )
    assert [segment["price"] for segment in json.loads(again.observation)["flights"]] == [140, 101]
    assert env.digest() == after_first


def test_a_v3b_same_cabin_same_flights_only_reorders_keys(env, base_db):
    result = run(
        env,
        "update_reservation_flights",
        reservation_id="JG7FMM",
        cabin="business",
        flights=A_V3_FLIGHTS,
        payment_id=OMAR_CARD,
    )
    assert taubench_hash(env.db) == INITIAL_TUPLE_HASH
    expected = copy.deepcopy(base_db["reservations"]["JG7FMM"])
    expected["flights"] = [
        {
            "flight_number": s["flight_number"],
            "date": s["date"],
            "price": s["price"],
            "origin": s["origin"],
            "destination": s["destination"],
        }
        for s in expected["flights"]
    ]
    assert result.observation == json.dumps(expected)
    # Kept segments keep their booked fare, although today's business fare differs.
    assert base_db["flights"]["HAT028"]["dates"]["2024-05-21"]["prices"]["business"] != 1859
    assert json.loads(result.observation)["flights"][0]["price"] == 1859


def test_kept_segments_skip_availability_and_seat_checks(env, base_db):
    landed = base_db["reservations"]["I6M8JQ"]
    card = "credit_card_4074252"
    flights = [{"flight_number": s["flight_number"], "date": s["date"]} for s in landed["flights"]]
    result = run(
        env,
        "update_reservation_flights",
        reservation_id="I6M8JQ",
        cabin=landed["cabin"],
        flights=flights,
        payment_id=card,
    )
    assert not result.failed
    # Q17Y7B has 2 passengers and HAT190 has 1 economy seat left: kept, so no seat check.
    flights = [
        {"flight_number": s["flight_number"], "date": s["date"]} for s in base_db["reservations"]["Q17Y7B"]["flights"]
    ]
    assert not run(
        env,
        "update_reservation_flights",
        reservation_id="Q17Y7B",
        cabin="economy",
        flights=flights,
        payment_id=LIAM_GIFT,
    ).failed
    # The same segments in another cabin are new ones and are checked.
    expect_refusal(
        env,
        "update_reservation_flights",
        "Error: flight HAT115 not available on date 2024-05-09",
        reservation_id="I6M8JQ",
        cabin="business",
        flights=[{"flight_number": s["flight_number"], "date": s["date"]} for s in landed["flights"]],
        payment_id=card,
    )


def test_a_refund_credits_a_gift_card(env, base_db):
    reservation = base_db["reservations"]["Q17Y7B"]
    flights = [{"flight_number": s["flight_number"], "date": s["date"]} for s in reservation["flights"]]
    fares = [base_db["flights"][s["flight_number"]]["dates"][s["date"]]["prices"]["basic_economy"] for s in flights]
    total = sum(fares) * 2 - sum(s["price"] for s in reservation["flights"]) * 2
    assert total < 0
    record = json.loads(
        run(
            env,
            "update_reservation_flights",
            reservation_id="Q17Y7B",
            cabin="basic_economy",
            flights=flights,
            payment_id=LIAM_GIFT,
        ).observation
    )
    assert env.db["users"][LIAM]["payment_methods"][LIAM_GIFT]["amount"] == 300 - total
    assert record["payment_history"][-1] == {"payment_id": LIAM_GIFT, "amount": total}
    assert [s["price"] for s in record["flights"]] == fares
    assert record["cabin"] == "economy"


def test_flight_change_mixes_kept_and_new_segments(env, base_db):
    # Keep the first leg of JG7FMM, replace the second with another flight on a later day.
    new_leg = {"flight_number": "HAT277", "date": "2024-05-22"}
    fare = base_db["flights"]["HAT277"]["dates"]["2024-05-22"]["prices"]["business"]
    flights = [{"flight_number": "HAT028", "date": "2024-05-21"}, new_leg]
    record = json.loads(
        run(
            env,
            "update_reservation_flights",
            reservation_id="JG7FMM",
            cabin="business",
            flights=flights,
            payment_id=OMAR_CARD,
        ).observation
    )
    assert [s["price"] for s in record["flights"]] == [1859, fare]
    assert record["payment_history"][-1]["amount"] == (fare - 1679) * 2
    assert record["flights"][1] == {**new_leg, "price": fare, "origin": "BOS", "destination": "CLT"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"reservation_id": "ZZZZZZ"}, "Error: reservation not found"),
        ({"flights": [{"flight_number": "HAT999", "date": "2024-05-21"}]}, "Error: flight HAT999 not found"),
        (
            {"flights": [{"flight_number": "HAT028", "date": "2024-06-21"}]},
            "Error: flight HAT028 not found on date 2024-06-21",
        ),
        (
            {"flights": [{"flight_number": "HAT028", "date": "2024-05-12"}]},
            "Error: flight HAT028 not available on date 2024-05-12",
        ),
        ({"flights": [{"flight_number": "HAT002", "date": "2024-05-25"}]}, "Error: not enough seats on flight HAT002"),
        ({"cabin": "first"}, "Error: 'first'"),
        # Missing keys: `flight_number` is always read; `date` only once a booked segment has that number,
        # or once the flight is known.
        ({"flights": [{"date": "2024-05-21"}]}, "Error: 'flight_number'"),
        ({"flights": [{"flight_number": "HAT999"}]}, "Error: flight HAT999 not found"),
        ({"flights": [{"flight_number": "HAT028"}]}, "Error: 'date'"),
        ({"flights": [{"flight_number": "HAT001"}]}, "Error: 'date'"),
        # Flights are checked before the payment method.
        (
            {"flights": [{"flight_number": "HAT999", "date": "x"}], "payment_id": "credit_card_0000000"},
            "Error: flight HAT999 not found",
        ),
        ({"payment_id": "credit_card_0000000"}, "Error: payment method not found"),
        ({"payment_id": "credit_card_7979469"}, "Error: payment method not found"),  # Liam's, not Omar's
        # A certificate is refused even when nothing is charged.
        (
            {
                "reservation_id": "Q17Y7B",
                "cabin": "economy",
                "flights": [
                    {"flight_number": "HAT190", "date": "2024-05-28"},
                    {"flight_number": "HAT175", "date": "2024-05-30"},
                ],
                "payment_id": LIAM_CERTIFICATE,
            },
            "Error: certificate cannot be used to update reservation",
        ),
        # Business fares: (480 + 419) * 2 - (166 + 108) * 2 = 1250 > 300.
        (
            {
                "reservation_id": "Q17Y7B",
                "flights": [
                    {"flight_number": "HAT190", "date": "2024-05-28"},
                    {"flight_number": "HAT175", "date": "2024-05-30"},
                ],
                "payment_id": LIAM_GIFT,
            },
            "Error: gift card balance is not enough",
        ),
    ],
)
def test_flight_change_refusals_change_nothing(pristine, changes, expected):
    call = {
        "reservation_id": "JG7FMM",
        "cabin": "business",
        "flights": A_V3_FLIGHTS,
        "payment_id": OMAR_CARD,
        **changes,
    }
    refuse_on_initial(pristine, "update_reservation_flights", expected, **call)


def test_a_negative_total_passes_any_gift_card(env, base_db):
    # Omar's gift card holds 31; JG7FMM's booked business fares (1859 + 1679) exceed the fares on the 22nd.
    flights = [{"flight_number": "HAT028", "date": "2024-05-22"}, {"flight_number": "HAT277", "date": "2024-05-22"}]
    fares = [base_db["flights"][s["flight_number"]]["dates"]["2024-05-22"]["prices"]["business"] for s in flights]
    total = sum(fares) * 2 - (1859 + 1679) * 2
    result = run(
        env,
        "update_reservation_flights",
        reservation_id="JG7FMM",
        cabin="business",
        flights=flights,
        payment_id="gift_card_6847880",
    )
    assert not result.failed
    assert env.db["users"]["omar_davis_3817"]["payment_methods"]["gift_card_6847880"]["amount"] == 31 - total
    assert json.loads(result.observation)["payment_history"][-1] == {"payment_id": "gift_card_6847880", "amount": total}


def test_flight_change_to_no_flights_refunds_everything(env, base_db):
    record = json.loads(
        run(
            env,
            "update_reservation_flights",
            reservation_id="JG7FMM",
            cabin="business",
            flights=[],
            payment_id=OMAR_CARD,
        ).observation
    )
    assert record["flights"] == []
    assert record["payment_history"][-1] == {"payment_id": OMAR_CARD, "amount": -(1859 + 1679) * 2}


def test_flight_change_keeps_supplied_extra_keys(env):
    flights = [
        {"date": "2024-05-21", "flight_number": "HAT028", "seat": "2A"},
        {"flight_number": "HAT277", "date": "2024-05-21"},
    ]
    record = json.loads(
        run(
            env,
            "update_reservation_flights",
            reservation_id="JG7FMM",
            cabin="business",
            flights=flights,
            payment_id=OMAR_CARD,
        ).observation
    )
    assert list(record["flights"][0].items()) == [
        ("date", "2024-05-21"),
        ("flight_number", "HAT028"),
        ("seat", "2A"),
        ("price", 1859),
        ("origin", "MCO"),
        ("destination", "BOS"),
    ]


def test_flight_change_never_touches_seats(env, base_db):
    run(
        env,
        "update_reservation_flights",
        reservation_id="JG7FMM",
        cabin="economy",
        flights=A_V3_FLIGHTS,
        payment_id=OMAR_CARD,
    )
    assert state_digest(env.db["flights"]) == state_digest(base_db["flights"])


# ---------------------------------------------------------------------------------------------------------
# update_reservation_passengers (§2.B.14)

A_V6_PASSENGERS = [
    {"first_name": "Omar", "last_name": "Davis", "dob": "1982-10-19"},
    {"first_name": "Noah", "last_name": "Kim", "dob": "1990-01-01"},
]


def test_a_v6_passengers(env, base_db):
    result = run(env, "update_reservation_passengers", reservation_id="JG7FMM", passengers=A_V6_PASSENGERS)
    expected = copy.deepcopy(base_db["reservations"]["JG7FMM"])
    expected["passengers"] = A_V6_PASSENGERS
    assert result.observation == json.dumps(expected)
    assert taubench_hash(env.db) == "fdbd0d35e157e83b202df64ebeae19dfa4d3adf330f422135bb7390764c3c117"


def test_passengers_are_stored_as_given(env):
    passengers = [{"dob": "x", "first_name": "Ann", "nickname": "A"}, {}]
    record = json.loads(
        run(env, "update_reservation_passengers", reservation_id="JG7FMM", passengers=passengers).observation
    )
    assert record["passengers"] == passengers
    assert list(record["passengers"][0]) == ["dob", "first_name", "nickname"]


@pytest.mark.parametrize(
    ("reservation_id", "passengers", "expected"),
    [
        ("ZZZZZZ", A_V6_PASSENGERS, "Error: reservation not found"),
        ("JG7FMM", A_V6_PASSENGERS[:1], "Error: number of passengers does not match"),
        ("JG7FMM", A_V6_PASSENGERS * 2, "Error: number of passengers does not match"),
        ("JG7FMM", [], "Error: number of passengers does not match"),
    ],
)
def test_passenger_refusals_change_nothing(pristine, reservation_id, passengers, expected):
    refuse_on_initial(
        pristine, "update_reservation_passengers", expected, reservation_id=reservation_id, passengers=passengers
    )


# ---------------------------------------------------------------------------------------------------------
# tau-bench's airline sample tasks


def test_sample_tasks_replay_without_failing_actions(domain, base_db, taubench_tasks):
    tasks = taubench_tasks("airline", "sample")
    assert len(tasks) == 25
    tools = AirlineTools.tools()
    failures = []
    for index, task in enumerate(tasks):
        env = domain.environment(base_db)
        for action in task["actions"]:
            assert action["name"] in tools, action["name"]
            result = env.step(action)
            # Every ground-truth action of the sample split succeeds, reads included.
            if result.failed:
                failures.append((index, action["name"], result.observation))
        if index == 0:
            # Task 0's ground truth is A-V1.
            assert taubench_hash(env.db) == "a825bc534ee4abad2f0f36d5d162989dcbae16dd509bd675feb7e9ffc86a1001"
    assert failures == []
