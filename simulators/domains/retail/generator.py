"""Seeded generator of the retail database, in tau-bench's exact layout (spec section 1.1).

`generate(seed)` builds 50 products (several hundred variants), 500 users and 1,000 orders. Everything is
drawn from one `random.Random(seed)` plus a Faker instance seeded with the same value, so the same seed gives
the same data byte for byte, and no global random state or clock is read.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from apigen_mt.simulators.synthetic import IdMint, People, holders, weighted

N_PRODUCTS = 50
N_USERS = 500
N_ORDERS = 1000

# Share of each status among orders, as in tau-bench's data (423 / 102 / 373 / 102 of 1,000).
STATUS_SHARES = (("pending", 0.423), ("processed", 0.102), ("delivered", 0.373), ("cancelled", 0.102))

# How many orders a user has: weights for 0, 1, 2, ... orders (mean about 2, some users never ordered).
ORDERS_PER_USER_WEIGHTS = (12, 27, 28, 21, 7, 3.5, 1, 0.5)

PAYMENT_SOURCE_WEIGHTS = (("credit_card", 35), ("gift_card", 33), ("paypal", 32))


# (name, typical price in dollars, options). Option values are listed from the cheapest to the dearest
# where that makes sense, because a variant's price grows with the position of its values.
CATALOGUE: tuple[tuple[str, float, dict[str, tuple[str, ...]]], ...] = (
    (
        "Air Fryer",
        119.0,
        {
            "capacity": ("3 qt", "5 qt", "8 qt"),
            "color": ("black", "white", "red"),
            "controls": ("dial", "digital"),
        },
    ),
    (
        "Blender",
        89.0,
        {
            "power": ("600W", "900W", "1200W"),
            "jar material": ("plastic", "glass"),
            "color": ("black", "silver", "red"),
        },
    ),
    (
        "Stand Mixer",
        379.0,
        {
            "bowl size": ("4.5 qt", "5 qt", "6 qt"),
            "color": ("white", "red", "silver", "blue"),
            "attachment pack": ("basic", "baking", "pasta"),
        },
    ),
    (
        "Toaster",
        59.0,
        {
            "slots": ("2-slot", "4-slot"),
            "color": ("black", "white", "stainless steel"),
            "feature": ("none", "defrost", "bagel mode"),
        },
    ),
    (
        "Rice Cooker",
        109.0,
        {
            "capacity": ("3 cups", "6 cups", "10 cups"),
            "type": ("basic", "fuzzy logic", "induction"),
        },
    ),
    (
        "Cookware Set",
        259.0,
        {
            "piece count": ("5-piece", "10-piece", "12-piece"),
            "material": ("nonstick", "stainless steel", "cast iron"),
        },
    ),
    (
        "Chef Knife",
        84.0,
        {
            "blade length": ("6-inch", "8-inch", "10-inch"),
            "steel": ("German", "Japanese"),
            "handle": ("composite", "wood"),
        },
    ),
    (
        "Coffee Grinder",
        69.0,
        {
            "grinder type": ("blade", "burr"),
            "capacity": ("60 g", "100 g", "250 g"),
            "color": ("black", "white"),
        },
    ),
    (
        "Computer Monitor",
        319.0,
        {
            "screen size": ("24-inch", "27-inch", "32-inch"),
            "resolution": ("1080p", "1440p", "4K"),
            "refresh rate": ("60Hz", "144Hz"),
        },
    ),
    (
        "Webcam",
        74.0,
        {
            "resolution": ("720p", "1080p", "4K"),
            "microphone": ("no", "yes"),
            "mount": ("clip", "tripod"),
        },
    ),
    (
        "Wireless Router",
        159.0,
        {
            "standard": ("Wi-Fi 5", "Wi-Fi 6", "Wi-Fi 6E"),
            "bands": ("dual-band", "tri-band"),
            "ethernet ports": ("4 ports", "8 ports"),
        },
    ),
    (
        "Drone",
        649.0,
        {
            "camera": ("2.7K", "4K", "6K"),
            "flight time": ("20 minutes", "30 minutes", "40 minutes"),
            "color": ("grey", "white"),
        },
    ),
    (
        "Electric Scooter",
        539.0,
        {
            "range": ("15 miles", "25 miles", "40 miles"),
            "top speed": ("15 mph", "20 mph"),
            "color": ("black", "white", "red"),
        },
    ),
    (
        "Camping Tent",
        209.0,
        {
            "capacity": ("2-person", "4-person", "6-person"),
            "season": ("3-season", "4-season"),
            "color": ("green", "orange", "grey"),
        },
    ),
    (
        "Sleeping Bag",
        94.0,
        {
            "temperature rating": ("40F", "30F", "20F"),
            "fill": ("synthetic", "down"),
            "length": ("regular", "long"),
        },
    ),
    (
        "Hammock",
        54.0,
        {
            "size": ("single", "double"),
            "material": ("nylon", "cotton"),
            "color": ("blue", "green", "orange", "grey"),
        },
    ),
    (
        "Rain Jacket",
        129.0,
        {
            "size": ("S", "M", "L", "XL"),
            "color": ("yellow", "navy", "black", "green"),
            "hood": ("fixed", "packable"),
        },
    ),
    (
        "Winter Gloves",
        39.0,
        {
            "size": ("S", "M", "L"),
            "material": ("fleece", "wool", "leather"),
            "touchscreen": ("no", "yes"),
        },
    ),
    (
        "Scarf",
        34.0,
        {
            "material": ("cotton", "wool", "cashmere"),
            "color": ("grey", "red", "camel", "navy"),
            "pattern": ("solid", "plaid"),
        },
    ),
    (
        "Handbag",
        239.0,
        {
            "material": ("canvas", "vegan leather", "leather"),
            "color": ("black", "tan", "burgundy"),
            "size": ("small", "medium", "large"),
        },
    ),
    (
        "Wallet",
        59.0,
        {
            "material": ("nylon", "leather"),
            "style": ("cardholder", "bifold", "trifold"),
            "color": ("black", "brown"),
        },
    ),
    (
        "Carry-On Suitcase",
        279.0,
        {
            "shell": ("softside", "hardside"),
            "color": ("black", "navy", "silver", "green"),
            "wheels": ("2-wheel", "4-wheel"),
        },
    ),
    (
        "Standing Desk",
        519.0,
        {
            "width": ("48 inches", "60 inches", "72 inches"),
            "top finish": ("white", "oak", "walnut"),
            "motor": ("single", "dual"),
        },
    ),
    (
        "Filing Cabinet",
        179.0,
        {
            "drawers": ("2 drawers", "3 drawers", "4 drawers"),
            "material": ("steel", "wood"),
            "color": ("black", "white", "grey"),
        },
    ),
    (
        "Floor Lamp",
        109.0,
        {
            "style": ("tripod", "torchiere", "arc"),
            "color": ("black", "white", "brass"),
            "bulb type": ("incandescent", "LED"),
        },
    ),
    (
        "Throw Blanket",
        49.0,
        {
            "material": ("fleece", "knit", "sherpa"),
            "size": ("50x60 inches", "60x80 inches"),
            "color": ("grey", "cream", "blue", "rust"),
        },
    ),
    (
        "Bed Pillow",
        44.0,
        {
            "firmness": ("soft", "medium", "firm"),
            "fill": ("down alternative", "feather", "memory foam"),
            "size": ("standard", "queen", "king"),
        },
    ),
    (
        "Mattress Topper",
        149.0,
        {
            "thickness": ("2 inch", "3 inch", "4 inch"),
            "size": ("twin", "full", "queen", "king"),
            "material": ("memory foam", "latex"),
        },
    ),
    (
        "Lawn Mower",
        419.0,
        {
            "power source": ("electric", "battery", "gas"),
            "cutting width": ("16 inch", "21 inch"),
            "drive": ("push", "self-propelled"),
        },
    ),
    (
        "Leaf Blower",
        159.0,
        {
            "power source": ("corded electric", "battery", "gas"),
            "form": ("handheld", "backpack"),
        },
    ),
    (
        "Cordless Drill",
        139.0,
        {
            "voltage": ("12V", "18V", "20V"),
            "batteries": ("1 battery", "2 batteries"),
            "kit": ("bare tool", "with case"),
        },
    ),
    (
        "Tool Set",
        119.0,
        {
            "piece count": ("65-piece", "120-piece", "200-piece"),
            "case": ("plastic", "metal"),
        },
    ),
    (
        "Electric Guitar",
        699.0,
        {
            "body": ("solid", "semi-hollow"),
            "finish": ("black", "cherry", "sunburst"),
            "pickups": ("single coil", "humbucker"),
        },
    ),
    (
        "Digital Piano",
        899.0,
        {
            "keys": ("61 keys", "88 keys"),
            "action": ("semi-weighted", "fully weighted"),
            "finish": ("black", "white", "rosewood"),
        },
    ),
    (
        "Turntable",
        329.0,
        {
            "drive": ("belt", "direct"),
            "finish": ("black", "white", "walnut"),
            "bluetooth": ("no", "yes"),
        },
    ),
    (
        "Soundbar",
        289.0,
        {
            "channels": ("2.0", "3.1", "5.1"),
            "color": ("black", "white"),
            "subwoofer": ("none", "wireless"),
        },
    ),
    (
        "Smart Speaker",
        109.0,
        {
            "assistant": ("Alexa", "Google Assistant", "Siri"),
            "color": ("charcoal", "chalk", "blue"),
            "size": ("mini", "standard"),
        },
    ),
    (
        "Fitness Tracker",
        129.0,
        {
            "color": ("black", "pink", "teal"),
            "band size": ("small", "large"),
            "GPS": ("no", "yes"),
        },
    ),
    (
        "Treadmill",
        1199.0,
        {
            "motor": ("2.5 HP", "3.0 HP", "3.5 HP"),
            "incline": ("manual", "automatic"),
            "folding": ("no", "yes"),
        },
    ),
    (
        "Exercise Bike",
        749.0,
        {
            "resistance": ("friction", "magnetic", "air"),
            "display": ("LCD", "touchscreen"),
            "seat": ("standard", "padded"),
        },
    ),
    (
        "Kettlebell",
        59.0,
        {
            "weight": ("15 lbs", "25 lbs", "35 lbs", "50 lbs"),
            "material": ("vinyl coated", "cast iron"),
        },
    ),
    (
        "Tennis Racket",
        189.0,
        {
            "head size": ("98 sq in", "100 sq in", "105 sq in"),
            "weight": ("280g", "300g", "315g"),
            "grip size": ("4 1/4", "4 3/8"),
        },
    ),
    (
        "Basketball",
        39.0,
        {
            "size": ("size 5", "size 6", "size 7"),
            "surface": ("outdoor", "indoor/outdoor", "indoor"),
            "material": ("rubber", "composite", "leather"),
        },
    ),
    (
        "Board Game",
        44.0,
        {
            "players": ("2-4", "2-6", "3-8"),
            "genre": ("party", "cooperative", "strategy"),
            "age group": ("8+", "12+", "14+"),
        },
    ),
    (
        "Building Blocks Set",
        79.0,
        {
            "piece count": ("500", "1000", "2000"),
            "theme": ("city", "space", "castle"),
            "age group": ("6+", "9+", "12+"),
        },
    ),
    (
        "Baby Stroller",
        419.0,
        {
            "type": ("travel system", "full-size", "jogging"),
            "color": ("black", "grey", "navy"),
            "fold": ("two-hand", "one-hand"),
        },
    ),
    (
        "Dog Leash",
        24.0,
        {
            "length": ("4 ft", "6 ft", "16 ft retractable"),
            "material": ("nylon", "rope", "leather"),
            "color": ("red", "black", "blue", "green"),
        },
    ),
    (
        "Aquarium",
        159.0,
        {
            "capacity": ("10 gallons", "20 gallons", "40 gallons"),
            "shape": ("rectangular", "bow front"),
            "lighting": ("none", "LED"),
        },
    ),
    (
        "Hair Dryer",
        89.0,
        {
            "wattage": ("1200W", "1875W"),
            "technology": ("ceramic", "ionic", "tourmaline"),
            "color": ("black", "pink", "white"),
        },
    ),
    (
        "Binoculars",
        149.0,
        {
            "magnification": ("8x", "10x", "12x"),
            "objective lens": ("32mm", "42mm", "50mm"),
            "waterproof": ("no", "yes"),
        },
    ),
)


def exact_counts(total: int, shares: tuple[tuple[str, float], ...]) -> list[str]:
    """`total` labels with each label's share rounded, the rounding remainder given to the largest share."""
    counts = {label: round(total * share) for label, share in shares}
    largest = max(shares, key=lambda pair: pair[1])[0]
    counts[largest] += total - sum(counts.values())
    return [label for label, count in counts.items() for _ in range(count)]


