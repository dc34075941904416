"""`apigen-mt envs new NAME`: a minimal domain package that works and passes its own tests, to grow into a real one.

The package is a support desk with customers and tickets: three tools (one of them a write) and a transfer, a seeded
generator with record schemas, a policy, one rule, an API graph, what the write needs, one example task and a test
module. It uses the public SDK only and relative imports, so it can live anywhere importable; configs name it by its
module path (`domain: NAME` with its parent folder on PYTHONPATH).
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path
from string import Template

from apigen_mt.simulators.domain import domains


class ScaffoldError(ValueError):
    """The package cannot be created: a bad name or an occupied folder. The message is one line."""


INIT = '''"""The ${name} domain, made by `apigen-mt envs new`: a starting point to replace with your own."""

from importlib.resources import files

from apigen_mt.simulators.domain import Domain, register

from . import data, needs, rules
from .tools import Tools

DOMAIN = register(
    Domain(
        name="${name}",
        description="${title} support desk: customers and their tickets.",
        toolkit=Tools,
        tables=("tickets", "users"),  # each read from <table>.json in a --data-dir
        policy=files(__package__).joinpath("policy.md").read_text(encoding="utf-8"),
        generate=data.generate,
        rules=rules.RULES,
        api_graph=rules.API_GRAPH,
        record_schemas=data.RECORD_SCHEMAS,
        write_needs=needs.WRITE_NEEDS,
    )
)
'''

TOOLS = '''\
"""The ${name} tools: typed, documented methods; each JSON Schema is derived from the signature and docstring."""

from __future__ import annotations

import json
from typing import Literal

from apigen_mt.simulators.toolkit import Toolkit, tool

Resolution = Literal["solved", "duplicate", "not reproducible"]


class Tools(Toolkit):
    @tool()
    def get_user(self, user_id: str) -> str:
        """Show a customer: name, email and the ids of their tickets.

        Args:
            user_id: The customer's id, such as 'user_000'.
        """
        user = self.db["users"].get(user_id)
        return "Error: user not found" if user is None else json.dumps(user)

    @tool()
    def get_ticket(self, ticket_id: str) -> str:
        """Show a ticket: its customer, subject and status.

        Args:
            ticket_id: The ticket id, such as 'T0000'.
        """
        ticket = self.db["tickets"].get(ticket_id)
        return "Error: ticket not found" if ticket is None else json.dumps(ticket)

    @tool(writes=True)
    def close_ticket(self, ticket_id: str, resolution: Resolution) -> str:
        """Close an open ticket with a resolution. Returns the updated ticket.

        Args:
            ticket_id: The ticket id, such as 'T0000'.
            resolution: How the issue ended.
        """
        ticket = self.db["tickets"].get(ticket_id)
        if ticket is None:
            return "Error: ticket not found"
        if ticket["status"] != "open":
            return f"Error: ticket {ticket_id} is already closed"
        ticket["status"] = "closed"
        ticket["resolution"] = resolution
        return json.dumps(ticket)

    @tool(terminates=True)
    def transfer_to_human_agents(self, summary: str) -> str:
        """Hand the conversation to a person, with a summary of the issue.

        Args:
            summary: What the customer needs.
        """
        return "Transfer successful"
'''

DATA = '''"""The ${name} records, stated once as TypedDicts, and the seeded generator of the database."""

from __future__ import annotations

import random
from typing import Any, Literal, NotRequired, TypedDict

from apigen_mt.simulators.toolkit import json_schema_of

N_USERS = 20
FIRST_NAMES = ("Ada", "Bruno", "Chen", "Dana", "Eli", "Fatima", "Goran", "Hana")
LAST_NAMES = ("Okafor", "Silva", "Wang", "Novak", "Haddad", "Kim", "Larsen", "Moreau")
SUBJECTS = ("cannot log in", "the invoice is wrong", "the app crashes on start", "no password reset email")


class User(TypedDict):
    name: str
    email: str
    tickets: list[str]


class Ticket(TypedDict):
    ticket_id: str
    user_id: str
    subject: str
    status: Literal["open", "closed"]
    resolution: NotRequired[str]  # set when the ticket is closed


RECORD_SCHEMAS = {"tickets": json_schema_of(Ticket, "Ticket"), "users": json_schema_of(User, "User")}


def generate(seed: int) -> dict[str, Any]:
    """The whole database for `seed`. Only this `Random` is drawn from, so a seed always gives the same bytes."""
    rng = random.Random(seed)
    users: dict[str, Any] = {}
    tickets: dict[str, Any] = {}
    for number in range(N_USERS):
        user_id = f"user_{number:03d}"
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        users[user_id] = {
            "name": f"{first} {last}",
            "email": f"{first}.{last}.{number}@example.com".lower(),
            "tickets": [],
        }
        for position in range(rng.randint(1, 3)):
            ticket_id = f"T{len(tickets):04d}"
            # Each customer's first ticket is open, so every customer has one to close (the example task needs it).
            closed = position > 0 and rng.random() < 0.5
            ticket = {"ticket_id": ticket_id, "user_id": user_id, "subject": rng.choice(SUBJECTS)}
            ticket["status"] = "closed" if closed else "open"
            if closed:
                ticket["resolution"] = "solved"
            tickets[ticket_id] = ticket
            users[user_id]["tickets"].append(ticket_id)
    return {"tickets": tickets, "users": users}
'''

RULES = '''"""The ${name} policy rules as code, and the API graph the blueprint sampler walks."""

from __future__ import annotations

from apigen_mt.simulators.domain import ApiEdge, PolicyRule
from apigen_mt.simulators.trace import ActionTrace, calls_on_records


def own_tickets_only(trace: ActionTrace) -> list[str]:
    """Closing a ticket of anyone but the conversation's customer (the blueprint's `user_id`) breaks the policy."""
    return [
        f"{call.label()} closes ticket {ticket_id} of {ticket.get('user_id')!r}, "
        f"but the conversation is with {trace.user_id!r}"
        for call, ticket_id, ticket in calls_on_records(trace, {"close_ticket"}, "tickets", "ticket_id")
        if ticket.get("user_id") != trace.user_id
    ]


RULES = [PolicyRule("P1", "Close only tickets of the customer in the conversation.", own_tickets_only)]

API_GRAPH = [
    ApiEdge("get_user", "get_ticket", "ticket_id from the customer's tickets"),
    ApiEdge("get_ticket", "close_ticket", "ticket_id of an open ticket"),
]
'''

NEEDS = '''\
"""What the ${name} write tool needs, so the blueprint sampler proposes it only to a customer who can make it."""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.needs import WriteNeed


def _open(db: dict[str, Any], user: dict[str, Any], ticket: dict[str, Any]) -> bool:
    return ticket["status"] == "open"


# close_ticket acts on one of the customer's own tickets (found by its user_id) that is still open; the proposer
# is shown that ticket, the policy section "Closing a ticket" and rule P1, plus the general "How you work".
WRITE_NEEDS = {"close_ticket": WriteNeed("tickets", _open, sections=("Closing a ticket",), rules=("P1",))}
'''

POLICY = """# ${title} support policy

