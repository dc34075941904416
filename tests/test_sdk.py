"""The environment SDK on a small toolkit of its own: schema derivation, argument checks, step, state tools."""

from __future__ import annotations

import sys
import textwrap
from typing import Annotated, Literal, TypedDict

import pytest

from apigen_mt.simulators.arithmetic import calculate
from apigen_mt.simulators.domain import Domain, PolicyRule
from apigen_mt.simulators.needs import WriteNeed, anyone
from apigen_mt.simulators.state import canonical_json, diff_patch, state_digest
from apigen_mt.simulators.toolkit import PythonCallArguments, ToolDefinitionError, Toolkit, class_name, tool
from tests.taubench_state import taubench_hash


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
    assert order["properties"]["speed"] == {
        "type": "string",
        "enum": ["normal", "express"],
        "description": "How fast to ship.",
    }
    assert order["properties"]["lines"]["items"] == {
        "type": "object",
        "properties": {
            "sku": {"type": "string", "description": "Stock keeping unit."},
            "quantity": {"type": "integer"},
        },
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
    assert (
        "must be of type array"
        in env.step({"name": "order", "arguments": {"lines": "x", "speed": "normal"}}).observation
    )


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
    assert taubench_hash({"b": 1, "a": {"d": [1, "x"], "c": None}}) == taubench_hash(
        {"a": {"c": None, "d": [1, "x"]}, "b": 1}
    )


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


# ---------------------------------------------------------------- registries, loading, optional parameters


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the domain registry, so domains registered by a test vanish after it."""
    import apigen_mt.simulators.domain as domain_module

    domain_module.domains()  # the built-in domains first
    monkeypatch.setattr(domain_module, "_REGISTRY", dict(domain_module._REGISTRY))
    return domain_module


def test_a_domain_name_is_registered_once(registry):
    first = registry.register(shop())
    assert registry.register(first) is first  # the same domain again changes nothing
    with pytest.raises(ValueError) as refused:
        registry.register(shop(LenientShopTools))
    assert str(refused.value) == (
        f"domain name 'shop' is already registered (tools {__name__}.ShopTools); "
        f"give the domain with tools {__name__}.LenientShopTools another name"
    )
    assert registry.get_domain("shop") is first
    with pytest.raises(ValueError, match="domain name 'retail' is already registered"):
        registry.register(Domain(name="retail", description="", toolkit=ShopTools, tables=(), policy="", generate=dict))


def test_a_parser_name_is_registered_once(monkeypatch):
    from apigen_mt.simulators import tool_parsers

    monkeypatch.setattr(tool_parsers, "_PARSERS", dict(tool_parsers._PARSERS))

    class Other(tool_parsers.ToolCallParser):
        name = "xlam"

        def parse(self, text: str) -> tool_parsers.ParsedOutput:
            return tool_parsers.ParsedOutput(content=text)

    with pytest.raises(ValueError) as refused:
        tool_parsers.register_parser(Other)
    assert str(refused.value) == (
        "tool-call format 'xlam' is already registered by apigen_mt.simulators.tool_parsers.xlam.XLAMParser; "
        f"give {__name__}.test_a_parser_name_is_registered_once.<locals>.Other another name"
    )
    assert isinstance(tool_parsers.get_parser("xlam"), tool_parsers.XLAMParser)


def test_an_unregistered_domain_loads_its_own_generated_data():
    made = []

    def generate(seed: int) -> dict:
        made.append(seed)
        return {"stock": {"A-1": seed}}

    first = Domain(
        name="retail",
        description="",
        toolkit=ShopTools,
        tables=("stock",),
        policy="",
        generate=generate,
        default_seed=3,
    )
    other = Domain(
        name="retail", description="", toolkit=ShopTools, tables=("stock",), policy="", generate=lambda s: {"stock": {}}
    )
    assert first.load() == {"stock": {"A-1": 3}} and other.load() == {"stock": {}}  # not the registered retail's data
    first.load()["stock"]["A-1"] = 99  # each load is a copy...
    assert first.load() == {"stock": {"A-1": 3}} and made == [3]  # ...of data generated once


def test_write_needs_name_write_tools_tables_policy_headings_and_rules():
    rule = PolicyRule("S1", "Ship only what is in stock.", lambda trace: [])
    policy = "# Shop\n\n## Orders\n\nShip only what is in stock.\n"

    def declared(**needs: WriteNeed) -> Domain:
        return Domain(
            name="shop",
            description="",
            toolkit=ShopTools,
            tables=("stock",),
            policy=policy,
            generate=dict,
            rules=(rule,),
            write_needs=needs,
        )

    good = WriteNeed("stock", anyone, ("Orders",), ("S1",))
    assert declared(order=good).write_needs == {"order": good}
    with pytest.raises(ValueError) as refused:
        declared(get_stock=good, order=WriteNeed("orders", anyone, ("Ordering",), ("S2",)))
    assert str(refused.value) == (
        "domain shop: write_needs: 'get_stock' is not a write tool; order: table 'orders' is not among the tables; "
        "order: section 'Ordering' is not a '## ' heading of the policy; order: rule 'S2' is not a rule id"
    )


class Finder(Toolkit):
    @tool()
    def find(self, name: str | None, limit: int | None = None, exact: bool = False) -> str:
        """Find items.

        Args:
            name: Part of the name, or null for any.
            limit: At most this many.
            exact: Match the whole name.
        """
        return f"{name}:{limit}:{exact}"


def test_optional_parameters_accept_null_and_may_be_left_out():
    (spec,) = Finder.specs()
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "name": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": "Part of the name, or null for any.",
            },
            "limit": {
                "anyOf": [{"type": "integer"}, {"type": "null"}],
                "description": "At most this many.",
                "default": None,
            },
            "exact": {"type": "boolean", "description": "Match the whole name.", "default": False},
        },
        "required": ["name"],
    }
    env = shop(Finder).environment({})
    assert env.step({"name": "find", "arguments": {"name": None}}).observation == "None:None:False"
    assert env.step({"name": "find", "arguments": {"name": "a", "limit": 3, "exact": True}}).observation == "a:3:True"
    assert env.step({"name": "find", "arguments": {"name": "a", "limit": "3"}}).failed
    assert env.step({"name": "find", "arguments": {}}).failed  # null is allowed, leaving it out is not


# ---------------------------------------------------------------- domains from module paths

PLUGIN = """
from apigen_mt.simulators.domain import Domain, register
from apigen_mt.simulators.toolkit import Toolkit, tool


class Tools(Toolkit):
    @tool()
    def ping(self) -> str:
        \"\"\"Answer pong.\"\"\"
        return "pong"


DOMAIN = {wrap}(Domain(name={name!r}, description="A plug-in.", toolkit=Tools, tables=("things",), policy="Be kind.",
                       generate=lambda seed: {{"things": {{"a": seed}}}}))
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch, registry):
    """A package `sdk_plugins` on sys.path with one module per case; forgotten again after the test."""
    package = tmp_path / "sdk_plugins"
    package.mkdir()
    modules = {
        "__init__": "",
        "registered": PLUGIN.format(wrap="register", name="plug_registered"),
        "exposed": PLUGIN.format(wrap="", name="plug_exposed"),
        "clash": PLUGIN.format(wrap="", name="retail"),
        "empty": "VALUE = 1\n",
        "broken": "import not_installed_anywhere_xyz\n",
        "failing": "VALUE = 1\nraise RuntimeError('no config\\nfound')\n",
        "self_clash": PLUGIN.format(wrap="register", name="retail"),
        "wrong": "DOMAIN = 'telecom'\n",
    }
    for name, text in modules.items():
        (package / f"{name}.py").write_text(textwrap.dedent(text), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield registry
    for name in [name for name in sys.modules if name.split(".")[0] == "sdk_plugins"]:
        del sys.modules[name]


def test_a_module_path_loads_the_domain_it_registers_or_exposes(plugins):
    registered = plugins.get_domain("sdk_plugins.registered")
    assert registered.name == "plug_registered" and plugins.get_domain("plug_registered") is registered
    assert plugins.get_domain("sdk_plugins.registered") is registered  # a second lookup imports nothing new
    exposed = plugins.get_domain("sdk_plugins.exposed")
    assert exposed.name == "plug_exposed" and plugins.get_domain("plug_exposed") is exposed  # registered on the way
    assert exposed.environment(exposed.load()).step({"name": "ping", "arguments": {}}).observation == "pong"
    assert "plug_exposed" in plugins.domains()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sdk_plugins.missing", "nor is it an importable module (no module named 'sdk_plugins.missing')"),
        ("nowhere_pkg.domain", "nor is it an importable module (no module named 'nowhere_pkg')"),
        ("shop", "unknown domain 'shop'; known domains: airline, retail, telecom; nor is it an importable module"),
        ("not a module", "unknown domain 'not a module'; known domains: airline, retail, telecom"),
        ("sdk_plugins.empty", "defines no domain; give it a module-level DOMAIN = Domain(...)"),
        ("sdk_plugins.wrong", "module 'sdk_plugins.wrong': DOMAIN is a str, not a Domain"),
        (
            "sdk_plugins.broken",
            "domain module 'sdk_plugins.broken' cannot be imported: No module named 'not_installed_anywhere_xyz'",
        ),
        ("sdk_plugins.clash", "module 'sdk_plugins.clash': domain name 'retail' is already registered"),
        (
            "sdk_plugins.failing",
            "domain module 'sdk_plugins.failing' cannot be imported: RuntimeError: no config found (",
        ),
        ("sdk_plugins.self_clash", "cannot be imported: ValueError: domain name 'retail' is already registered"),
    ],
)
def test_a_module_path_without_a_domain_is_named_in_one_line(plugins, name, message):
    with pytest.raises(KeyError) as refused:
        plugins.get_domain(name)
    text = refused.value.args[0]
    assert message in text and "\n" not in text
    assert plugins.get_domain("retail").toolkit.__name__ == "RetailTools"  # a clash replaces nothing
