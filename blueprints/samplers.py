"""Phase 1 context samplers: what the blueprint proposer is shown for one proposal.

Five samplers fill a `SampledContext` [paper 1.2]:

- API sampler (always): a random walk on the API graph ending in write tools (`walks.py`).
- Domain-data sampler (always): a user who can make every sampled write, and their records (below).
- Policy sampler: the policy sections and rules that govern the sampled writes, plus the general ones.
- Persona sampler: one persona of the shipped pool (`personas.py`).
- Example sampler: few-shot blueprints, accepted ones of this run first, topped up with the domain's
  `example_tasks.json`.

The paper varies each sampler's frequency on every iteration; here every proposal draws, for each optional
sampler, whether it contributes, with the probability its `*_frequency` setting gives. A skipped sampler
leaves its field empty (`""`, `[]`, `None`).

Determinism: everything follows from `seed`. Each sampler draws from its own stream (`Random(f"{seed}:walk")`
and so on), so the walk, user and records of a seed do not depend on whether a persona or examples were used.

Records and the budget. The user's record and the records the writes act on are always kept (one distinct
record per write; which records qualify is the domain's `write_needs`, see `apigen_mt.simulators.needs`).
Then, in this order of relevance: the records that help write the calls' arguments (an order's products, a
reservation's flights), then the user's other records (every record whose `user_id` is theirs). Records are
whole, or views of the parts a task needs (the needs' `support`), never cut at the budget. The budget counts
`len(json.dumps(record))` of each kept record; the least relevant records are dropped first: kept records are
the longest prefix of that order within the budget.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from pydantic import BaseModel, ConfigDict, Field, field_validator

from apigen_mt.blueprints.personas import load_personas
from apigen_mt.blueprints.walks import random_walk
from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.needs import SampledRecord, WriteNeed, anyone
from apigen_mt.simulators.state import JSON, copy_state
from apigen_mt.simulators.types import Blueprint, ToolSpec

_WALK_ATTEMPTS = 50  # walks drawn before concluding no user can make the combination of writes of any
_UNDECLARED = WriteNeed(None, anyone, (), ())  # a write its domain declares no need for: any user can make it


class SamplerSettings(BaseModel):
    """How the samplers draw. Frequencies are per proposal: the chance an optional sampler contributes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_frequency: float = Field(
        default=1.0, ge=0.0, le=1.0, description="chance the policy sections of the sampled writes are shown"
    )
    persona_frequency: float = Field(default=0.8, ge=0.0, le=1.0, description="chance a persona is shown")
    example_frequency: float = Field(default=0.8, ge=0.0, le=1.0, description="chance few-shot examples are shown")
    max_writes: int = Field(
        default=2, ge=1, le=3, description="a sampled walk ends in 1 to max_writes write tools, drawn uniformly"
    )
    walk_length: tuple[int, int] = Field(
        (1, 3),
        description="(fewest, most) read tools walked back from the first write; fewer where the API graph is not "
        "that deep",
    )
    context_budget_chars: int = Field(
        default=8000,
        gt=0,
        le=10_000_000,
        description="characters of JSON records shown, within one prompt; the least relevant records go first",
    )
    examples: int = Field(
        default=2,
        ge=1,
        le=100,
        description="few-shot examples, each shown in full, when the example sampler contributes",
    )

    @field_validator("walk_length")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        fewest, most = value
        if not 1 <= fewest <= most:
            raise ValueError(f"walk_length is (fewest, most) reads with 1 <= fewest <= most, not {value}")
        return value


@dataclass(frozen=True)
class SampledContext:
    domain: str
    user_id: str
    tools: list[ToolSpec]  # the walk's tools, in walk order: reads, then the writes
    walk: list[str]
    records: dict[str, dict[str, JSON]]  # table -> key -> record (a copy): the user, the written records, the rest
    policy_excerpt: str  # the policy text that applies; "" when the policy sampler was skipped
    rules: list[str]  # "R7: Cancel only pending orders."
    persona: str | None
    examples: list[Blueprint]
    context_ids: list[str]  # walk:a>b>c, user:<id>, order:<id>, ..., rule:<id>, persona:<index>, example:<id>
    seed: int