def make_products(rng: random.Random, ids: IdMint) -> dict[str, dict[str, Any]]:
    products: dict[str, dict[str, Any]] = {}
    for name, typical_price, options in rng.sample(CATALOGUE, k=N_PRODUCTS):
        keys = list(options)
        combos = list(itertools.product(*(range(len(options[key])) for key in keys)))
        n_variants = min(len(combos), rng.randint(5, 20))
        # How much dearer each step along an option's value list makes a variant.
        step = {key: rng.uniform(0.0, 0.07) for key in keys}
        chosen = rng.sample(combos, k=n_variants)
        available = [rng.random() < 0.62 for _ in chosen]
        for forced in rng.sample(range(n_variants), k=2):
            available[forced] = True  # every product keeps at least two variants one can switch between
        product_id = ids.digits(10)
        variants: dict[str, dict[str, Any]] = {}
        for combo, is_available in zip(chosen, available):
            item_id = ids.digits(10)
            factor = 1.0 + sum(step[key] * position for key, position in zip(keys, combo))
            variants[item_id] = {
                "item_id": item_id,
                "options": {key: options[key][position] for key, position in zip(keys, combo)},
                "available": is_available,
                "price": round(typical_price * factor * rng.uniform(0.95, 1.05), 2),
            }
        products[product_id] = {"name": name, "product_id": product_id, "variants": variants}
    return products