You are a support agent. You can look up a customer and their tickets, and close a ticket.

## How you work

- Help only the customer whose user id you were given, and only with their own tickets.
- Before closing a ticket, tell the customer which ticket and the resolution, and wait for a clear yes.
- In each turn, either call one tool or write one message to the customer.

## Closing a ticket

- Only an open ticket can be closed. The resolution is `solved`, `duplicate` or `not reproducible`.
"""

EXAMPLE_TASKS = """[
  {
    "user_id": "user_000",
    "instruction": "You are the customer user_000. Your ticket T0000 is solved now, and you want it closed as solved.",
    "actions": [
      {"name": "get_ticket", "arguments": {"ticket_id": "T0000"}},
      {"name": "close_ticket", "arguments": {"ticket_id": "T0000", "resolution": "solved"}}
    ],
    "outputs": []
  }
]
"""

TESTS = '''"""Tests of the ${name} domain, made by `apigen-mt envs new`. From the folder that holds `${name}/`, run

    python -m pytest ${name}
"""

from __future__ import annotations

import json
from pathlib import Path

from apigen_mt.blueprints.samplers import SamplerSettings, example_tasks, sample_context
from apigen_mt.simulators.domain import get_domain
from apigen_mt.validators.blueprint import validate_blueprint

DOMAIN = get_domain("${name}")  # imports the package by its module path if nothing imported it yet


def test_tools_are_described():
    specs = {spec.name: spec for spec in DOMAIN.toolkit.specs()}
    assert sorted(specs) == ["close_ticket", "get_ticket", "get_user", "transfer_to_human_agents"]
    assert [name for name, spec in specs.items() if spec.writes] == ["close_ticket"]


def test_the_same_seed_gives_the_same_data():
    assert json.dumps(DOMAIN.generate(0)) == json.dumps(DOMAIN.generate(0))
    assert json.dumps(DOMAIN.generate(1)) != json.dumps(DOMAIN.generate(0))


def test_generated_data_passes_the_record_schemas(tmp_path: Path):
    db = DOMAIN.generate(1)
    for table, records in db.items():
        (tmp_path / f"{table}.json").write_text(json.dumps(records), encoding="utf-8")
    assert DOMAIN.load(tmp_path) == db


def test_example_tasks_pass_every_validation_stage():
    db = DOMAIN.load()
    tasks = example_tasks(DOMAIN)
    assert tasks
    for task in tasks:
        verdicts = validate_blueprint(DOMAIN, db, task)
        assert [verdict.passed for verdict in verdicts] == [True, True, True], verdicts


def test_sampled_tasks_close_an_open_ticket_of_their_customer():
    db = DOMAIN.load()
    for seed in range(20):
        context = sample_context(DOMAIN, db, seed=seed, settings=SamplerSettings(context_budget_chars=1))
        (ticket,) = context.records["tickets"].values()  # a tiny budget keeps only the customer and the ticket written
        assert ticket["user_id"] == context.user_id and ticket["status"] == "open"


def test_the_policy_stage_rejects_closing_another_customers_ticket():
    db = DOMAIN.load()
    other = next(
        key for key, ticket in db["tickets"].items() if ticket["user_id"] != "user_000" and ticket["status"] == "open"
    )
    action = {"name": "close_ticket", "arguments": {"ticket_id": other, "resolution": "solved"}}
    blueprint = {"user_id": "user_000", "instruction": "Close it.", "actions": [action]}
    verdict = validate_blueprint(DOMAIN, db, blueprint)[-1]
    assert (verdict.stage, verdict.passed) == ("policy", False) and verdict.reasons[0].startswith("[P1]")
'''

FILES = {
    "__init__.py": INIT,
    "tools.py": TOOLS,
    "data.py": DATA,
    "rules.py": RULES,
    "needs.py": NEEDS,
    "policy.md": POLICY,
    "example_tasks.json": EXAMPLE_TASKS,
    "test_${name}.py": TESTS,
}


def check_name(name: str) -> None:
    """Refuse a name that cannot be both the domain's name and an importable package of its own."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ScaffoldError(f"domain name {name!r} must be a lowercase Python identifier, such as 'my_shop'")
    if name in domains():
        raise ScaffoldError(f"domain name {name!r} is taken by a built-in domain; choose another")
    found = importlib.util.find_spec(name)
    if found is not None and found.origin is not None:
        raise ScaffoldError(
            f"a module named {name!r} already exists ({found.origin}); choose a name it does not shadow"
        )


def scaffold(name: str, parent: Path) -> list[Path]:
    """Write the package `parent/name` and return its files. The folder must not exist yet, or be empty."""
    check_name(name)
    target = parent / name
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target} exists and is not a folder; choose another --dir or name")
    if target.is_dir() and any(target.iterdir()):
        raise ScaffoldError(f"{target} already exists and is not empty; choose another --dir or name")
    values = {"name": name, "title": name.replace("_", " ").title()}
    written = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for file_name, template in FILES.items():
            path = target / Template(file_name).substitute(values)
            path.write_text(Template(template).substitute(values), encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise ScaffoldError(f"cannot write into {target}: {exc.strerror or exc}") from None
    return written
