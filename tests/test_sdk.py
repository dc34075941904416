"""The environment SDK on a small toolkit of its own: schema derivation, argument checks, step, state tools."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

import pytest

from apigen_mt.simulators.arithmetic import calculate
from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.state import canonical_json, diff_patch, state_digest, taubench_hash
from apigen_mt.simulators.toolkit import PythonCallArguments, Toolkit, ToolDefinitionError, class_name, tool


class Line(TypedDict):
    sku: Annotated[str, "Stock keeping unit."]
    quantity: int


class ShopTools(Toolkit):
    @tool()
    def get_stock(self, sku: str) -> str:
        """Tell how many units of an item are in stock.

        Args:
            sku: The item's stock keeping unit,
                such as 'A-1'.
        """
        return str(self.db["stock"][sku])

    @tool(writes=True)
    def order(self, lines: list[Line], speed: Literal["normal", "express"], note: str = "") -> str:
        """Take stock out for an order.

        Args:
            lines: What to ship.
            speed: How fast to ship.
            note: A note for the warehouse.
        """
        for line in lines:
            if self.db["stock"][line["sku"]] < line["quantity"]:
                return f"Error: not enough {line['sku']}"
        for line in lines:
            self.db["stock"][line["sku"]] -= line["quantity"]
        return "ok"

    @tool(terminates=True)
    def hand_over(self, summary: str) -> str:
        """Hand the conversation to a person.

        Args:
            summary: What the customer needs.
        """
        return "handed over"


class LenientShopTools(PythonCallArguments, ShopTools):
    pass


def shop(toolkit: type[Toolkit] = ShopTools) -> Domain:
    return Domain(
        name="shop", description="test shop", toolkit=toolkit, tables=("stock",), policy="", generate=lambda seed: {}
    )


DB = {"stock": {"A-1": 5, "B-2": 0}}


def test_schema_is_derived_from_signature_and_docstring():
    specs = {spec.name: spec for spec in ShopTools.specs()}
    assert list(specs) == ["get_stock", "hand_over", "order"]
    assert specs["get_stock"].description == "Tell how many units of an item are in stock."
    assert specs["get_stock"].parameters == {
        "type": "object",
        "properties": {"sku": {"type": "string", "description": "The item's stock keeping unit, such as 'A-1'."}},
        "required": ["sku"],
    }
    order = specs["order"].parameters
    assert order["required"] == ["lines", "speed"]
    assert order["properties"]["speed"] == {"type": "string", "enum": ["normal", "express"], "description": "How fast to ship."}
    assert order["properties"]["lines"]["items"] == {
        "type": "object",
        "properties": {"sku": {"type": "string", "description": "Stock keeping unit."}, "quantity": {"type": "integer"}},
        "required": ["sku", "quantity"],
    }
    assert specs["order"].writes and not specs["order"].terminates
    assert specs["hand_over"].terminates


def test_undocumented_tool_is_refused():
    with pytest.raises(ToolDefinitionError, match="docstring"):

        class Bad(Toolkit):
            @tool()
            def nothing(self, x: str) -> str:
                return x


def test_unsupported_annotation_is_refused():
    with pytest.raises(ToolDefinitionError, match="cannot derive"):

        class Bad(Toolkit):
            @tool()
            def odd(self, x: complex) -> str:
                """Do something odd."""
                return ""


def test_step_runs_tools_and_reports_bad_calls_without_raising():
    env = shop().environment(DB)
    assert env.step({"name": "get_stock", "arguments": {"sku": "A-1"}}).observation == "5"
    assert env.step({"name": "fly", "arguments": {}}).observation == "Unknown action fly"
    missing = env.step({"name": "get_stock", "arguments": {}})
    assert missing.failed and "'sku' is a required property" in missing.observation
    enum = env.step({"name": "order", "arguments": {"lines": [], "speed": "warp"}})
    assert enum.failed and "'warp' is not one of" in enum.observation
    extra = env.step({"name": "get_stock", "arguments": {"sku": "A-1", "x": 1}})
    assert extra.failed and "'x' was unexpected" in extra.observation
    crash = env.step({"name": "get_stock", "arguments": {"sku": "nope"}})
    assert crash.observation == "Error: 'nope'" and crash.failed
    assert env.step({"name": "hand_over", "arguments": {"summary": "s"}}).terminated
    assert len(env.log) == 7


def test_environment_works_on_its_own_copy():
    env = shop().environment(DB)
    result = env.step({"name": "order", "arguments": {"lines": [{"sku": "A-1", "quantity": 2}], "speed": "normal"}})
    assert result.observation == "ok"
    assert env.db["stock"]["A-1"] == 3 and DB["stock"]["A-1"] == 5
    assert env.diff_from(DB) == [{"op": "replace", "path": "/stock/A-1", "old": 5, "value": 3}]


def test_python_call_arguments_use_cpython_wording():
    env = shop(LenientShopTools).environment(DB)
    assert env.step({"name": "order", "arguments": {}}).observation == (
        "Error: Order.invoke() missing 2 required positional arguments: 'lines' and 'speed'"
    )
    assert env.step({"name": "order", "arguments": {"zz": 1, "lines": []}}).observation == (
        "Error: Order.invoke() got an unexpected keyword argument 'zz'"
    )
    # Enum values are left to the tool itself under tau-bench's rules.
    assert env.step({"name": "order", "arguments": {"lines": [], "speed": "warp"}}).observation == "ok"
    assert "must be of type array" in env.step({"name": "order", "arguments": {"lines": "x", "speed": "normal"}}).observation


def test_three_missing_arguments_list_with_oxford_and():
    class Three(PythonCallArguments, Toolkit):
        @tool()
        def many(self, a: str, b: str, c: str) -> str:
            """Take three."""
            return ""

    env = shop(Three).environment({})
    assert env.step({"name": "many", "arguments": {}}).observation == (
        "Error: Many.invoke() missing 3 required positional arguments: 'a', 'b', and 'c'"
    )


def test_class_name():
    assert class_name("find_user_id_by_name_zip") == "FindUserIdByNameZip"
    assert class_name("search_onestop_flight") == "SearchOnestopFlight"


def test_state_equality_keeps_number_types_and_ignores_key_order():
    assert canonical_json({"a": 1, "b": [1, 2]}) == canonical_json({"b": [1, 2], "a": 1})
    assert state_digest({"x": 91}) != state_digest({"x": 91.0})
    assert taubench_hash({"x": 91}) != taubench_hash({"x": 91.0})
    assert taubench_hash({"b": 1, "a": {"d": [1, "x"], "c": None}}) == taubench_hash({"a": {"c": None, "d": [1, "x"]}, "b": 1})


def test_diff_patch_reports_type_changes_additions_and_removals():
    before = {"card": {"balance": 91}, "log": [1, 2, 3], "gone": True}
    after = {"card": {"balance": 91.0}, "log": [1, 2], "new": "x"}
    assert diff_patch(before, after) == [
        {"op": "replace", "path": "/card/balance", "old": 91, "value": 91.0},
        {"op": "remove", "path": "/log/2", "old": 3},
        {"op": "remove", "path": "/gone", "old": True},
        {"op": "add", "path": "/new", "value": "x"},
    ]
    assert diff_patch(before, before) == []
    assert diff_patch({"a/b": 0.0}, {"a/b": -0.0}) == [{"op": "replace", "path": "/a~1b", "old": 0.0, "value": -0.0}]


@pytest.mark.parametrize(
    ("expression", "observation"),
    [
        ("(457.81 + 3203.76) * 2", "7323.14"),
        ("2 + 2", "4.0"),
        ("1/3", "0.33"),
        ("-0.0", "-0.0"),
        ("1/0", "Error: division by zero"),
        ("1.0/0", "Error: float division by zero"),
        ("1//0", "Error: integer division or modulo by zero"),
        ("2**10000", "Error: int too large to convert to float"),
        ("()", "Error: float() argument must be a string or a real number, not 'tuple'"),
        ("(1+2", "Error: '(' was never closed (<string>, line 1)"),
        ("", "Error: invalid syntax (<string>, line 0)"),
        ("1e5", "Error: invalid characters in expression"),
        ("__import__('os')", "Error: invalid characters in expression"),
        ("(1)(2)", "Error: 'int' object is not callable"),
        ("9**9**9**9", "Error: int too large to convert to float"),
    ],
)
def test_calculate_matches_python_arithmetic_without_eval(expression, observation):
    assert calculate(expression) == observation