def make_payment_methods(people: People) -> dict[str, dict[str, Any]]:
    rng = people.rng
    n_methods = rng.choices((1, 2, 3, 4), weights=(67, 27, 5, 1))[0]
    methods: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for _ in range(n_methods):
        # A user has at most one gift card and one PayPal account, but may keep several credit cards.
        source = weighted(rng, tuple(pair for pair in PAYMENT_SOURCE_WEIGHTS if pair[0] not in taken))
        if source == "credit_card":
            method = people.credit_card()
        elif source == "gift_card":
            balance = rng.randint(0, 100) if rng.random() < 0.8 else rng.randint(100, 1500)
            method = {"source": "gift_card", "balance": balance, "id": people.payment_id("gift_card")}
            taken.add(source)
        else:
            method = {"source": "paypal", "id": people.payment_id("paypal")}
            taken.add(source)
        methods[method["id"]] = method
    return methods


def make_users(people: People) -> dict[str, dict[str, Any]]:
    users: dict[str, dict[str, Any]] = {}
    name_zips: set[tuple[str, str, str]] = set()
    while len(users) < N_USERS:
        first, last = people.name()
        address = people.address()
        # find_user_id_by_name_zip returns the first match, so (first, last, zip) must identify one user.
        key = (first.lower(), last.lower(), address["zip"])
        if key in name_zips:
            continue
        name_zips.add(key)
        user_id = people.user_id(first, last)
        users[user_id] = {
            "name": {"first_name": first, "last_name": last},
            "address": address,
            "email": people.email(first, last),
            "payment_methods": make_payment_methods(people),
            "orders": [],
        }
    return users


