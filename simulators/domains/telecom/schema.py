"""The records of the telecom tables, stated once as TypedDicts; their JSON Schemas check data folders at load.

Every field the generator writes is required, since the tools and rules read them. `suspension_reason` is
present only while a line is suspended. Extra keys are allowed, so a database saved after an episode loads.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from apigen_mt.simulators.domains.telecom.constants import SuspensionReason
from apigen_mt.simulators.records import Address, CreditCard, Name
from apigen_mt.simulators.toolkit import json_schema_of


class Plan(TypedDict):
    plan_id: str
    name: str
    monthly_fee: float
    data_gb: int | None  # monthly data allowance; None: unlimited
    roaming: bool  # whether roaming can be turned on for a line on this plan
    available: bool  # offered to customers; lines may stay on a plan that is no longer offered


class Topup(TypedDict):
    size_gb: int
    price: float
    payment_method_id: str
    date: str


class Device(TypedDict):
    model: str
    imei: str


class Line(TypedDict):
    line_id: str
    user_id: str
    phone_number: str
    plan_id: str
    status: Literal["active", "suspended"]
    roaming: bool
    data_used_gb: float  # in the current billing cycle
    topups: list[Topup]  # bought in the current billing cycle
    last_plan_change: str  # date
    device: Device
    suspension_reason: NotRequired[SuspensionReason]


class BillItem(TypedDict):
    description: str
    amount: float


class Payment(TypedDict):
    payment_method_id: str
    amount: float
    date: str


class Bill(TypedDict):
    bill_id: str
    user_id: str
    period: str  # the month billed, 'YYYY-MM'
    issued: str
    due: str
    items: list[BillItem]
    amount: float  # the sum of the items
    status: Literal["paid", "due", "overdue"]
    late_fee_waived: bool
    payments: list[Payment]


class BankAccount(TypedDict):
    source: Literal["bank_account"]
    bank: str
    last_four: str
    id: str


class AccountCredit(TypedDict):
    source: Literal["account_credit"]
    balance: float
    id: str


class User(TypedDict):
    name: Name
    email: str
    address: Address
    pin: str  # `PIN_DIGITS` digits
    payment_methods: dict[str, CreditCard | BankAccount | AccountCredit]
    lines: list[str]
    bills: list[str]


RECORD_SCHEMAS = {
    "bills": json_schema_of(Bill, "telecom Bill"),
    "lines": json_schema_of(Line, "telecom Line"),
    "plans": json_schema_of(Plan, "telecom Plan"),
    "users": json_schema_of(User, "telecom User"),
}
