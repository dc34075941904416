"""Retail policy rules as code (taubench-domains.md section 3.1).

Implemented: every rule that actions, arguments, data and observations decide, including those the tools
already enforce (TE), which still catch an agent that tries: R1, R3, R5, R6, R7, R8 (the reason set),
R9-R17, R18 (episodes with messages). Left out: R2, R19, R21 (soft), R4 (needs reading the confirmation
dialogue), R20 (its argument part is R3's user_id check; the rest is R4).

Blueprints versus episodes (see `apigen_mt.simulators.trace`):
- R1 authentication. In an episode, every call other than find-user, think, calculate and transfer must come
  after a find-user call that returned a user id. A blueprint's ground truth leaves the find-user call out
  (tau-bench's always do): its `user_id` is who the simulated user will say they are, so R1 only asks that it
  names a user of the database (or, without `user_id`, that a find-user action returns one).
- R3 one user. The conversation's user is the blueprint's `user_id`, or in an episode the authenticated
  id; every `user_id` argument and the owner of every order touched must be that user.
- R6 (get_order_details before acting on an order) and R18 (no invented ids) judge what the agent read or
  heard first, so they apply to episodes only; in a blueprint the ids come from the database the
  execution stage ran them against.
- A call the environment refused (an error observation, the database unchanged) counts in an episode only
  for the rules whose attempt is itself forbidden; the comment above `RULES` gives the decision per rule.
Statuses, balances and items are read from the database as it was when each call ran.
"""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.authentication import Authentication
from apigen_mt.simulators.domain_types import PolicyRule
from apigen_mt.simulators.domains.retail.constants import CANCEL_REASONS
from apigen_mt.simulators.trace import (
    ActionTrace,
    TracedCall,
    calls_on_records,
    content_text,
    lookup,
    one_call_per_turn,
)

FIND_USER = ("find_user_id_by_email", "find_user_id_by_name_zip")
NO_AUTHENTICATION_NEEDED = frozenset({*FIND_USER, "think", "calculate", "transfer_to_human_agents"})
MODIFY = frozenset({"modify_pending_order_address", "modify_pending_order_items", "modify_pending_order_payment"})
ORDER_WRITES = MODIFY | {"cancel_pending_order", "return_delivered_order_items", "exchange_delivered_order_items"}
ID_SOURCES = frozenset({"get_user_details", "get_order_details", "get_product_details", "list_all_product_types"})
AUTHENTICATION = Authentication(
    tools=frozenset(FIND_USER),
    exempt=NO_AUTHENTICATION_NEEDED,
    records=(("orders", "order_id"),),
    too_early=(
        "{call} runs before the user is authenticated; first find the user id with "
        "find_user_id_by_email or find_user_id_by_name_zip"
    ),
    no_user="the blueprint names no user_id and none of its actions finds one, so no user can be authenticated",
    unknown_user="user_id {user!r} is not a user of the database, so the user cannot be authenticated",
    foreign_record="{call} touches {kind} {record_id} of user {owner!r}, but the conversation is with {user!r}",
)


def _owner(call: TracedCall, order: dict[str, Any]) -> dict[str, Any] | None:
    return lookup(call.before.get("users"), order.get("user_id"))


def _strings(value: Any) -> list[str] | None:
    return value if isinstance(value, list) and all(isinstance(item, str) for item in value) else None


def _orders_written(
    trace: ActionTrace, names: frozenset[str] | set[str]
) -> list[tuple[TracedCall, str, dict[str, Any]]]:
    return calls_on_records(trace, names, "orders", "order_id")


def order_details_first(trace: ActionTrace) -> list[str]:
    if not trace.episode:
        return []
    return [
        f"{call.label()} acts on order {order_id} without a get_order_details call for it first"
        for call, order_id, _ in _orders_written(trace, ORDER_WRITES)
        if not trace.succeeded_before(call, "get_order_details", order_id=order_id)
    ]


def _status_rule(names: set[str], allowed: str, verb: str):
    def check(trace: ActionTrace) -> list[str]:
        return [
            f"{call.label()} {verb} order {order_id} whose status is {order.get('status')!r}; "
            f"only {allowed!r} orders qualify"
            for call, order_id, order in _orders_written(trace, names)
            if order.get("status") != allowed
        ]

    return check


def cancel_reason(trace: ActionTrace) -> list[str]:
    return [
        f"{call.label()} gives reason {call.arguments.get('reason')!r}; "
        f"it must be one of {', '.join(map(repr, CANCEL_REASONS))}"
        for call in trace.calls_of("cancel_pending_order")
        if call.arguments.get("reason") not in CANCEL_REASONS
    ]