def make_order(
    rng: random.Random,
    people: People,
    tracking_ids: IdMint,
    order_id: str,
    user_id: str,
    user: dict[str, Any],
    status: str,
    products: list[dict[str, Any]],
) -> dict[str, Any]:
    # Most orders ship to the user's current address; some went to an older address or to someone else.
    address = dict(user["address"]) if rng.random() < 0.8 else people.address()
    items = []
    for _ in range(rng.randint(1, 5)):
        product = rng.choice(products)
        variant = rng.choice(list(product["variants"].values()))
        items.append(
            {
                "name": product["name"],
                "product_id": product["product_id"],
                "item_id": variant["item_id"],
                "price": variant["price"],
                "options": dict(variant["options"]),
            }
        )
    fulfillments = []
    if status != "pending":
        fulfillments.append({"tracking_id": [tracking_ids.digits(12)], "item_ids": [item["item_id"] for item in items]})
    total = 0
    for item in items:
        total += item["price"]
    method_id = rng.choice(list(user["payment_methods"]))
    history = [{"transaction_type": "payment", "amount": round(total, 2), "payment_method_id": method_id}]
    if status == "cancelled":
        history.append({"transaction_type": "refund", "amount": round(total, 2), "payment_method_id": method_id})
    return {
        "order_id": order_id,
        "user_id": user_id,
        "address": address,
        "items": items,
        "fulfillments": fulfillments,
        "status": status,
        "payment_history": history,
    }


def generate(seed: int) -> dict[str, Any]:
    """A full retail database for `seed`: `{"orders": ..., "products": ..., "users": ...}`."""
    rng = random.Random(seed)
    people = People(seed, rng)
    catalogue_ids = IdMint(rng)  # product ids and item ids: separate spaces in tau-bench, kept disjoint here
    products = make_products(rng, catalogue_ids)
    users = make_users(people)

    owners = holders(rng, list(users), N_ORDERS, ORDERS_PER_USER_WEIGHTS)
    statuses = exact_counts(N_ORDERS, STATUS_SHARES)
    rng.shuffle(statuses)
    order_ids = IdMint(rng)
    tracking_ids = IdMint(rng)
    product_list = list(products.values())
    orders: dict[str, dict[str, Any]] = {}
    for user_id, status in zip(owners, statuses):
        order_id = order_ids.digits(7, prefix="#W")
        user = users[user_id]
        orders[order_id] = make_order(rng, people, tracking_ids, order_id, user_id, user, status, product_list)
        user["orders"].append(order_id)  # users list their orders in file order, as tau-bench's data does
    return {"orders": orders, "products": products, "users": users}
