"""Data folders are checked when loaded: record schemas, strict JSON, and files that are not files."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NotRequired, Required, TypedDict

import pytest

from apigen_mt.simulators.domain import DataError, Domain, get_domain
from apigen_mt.simulators.toolkit import Toolkit, json_schema_of


def write_folder(folder: Path, db: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for table, records in db.items():
        (folder / f"{table}.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    return folder


def first(records: dict[str, Any]) -> tuple[str, Any]:
    return next(iter(records.items()))


@pytest.fixture(scope="module")
def retail_folder(tmp_path_factory) -> Path:
    """The retail domain's seed-0 database as a data folder (the tests below copy it before breaking it)."""
    return write_folder(tmp_path_factory.mktemp("retail"), get_domain("retail").load(None))


@pytest.fixture(scope="module")
def airline_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("airline"), get_domain("airline").load(None))


@pytest.fixture(scope="module")
def telecom_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("telecom"), get_domain("telecom").load(None))


def broken_copy(source: Path, target: Path, table: str, change: Callable[[dict[str, Any]], None]) -> Path:
    shutil.copytree(source, target)
    records = json.loads((target / f"{table}.json").read_text())
    change(records)
    (target / f"{table}.json").write_text(json.dumps(records), encoding="utf-8")
    return target


def load_error(domain: str, folder: Path) -> str:
    with pytest.raises(DataError) as raised:
        get_domain(domain).load(folder)
    return str(raised.value)


# ---------------------------------------------------------------- good data passes


@pytest.mark.parametrize("domain", ["retail", "airline", "telecom"])
@pytest.mark.parametrize("seed", [1, 2])
def test_generated_databases_pass_their_schemas(tmp_path, domain, seed):
    db = get_domain(domain).generate(seed)
    assert get_domain(domain).load(write_folder(tmp_path, db)) == db


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_taubench_data_passes_its_schemas(taubench_dir, domain):
    db = get_domain(domain).load(taubench_dir / domain)
    sizes = {
        "retail": {"orders": 1000, "products": 50, "users": 500},
        "airline": {"flights": 300, "reservations": 2000, "users": 500},
    }[domain]
    assert {table: len(records) for table, records in db.items()} == sizes


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_every_field_of_taubench_records_is_required(taubench_dir, domain):
    """Every key a tau-bench record has is one its schema requires: a record without it is refused at load."""
    dom = get_domain(domain)
    for table in dom.tables:
        required = set(dom.record_schemas[table]["required"])
        records = json.loads((taubench_dir / domain / f"{table}.json").read_text())
        assert {key for record in records.values() for key in record} == required, table


def test_a_database_saved_after_an_episode_loads(tmp_path, retail_folder):
    """Keys the tools add (a cancellation's reason) are allowed, so a final state is a valid data folder."""

    def cancel(orders: dict[str, Any]) -> None:
        order = first(orders)[1]
        order["status"], order["cancel_reason"] = "cancelled", "ordered by mistake"

    folder = broken_copy(retail_folder, tmp_path / "data", "orders", cancel)
    assert first(get_domain("retail").load(folder)["orders"])[1]["cancel_reason"] == "ordered by mistake"


# ---------------------------------------------------------------- broken records, in plain words


# Each case breaks one record of a table in place and returns that record's key and the problem expected.
Breakage = Callable[[dict[str, Any]], tuple[str, str]]


def _first_record(change: Callable[[dict[str, Any]], object], problem: str) -> Breakage:
    def apply(records: dict[str, Any]) -> tuple[str, str]:
        key, record = first(records)
        change(record)
        return key, problem

    return apply


def _payment_method(source: str, change: Callable[[dict[str, Any]], object], problem: str) -> Breakage:
    """Break the first payment method of `source`; `problem` follows the path to that method."""

    def apply(users: dict[str, Any]) -> tuple[str, str]:
        for key, user in users.items():
            for method_id, method in user["payment_methods"].items():
                if method["source"] == source:
                    change(method)
                    return key, f"payment_methods.{method_id}{problem}"
        raise AssertionError(f"no {source} in the data")

    return apply


