"""Property tests of `Environment.step` on every built-in domain: tau-bench's with tau-bench's own data, the others
with their generated data.

Whatever a model sends (unknown tool names, wrong types, missing or extra arguments, huge strings, deep
nesting, calls that are not even objects), `step` answers with an observation and never raises; and
a call it refuses (`Error...` or `Unknown action ...`) leaves the database exactly as it was.

To add a domain, append its name to DOMAINS: the strategies take their realistic values (ids, emails,
zip codes...) from the loaded database itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.state import JSON, state_digest

DOMAINS = ["retail", "airline", "telecom"]
TAUBENCH_DOMAINS = ("retail", "airline")

# Each example copies and hashes the whole database (~40 ms), so the example counts stay modest.
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _realistic_strings(db: JSON, every: int = 40) -> list[str]:
    """Keys and string values from every `every`-th record of each table: ids, emails, zips, names."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                found.add(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.add(value)

    for table in db.values():
        for index, (key, record) in enumerate(table.items()):
            if index % every == 0:
                found.add(key)
                walk(record)
    return sorted(found)


@dataclass(frozen=True)
class Loaded:
    """A domain with its database; the short repr keeps Hypothesis' failure reports readable."""

    domain: Domain = field(repr=False)
    db: JSON = field(repr=False)
    initial_digest: str = field(repr=False)
    known: list[str] = field(repr=False)
    name: str = ""


@pytest.fixture(scope="module", params=DOMAINS)
def loaded(request) -> Loaded:
    domain = get_domain(request.param)
    if request.param in TAUBENCH_DOMAINS:
        db = domain.load(request.getfixturevalue("taubench_dir") / request.param)
    else:
        db = domain.load()
    return Loaded(domain, db, state_digest(db), _realistic_strings(db), request.param)


def _nested(depth: int, as_dict: bool) -> JSON:
    value: JSON = "bottom"
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


def _ordinary_values(known: list[str]) -> st.SearchStrategy[JSON]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(known),
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )


def _values(known: list[str]) -> st.SearchStrategy[JSON]:
    """Ordinary JSON values, huge strings, and nesting deeper than Python's recursion limit."""
    ordinary = _ordinary_values(known)
    huge = st.builds(lambda piece, count: piece * count, st.text(min_size=1, max_size=3), st.integers(1_000, 100_000))
    deep = st.builds(_nested, st.integers(50, 2_000), st.booleans())
    return st.one_of(ordinary, ordinary, huge, deep)


def _check_step(loaded: Loaded, call: Any) -> None:
    env = loaded.domain.environment(loaded.db)
    result = env.step(call)  # must not raise, whatever `call` is
    assert isinstance(result.observation, str)
    refused = result.observation.startswith(("Error", "Unknown action"))
    assert result.failed == refused, result.observation[:200]
    if refused:
        assert not result.terminated
        assert env.digest() == loaded.initial_digest, f"a refused call changed the database: {result.observation[:200]}"


@PROPERTY_SETTINGS
@given(data=st.data())
def test_arbitrary_calls_never_raise_and_refusals_change_nothing(loaded, data):
    known = loaded.known
    tools = loaded.domain.toolkit.tools()
    parameter_names = sorted({name for bound in tools.values() for name in bound.params})
    name = data.draw(
        st.one_of(
            st.sampled_from(sorted(tools)),
            st.sampled_from(["respond", "get_weather", "", "Calculate", "think ", "data"]),
            st.text(max_size=30),
        ),
        label="name",
    )
    argument_names = st.one_of(st.sampled_from([*parameter_names, "data", "self"]), st.text(max_size=10))
    arguments = data.draw(st.dictionaries(argument_names, _values(known), max_size=6), label="arguments")
    call = data.draw(
        st.one_of(
            st.just({"name": name, "arguments": arguments}),
            st.just({"name": name, "kwargs": arguments}),
            _values(known),  # not a call object at all
            st.fixed_dictionaries({"name": _values(known), "arguments": _values(known)}),
        ),
        label="call",
    )
    _check_step(loaded, call)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_nearly_valid_calls_never_raise_and_refusals_change_nothing(loaded, data):
    """Real tool names with declared arguments, mostly of the right type and often real ids, some dropped or extra."""
    known = loaded.known
    tools = loaded.domain.toolkit.tools()
    name = data.draw(st.sampled_from(sorted(tools)), label="name")
    properties = tools[name].spec.parameters["properties"]
    junk = _values(known)
    realistic_string = st.one_of(st.sampled_from(known), st.sampled_from(known), st.text(max_size=15), junk)
    arguments: dict[str, Any] = {}
    for param, schema in properties.items():
        if data.draw(st.integers(0, 9), label=f"keep {param}") == 0:
            continue  # a missing argument
        if schema.get("enum") and data.draw(st.booleans(), label=f"enum {param}"):
            arguments[param] = data.draw(st.sampled_from(schema["enum"]), label=param)
        elif schema.get("type") == "array":
            arguments[param] = data.draw(st.lists(realistic_string, max_size=4), label=param)
        else:
            arguments[param] = data.draw(realistic_string, label=param)
    extra = data.draw(st.dictionaries(st.text(max_size=10), junk, max_size=1), label="extra")
    _check_step(loaded, {"name": name, "arguments": {**arguments, **extra}})


def test_a_deeply_nested_name_does_not_raise(loaded):
    _check_step(loaded, {"name": _nested(2_000, as_dict=False), "arguments": None})
