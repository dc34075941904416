"""A domain: tools + database layout + policy text + policy rules + API dependency graph + data generator."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.state import JSON, copy_state
from apigen_mt.simulators.toolkit import Toolkit


class DataError(ValueError):
    """A domain's data folder is missing files or holds something that is not the expected layout."""


@dataclass(frozen=True)
class PolicyViolation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


@dataclass(frozen=True)
class PolicyRule:
    """One mechanically checkable policy rule. `check` sees an executed action trace and names each violation."""

    id: str
    summary: str
    check: Callable[[Any], list[str]]


@dataclass(frozen=True)
class ApiEdge:
    """`source` produces something (`carries`) that `target` needs: an edge of the API dependency graph."""

    source: str
    target: str
    carries: str


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    toolkit: type[Toolkit]
    tables: tuple[str, ...]  # top-level state keys; each is read from `<key>.json` in a data folder
    policy: str
    generate: Callable[[int], JSON]  # seed -> a full database in the domain's layout
    default_seed: int = 0
    rules: Sequence[PolicyRule] = field(default_factory=tuple)
    api_graph: Sequence[ApiEdge] = field(default_factory=tuple)

    def load(self, data_dir: str | Path | None = None) -> JSON:
        """A fresh database: from a tau-bench-layout folder when given, else the domain's own seeded data."""
        if data_dir is None:
            return copy_state(_generated(self.name, self.default_seed))
        return load_tables(self.tables, Path(data_dir))

    def policy_text(self, data_dir: str | Path | None = None) -> str:
        """The folder's `policy.md` when it has one, else the domain's own policy."""
        if data_dir is not None and (Path(data_dir) / "policy.md").is_file():
            return (Path(data_dir) / "policy.md").read_text(encoding="utf-8")
        return self.policy

    def environment(self, db: JSON) -> Environment:
        return Environment.fresh(self, db)


def load_tables(tables: Sequence[str], data_dir: Path) -> JSON:
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    missing = [f"{table}.json" for table in tables if not (data_dir / f"{table}.json").is_file()]
    if missing:
        raise DataError(f"data folder {data_dir} is missing {', '.join(missing)} (expected {', '.join(f'{t}.json' for t in tables)})")
    db: dict[str, Any] = {}
    for table in tables:
        path = data_dir / f"{table}.json"
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} is not readable JSON: {exc}") from exc
        if not isinstance(records, dict):
            raise DataError(f"{path} must hold a JSON object keyed by record id, not a {type(records).__name__}")
        db[table] = records
    return db


def write_tables(db: JSON, out_dir: Path) -> list[Path]:
    """Write each table as `<key>.json` (indented, key order kept) through a temp name, so no half file remains."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table, records in db.items():
        path = out_dir / f"{table}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


_REGISTRY: dict[str, Domain] = {}


def register(domain: Domain) -> Domain:
    _REGISTRY[domain.name] = domain
    return domain


def domains() -> dict[str, Domain]:
    import apigen_mt.simulators.domains  # noqa: F401  (registers the built-in domains)

    return dict(_REGISTRY)


def get_domain(name: str) -> Domain:
    known = domains()
    if name not in known:
        raise KeyError(f"unknown domain {name!r}; known domains: {', '.join(sorted(known))}")
    return known[name]


@lru_cache(maxsize=8)
def _generated(name: str, seed: int) -> JSON:
    return _REGISTRY[name].generate(seed)