def _first_variant(products: dict[str, Any]) -> tuple[str, str]:
    key, product = first(products)
    variant_id, variant = first(product["variants"])
    variant["available"] = "yes"
    return key, f"variants.{variant_id}.available: expected a boolean, got a string"


def _not_a_user(users: dict[str, Any]) -> tuple[str, str]:
    key = first(users)[0]
    users[key] = ["not", "a", "user"]
    return key, "expected an object, got an array"


def _first_day(day: dict[str, Any], problem: str) -> Breakage:
    """Replace the first flight's first day; `problem` follows the path to that day."""

    def apply(flights: dict[str, Any]) -> tuple[str, str]:
        key, flight = first(flights)
        date = first(flight["dates"])[0]
        flight["dates"][date] = day
        return key, f"dates.{date}{problem}"

    return apply


RETAIL_BREAKAGES: list[tuple[str, Breakage]] = [
    ("orders", _first_record(lambda o: o.pop("status"), "missing required field 'status'")),
    (
        "orders",
        _first_record(
            lambda o: o.update(status="shipped"),
            "status: expected one of 'pending', 'processed', 'delivered', 'cancelled', 'pending (item modified)', "
            "'return requested', 'exchange requested', got 'shipped'",
        ),
    ),
    (
        "orders",
        _first_record(lambda o: o["items"][0].update(price="12.5"), "items[0].price: expected a number, got a string"),
    ),
    ("orders", _first_record(lambda o: o["address"].pop("zip"), "address: missing required field 'zip'")),
    (
        "orders",
        _first_record(
            lambda o: o["items"][0]["options"].update(color=3),
            "items[0].options.color: expected a string, got a number",
        ),
    ),
    ("products", _first_variant),
    ("users", _not_a_user),
    (
        "users",
        _payment_method(
            "credit_card", lambda m: m.update(last_four=1234), ".last_four: expected a string, got a number"
        ),
    ),
    ("users", _payment_method("gift_card", lambda m: m.pop("balance"), ": missing required field 'balance'")),
    (
        "users",
        _payment_method(
            "paypal",
            lambda m: m.update(source="bitcoin"),
            ".source: expected one of 'credit_card', 'gift_card', 'paypal', got 'bitcoin'",
        ),
    ),
]

AIRLINE_BREAKAGES: list[tuple[str, Breakage]] = [
    (
        "flights",
        _first_day(
            {"status": "boarding"},
            ".status: expected one of 'available', 'landed', 'cancelled', 'on time', 'delayed', 'flying', "
            "got 'boarding'",
        ),
    ),
    (
        "flights",
        _first_day(
            {"status": "available", "prices": {"basic_economy": 1, "economy": 2, "business": 3}},
            ": missing required field 'available_seats'",
        ),
    ),
    (
        "reservations",
        _first_record(
            lambda r: r.update(cabin="first"),
            "cabin: expected one of 'basic_economy', 'economy', 'business', got 'first'",
        ),
    ),
    (
        "reservations",
        _first_record(lambda r: r["passengers"][0].pop("dob"), "passengers[0]: missing required field 'dob'"),
    ),
    (
        "reservations",
        _first_record(lambda r: r["flights"][0].update(price=None), "flights[0].price: expected an integer, got null"),
    ),
    (
        "users",
        _first_record(
            lambda u: u.update(membership="platinum"),
            "membership: expected one of 'regular', 'silver', 'gold', got 'platinum'",
        ),
    ),
    (
        "users",
        _payment_method("certificate", lambda m: m.update(amount="100"), ".amount: expected a number, got a string"),
    ),
]

