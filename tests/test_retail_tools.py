"""The retail tools against the tau-bench behaviour spec (taubench-domains.md §1, §2.A, §5, §6), on tau-bench's data.

Every call goes through `Environment.step`, as an agent's would. Error branches are checked with
`rejected`, which also proves that a refused call leaves the database exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from typing import Any

import pytest

from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.environment import Environment, StepResult
from apigen_mt.simulators.state import copy_state, state_digest
from tests.taubench_state import taubench_hash

INITIAL_TUPLE_HASH = "5a4b2cb59f4d12dea7e4adff24a7f8fada510ead49372ea4a729a82bbb5f49b5"
INITIAL_JSON_DIGEST = "c49125b83c32941ba527a31dce753cef1dee9a65fe2633c3a3c50816cef083ab"

# Fixtures from the data. Pending, paid with gift_card_7219486 (balance 49); user ethan_lopez_6291.
PENDING_GIFT = "#W6779827"
DUMBBELL, ESPRESSO, COFFEE_MAKER = "7896397433", "3379843752", "1323134954"
ETHAN_GIFT, ETHAN_CARD = "gift_card_7219486", "credit_card_9789590"
# Pending, paid 53.43 with credit_card_3577130; user omar_kim_3528 holds gift_card_3749819 (balance 91).
PENDING_CARD = "#W1080318"
OMAR_GIFT, OMAR_CARD = "gift_card_3749819", "credit_card_3577130"
# Delivered, paid with credit_card_5869505; user emma_santos_9753 holds gift_card_6023546 (balance 36).
DELIVERED = "#W3113816"
HELMET, DELIVERED_DUMBBELL = "2206116040", "4422467033"
EMMA_CARD, EMMA_GIFT = "credit_card_5869505", "gift_card_6023546"
PROCESSED = "#W2611340"
CANCELLED = "#W3220387"
ADDRESS = {"address1": "1 Main St", "address2": "", "city": "Austin", "state": "TX", "country": "USA", "zip": "78701"}
ADDRESS_KEYS = ["address1", "address2", "city", "state", "country", "zip"]

CLASS_NAMES = {
    "calculate": "Calculate",
    "cancel_pending_order": "CancelPendingOrder",
    "exchange_delivered_order_items": "ExchangeDeliveredOrderItems",
    "find_user_id_by_email": "FindUserIdByEmail",
    "find_user_id_by_name_zip": "FindUserIdByNameZip",
    "get_order_details": "GetOrderDetails",
    "get_product_details": "GetProductDetails",
    "get_user_details": "GetUserDetails",
    "list_all_product_types": "ListAllProductTypes",
    "modify_pending_order_address": "ModifyPendingOrderAddress",
    "modify_pending_order_items": "ModifyPendingOrderItems",
    "modify_pending_order_payment": "ModifyPendingOrderPayment",
    "modify_user_address": "ModifyUserAddress",
    "return_delivered_order_items": "ReturnDeliveredOrderItems",
    "think": "Think",
    "transfer_to_human_agents": "TransferToHumanAgents",
}

_ITEMS = {"type": "array", "items": {"type": "string"}}
_STRING = {"type": "string"}
_ADDRESS_PARAMS = [(key, _STRING) for key in ADDRESS_KEYS]
# Spec §2.A tables: parameter names in row order, with their JSON types and enums; every parameter is required.
PARAMETERS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "calculate": [("expression", _STRING)],
    "cancel_pending_order": [
        ("order_id", _STRING),
        ("reason", {"type": "string", "enum": ["no longer needed", "ordered by mistake"]}),
    ],
    "exchange_delivered_order_items": [
        ("order_id", _STRING),
        ("item_ids", _ITEMS),
        ("new_item_ids", _ITEMS),
        ("payment_method_id", _STRING),
    ],
    "find_user_id_by_email": [("email", _STRING)],
    "find_user_id_by_name_zip": [("first_name", _STRING), ("last_name", _STRING), ("zip", _STRING)],
    "get_order_details": [("order_id", _STRING)],
    "get_product_details": [("product_id", _STRING)],
    "get_user_details": [("user_id", _STRING)],
    "list_all_product_types": [],
    "modify_pending_order_address": [("order_id", _STRING), *_ADDRESS_PARAMS],
    "modify_pending_order_items": [
        ("order_id", _STRING),
        ("item_ids", _ITEMS),
        ("new_item_ids", _ITEMS),
        ("payment_method_id", _STRING),
    ],
    "modify_pending_order_payment": [("order_id", _STRING), ("payment_method_id", _STRING)],
    "modify_user_address": [("user_id", _STRING), *_ADDRESS_PARAMS],
    "return_delivered_order_items": [("order_id", _STRING), ("item_ids", _ITEMS), ("payment_method_id", _STRING)],
    "think": [("thought", _STRING)],
    "transfer_to_human_agents": [("summary", _STRING)],
}
WRITE_TOOLS = {
    "cancel_pending_order",
    "exchange_delivered_order_items",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
}


@pytest.fixture(scope="module")
def domain() -> Domain:
    return get_domain("retail")


@pytest.fixture(scope="module")
def base_db(domain, taubench_dir):
    return domain.load(taubench_dir / "retail")


@pytest.fixture
def env(domain, base_db) -> Environment:
    return domain.environment(base_db)


@pytest.fixture(scope="module")
def shared(domain, base_db):
    """One environment for the tests that only read or expect refusals; it must end the module untouched."""
    environment = domain.environment(base_db)
    yield environment
    assert environment.digest() == INITIAL_JSON_DIGEST, "a read or a refused call changed the shared database"


def call(env: Environment, name: str, **arguments: Any) -> StepResult:
    return env.step({"name": name, "arguments": arguments})


def ok(env: Environment, name: str, **arguments: Any) -> str:
    result = call(env, name, **arguments)
    assert not result.failed, result.observation
    return result.observation


def rejected(env: Environment, name: str, **arguments: Any) -> str:
    """The observation of a call that must fail, after checking that it changed nothing.

    Equal pickles imply an equal state_digest (pickle keeps every key, value and int/float type) and are
    stricter (key order counts too); they take a third of the time of two digests of this database.
    """
    before = pickle.dumps(env.db)
    result = env.step({"name": name, "arguments": arguments})
    assert result.failed and not result.terminated, result.observation
    assert pickle.dumps(env.db) == before, f"{name} failed with {result.observation!r} but changed the database"
    return result.observation


def order_of(env: Environment, order_id: str) -> dict[str, Any]:
    return env.db["orders"][order_id]


def method(env: Environment, user_id: str, method_id: str) -> dict[str, Any]:
    return env.db["users"][user_id]["payment_methods"][method_id]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- §1: environment contract -------------------------------------------------------------------


def test_initial_state_digests(base_db):
    assert taubench_hash(base_db) == INITIAL_TUPLE_HASH
    assert state_digest(base_db) == INITIAL_JSON_DIGEST


def test_tool_specs_match_the_spec_tables(domain):
    specs = domain.toolkit.specs()
    assert [spec.name for spec in specs] == list(PARAMETERS)
    for spec in specs:
        expected = PARAMETERS[spec.name]
        properties = spec.parameters["properties"]
        assert spec.parameters["type"] == "object"
        assert list(properties) == [name for name, _ in expected], spec.name
        assert spec.parameters["required"] == [name for name, _ in expected], spec.name
        for name, schema in expected:
            shape = {key: value for key, value in properties[name].items() if key != "description"}
            assert shape == schema, f"{spec.name}.{name}"
            assert properties[name]["description"].strip(), f"{spec.name}.{name} has no description"
        assert spec.description.strip()
        assert spec.writes == (spec.name in WRITE_TOOLS), spec.name
        assert spec.terminates == (spec.name == "transfer_to_human_agents"), spec.name


@pytest.mark.parametrize("name", list(CLASS_NAMES))
def test_unexpected_argument_names_the_tool_class(shared, name):
    arguments = {param: "x" for param, _ in PARAMETERS[name]}
    arguments["foo"] = "x"
    assert (
        rejected(shared, name, **arguments)
        == f"Error: {CLASS_NAMES[name]}.invoke() got an unexpected keyword argument 'foo'"
    )


def test_first_unexpected_argument_is_reported_before_missing_ones(shared):
    observation = rejected(shared, "cancel_pending_order", zeta="1", alpha="2")
    assert observation == "Error: CancelPendingOrder.invoke() got an unexpected keyword argument 'zeta'"
    observation = rejected(shared, "get_order_details", order_id=PENDING_GIFT, order="x", other="y")
    assert observation == "Error: GetOrderDetails.invoke() got an unexpected keyword argument 'order'"


def test_missing_argument_wording(shared):
    prefix = "Error: CancelPendingOrder.invoke() missing"
    assert (
        rejected(shared, "cancel_pending_order", order_id=PENDING_GIFT)
        == f"{prefix} 1 required positional argument: 'reason'"
    )
    assert (
        rejected(shared, "cancel_pending_order", reason="no longer needed")
        == f"{prefix} 1 required positional argument: 'order_id'"
    )
    assert (
        rejected(shared, "cancel_pending_order") == f"{prefix} 2 required positional arguments: 'order_id' and 'reason'"
    )
    assert (
        rejected(shared, "find_user_id_by_name_zip")
        == "Error: FindUserIdByNameZip.invoke() missing 3 required positional arguments: "
        "'first_name', 'last_name', and 'zip'"
    )
    assert (
        rejected(shared, "exchange_delivered_order_items", item_ids=[])
        == "Error: ExchangeDeliveredOrderItems.invoke() missing 3 required positional arguments: "
        "'order_id', 'new_item_ids', and 'payment_method_id'"
    )
    assert (
        rejected(shared, "modify_user_address", user_id="ethan_lopez_6291", city="Austin")
        == "Error: ModifyUserAddress.invoke() missing 5 required positional arguments: "
        "'address1', 'address2', 'state', 'country', and 'zip'"
    )


def test_unknown_action(shared):
    assert rejected(shared, "get_weather", city="Paris") == "Unknown action get_weather"
    assert rejected(shared, "Get_Order_Details", order_id=PENDING_GIFT) == "Unknown action Get_Order_Details"


def test_only_transfer_terminates(shared):
    result = call(shared, "transfer_to_human_agents", summary="The user wants a human.")
    assert (result.observation, result.failed, result.terminated) == ("Transfer successful", False, True)
    assert not call(shared, "think", thought="x").terminated
    assert not call(shared, "get_order_details", order_id=PENDING_GIFT).terminated


def test_think_returns_nothing_and_changes_nothing(shared):
    before = shared.digest()
    result = call(shared, "think", thought="Check the gift card balance first.")
    assert (result.observation, result.failed) == ("", False)
    assert shared.digest() == before


def test_transfer_changes_nothing(shared):
    before = shared.digest()
    ok(shared, "transfer_to_human_agents", summary="Refund dispute.")
    assert shared.digest() == before


# --- §2.A.1 calculate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "observation"),
    [
        ("2 + 2", "4.0"),
        ("1 / 3", "0.33"),
        ("(457.81 + 3203.76) * 2", "7323.14"),
        ("2.675", "2.67"),
        ("-0.001", "-0.0"),
        ("10 ** 16", "1e+16"),
        ("7 // 2", "3.0"),
        ("5. + .5", "5.5"),
        ("-(3)", "-3.0"),
        ("+4 - -1", "5.0"),
        ("57 + 12.34", "69.34"),
    ],
)
def test_calculate(shared, expression, observation):
    assert ok(shared, "calculate", expression=expression) == observation


@pytest.mark.parametrize(
    ("expression", "observation"),
    [
        ("1e5", "Error: invalid characters in expression"),
        ("1,000 + 1", "Error: invalid characters in expression"),
        ("10 % 3", "Error: invalid characters in expression"),
        ("1\t+ 1", "Error: invalid characters in expression"),
        ("1 +\n1", "Error: invalid characters in expression"),
        ("abs(1)", "Error: invalid characters in expression"),
        ("1/0", "Error: division by zero"),
        ("1.0/0", "Error: float division by zero"),
        ("1//0", "Error: integer division or modulo by zero"),
        ("2**10000", "Error: int too large to convert to float"),
        ("()", "Error: float() argument must be a string or a real number, not 'tuple'"),
        ("(1+2", "Error: '(' was never closed (<string>, line 1)"),
        ("", "Error: invalid syntax (<string>, line 0)"),
    ],
)
def test_calculate_errors(shared, expression, observation):
    assert rejected(shared, "calculate", expression=expression) == observation


# --- §2.A.2 cancel_pending_order -------------------------------------------------------------------


def test_cancel_rejections(shared):
    assert (
        rejected(shared, "cancel_pending_order", order_id="#W0000000", reason="no longer needed")
        == "Error: order not found"
    )
    assert (
        rejected(shared, "cancel_pending_order", order_id="W6779827", reason="no longer needed")
        == "Error: order not found"
    )
    for order_id in (PROCESSED, DELIVERED, CANCELLED):
        observation = rejected(shared, "cancel_pending_order", order_id=order_id, reason="no longer needed")
        assert observation == "Error: non-pending order cannot be cancelled"
    for reason in ("changed my mind", "No longer needed", "no longer needed ", ""):
        assert rejected(shared, "cancel_pending_order", order_id=PENDING_GIFT, reason=reason) == "Error: invalid reason"


def test_cancel_checks_run_in_spec_order(shared):
    assert rejected(shared, "cancel_pending_order", order_id="#W0000000", reason="bogus") == "Error: order not found"
    assert (
        rejected(shared, "cancel_pending_order", order_id=PROCESSED, reason="bogus")
        == "Error: non-pending order cannot be cancelled"
    )


def test_cancel_refuses_an_order_with_modified_items(env):
    ok(
        env,
        "modify_pending_order_items",
        order_id=PENDING_GIFT,
        item_ids=[],
        new_item_ids=[],
        payment_method_id=ETHAN_CARD,
    )
    assert order_of(env, PENDING_GIFT)["status"] == "pending (item modified)"
    observation = rejected(env, "cancel_pending_order", order_id=PENDING_GIFT, reason="no longer needed")
    assert observation == "Error: non-pending order cannot be cancelled"


def test_cancel_vector_r_v1(env, base_db):
    observation = ok(env, "cancel_pending_order", order_id=PENDING_GIFT, reason="no longer needed")
    expected = copy_state(base_db["orders"][PENDING_GIFT])
    expected["status"] = "cancelled"
    expected["cancel_reason"] = "no longer needed"
    expected["payment_history"].append(
        {"transaction_type": "refund", "amount": 4079.45, "payment_method_id": ETHAN_GIFT}
    )
    assert observation == json.dumps(expected)
    assert list(order_of(env, PENDING_GIFT))[-1] == "cancel_reason"
    balance = method(env, "ethan_lopez_6291", ETHAN_GIFT)["balance"]
    assert type(balance) is float and balance == 4128.45
    assert taubench_hash(env.db) == "1959acc05a67f04e9eef8448167b5bc731dc14e7243331f215647a42c38f7e28"


def test_cancel_refund_to_a_card_changes_no_balance(env, base_db):
    observation = ok(env, "cancel_pending_order", order_id=PENDING_CARD, reason="ordered by mistake")
    assert json.loads(observation)["payment_history"][-1] == {
        "transaction_type": "refund",
        "amount": 53.43,
        "payment_method_id": OMAR_CARD,
    }
    assert state_digest(env.db["users"]) == state_digest(base_db["users"])


def test_cancel_refunds_refunds_too_vector_r_v6(env):
    ok(env, "modify_pending_order_payment", order_id=PENDING_CARD, payment_method_id=OMAR_GIFT)
    observation = ok(env, "cancel_pending_order", order_id=PENDING_CARD, reason="ordered by mistake")
    history = json.loads(observation)["payment_history"]
    assert [(entry["transaction_type"], entry["payment_method_id"]) for entry in history] == [
        ("payment", OMAR_CARD),
        ("payment", OMAR_GIFT),
        ("refund", OMAR_CARD),
        ("refund", OMAR_CARD),
        ("refund", OMAR_GIFT),
        ("refund", OMAR_CARD),
    ]
    assert all(entry["amount"] == 53.43 for entry in history)
    # 91 - 53.43 = 37.57, then + 53.43 back: the net change is zero but the int became a float.
    balance = method(env, "omar_kim_3528", OMAR_GIFT)["balance"]
    assert type(balance) is float and repr(balance) == "91.0"
    assert taubench_hash(env.db) == "4f3bbb88b7d438454c8c38f8a7a328bc06010e5915d845a8b9ad6af24d0a1de6"


def test_cancel_credits_each_gift_card_entry_of_the_history(env):
    # After a payment change to a card the history holds gift payment, card payment, gift refund:
    # cancelling credits the gift card twice (+amount for the payment, +amount for the refund).
    ok(env, "modify_pending_order_payment", order_id=PENDING_GIFT, payment_method_id=ETHAN_CARD)
    assert method(env, "ethan_lopez_6291", ETHAN_GIFT)["balance"] == 4128.45
    ok(env, "cancel_pending_order", order_id=PENDING_GIFT, reason="no longer needed")
    assert method(env, "ethan_lopez_6291", ETHAN_GIFT)["balance"] == round(round(4128.45 + 4079.45, 2) + 4079.45, 2)
    assert len(order_of(env, PENDING_GIFT)["payment_history"]) == 6


# --- §2.A.3 exchange_delivered_order_items ---------------------------------------------------------


def exchange(
    order_id=DELIVERED, item_ids=(DELIVERED_DUMBBELL,), new_item_ids=("2444431651",), payment_method_id=EMMA_CARD
):
    return dict(
        order_id=order_id, item_ids=list(item_ids), new_item_ids=list(new_item_ids), payment_method_id=payment_method_id
    )


def test_exchange_rejections(shared):
    tool = "exchange_delivered_order_items"
    assert rejected(shared, tool, **exchange(order_id="#W0000000")) == "Error: order not found"
    for order_id in (PENDING_GIFT, PROCESSED, CANCELLED):
        assert rejected(shared, tool, **exchange(order_id=order_id)) == "Error: non-delivered order cannot be exchanged"
    assert rejected(shared, tool, **exchange(item_ids=["1234567890"])) == "Error: 1234567890 not found"
    # The order holds the helmet once, so asking for it twice fails on it, before the unknown id.
    observation = rejected(shared, tool, **exchange(item_ids=[HELMET, "111", HELMET], new_item_ids=["1", "2", "3"]))
    assert observation == "Error: 2206116040 not found"
    observation = rejected(shared, tool, **exchange(item_ids=[HELMET, DELIVERED_DUMBBELL], new_item_ids=["2444431651"]))
    assert observation == "Error: the number of items to be exchanged should match"
    # Another product's variant, an unavailable variant (the helmet itself is unavailable), a product id.
    for new_item_id in ("3709608322", "8140269513", "7233192239"):
        observation = rejected(shared, tool, **exchange(new_item_ids=[new_item_id]))
        assert observation == f"Error: new item {new_item_id} not found or available"
    observation = rejected(shared, tool, **exchange(item_ids=[HELMET], new_item_ids=[HELMET]))
    assert observation == "Error: new item 2206116040 not found or available"
    for payment_method_id in ("credit_card_0000000", ETHAN_CARD, "paypal"):
        assert (
            rejected(shared, tool, **exchange(payment_method_id=payment_method_id)) == "Error: payment method not found"
        )


def test_exchange_checks_run_in_spec_order(shared):
    tool = "exchange_delivered_order_items"
    # item count before length, length before new items, new items before the payment method.
    assert rejected(shared, tool, **exchange(item_ids=["9"], new_item_ids=[])) == "Error: 9 not found"
    observation = rejected(shared, tool, **exchange(new_item_ids=["nope", "nope2"], payment_method_id="x"))
    assert observation == "Error: the number of items to be exchanged should match"
    observation = rejected(
        shared,
        tool,
        **exchange(item_ids=[HELMET, DELIVERED_DUMBBELL], new_item_ids=["bad1", "bad2"], payment_method_id="x"),
    )
    assert observation == "Error: new item bad1 not found or available"
    observation = rejected(
        shared, tool, **exchange(item_ids=[HELMET, DELIVERED_DUMBBELL], new_item_ids=["3358616356", "bad2"])
    )
    assert observation == "Error: new item bad2 not found or available"


def test_exchange_vector_r_v3(env, base_db):
    arguments = exchange(
        item_ids=[DELIVERED_DUMBBELL, HELMET], new_item_ids=["2444431651", "3358616356"], payment_method_id=EMMA_GIFT
    )
    assert (
        rejected(env, "exchange_delivered_order_items", **arguments)
        == "Error: insufficient gift card balance to pay for the price difference"
    )
    observation = ok(env, "exchange_delivered_order_items", **dict(arguments, payment_method_id=EMMA_CARD))
    expected = copy_state(base_db["orders"][DELIVERED])
    expected["status"] = "exchange requested"
    # Sorted independently: the pairing 4422467033 -> 2444431651 is lost.
    expected["exchange_items"] = [HELMET, DELIVERED_DUMBBELL]
    expected["exchange_new_items"] = ["2444431651", "3358616356"]
    expected["exchange_payment_method_id"] = EMMA_CARD
    expected["exchange_price_difference"] = 38.79  # rounded; the raw sum is 38.79000000000002
    assert observation == json.dumps(expected)
    assert state_digest(env.db["users"]) == state_digest(base_db["users"])
    assert taubench_hash(env.db) == "3e42b99463ebc789a6804199f6248834c925eccc113f16ff4820cfa834f67cbf"


def test_exchange_sorts_old_and_new_items_independently(env):
    order = json.loads(
        ok(
            env,
            "exchange_delivered_order_items",
            **exchange(item_ids=[HELMET, DELIVERED_DUMBBELL], new_item_ids=["3358616356", "2444431651"]),
        )
    )
    assert order["exchange_items"] == [HELMET, DELIVERED_DUMBBELL]
    assert order["exchange_new_items"] == ["2444431651", "3358616356"]


def test_exchange_moves_no_money_even_with_a_gift_card(env, base_db):
    # 483.47 -> 462.84: the customer would get 20.63 back, yet the gift card keeps its int balance.
    observation = ok(
        env, "exchange_delivered_order_items", **exchange(new_item_ids=["6171242004"], payment_method_id=EMMA_GIFT)
    )
    order = json.loads(observation)
    assert order["exchange_price_difference"] == -20.63
    assert order["payment_history"] == base_db["orders"][DELIVERED]["payment_history"]
    assert order["items"] == base_db["orders"][DELIVERED]["items"]
    assert repr(method(env, "emma_santos_9753", EMMA_GIFT)["balance"]) == "36"


def test_exchange_for_the_same_item_and_with_empty_lists(env, domain, base_db):
    order = json.loads(ok(env, "exchange_delivered_order_items", **exchange(new_item_ids=[DELIVERED_DUMBBELL])))
    assert order["exchange_items"] == order["exchange_new_items"] == [DELIVERED_DUMBBELL]
    assert repr(order["exchange_price_difference"]) == "0.0"
    # Only once per delivered order: the status is no longer "delivered".
    observation = rejected(env, "exchange_delivered_order_items", **exchange())
    assert observation == "Error: non-delivered order cannot be exchanged"

    fresh = domain.environment(base_db)
    order = json.loads(
        ok(
            fresh,
            "exchange_delivered_order_items",
            **exchange(item_ids=[], new_item_ids=[], payment_method_id=EMMA_GIFT),
        )
    )
    assert order["status"] == "exchange requested"
    assert order["exchange_items"] == order["exchange_new_items"] == []
    assert repr(order["exchange_price_difference"]) == "0"
    assert list(order)[-5:] == [
        "payment_history",
        "exchange_items",
        "exchange_new_items",
        "exchange_payment_method_id",
        "exchange_price_difference",
    ]


def test_exchange_accepts_duplicates_the_order_holds(shared):
    # #W1840144 holds item 8590708195 twice; 8560156827 is its product.
    order_id, item = "#W1840144", "8590708195"
    observation = rejected(
        shared,
        "exchange_delivered_order_items",
        **exchange(order_id=order_id, item_ids=[item] * 3, new_item_ids=[item] * 3),
    )
    assert observation == f"Error: {item} not found"
    observation = rejected(
        shared,
        "exchange_delivered_order_items",
        **exchange(order_id=order_id, item_ids=[item, item], new_item_ids=["x", "y"]),
    )
    assert observation == "Error: new item x not found or available"


# --- §2.A.4 / 2.A.5 user lookups ---------------------------------------------------------------------


def test_find_user_id_by_email(shared):
    assert ok(shared, "find_user_id_by_email", email="noah.brown7922@example.com") == "noah_brown_6181"
    assert ok(shared, "find_user_id_by_email", email="Noah.Brown7922@EXAMPLE.com") == "noah_brown_6181"
    assert rejected(shared, "find_user_id_by_email", email="noah.brown7922@example.co") == "Error: user not found"
    assert rejected(shared, "find_user_id_by_email", email=" noah.brown7922@example.com") == "Error: user not found"


def test_find_user_id_by_email_returns_the_first_match(env):
    users = env.db["users"]
    users["ethan_lopez_6291"]["email"] = "NOAH.BROWN7922@example.com"
    first = next(user_id for user_id in users if user_id in ("noah_brown_6181", "ethan_lopez_6291"))
    assert ok(env, "find_user_id_by_email", email="noah.brown7922@example.com") == first


def test_find_user_id_by_name_zip(shared):
    assert (
        ok(shared, "find_user_id_by_name_zip", first_name="Noah", last_name="Brown", zip="80279") == "noah_brown_6181"
    )
    assert (
        ok(shared, "find_user_id_by_name_zip", first_name="NOAH", last_name="brown", zip="80279") == "noah_brown_6181"
    )
    for first, last, zip_code in (
        ("Noah", "Brown", "80279 "),
        ("Noah", "Brown", "80278"),
        ("Noa", "Brown", "80279"),
        ("Noah", "Browne", "80279"),
    ):
        assert (
            rejected(shared, "find_user_id_by_name_zip", first_name=first, last_name=last, zip=zip_code)
            == "Error: user not found"
        )


def test_find_user_id_by_name_zip_uses_the_current_address(env):
    ok(env, "modify_user_address", user_id="noah_brown_6181", **ADDRESS)
    assert (
        rejected(env, "find_user_id_by_name_zip", first_name="Noah", last_name="Brown", zip="80279")
        == "Error: user not found"
    )
    assert ok(env, "find_user_id_by_name_zip", first_name="Noah", last_name="Brown", zip="78701") == "noah_brown_6181"


def test_find_user_id_by_name_zip_returns_the_first_match(env):
    users = env.db["users"]
    twin = users["ethan_lopez_6291"]
    twin["name"] = {"first_name": "noah", "last_name": "BROWN"}
    twin["address"] = dict(twin["address"], zip="80279")
    first = next(user_id for user_id in users if user_id in ("noah_brown_6181", "ethan_lopez_6291"))
    assert ok(env, "find_user_id_by_name_zip", first_name="Noah", last_name="Brown", zip="80279") == first


# --- §2.A.6 - 2.A.9 read tools ----------------------------------------------------------------------


def test_get_order_details(shared, base_db):
    observation = ok(shared, "get_order_details", order_id=PENDING_GIFT)
    assert observation == json.dumps(base_db["orders"][PENDING_GIFT])
    assert sha256(observation) == "f34eff0b0aa5edb87cb78de27e663ca09e8a7e2b52e8d39c8874d8dc4546e395"
    for order_id in ("W6779827", "#w6779827", "#W0000000", ""):
        assert rejected(shared, "get_order_details", order_id=order_id) == "Error: order not found"


def test_get_product_details(shared, base_db):
    observation = ok(shared, "get_product_details", product_id="7233192239")
    assert observation == json.dumps(base_db["products"]["7233192239"])
    assert list(json.loads(observation)["variants"]) == list(base_db["products"]["7233192239"]["variants"])
    # An item id is not a product id.
    assert rejected(shared, "get_product_details", product_id=DUMBBELL) == "Error: product not found"


def test_get_user_details(shared, base_db):
    assert ok(shared, "get_user_details", user_id="noah_brown_6181") == json.dumps(base_db["users"]["noah_brown_6181"])
    assert rejected(shared, "get_user_details", user_id="Noah_Brown_6181") == "Error: user not found"


def test_get_details_escape_non_ascii_like_json_dumps(env):
    env.db["users"]["noah_brown_6181"]["address"]["city"] = "Zürich"
    assert '"city": "Z\\u00fcrich"' in ok(env, "get_user_details", user_id="noah_brown_6181")


def test_list_all_product_types(shared, base_db):
    observation = ok(shared, "list_all_product_types")
    assert sha256(observation) == "6765f563339e732cb768f71d24e5a3fd015db09627684bb76ee18f68b335cb55"
    assert observation.startswith('{"Action Camera": "3377618313", "Air Purifier": "3821016478", ')
    names = list(json.loads(observation))
    assert len(names) == 50 and names == sorted(names)
    assert names.index("LED Light Bulb") < names.index("Laptop")


def test_list_all_product_types_later_duplicate_name_wins(env):
    products = env.db["products"]
    first_id, later_id = list(products)[0], list(products)[-1]
    products[later_id]["name"] = products[first_id]["name"]
    listing = json.loads(ok(env, "list_all_product_types"))
    assert listing[products[first_id]["name"]] == later_id
    assert len(listing) == 49


# --- §2.A.10 modify_pending_order_address -----------------------------------------------------------


def test_modify_order_address_rejections(env):
    tool = "modify_pending_order_address"
    assert rejected(env, tool, order_id="#W0000000", **ADDRESS) == "Error: order not found"
    for order_id in (PROCESSED, DELIVERED, CANCELLED):
        assert rejected(env, tool, order_id=order_id, **ADDRESS) == "Error: non-pending order cannot be modified"
    ok(
        env,
        "modify_pending_order_items",
        order_id=PENDING_GIFT,
        item_ids=[],
        new_item_ids=[],
        payment_method_id=ETHAN_CARD,
    )
    assert rejected(env, tool, order_id=PENDING_GIFT, **ADDRESS) == "Error: non-pending order cannot be modified"


def test_modify_order_address_vector_r_v7(env, base_db):
    observation = ok(env, "modify_pending_order_address", order_id=PENDING_GIFT, **ADDRESS)
    expected = copy_state(base_db["orders"][PENDING_GIFT])
    expected["address"] = dict(ADDRESS)
    assert observation == json.dumps(expected)
    assert list(order_of(env, PENDING_GIFT)["address"]) == ADDRESS_KEYS
    assert list(order_of(env, PENDING_GIFT))[2] == "address"  # replaced in place, not moved to the end
    assert taubench_hash(env.db) == "c62e4d24169eac729c52dfed78cc5801e5aff23839e1d6386ad4fa976f9a444a"


def test_modify_order_address_can_repeat_and_takes_any_strings(env):
    ok(env, "modify_pending_order_address", order_id=PENDING_GIFT, **ADDRESS)
    blank = dict.fromkeys(ADDRESS_KEYS, "")
    ok(env, "modify_pending_order_address", order_id=PENDING_GIFT, **blank)
    assert order_of(env, PENDING_GIFT)["address"] == blank
    assert order_of(env, PENDING_GIFT)["status"] == "pending"


# --- §2.A.11 modify_pending_order_items ----------------------------------------------------------------


def modify(order_id=PENDING_GIFT, item_ids=(DUMBBELL,), new_item_ids=("2444431651",), payment_method_id=ETHAN_CARD):
    return dict(
        order_id=order_id, item_ids=list(item_ids), new_item_ids=list(new_item_ids), payment_method_id=payment_method_id
    )


def test_modify_items_rejections(shared):
    tool = "modify_pending_order_items"
    assert rejected(shared, tool, **modify(order_id="#W0000000")) == "Error: order not found"
    for order_id in (PROCESSED, DELIVERED, CANCELLED):
        assert rejected(shared, tool, **modify(order_id=order_id)) == "Error: non-pending order cannot be modified"
    assert rejected(shared, tool, **modify(item_ids=["1234"])) == "Error: 1234 not found"
    assert (
        rejected(shared, tool, **modify(item_ids=[DUMBBELL, DUMBBELL], new_item_ids=["a", "b"]))
        == f"Error: {DUMBBELL} not found"
    )
    observation = rejected(shared, tool, **modify(item_ids=[DUMBBELL, ESPRESSO]))
    assert observation == "Error: the number of items to be exchanged should match"
    # Another product's variant, an unavailable variant of the same product.
    for new_item_id in ("3709608322", "8140269513"):
        assert (
            rejected(shared, tool, **modify(new_item_ids=[new_item_id]))
            == f"Error: new item {new_item_id} not found or available"
        )
    assert rejected(shared, tool, **modify(payment_method_id="gift_card_3749819")) == "Error: payment method not found"
    # 457.81 -> 534.84 costs 77.03 more, the gift card holds 49.
    observation = rejected(shared, tool, **modify(payment_method_id=ETHAN_GIFT))
    assert observation == "Error: insufficient gift card balance to pay for the new item"


def test_modify_items_checks_run_in_spec_order(shared):
    tool = "modify_pending_order_items"
    assert (
        rejected(shared, tool, **modify(order_id=PROCESSED, item_ids=["x"]))
        == "Error: non-pending order cannot be modified"
    )
    assert rejected(shared, tool, **modify(item_ids=["x"], new_item_ids=[])) == "Error: x not found"
    observation = rejected(shared, tool, **modify(new_item_ids=["bad"], payment_method_id="bad"))
    assert observation == "Error: new item bad not found or available"


def test_modify_items_only_once(env):
    ok(env, "modify_pending_order_items", **modify(payment_method_id=ETHAN_CARD))
    observation = rejected(
        env, "modify_pending_order_items", **modify(item_ids=[ESPRESSO], new_item_ids=["3709608322"])
    )
    assert observation == "Error: non-pending order cannot be modified"
    observation = rejected(env, "modify_pending_order_payment", order_id=PENDING_GIFT, payment_method_id=ETHAN_CARD)
    assert observation == "Error: non-pending order cannot be modified"


def test_modify_items_vector_r_v2(env, base_db):
    arguments = modify(
        item_ids=[DUMBBELL, ESPRESSO], new_item_ids=["2444431651", "3709608322"], payment_method_id=ETHAN_GIFT
    )
    observation = ok(env, "modify_pending_order_items", **arguments)
    variants = {
        "2444431651": base_db["products"]["7233192239"]["variants"]["2444431651"],
        "3709608322": base_db["products"]["4354588079"]["variants"]["3709608322"],
    }
    expected = copy_state(base_db["orders"][PENDING_GIFT])
    for item, new_item_id in zip(expected["items"][:2], variants, strict=True):
        item.update(item_id=new_item_id, price=variants[new_item_id]["price"], options=variants[new_item_id]["options"])
    expected["status"] = "pending (item modified)"
    expected["payment_history"].append(
        {"transaction_type": "refund", "amount": 382.03000000000037, "payment_method_id": ETHAN_GIFT}
    )
    assert observation == json.dumps(expected)
    assert '"amount": 382.03000000000037' in observation
    assert method(env, "ethan_lopez_6291", ETHAN_GIFT)["balance"] == 431.03
    assert taubench_hash(env.db) == "3f79fef8dc3ac9f38bcb7bc116d6900db06e38858261835f98bb7f4c6d3cb1f8"
    observation = rejected(env, "cancel_pending_order", order_id=PENDING_GIFT, reason="no longer needed")
    assert observation == "Error: non-pending order cannot be cancelled"


def test_modify_items_payment_with_a_gift_card_is_unrounded(env):
    # 236.95 -> 238.64: the difference is 1.6899999999999977 and is stored as such.
    order = json.loads(
        ok(
            env,
            "modify_pending_order_items",
            **modify(item_ids=[COFFEE_MAKER], new_item_ids=["3020722515"], payment_method_id=ETHAN_GIFT),
        )
    )
    assert order["payment_history"][-1] == {
        "transaction_type": "payment",
        "amount": 238.64 - 236.95,
        "payment_method_id": ETHAN_GIFT,
    }
    assert repr(order["payment_history"][-1]["amount"]) == "1.6899999999999977"
    assert method(env, "ethan_lopez_6291", ETHAN_GIFT)["balance"] == 47.31


def test_modify_items_pays_with_the_named_method_whatever_paid_the_order(env, base_db):
    order = json.loads(ok(env, "modify_pending_order_items", **modify(payment_method_id=ETHAN_CARD)))
    assert order["payment_history"][-1] == {
        "transaction_type": "payment",
        "amount": 534.84 - 457.81,
        "payment_method_id": ETHAN_CARD,
    }
    assert state_digest(env.db["users"]) == state_digest(base_db["users"])
    item = order["items"][0]
    assert (item["name"], item["product_id"], item["item_id"], item["price"]) == (
        "Dumbbell Set",
        "7233192239",
        "2444431651",
        534.84,
    )
    assert item["options"] == base_db["products"]["7233192239"]["variants"]["2444431651"]["options"]


def test_modify_items_same_item_and_empty_lists_give_a_zero_refund(env, domain, base_db):
    order = json.loads(
        ok(env, "modify_pending_order_items", **modify(new_item_ids=[DUMBBELL], payment_method_id=ETHAN_GIFT))
    )
    assert order["payment_history"][-1] == {
        "transaction_type": "refund",
        "amount": 0.0,
        "payment_method_id": ETHAN_GIFT,
    }
    assert repr(order["payment_history"][-1]["amount"]) == "0.0"
    assert repr(method(env, "ethan_lopez_6291", ETHAN_GIFT)["balance"]) == "49.0"

    fresh = domain.environment(base_db)
    order = json.loads(
        ok(fresh, "modify_pending_order_items", **modify(item_ids=[], new_item_ids=[], payment_method_id=ETHAN_GIFT))
    )
    assert order["payment_history"][-1] == {"transaction_type": "refund", "amount": 0, "payment_method_id": ETHAN_GIFT}
    assert repr(order["payment_history"][-1]["amount"]) == "0"
    assert order["status"] == "pending (item modified)"
    assert order["items"] == base_db["orders"][PENDING_GIFT]["items"]
    assert repr(method(fresh, "ethan_lopez_6291", ETHAN_GIFT)["balance"]) == "49"


def test_modify_items_lookups_see_earlier_swaps(env):
    # #W9318778 ends with two Air Purifiers A=5669664287 and B=3076708684. [A, B] -> [B, C] gives [C, B]:
    # A becomes B, then the second lookup finds that first B again and turns it into C.
    a, b, c = "5669664287", "3076708684", "8302289002"
    order = json.loads(
        ok(
            env,
            "modify_pending_order_items",
            **modify(
                order_id="#W9318778", item_ids=[a, b], new_item_ids=[b, c], payment_method_id="credit_card_7862034"
            ),
        )
    )
    assert [item["item_id"] for item in order["items"][3:]] == [c, b]
    assert [item["price"] for item in order["items"][3:]] == [547.55, 535.97]
    difference = (535.97 - 543.68) + (547.55 - 535.97)
    assert order["payment_history"][-1] == {
        "transaction_type": "payment",
        "amount": abs(difference),
        "payment_method_id": "credit_card_7862034",
    }


def test_modify_items_changes_duplicates_one_by_one(env):
    # #W7208030 holds the (now unavailable) garden hose 5753502325 twice.
    order = json.loads(
        ok(
            env,
            "modify_pending_order_items",
            **modify(
                order_id="#W7208030",
                item_ids=["5753502325"] * 2,
                new_item_ids=["8481719475", "9829827210"],
                payment_method_id="credit_card_5809636",
            ),
        )
    )
    assert [(item["item_id"], item["price"]) for item in order["items"]] == [
        ("8481719475", 98.61),
        ("9829827210", 90.43),
    ]
    assert order["payment_history"][-1] == {
        "transaction_type": "refund",
        "amount": abs((98.61 - 96.35) + (90.43 - 96.35)),
        "payment_method_id": "credit_card_5809636",
    }


# --- §2.A.12 modify_pending_order_payment ---------------------------------------------------------------


def test_modify_payment_rejections(shared):
    tool = "modify_pending_order_payment"
    assert rejected(shared, tool, order_id="#W0000000", payment_method_id=OMAR_GIFT) == "Error: order not found"
    for order_id in (PROCESSED, DELIVERED, CANCELLED):
        assert (
            rejected(shared, tool, order_id=order_id, payment_method_id=EMMA_GIFT)
            == "Error: non-pending order cannot be modified"
        )
    assert (
        rejected(shared, tool, order_id=PENDING_CARD, payment_method_id=ETHAN_GIFT) == "Error: payment method not found"
    )
    observation = rejected(shared, tool, order_id=PENDING_CARD, payment_method_id=OMAR_CARD)
    assert observation == "Error: the new payment method should be different from the current one"
    # #W6979932: 1291.82 paid with paypal; the user's gift card holds 96.
    observation = rejected(shared, tool, order_id="#W6979932", payment_method_id="gift_card_5979071")
    assert observation == "Error: insufficient gift card balance to pay for the order"


def test_modify_payment_needs_exactly_one_payment(env):
    tool = "modify_pending_order_payment"
    env.db["orders"][PENDING_CARD]["payment_history"][0]["transaction_type"] = "refund"
    observation = rejected(env, tool, order_id=PENDING_CARD, payment_method_id=OMAR_GIFT)
    assert observation == "Error: there should be exactly one payment for a pending order"
    env.db["orders"][PENDING_CARD]["payment_history"] = []
    assert rejected(env, tool, order_id=PENDING_CARD, payment_method_id=OMAR_GIFT) == "Error: list index out of range"


def test_modify_payment_vector_r_v5(env, base_db):
    observation = ok(env, "modify_pending_order_payment", order_id=PENDING_CARD, payment_method_id=OMAR_GIFT)
    expected = copy_state(base_db["orders"][PENDING_CARD])
    expected["payment_history"] += [
        {"transaction_type": "payment", "amount": 53.43, "payment_method_id": OMAR_GIFT},
        {"transaction_type": "refund", "amount": 53.43, "payment_method_id": OMAR_CARD},
    ]
    assert observation == json.dumps(expected)
    assert method(env, "omar_kim_3528", OMAR_GIFT)["balance"] == 37.57
    assert taubench_hash(env.db) == "15ac57b459d4f64499adc41d3424b82ee1ee34db9673be23d6aa2a89e35af3aa"
    # A second change always fails: the history now holds three entries. The method check comes first.
    observation = rejected(env, "modify_pending_order_payment", order_id=PENDING_CARD, payment_method_id=OMAR_CARD)
    assert observation == "Error: there should be exactly one payment for a pending order"
    observation = rejected(
        env, "modify_pending_order_payment", order_id=PENDING_CARD, payment_method_id="paypal_0000000"
    )
    assert observation == "Error: payment method not found"
    # Address changes remain possible.
    ok(env, "modify_pending_order_address", order_id=PENDING_CARD, **ADDRESS)


def test_modify_payment_away_from_a_gift_card_credits_it(env):
    order = json.loads(ok(env, "modify_pending_order_payment", order_id=PENDING_GIFT, payment_method_id=ETHAN_CARD))
    assert order["status"] == "pending"
    assert order["payment_history"][1:] == [
        {"transaction_type": "payment", "amount": 4079.45, "payment_method_id": ETHAN_CARD},
        {"transaction_type": "refund", "amount": 4079.45, "payment_method_id": ETHAN_GIFT},
    ]
    assert method(env, "ethan_lopez_6291", ETHAN_GIFT)["balance"] == 4128.45
    assert method(env, "ethan_lopez_6291", ETHAN_CARD) == {
        "source": "credit_card",
        "brand": "mastercard",
        "last_four": "1020",
        "id": ETHAN_CARD,
    }


# --- §2.A.13 modify_user_address ---------------------------------------------------------------------


def test_modify_user_address(env, base_db):
    assert rejected(env, "modify_user_address", user_id="nobody_0000", **ADDRESS) == "Error: user not found"
    observation = ok(env, "modify_user_address", user_id="ethan_lopez_6291", **ADDRESS)
    expected = copy_state(base_db["users"]["ethan_lopez_6291"])
    expected["address"] = dict(ADDRESS)
    assert observation == json.dumps(expected)
    assert list(env.db["users"]["ethan_lopez_6291"]["address"]) == ADDRESS_KEYS
    assert state_digest(env.db["orders"]) == state_digest(base_db["orders"])
    assert taubench_hash(env.db) == "d896409a40183b214cfadb2b1ee5c7e4d67cee96b301fcf9cc8a6756216780bf"


# --- §2.A.14 return_delivered_order_items ---------------------------------------------------------------


def test_return_rejections(shared):
    tool = "return_delivered_order_items"
    assert (
        rejected(shared, tool, order_id="#W0000000", item_ids=[HELMET], payment_method_id=EMMA_CARD)
        == "Error: order not found"
    )
    for order_id in (PENDING_GIFT, PROCESSED, CANCELLED):
        observation = rejected(shared, tool, order_id=order_id, item_ids=[], payment_method_id=EMMA_CARD)
        assert observation == "Error: non-delivered order cannot be returned"
    assert (
        rejected(shared, tool, order_id=DELIVERED, item_ids=[HELMET], payment_method_id=ETHAN_GIFT)
        == "Error: payment method not found"
    )
    # #W4250821 was paid with credit_card_8041020; the user's other card and paypal are refused.
    for payment_method_id in ("credit_card_6547060", "paypal_7425862"):
        observation = rejected(
            shared, tool, order_id="#W4250821", item_ids=["5222576926"], payment_method_id=payment_method_id
        )
        assert observation == "Error: payment method should be either the original payment method or a gift card"
    for item_ids in (["1234567890"], [HELMET, HELMET], [HELMET, "x"]):
        observation = rejected(shared, tool, order_id=DELIVERED, item_ids=item_ids, payment_method_id=EMMA_CARD)
        assert observation == "Error: some item not found"


def test_return_checks_payment_before_items(shared):
    tool = "return_delivered_order_items"
    assert (
        rejected(shared, tool, order_id=DELIVERED, item_ids=["bad"], payment_method_id="bad")
        == "Error: payment method not found"
    )
    observation = rejected(shared, tool, order_id="#W4250821", item_ids=["bad"], payment_method_id="paypal_7425862")
    assert observation == "Error: payment method should be either the original payment method or a gift card"


def test_return_vector_r_v4(env, base_db):
    observation = ok(
        env,
        "return_delivered_order_items",
        order_id=DELIVERED,
        item_ids=[DELIVERED_DUMBBELL, HELMET],
        payment_method_id=EMMA_GIFT,
    )
    expected = copy_state(base_db["orders"][DELIVERED])
    expected["status"] = "return requested"
    expected["return_items"] = [HELMET, DELIVERED_DUMBBELL]
    expected["return_payment_method_id"] = EMMA_GIFT
    assert observation == json.dumps(expected)
    assert state_digest(env.db["users"]) == state_digest(base_db["users"])
    assert taubench_hash(env.db) == "cfa0aa7bbdfc42316ba369f06a3f54f4570f7e0b3720d35a40437ddb65c0b036"
    # Only once: neither a second return nor an exchange is possible.
    observation = rejected(
        env, "return_delivered_order_items", order_id=DELIVERED, item_ids=[], payment_method_id=EMMA_CARD
    )
    assert observation == "Error: non-delivered order cannot be returned"
    assert (
        rejected(env, "exchange_delivered_order_items", **exchange())
        == "Error: non-delivered order cannot be exchanged"
    )


def test_return_to_the_original_method_with_duplicates_or_nothing(env, domain, base_db):
    order = json.loads(
        ok(
            env,
            "return_delivered_order_items",
            order_id="#W1840144",
            item_ids=["8590708195", "6534134392", "8590708195"],
            payment_method_id="paypal_2306935",
        )
    )
    assert order["return_items"] == ["6534134392", "8590708195", "8590708195"]
    assert order["payment_history"] == base_db["orders"]["#W1840144"]["payment_history"]

    fresh = domain.environment(base_db)
    order = json.loads(
        ok(fresh, "return_delivered_order_items", order_id=DELIVERED, item_ids=[], payment_method_id=EMMA_CARD)
    )
    assert (order["status"], order["return_items"], order["return_payment_method_id"]) == (
        "return requested",
        [],
        EMMA_CARD,
    )


# --- gift card balance checks: a balance equal to the amount is enough ------------------------------


@pytest.mark.parametrize(
    ("user_id", "gift_card", "tool", "arguments", "amount", "short_of_it", "error"),
    [
        # The exchange compares with the rounded difference 38.79 (raw: 38.79000000000002).
        (
            "emma_santos_9753",
            EMMA_GIFT,
            "exchange_delivered_order_items",
            exchange(
                item_ids=[DELIVERED_DUMBBELL, HELMET],
                new_item_ids=["2444431651", "3358616356"],
                payment_method_id=EMMA_GIFT,
            ),
            38.79,
            38.78,
            "Error: insufficient gift card balance to pay for the price difference",
        ),
        # Modify-items compares with the raw difference 1.6899999999999977.
        (
            "ethan_lopez_6291",
            ETHAN_GIFT,
            "modify_pending_order_items",
            modify(item_ids=[COFFEE_MAKER], new_item_ids=["3020722515"], payment_method_id=ETHAN_GIFT),
            238.64 - 236.95,
            1.689,
            "Error: insufficient gift card balance to pay for the new item",
        ),
        (
            "omar_kim_3528",
            OMAR_GIFT,
            "modify_pending_order_payment",
            {"order_id": PENDING_CARD, "payment_method_id": OMAR_GIFT},
            53.43,
            53.42,
            "Error: insufficient gift card balance to pay for the order",
        ),
    ],
)
def test_gift_card_balance_boundary(domain, base_db, user_id, gift_card, tool, arguments, amount, short_of_it, error):
    short = domain.environment(base_db)
    method(short, user_id, gift_card)["balance"] = short_of_it
    assert rejected(short, tool, **arguments) == error

    exact = domain.environment(base_db)
    method(exact, user_id, gift_card)["balance"] = amount
    ok(exact, tool, **arguments)
    expected_balance = amount if tool == "exchange_delivered_order_items" else 0.0
    assert repr(method(exact, user_id, gift_card)["balance"]) == repr(expected_balance)


# --- §5: ground-truth replays ------------------------------------------------------------------------------


def test_test_task_0_exchange_hash(env):
    # Retail test task 0's only write action (the test split is not shipped with the reference data).
    arguments = exchange(
        order_id="#W2378156",
        item_ids=["1151293680", "4983901480"],
        new_item_ids=["7706410293", "7747408585"],
        payment_method_id="credit_card_9513926",
    )
    ok(env, "exchange_delivered_order_items", **arguments)
    assert taubench_hash(env.db) == "5ed21c65cf9e8d0c20ad0210721146bb6abad19bedce7c2e08472311dabbeec8"


def _replay_database(base: dict[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    """A database for one task replay that copies only the records the task's actions can write.

    Copying the whole database per task costs ~20 ms, 10 s for the 520 tasks; the records a retail write
    reaches are the named orders and users and the owners of those orders. Everything else is shared with
    `base`, and the caller checks afterwards that `base` is unchanged, so a tool writing anywhere else
    would fail the test rather than go unnoticed.
    """
    order_ids = {action["kwargs"].get("order_id") for action in actions} & base["orders"].keys()
    user_ids = {action["kwargs"].get("user_id") for action in actions} | {
        base["orders"][order_id]["user_id"] for order_id in order_ids
    }
    orders = dict(base["orders"])
    users = dict(base["users"])
    orders.update({order_id: copy_state(base["orders"][order_id]) for order_id in order_ids})
    users.update({user_id: copy_state(base["users"][user_id]) for user_id in user_ids & base["users"].keys()})
    return {"orders": orders, "products": base["products"], "users": users}


def _failed_writes(domain: Domain, base_db, tasks: list[dict[str, Any]]) -> dict[int, list[tuple[str, str]]]:
    failures: dict[int, list[tuple[str, str]]] = {}
    for index, task in enumerate(tasks):
        env = Environment(domain=domain, db=_replay_database(base_db, task["actions"]))
        for action in task["actions"]:
            result = env.step(action)
            if action["name"] in WRITE_TOOLS and result.failed:
                failures.setdefault(index, []).append((action["name"], result.observation))
    return failures


def test_train_tasks_fail_exactly_on_low_gift_card_balances(domain, base_db, taubench_tasks):
    failures = _failed_writes(domain, base_db, taubench_tasks("retail", "train"))
    assert state_digest(base_db) == INITIAL_JSON_DIGEST
    assert len(failures) == 19, failures
    observations = [observation for failed in failures.values() for _, observation in failed]
    assert all(
        observation.startswith("Error: insufficient gift card balance to pay for ") for observation in observations
    ), observations


def test_dev_tasks_replay_without_errors(domain, base_db, taubench_tasks):
    tasks = taubench_tasks("retail", "dev")
    assert _failed_writes(domain, base_db, tasks) == {}
    assert state_digest(base_db) == INITIAL_JSON_DIGEST


def test_replay_database_gives_the_same_state_as_a_full_copy(domain, base_db, taubench_tasks):
    # The shortcut above must not change what a replay computes: compare with full copies on a few tasks.
    for task in taubench_tasks("retail", "train")[:6]:
        full = domain.environment(base_db)
        scoped = Environment(domain=domain, db=_replay_database(base_db, task["actions"]))
        for action in task["actions"]:
            assert full.step(action).observation == scoped.step(action).observation
        assert full.digest() == scoped.digest()
