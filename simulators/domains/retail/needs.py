"""What each retail write needs: the user's order in the right state, the products an item swap picks from,
and the policy sections and rules that govern it (see `apigen_mt.simulators.needs`)."""

from __future__ import annotations

import random

from apigen_mt.simulators.needs import SampledRecord, WriteNeed, anyone
from apigen_mt.simulators.state import JSON


def _pending(db: JSON, user: JSON, order: JSON) -> bool:
    return order["status"] == "pending"


def _delivered(db: JSON, user: JSON, order: JSON) -> bool:
    return order["status"] == "delivered"


def _has_other_variant(db: JSON, order: JSON) -> bool:
    """Some item of the order has another available variant of its product to swap to."""
    return any(
        variant_id != item["item_id"] and variant["available"]
        for item in order["items"]
        for variant_id, variant in db["products"][item["product_id"]]["variants"].items()
    )


def _swappable_pending(db: JSON, user: JSON, order: JSON) -> bool:
    return _pending(db, user, order) and _has_other_variant(db, order)


def _swappable_delivered(db: JSON, user: JSON, order: JSON) -> bool:
    return _delivered(db, user, order) and _has_other_variant(db, order)


def _repayable(db: JSON, user: JSON, order: JSON) -> bool:
    """Pending, paid once, and the user holds another method that can pay the whole amount."""
    history = order["payment_history"]
    if not _pending(db, user, order) or len(history) != 1 or history[0]["transaction_type"] != "payment":
        return False
    paid = history[0]
    return any(
        method_id != paid["payment_method_id"]
        and (method["source"] != "gift_card" or method["balance"] >= paid["amount"])
        for method_id, method in user["payment_methods"].items()
    )


def _ordered_products(db: JSON, order: JSON, rng: random.Random) -> list[SampledRecord]:
    product_ids = dict.fromkeys(item["product_id"] for item in order["items"])
    return [("products", product_id, db["products"][product_id]) for product_id in product_ids]


_CHANGE_ORDER = "Changing a pending order"
_ORDER_WRITE_RULES = ("R6", "R17")  # look the order up first; no write on processed or cancelled orders

WRITE_NEEDS: dict[str, WriteNeed] = {
    "cancel_pending_order": WriteNeed(
        "orders", _pending, ("Cancelling a pending order",), (*_ORDER_WRITE_RULES, "R7", "R8", "R11")
    ),
    "modify_pending_order_address": WriteNeed("orders", _pending, (_CHANGE_ORDER,), (*_ORDER_WRITE_RULES, "R9", "R11")),
    "modify_pending_order_payment": WriteNeed(
        "orders", _repayable, (_CHANGE_ORDER,), (*_ORDER_WRITE_RULES, "R9", "R10", "R11")
    ),
    "modify_pending_order_items": WriteNeed(
        "orders",
        _swappable_pending,
        (_CHANGE_ORDER,),
        (*_ORDER_WRITE_RULES, "R9", "R11", "R12", "R13"),
        _ordered_products,
    ),
    "return_delivered_order_items": WriteNeed(
        "orders", _delivered, ("Returning items of a delivered order",), (*_ORDER_WRITE_RULES, "R14", "R15", "R16")
    ),
    "exchange_delivered_order_items": WriteNeed(
        "orders",
        _swappable_delivered,
        ("Exchanging items of a delivered order",),
        (*_ORDER_WRITE_RULES, "R12", "R13", "R16"),
        _ordered_products,
    ),
    "modify_user_address": WriteNeed(None, anyone, ("Changing the customer's default address",), ()),
}
