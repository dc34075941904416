"""Seeded synthetic records shared by domain data generators: people, addresses, ids, weighted draws.

Everything draws from the `random.Random` it is handed (and a Faker seeded with the same seed), so a
generator built on these gives the same data byte for byte for the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from faker import Faker

# Names come from several Faker locales so the user base is as varied as a real customer list.
# The last element says whether the locale's romanised name methods must be used.
NAME_LOCALES = (
    ("en_US", 45, False),
    ("en_IN", 15, False),
    ("es_MX", 12, False),
    ("zh_CN", 10, True),
    ("ja_JP", 8, True),
    ("pt_BR", 5, False),
    ("en_GB", 5, False),
)

# Real US cities with their state and the first three digits of their zip codes.
CITIES = (
    ("New York", "NY", "100"),
    ("Los Angeles", "CA", "900"),
    ("Chicago", "IL", "606"),
    ("Houston", "TX", "770"),
    ("Phoenix", "AZ", "850"),
    ("Philadelphia", "PA", "191"),
    ("San Antonio", "TX", "782"),
    ("San Diego", "CA", "921"),
    ("Dallas", "TX", "752"),
    ("Austin", "TX", "787"),
    ("Jacksonville", "FL", "322"),
    ("San Jose", "CA", "951"),
    ("Fort Worth", "TX", "761"),
    ("Columbus", "OH", "432"),
    ("Charlotte", "NC", "282"),
    ("Indianapolis", "IN", "462"),
    ("San Francisco", "CA", "941"),
    ("Seattle", "WA", "981"),
    ("Denver", "CO", "802"),
    ("Washington", "DC", "200"),
    ("Boston", "MA", "021"),
    ("Nashville", "TN", "372"),
    ("Portland", "OR", "972"),
    ("Las Vegas", "NV", "891"),
    ("Detroit", "MI", "482"),
    ("Atlanta", "GA", "303"),
    ("Minneapolis", "MN", "554"),
    ("Miami", "FL", "331"),
    ("Baltimore", "MD", "212"),
    ("Milwaukee", "WI", "532"),
    ("Albuquerque", "NM", "871"),
    ("Kansas City", "MO", "641"),
    ("Raleigh", "NC", "276"),
    ("Salt Lake City", "UT", "841"),
    ("Pittsburgh", "PA", "152"),
    ("Orlando", "FL", "328"),
    ("Tampa", "FL", "336"),
    ("Cleveland", "OH", "441"),
    ("Sacramento", "CA", "958"),
    ("Omaha", "NE", "681"),
)

STREETS = (
    "Maple Avenue",
    "Oak Street",
    "Pine Street",
    "Cedar Lane",
    "Elm Street",
    "Washington Avenue",
    "Lincoln Road",
    "Park Place",
    "Lake Shore Drive",
    "Hillside Avenue",
    "Meadow Lane",
    "River Street",
    "Sunrise Boulevard",
    "Church Street",
    "Mill Road",
    "Forest Drive",
    "Highland Avenue",
    "Spring Street",
    "Valley Road",
    "Walnut Street",
    "Birch Lane",
    "Jefferson Street",
    "Franklin Avenue",
    "Madison Avenue",
    "Chestnut Drive",
    "Poplar Street",
    "Willow Court",
    "Dogwood Drive",
    "Magnolia Way",
    "Aspen Court",
    "Harbor View Road",
    "Orchard Lane",
    "Prospect Street",
    "Cherry Hill Road",
    "Summit Avenue",
    "Greenwood Avenue",
    "Bayview Drive",
    "Ridge Road",
    "College Avenue",
    "Union Street",
)

CARD_BRANDS = (("visa", 45), ("mastercard", 40), ("amex", 10), ("discover", 5))


def weighted(rng: random.Random, pairs: tuple[tuple[Any, float], ...]) -> Any:
    """One value of `(value, weight)` pairs."""
    values, weights = zip(*pairs)
    return rng.choices(values, weights=weights)[0]


def spread(rng: random.Random, n_slots: int, total: int, weights: tuple[float, ...]) -> list[int]:
    """Counts per slot drawn from `weights` (index = count), then nudged one at a time until they sum to `total`."""
    counts = rng.choices(range(len(weights)), weights=weights, k=n_slots)
    most = len(weights) - 1
    while sum(counts) < total:
        slot = rng.randrange(n_slots)
        if counts[slot] < most:
            counts[slot] += 1
    while sum(counts) > total:
        slot = rng.randrange(n_slots)
        if counts[slot] > 0:
            counts[slot] -= 1
    return counts


def holders(rng: random.Random, candidates: list[str], total: int, weights: tuple[float, ...]) -> list[str]:
    """Who holds each of `total` records, in random order: each candidate as often as `spread` counts for it."""
    counts = spread(rng, len(candidates), total, weights)
    chosen = [candidate for candidate, count in zip(candidates, counts) for _ in range(count)]
    rng.shuffle(chosen)
    return chosen


class IdMint:
    """Hands out ids that were never handed out before by this mint."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()  # only tested for membership, never iterated

    def reserve(self, ids: tuple[str, ...]) -> None:
        """Never hand out these ids (someone else uses them)."""
        self.used.update(ids)

    def fresh(self, draw: Callable[[random.Random], str]) -> str:
        while True:
            candidate = draw(self.rng)
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate

    def digits(self, n: int, prefix: str = "") -> str:
        """`prefix` followed by `n` digits, the first one never 0."""
        return self.fresh(lambda rng: prefix + str(rng.randrange(10 ** (n - 1), 10**n)))