def sample_context(
    domain: Domain, db: JSON, *, seed: int, settings: SamplerSettings, accepted: Sequence[Blueprint] = ()
) -> SampledContext:
    """One proposal's context, the same for the same arguments. Raises ValueError when the database has no
    `users` table or no user of it can make any write (or the writes of any of the walks drawn)."""
    if "users" not in db:
        raise ValueError(f"the {domain.name} database has no users table to sample a user from")
    specs = {spec.name: spec for spec in domain.toolkit.specs()}
    owned = _owned_records(db)

    def need(write: str) -> WriteNeed:
        return domain.write_needs.get(write, _UNDECLARED)

    # Only writes some user can make start or extend a walk; a retry covers users lacking a combination.
    makeable = [name for name, spec in specs.items() if spec.writes and _anyone_can(db, owned, need(name))]
    if not makeable:
        raise ValueError(f"no user of the {domain.name} database can make any of its writes")
    walk_rng = _stream(seed, "walk")
    for _ in range(_WALK_ATTEMPTS):
        walk = random_walk(
            domain.api_graph,
            specs,
            walk_rng,
            writes=makeable,
            reads=settings.walk_length,
            max_writes=settings.max_writes,
        )
        writes = [name for name in walk if specs[name].writes]
        write_needs = [need(name) for name in writes]
        found = _choose_user(db, owned, write_needs, walk_rng)
        if found is not None:
            break
    else:
        raise ValueError(f"no user of the {domain.name} database can make the writes of {_WALK_ATTEMPTS} sampled walks")
    user_id, targets = found
    records, record_ids = _fit(
        *_candidate_records(db, owned, user_id, write_needs, targets, _stream(seed, "records")),
        settings.context_budget_chars,
    )

    use = _stream(seed, "use")
    use_policy, use_persona, use_examples = (
        use.random() < frequency
        for frequency in (settings.policy_frequency, settings.persona_frequency, settings.example_frequency)
    )
    excerpt, rules = policy_excerpt(domain, writes) if use_policy else ("", [])
    persona_ids, persona = [], None
    if use_persona:
        pool = load_personas()
        index = _stream(seed, "persona").randrange(len(pool))
        persona_ids, persona = [f"persona:{index}"], pool[index]
    examples = _examples(domain, accepted, settings.examples, _stream(seed, "examples")) if use_examples else []

    return SampledContext(
        domain=domain.name,
        user_id=user_id,
        tools=[specs[name] for name in walk],
        walk=walk,
        records=records,
        policy_excerpt=excerpt,
        rules=[f"{rule_id}: {summary}" for rule_id, summary in rules],
        persona=persona,
        examples=[blueprint for _, blueprint in examples],
        context_ids=[
            f"walk:{'>'.join(walk)}",
            *record_ids,
            *(f"rule:{rule_id}" for rule_id, _ in rules),
            *persona_ids,
            *(f"example:{example_id}" for example_id, _ in examples),
        ],
        seed=seed,
    )