def modify_payment(trace: ActionTrace) -> list[str]:
    problems = []
    for call, order_id, order in _orders_written(trace, {"modify_pending_order_payment"}):
        method_id = call.arguments.get("payment_method_id")
        owner = _owner(call, order) or {}
        method = lookup(owner.get("payment_methods"), method_id)
        history = order.get("payment_history") or []
        if method is None:
            problems.append(
                f"{call.label()}: payment method {method_id!r} is not in the profile of {order.get('user_id')!r}"
            )
            continue
        if len(history) != 1 or history[0].get("transaction_type") != "payment":
            problems.append(f"{call.label()}: order {order_id} must have exactly one payment to change its method")
            continue
        if history[0].get("payment_method_id") == method_id:
            problems.append(f"{call.label()}: {method_id} already pays for order {order_id}; pick a different method")
        amount = history[0].get("amount", 0)
        if method.get("source") == "gift_card" and method.get("balance", 0) < amount:
            problems.append(
                f"{call.label()}: gift card {method_id} holds {method.get('balance')}, "
                f"less than the order amount {amount}"
            )
    return problems


def items_modified_once(trace: ActionTrace) -> list[str]:
    problems = []
    for call, order_id, _ in _orders_written(trace, MODIFY | {"cancel_pending_order"}):
        if trace.succeeded_before(call, "modify_pending_order_items", order_id=order_id):
            problems.append(
                f"{call.label()} comes after order {order_id}'s items were already modified; items are modified once, "
                "all in one call, and the order cannot be changed or cancelled afterwards"
            )
    return problems


def _item_pairs(call: TracedCall, order: dict[str, Any], products: Any) -> tuple[list[str], float | int]:
    """Problems with the (old item, new item) pairs of a modify-items or exchange call, and the price difference."""
    old_ids, new_ids = _strings(call.arguments.get("item_ids")), _strings(call.arguments.get("new_item_ids"))
    if old_ids is None or new_ids is None:
        return ["item_ids and new_item_ids must be lists of item ids"], 0
    if len(old_ids) != len(new_ids):
        return [f"{len(old_ids)} item_ids but {len(new_ids)} new_item_ids; they pair up by position"], 0
    problems = []
    difference: float | int = 0
    for position, (old_id, new_id) in enumerate(zip(old_ids, new_ids)):
        old = next((item for item in order.get("items", []) if item.get("item_id") == old_id), None)
        if old is None:
            problems.append(f"item {old_id} (position {position}) is not in order {order.get('order_id')}")
            continue
        product = lookup(products, old.get("product_id")) or {}
        variant = lookup(product.get("variants"), new_id)
        if variant is None:
            problems.append(
                f"new item {new_id} (position {position}) is not a variant of {old.get('name')!r}, "
                f"the product of item {old_id}"
            )
        elif not variant.get("available"):
            problems.append(f"new item {new_id} (position {position}) is not available")
        else:
            difference += variant.get("price", 0) - old.get("price", 0)
        if new_id == old_id:
            problems.append(f"new item {new_id} (position {position}) is the same as the item it replaces")
    return problems, difference


def new_items_valid(trace: ActionTrace) -> list[str]:
    problems = []
    for call, _, order in _orders_written(trace, {"modify_pending_order_items", "exchange_delivered_order_items"}):
        found, _ = _item_pairs(call, order, call.before.get("products"))
        problems.extend(f"{call.label()}: {problem}" for problem in found)
    return problems


def price_difference_payment(trace: ActionTrace) -> list[str]:
    problems = []
    for call, _, order in _orders_written(trace, {"modify_pending_order_items", "exchange_delivered_order_items"}):
        method_id = call.arguments.get("payment_method_id")
        method = lookup((_owner(call, order) or {}).get("payment_methods"), method_id)
        if method is None:
            problems.append(
                f"{call.label()}: payment method {method_id!r} is not in the profile of {order.get('user_id')!r}"
            )
            continue
        _, difference = _item_pairs(call, order, call.before.get("products"))
        if call.name == "exchange_delivered_order_items":
            difference = round(difference, 2)  # the exchange tool rounds the difference, modify does not
        if method.get("source") == "gift_card" and method.get("balance", 0) < difference:
            problems.append(
                f"{call.label()}: gift card {method_id} holds {method.get('balance')}, "
                f"less than the price difference {difference}"
            )
    return problems


def return_refund_method(trace: ActionTrace) -> list[str]:
    problems = []
    for call, order_id, order in _orders_written(trace, {"return_delivered_order_items"}):
        method_id = call.arguments.get("payment_method_id")
        method = lookup((_owner(call, order) or {}).get("payment_methods"), method_id)
        history = order.get("payment_history") or [{}]
        original = history[0].get("payment_method_id")
        if method_id != original and (method is None or method.get("source") != "gift_card"):
            problems.append(
                f"{call.label()} refunds to {method_id!r}; a return refunds to the original method {original!r} "
                "or to a gift card of the user"
            )
    return problems