class People:
    """Names, addresses, emails, user ids and payment cards of made-up US customers."""

    def __init__(self, seed: int, rng: random.Random) -> None:
        self.rng = rng
        self.faker = Faker([locale for locale, _, _ in NAME_LOCALES])
        self.faker.seed_instance(seed)
        self.handles = IdMint(rng)  # user ids and emails share one space so neither repeats
        self.payment_ids = IdMint(rng)

    def _name_part(self, last: bool) -> str:
        locale, _, romanised = weighted(self.rng, tuple((entry, entry[1]) for entry in NAME_LOCALES))
        fake = self.faker[locale]
        while True:
            if romanised:
                value = fake.last_romanized_name() if last else fake.first_romanized_name()
            else:
                value = fake.last_name() if last else fake.first_name()
            # Ids and emails are built from names, so keep plain ASCII letters (no accents, spaces, hyphens).
            if value.isascii() and value.isalpha():
                return value

    def name(self) -> tuple[str, str]:
        return self._name_part(last=False), self._name_part(last=True)

    def address(self) -> dict[str, str]:
        city, state, zip3 = self.rng.choice(CITIES)
        kind = self.rng.random()
        if kind < 0.55:
            address2 = f"Suite {self.rng.randint(100, 999)}"
        elif kind < 0.8:
            address2 = f"Apt {self.rng.randint(1, 60)}"
        else:
            address2 = ""
        return {
            "address1": f"{self.rng.randint(10, 9999)} {self.rng.choice(STREETS)}",
            "address2": address2,
            "city": city,
            "country": "USA",
            "state": state,
            "zip": f"{zip3}{self.rng.randint(1, 99):02d}",
        }

    def user_id(self, first: str, last: str) -> str:
        return self.handles.fresh(lambda rng: f"{first}_{last}_{rng.randint(1000, 9999)}".lower())

    def email(self, first: str, last: str) -> str:
        return self.handles.fresh(lambda rng: f"{first}.{last}{rng.randint(1000, 9999)}@example.com".lower())

    def payment_id(self, source: str) -> str:
        return self.payment_ids.digits(7, prefix=f"{source}_")

    def credit_card(self) -> dict[str, str]:
        card_id = self.payment_id("credit_card")
        return {
            "source": "credit_card",
            "brand": weighted(self.rng, CARD_BRANDS),
            "last_four": f"{self.rng.randint(0, 9999):04d}",
            "id": card_id,
        }

    def dob(self, first_year: int, last_year: int) -> str:
        return f"{self.rng.randint(first_year, last_year)}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}"