TELECOM_BREAKAGES: list[tuple[str, Breakage]] = [
    ("plans", _first_record(lambda p: p.update(data_gb="5"), "data_gb: expected an integer, got a string")),
    (
        "lines",
        _first_record(
            lambda l: l.update(status="paused"), "status: expected one of 'active', 'suspended', got 'paused'"
        ),
    ),
    (
        "lines",
        _first_record(
            lambda l: l.update(suspension_reason="holiday"),
            "suspension_reason: expected one of 'lost or stolen device', 'travel', 'non-payment', got 'holiday'",
        ),
    ),
    ("bills", _first_record(lambda b: b.pop("late_fee_waived"), "missing required field 'late_fee_waived'")),
    ("users", _payment_method("account_credit", lambda m: m.pop("balance"), ": missing required field 'balance'")),
]


@pytest.mark.parametrize(
    ("domain", "table", "breakage"),
    [("retail", *case) for case in RETAIL_BREAKAGES]
    + [("airline", *case) for case in AIRLINE_BREAKAGES]
    + [("telecom", *case) for case in TELECOM_BREAKAGES],
)
def test_a_broken_record_is_named_with_its_first_problem(request, tmp_path, domain, table, breakage):
    found: list[tuple[str, str]] = []
    source = request.getfixturevalue(f"{domain}_folder")
    folder = broken_copy(source, tmp_path / "data", table, lambda records: found.append(breakage(records)))
    key, problem = found[0]
    assert load_error(domain, folder) == f"{folder / f'{table}.json'}: {key}: {problem}"


def test_the_issue_example_on_taubench_airline_data(tmp_path, taubench_dir):
    def break_card(users: dict[str, Any]) -> None:
        users["mia_li_3668"]["payment_methods"]["credit_card_4421486"]["last_four"] = 7447

    folder = broken_copy(taubench_dir / "airline", tmp_path / "data", "users", break_card)
    problem = "payment_methods.credit_card_4421486.last_four: expected a string, got a number"
    assert load_error("airline", folder) == f"{folder / 'users.json'}: mia_li_3668: {problem}"


def test_the_first_broken_record_in_file_order_is_reported(tmp_path, retail_folder):
    def break_two(orders: dict[str, Any]) -> None:
        second, third = list(orders.values())[1:3]
        second.pop("user_id")
        third.pop("status")

    folder = broken_copy(retail_folder, tmp_path / "data", "orders", break_two)
    key = list(json.loads((folder / "orders.json").read_text()))[1]
    assert load_error("retail", folder) == f"{folder / 'orders.json'}: {key}: missing required field 'user_id'"


def test_json_that_is_not_strict_is_refused_at_load(tmp_path, retail_folder):
    shutil.copytree(retail_folder, tmp_path / "data")
    (tmp_path / "data" / "orders.json").write_text('{"#W1": {"amount": NaN}}')
    assert load_error("retail", tmp_path / "data") == (
        f"{tmp_path / 'data' / 'orders.json'}: NaN is not allowed (strict JSON has no NaN or Infinity)"
    )


def test_a_table_that_is_not_an_object_of_records_is_refused(tmp_path, retail_folder):
    shutil.copytree(retail_folder, tmp_path / "data")
    (tmp_path / "data" / "users.json").write_text("[]")
    message = load_error("retail", tmp_path / "data")
    assert message == f"{tmp_path / 'data' / 'users.json'} must hold a JSON object keyed by record id, not an array"


# ---------------------------------------------------------------- files that are not files


@pytest.fixture
def data(tmp_path, retail_folder) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(retail_folder, folder)
    (folder / "orders.json").unlink()
    return folder


def test_a_table_that_is_a_folder_is_named_as_such(data):
    (data / "orders.json").mkdir()
    assert load_error("retail", data) == f"{data / 'orders.json'} is a folder, not a file"


@pytest.mark.parametrize("links", [["orders.json"], ["loop.json", "orders.json"]], ids=["self", "two-links"])
def test_a_symlink_loop_is_named_as_such(data, links):
    chain = ["orders.json", *links]
    for name, target in zip(chain, chain[1:], strict=False):
        os.symlink(target, data / name)
    message = load_error("retail", data)
    assert message == f"{data / 'orders.json'} is a symlink loop (following its links leads back to it)"


