"""The telecom domain: a mobile operator's customer support (plans, lines, bills, top-ups, roaming).

Built with the public SDK only, as an example for researchers adding a domain (see docs/environments.md).
The policy text names the facts of `constants.py` in braces and is filled in here, so each fee, limit and
date is stated once.
"""

from importlib.resources import files

from apigen_mt.simulators.domain_types import Domain
from apigen_mt.simulators.domains.telecom import constants, generator, needs, rules, schema
from apigen_mt.simulators.domains.telecom.graph import API_GRAPH
from apigen_mt.simulators.domains.telecom.tools import TelecomTools

DOMAIN = Domain(
    name="telecom",
    description="Mobile operator customer support: plans, data top-ups, roaming, bills, late fees, line suspensions.",
    toolkit=TelecomTools,
    tables=("bills", "lines", "plans", "users"),
    policy=files(__package__).joinpath("policy.md").read_text(encoding="utf-8").format_map(constants.policy_facts()),
    generate=generator.generate,
    rules=rules.RULES,
    api_graph=API_GRAPH,
    record_schemas=schema.RECORD_SCHEMAS,
    write_needs=needs.WRITE_NEEDS,
)
