"""The retail domain: tau-bench's online shop (users, orders, products), tool for tool."""

from importlib.resources import files

from apigen_mt.simulators.domain_types import Domain
from apigen_mt.simulators.domains.retail import generator, needs, rules, schema
from apigen_mt.simulators.domains.retail.graph import API_GRAPH
from apigen_mt.simulators.domains.retail.tools import RetailTools

DOMAIN = Domain(
    name="retail",
    description="Online retail customer service: orders, returns, exchanges, address and payment changes.",
    toolkit=RetailTools,
    tables=("orders", "products", "users"),
    policy=files(__package__).joinpath("policy.md").read_text(encoding="utf-8"),
    generate=generator.generate,
    rules=rules.RULES,
    api_graph=API_GRAPH,
    record_schemas=schema.RECORD_SCHEMAS,
    write_needs=needs.WRITE_NEEDS,
)