def one_return_or_exchange(trace: ActionTrace) -> list[str]:
    problems = _status_rule({"exchange_delivered_order_items"}, "delivered", "exchanges items of")(trace)
    for call, order_id, _ in _orders_written(trace, {"return_delivered_order_items", "exchange_delivered_order_items"}):
        if trace.succeeded_before(call, "return_delivered_order_items", order_id=order_id) or trace.succeeded_before(
            call, "exchange_delivered_order_items", order_id=order_id
        ):
            problems.append(
                f"{call.label()}: order {order_id} already had a return or exchange; "
                "one per delivered order, all items in one call"
            )
    return problems


def no_write_on_closed_orders(trace: ActionTrace) -> list[str]:
    return [
        f"{call.label()} writes to order {order_id} whose status is {order.get('status')!r}; "
        "processed and cancelled orders get no write"
        for call, order_id, order in _orders_written(trace, ORDER_WRITES)
        if order.get("status") in ("processed", "cancelled")
    ]


def no_invented_ids(trace: ActionTrace) -> list[str]:
    if not trace.episode or trace.messages is None:
        return []
    problems = []
    for call in trace.calls:
        if not call.writes or call.message_index is None:
            continue
        heard = [
            content_text(message) for message in trace.messages[: call.message_index] if message.get("role") == "user"
        ]
        seen = [
            earlier.observation for earlier in trace.earlier(call) if earlier.name in ID_SOURCES and not earlier.failed
        ]
        known = "\n".join(heard + seen)
        named = [call.arguments.get("order_id"), call.arguments.get("payment_method_id")]
        named += (_strings(call.arguments.get("item_ids")) or []) + (_strings(call.arguments.get("new_item_ids")) or [])
        for identifier in named:
            if isinstance(identifier, str) and identifier not in known:
                problems.append(
                    f"{call.label()} uses {identifier!r}, which no earlier tool output or user message contains"
                )
    return problems


# `refused_calls_count` (a refused call: error observation, database unchanged). True where the attempt is
# the write or the step the policy forbids, whatever the tool answered: acting before authentication (R1),
# for another user (R3) or on an order not read first (R6), cancelling, modifying, returning or exchanging an
# order whose status forbids it (R7, R9, R14, R16, R17), modifying items twice (R11). False where the write
# is allowed and a refused call only got its details wrong, then corrected: the cancel reason (R8), payment
# methods (R10, R13, R15), the new items (R12), an id nobody gave (R18: the tool found no such record). R5
# judges messages, not calls.
RULES: list[PolicyRule] = [
    PolicyRule(
        "R1", "Authenticate the user through find-user before any other tool.", AUTHENTICATION.authenticate_first
    ),
    PolicyRule(
        "R3", "Serve one user: every user id and order belongs to the authenticated user.", AUTHENTICATION.one_user
    ),
    PolicyRule(
        "R5", "One tool call per turn (text beside a call is allowed: the user never sees it).", one_call_per_turn
    ),
    PolicyRule("R6", "Look up an order with get_order_details before acting on it.", order_details_first),
    PolicyRule("R7", "Cancel only pending orders.", _status_rule({"cancel_pending_order"}, "pending", "cancels")),
    PolicyRule(
        "R8",
        "The cancel reason is 'no longer needed' or 'ordered by mistake'.",
        cancel_reason,
        refused_calls_count=False,
    ),
    PolicyRule(
        "R9",
        "Modify address, payment or items only of pending orders.",
        _status_rule(set(MODIFY), "pending", "modifies"),
    ),
    PolicyRule(
        "R10",
        "A new payment method is the user's own, differs from the original and covers the order.",
        modify_payment,
        refused_calls_count=False,
    ),
    PolicyRule("R11", "Modify an order's items once; no cancel or modify afterwards.", items_modified_once),
    PolicyRule(
        "R12",
        "Each new item is an available, different variant of the same product.",
        new_items_valid,
        refused_calls_count=False,
    ),
    PolicyRule(
        "R13",
        "The price difference is paid by the user's own method; a gift card must cover it.",
        price_difference_payment,
        refused_calls_count=False,
    ),
    PolicyRule(
        "R14",
        "Return only delivered orders.",
        _status_rule({"return_delivered_order_items"}, "delivered", "returns items of"),
    ),
    PolicyRule(
        "R15",
        "A return refunds to the original payment method or a gift card of the user.",
        return_refund_method,
        refused_calls_count=False,
    ),
    PolicyRule("R16", "Exchange only delivered orders; one return or exchange per order.", one_return_or_exchange),
    PolicyRule("R17", "No write on processed or cancelled orders.", no_write_on_closed_orders),
    PolicyRule(
        "R18", "Ids in a write come from earlier tool output or the user.", no_invented_ids, refused_calls_count=False
    ),
]
