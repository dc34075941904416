"""Record parts the built-in domains share (people's names, postal addresses, credit cards), stated once.

Each domain's `schema.py` builds its users from these, so the three derive the same JSON Schema for them.
"""

from typing import Literal, TypedDict


class Name(TypedDict):
    first_name: str
    last_name: str


class Address(TypedDict):
    address1: str
    address2: str
    city: str
    country: str
    state: str
    zip: str


class CreditCard(TypedDict):
    source: Literal["credit_card"]
    brand: str
    last_four: str
    id: str
