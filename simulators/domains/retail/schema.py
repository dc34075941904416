"""The records of the retail tables, stated once as TypedDicts; their JSON Schemas check data folders at load.

Every field of tau-bench's data is required, since the tools and rules read them all. Keys the tools add
(a cancellation's reason, a return or exchange request) are optional, and other extra keys are allowed,
so a database saved after an episode loads too. Closed vocabularies (status, payment source) are enums.
"""

from typing import Literal, NotRequired, TypedDict

from apigen_mt.simulators.records import Address, CreditCard, Name
from apigen_mt.simulators.toolkit import json_schema_of


class OrderItem(TypedDict):
    name: str
    product_id: str
    item_id: str
    price: float
    options: dict[str, str]


class Fulfillment(TypedDict):
    tracking_id: list[str]
    item_ids: list[str]


class Transaction(TypedDict):
    transaction_type: Literal["payment", "refund"]
    amount: float
    payment_method_id: str


OrderStatus = Literal[
    "pending",
    "processed",
    "delivered",
    "cancelled",
    # Set by the tools only.
    "pending (item modified)",
    "return requested",
    "exchange requested",
]


class Order(TypedDict):
    order_id: str
    user_id: str
    address: Address
    items: list[OrderItem]
    fulfillments: list[Fulfillment]
    status: OrderStatus
    payment_history: list[Transaction]
    cancel_reason: NotRequired[str]
    return_items: NotRequired[list[str]]
    return_payment_method_id: NotRequired[str]
    exchange_items: NotRequired[list[str]]
    exchange_new_items: NotRequired[list[str]]
    exchange_payment_method_id: NotRequired[str]
    exchange_price_difference: NotRequired[float]


class Variant(TypedDict):
    item_id: str
    options: dict[str, str]
    available: bool
    price: float


class Product(TypedDict):
    name: str
    product_id: str
    variants: dict[str, Variant]


class GiftCard(TypedDict):
    source: Literal["gift_card"]
    balance: float
    id: str


class PayPal(TypedDict):
    source: Literal["paypal"]
    id: str


class User(TypedDict):
    name: Name
    address: Address
    email: str
    payment_methods: dict[str, CreditCard | GiftCard | PayPal]
    orders: list[str]


RECORD_SCHEMAS = {
    "orders": json_schema_of(Order, "retail Order"),
    "products": json_schema_of(Product, "retail Product"),
    "users": json_schema_of(User, "retail User"),
}
