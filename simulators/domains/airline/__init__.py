"""The airline domain: tau-bench's airline (users, flights, reservations), tool for tool."""

from importlib.resources import files

from apigen_mt.simulators.domain_types import Domain
from apigen_mt.simulators.domains.airline import generator, needs, rules, schema
from apigen_mt.simulators.domains.airline.graph import API_GRAPH
from apigen_mt.simulators.domains.airline.tools import AirlineTools

DOMAIN = Domain(
    name="airline",
    description="Airline customer service: bookings, flight and cabin changes, baggage, cancellations, compensation.",
    toolkit=AirlineTools,
    tables=("flights", "reservations", "users"),
    policy=files(__package__).joinpath("policy.md").read_text(encoding="utf-8"),
    generate=generator.generate,
    rules=rules.RULES,
    api_graph=API_GRAPH,
    record_schemas=schema.RECORD_SCHEMAS,
    write_needs=needs.WRITE_NEEDS,
)