def test_a_dangling_symlink_names_its_target(data):
    os.symlink("gone.json", data / "orders.json")
    assert load_error("retail", data) == f"{data / 'orders.json'} is a symlink to gone.json, which does not exist"


def test_a_pipe_is_refused_without_reading_it(data):
    os.mkfifo(data / "orders.json")
    message = load_error("retail", data)
    assert message == f"{data / 'orders.json'} is not a regular file (a pipe, socket or device cannot hold a table)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_table_gives_the_os_reason(data, retail_folder):
    shutil.copy(retail_folder / "orders.json", data / "orders.json")
    (data / "orders.json").chmod(0)
    assert load_error("retail", data) == f"{data / 'orders.json'} cannot be read: Permission denied"


def test_missing_tables_are_listed_together(data):
    (data / "users.json").unlink()
    assert load_error("retail", data) == (
        f"data folder {data} is missing orders.json, users.json (expected orders.json, products.json, users.json)"
    )


def test_the_data_folder_itself(tmp_path, data):
    assert load_error("retail", tmp_path / "nowhere") == f"data folder {tmp_path / 'nowhere'} does not exist"
    assert load_error("retail", data / "users.json") == f"data folder {data / 'users.json'} is a file, not a folder"
    os.symlink("loop", tmp_path / "loop")
    assert load_error("retail", tmp_path / "loop") == (
        f"data folder {tmp_path / 'loop'} is a symlink loop (following its links leads back to it)"
    )


# ---------------------------------------------------------------- a domain's own schemas


# This module's `from __future__ import annotations` makes the hints strings, which must not hide NotRequired.
class Stock(TypedDict):
    sku: str
    quantity: int
    status: Literal["in stock", "sold out"]
    note: NotRequired[str]


class Restock(TypedDict, total=False):
    sku: Required[str]
    quantity: int


class NoTools(Toolkit):
    pass


def shop(**extra: Any) -> Domain:
    return Domain(
        name="shop",
        description="A shop.",
        toolkit=NoTools,
        tables=("stock",),
        policy="",
        generate=lambda seed: {"stock": {}},
        **extra,
    )


def test_record_schemas_derive_from_typeddicts():
    assert json_schema_of(Stock, "Stock") == {
        "type": "object",
        "properties": {
            "sku": {"type": "string"},
            "quantity": {"type": "integer"},
            "status": {"type": "string", "enum": ["in stock", "sold out"]},
            "note": {"type": "string"},
        },
        "required": ["sku", "quantity", "status"],
    }
    assert json_schema_of(Restock, "Restock")["required"] == ["sku"]
    assert json_schema_of(dict[str, int], "counts") == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert json_schema_of(dict, "free") == {"type": "object"}


def test_a_domain_checks_the_tables_it_has_schemas_for(tmp_path):
    records = {"A-1": {"sku": "A-1", "quantity": 2.5, "status": "in stock"}}
    write_folder(tmp_path, {"stock": records})
    with pytest.raises(DataError, match=r"stock\.json: A-1: quantity: expected an integer, got a number$"):
        shop(record_schemas={"stock": json_schema_of(Stock, "Stock")}).load(tmp_path)
    # Without a schema (a domain that states none) the same table loads unchecked.
    assert shop().load(tmp_path) == {"stock": records}


def test_a_domain_with_schemas_for_unknown_tables_or_invalid_schemas_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"record_schemas names \['orders'\], not among its tables \('stock',\)"):
        shop(record_schemas={"orders": {"type": "object"}})
    write_folder(tmp_path, {"stock": {}})
    with pytest.raises(ValueError, match=r"record_schemas\['stock'\] is not a valid JSON Schema"):
        shop(record_schemas={"stock": {"type": "record"}}).load(tmp_path)
