"""What a write tool needs: the records that make it possible, and the policy that governs it.

A domain declares one `WriteNeed` per write tool (`Domain(write_needs=...)`); the blueprint samplers read them
to show the proposer a user who can make the sampled writes, with the records and the policy that matter.

- `table` and `possible`: the write acts on one of the user's own records in `table` (an order, a line) for
  which `possible(db, user, record)` holds, or, with `table` None, on the user alone (`possible(db, user,
  user)`). "Possible" means the call can succeed and obey the policy, so a proposer writing an ordinary task
  has what it needs; refusals are the proposer's business. A user's records are those whose `user_id` is theirs.
- `support`: further records the proposer needs to write the call's arguments (the products whose variants
  an exchange picks from, the plans a line can move to), as `(table, key, record)`. Big records may be shown
  with only the parts the task needs: a flight lists just the days the task refers to, never all thirty.
- `sections` and `rules`: the policy headings (`## ...` in the policy, without the `## `) and rule ids that
  govern the write. Sections and rules that no write of the domain names are general (authentication, one
  tool call per turn) and apply to every task.

A write without a need can be made by any user, and only the general policy is specific to it; a domain that
declares no needs at all gets its whole policy for every task.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from apigen_mt.simulators.state import JSON

SampledRecord = tuple[str, str, JSON]  # (table, key, the record or the part of it the task needs)
Support = Callable[[JSON, JSON, random.Random], list[SampledRecord]]  # (db, target, rng) -> helpful records


def no_support(db: JSON, target: JSON, rng: random.Random) -> list[SampledRecord]:
    return []


def anyone(db: JSON, user: JSON, target: JSON) -> bool:
    return True


@dataclass(frozen=True)
class WriteNeed:
    table: str | None  # the table of the user's records the write acts on; None: the user alone
    possible: Callable[[JSON, JSON, JSON], bool]  # (db, user, target record or the user) -> the write can succeed
    sections: tuple[str, ...]  # policy headings, without the leading '## '
    rules: tuple[str, ...]  # PolicyRule ids
    support: Support = no_support


def policy_headings(policy: str) -> list[str]:
    return [heading.strip() for heading in re.findall(r"(?m)^## (.+)$", policy)]


def write_need_problems(
    needs: Mapping[str, WriteNeed],
    *,
    writes: Collection[str],
    tables: Collection[str],
    policy: str,
    rule_ids: Collection[str],
) -> list[str]:
    """What in `needs` names no write tool, table, policy heading or rule id. A misspelt section would otherwise
    silently turn general, and a misspelt write would never be looked up."""
    headings = set(policy_headings(policy))
    problems = []
    for name, need in needs.items():
        if name not in writes:
            problems.append(f"{name!r} is not a write tool")
        if need.table is not None and need.table not in tables:
            problems.append(f"{name}: table {need.table!r} is not among the tables")
        problems += [
            f"{name}: section {section!r} is not a '## ' heading of the policy"
            for section in need.sections
            if section not in headings
        ]
        problems += [f"{name}: rule {rule_id!r} is not a rule id" for rule_id in need.rules if rule_id not in rule_ids]
    return problems