def _stream(seed: int, sampler: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so streams are stable across runs and processes.
    return random.Random(f"{seed}:{sampler}")


# Domain-data sampler.

Target = tuple[str, str] | None  # (table, key) of the record a write acts on; None: the user alone


def _owned_records(db: JSON) -> dict[str, dict[str, list[str]]]:
    """Table -> user id -> keys of the records whose `user_id` names that user, in table order."""
    owned: dict[str, dict[str, list[str]]] = {}
    for table, records in db.items():
        if table == "users":
            continue
        for key, record in records.items():
            if isinstance(record, dict) and isinstance(record.get("user_id"), str):
                owned.setdefault(table, {}).setdefault(record["user_id"], []).append(key)
    return owned


def _targets(db: JSON, owned: Mapping[str, Mapping[str, list[str]]], user_id: str, need: WriteNeed) -> list[Target]:
    user = db["users"][user_id]
    if need.table is None:
        return [None] if need.possible(db, user, user) else []
    keys = owned.get(need.table, {}).get(user_id, [])
    return [(need.table, key) for key in keys if need.possible(db, user, db[need.table][key])]


def _anyone_can(db: JSON, owned: Mapping[str, Mapping[str, list[str]]], need: WriteNeed) -> bool:
    return any(_targets(db, owned, user_id, need) for user_id in db["users"])


def _assign(
    options: Sequence[Sequence[Target]], taken: frozenset[tuple[str, str]] = frozenset()
) -> list[Target] | None:
    """One target per write, no record twice (two writes on one record tend to conflict), trying options in order."""
    if not options:
        return []
    for target in options[0]:
        if target is not None and target in taken:
            continue
        rest = _assign(options[1:], taken if target is None else taken | {target})
        if rest is not None:
            return [target, *rest]
    return None


def _choose_user(
    db: JSON, owned: Mapping[str, Mapping[str, list[str]]], needs: Sequence[WriteNeed], rng: random.Random
) -> tuple[str, list[Target]] | None:
    """A user drawn uniformly among those who can make every write, with a target drawn for each write."""
    able = [
        user_id
        for user_id in db["users"]
        if _assign([_targets(db, owned, user_id, need) for need in needs]) is not None
    ]
    if not able:
        return None
    user_id = rng.choice(able)
    shuffled = [rng.sample(options, len(options)) for options in (_targets(db, owned, user_id, need) for need in needs)]
    targets = _assign(shuffled)
    assert targets is not None  # the user was chosen because an assignment exists
    return user_id, targets


def _candidate_records(
    db: JSON,
    owned: Mapping[str, Mapping[str, list[str]]],
    user_id: str,
    needs: Sequence[WriteNeed],
    targets: Sequence[Target],
    rng: random.Random,
) -> tuple[list[SampledRecord], list[SampledRecord]]:
    """The records that must be shown, and the others most relevant first."""
    user = db["users"][user_id]
    essential = [("users", user_id, user)]
    essential += [(target[0], target[1], db[target[0]][target[1]]) for target in targets if target is not None]
    optional: list[SampledRecord] = []
    for need, target in zip(needs, targets, strict=True):
        optional += need.support(db, user if target is None else db[target[0]][target[1]], rng)
    for table, by_user in owned.items():
        optional += [(table, key, db[table][key]) for key in by_user.get(user_id, [])]
    return essential, optional


def _joined(first: JSON, second: JSON) -> JSON:
    """Two views of one record as one: the second's keys added to the first's, nested objects joined alike."""
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return first
    joined = dict(first)
    for key, value in second.items():
        joined[key] = _joined(first[key], value) if key in first else value
    return joined


def _fit(
    essential: list[SampledRecord], optional: list[SampledRecord], budget: int
) -> tuple[dict[str, dict[str, JSON]], list[str]]:
    """Essential records, then optional ones in order while the total stays within `budget`; and their ids."""
    kept: dict[tuple[str, str], JSON] = {}
    total = 0
    for position, (table, key, record) in enumerate([*essential, *optional]):
        before = kept.get((table, key))
        after = record if before is None else _joined(before, record)
        grown = total + _size(after) - (0 if before is None else _size(before))
        if position >= len(essential) and grown > budget:
            break
        kept[(table, key)], total = after, grown
    records: dict[str, dict[str, JSON]] = {}
    for (table, key), record in kept.items():
        records.setdefault(table, {})[key] = record
    return copy_state(records), [f"{table.removesuffix('s')}:{key}" for table, key in kept]


def _size(record: JSON) -> int:
    return len(json.dumps(record))


# Policy sampler.


def _heading(chunk: str) -> str | None:
    first = chunk.split("\n", 1)[0]
    return first.removeprefix("## ").strip() if first.startswith("## ") else None


def policy_excerpt(domain: Domain, writes: Sequence[str]) -> tuple[str, list[tuple[str, str]]]:
    """The policy text and the (id, summary) rules that apply to tasks making `writes`.

    The policy is cut at its `## ` headings. The text before the first heading, the sections no write need of
    the domain names (general ones) and the sections the given writes' needs name are kept, in policy order;
    rules likewise. A domain that declares no write needs gets its whole policy and every rule.
    """
    needs = domain.write_needs
    if not needs:
        return domain.policy.strip(), [(rule.id, rule.summary) for rule in domain.rules]
    named_sections = {section for need in needs.values() for section in need.sections}
    named_rules = {rule_id for need in needs.values() for rule_id in need.rules}
    wanted = [needs[name] for name in writes if name in needs]
    wanted_sections = {section for need in wanted for section in need.sections}
    wanted_rules = {rule_id for need in wanted for rule_id in need.rules}
    chunks = re.split(r"(?m)^(?=## )", domain.policy)
    kept = [chunk for chunk in chunks if _heading(chunk) not in named_sections or _heading(chunk) in wanted_sections]
    rules = [(rule.id, rule.summary) for rule in domain.rules if rule.id not in named_rules or rule.id in wanted_rules]
    return "".join(kept).strip(), rules


# Example sampler.


@cache
def _shipped_examples(package: str, domain_name: str) -> tuple[Blueprint, ...]:
    """The example tasks shipped beside a domain's toolkit, if its package has any."""
    if not package:
        return ()
    try:
        text = files(package).joinpath("example_tasks.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    return tuple(Blueprint.model_validate({**task, "domain": domain_name}) for task in json.loads(text))


def example_tasks(domain: Domain) -> list[Blueprint]:
    """The domain's own example tasks (`example_tasks.json` in its toolkit's package), with `domain` set."""
    return list(_shipped_examples(domain.toolkit.__module__.rpartition(".")[0], domain.name))


def _examples(
    domain: Domain, accepted: Sequence[Blueprint], count: int, rng: random.Random
) -> list[tuple[str, Blueprint]]:
    """(id, blueprint) of up to `count` examples: accepted blueprints of the domain, topped up with shipped ones.

    At least one shipped (curated) example stays whenever the domain has any: examples drawn only from the run's
    own accepted blueprints would let the proposer drift towards its own habits, round after round.
    """
    own = [
        (blueprint.id or f"accepted-{index}", blueprint)
        for index, blueprint in enumerate(accepted)
        if blueprint.domain == domain.name
    ]
    shipped = [(f"task-{index}", blueprint) for index, blueprint in enumerate(example_tasks(domain))]
    curated_slots = 1 if shipped else 0
    chosen = rng.sample(own, min(count - curated_slots, len(own)))
    chosen += rng.sample(shipped, min(count - len(chosen), len(shipped)))
    return chosen
