"""What a domain is made of: tools + database layout and record schemas + policy text + policy rules + API graph
+ data generator + write needs (what each write tool needs to be possible); and how a data folder is read.

The registry that finds a domain by name is `apigen_mt.simulators.domain`, which imports the built-in domains;
they are defined with this module's types, so that the registry and the domains do not import each other."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.needs import WriteNeed, write_need_problems
from apigen_mt.simulators.state import JSON, copy_state
from apigen_mt.simulators.strict_json import StrictJSONError, loads_strict
from apigen_mt.simulators.toolkit import Toolkit


class DataError(ValueError):
    """A domain's data folder is missing files, or holds something that is not the expected layout or records."""


@dataclass(frozen=True)
class PolicyViolation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


@dataclass(frozen=True)
class PolicyRule:
    """One mechanically checkable policy rule. `check` sees an executed action trace and names each violation.

    `refused_calls_count`: whether, in an episode, a call the environment refused (an error observation, the
    database unchanged) can break the rule. True when the attempt itself is what the policy forbids (trying to
    cancel a non-refundable trip); False when a refused call breaks nothing (a payment that does not add up,
    which the tool turned down before the agent corrected it): the violations that only refused calls cause
    are then warnings. Ground truth (a blueprint's trace) is always judged on every call.
    """

    id: str
    summary: str
    check: Callable[[Any], list[str]]
    refused_calls_count: bool = True


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
    # Table -> JSON Schema (Draft 2020-12) of one record; a data folder's records are checked against it
    # at load. Tables without a schema are loaded unchecked.
    record_schemas: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # Write tool -> the records that make it possible and the policy that governs it (`needs.py`); the
    # blueprint samplers read them. Writes without one can be made by any user.
    write_needs: Mapping[str, WriteNeed] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.record_schemas) - set(self.tables))
        if unknown:
            raise ValueError(f"domain {self.name}: record_schemas names {unknown}, not among its tables {self.tables}")
        problems = write_need_problems(
            self.write_needs,
            writes=[spec.name for spec in self.toolkit.specs() if spec.writes],
            tables=self.tables,
            policy=self.policy,
            rule_ids=[rule.id for rule in self.rules],
        )
        if problems:
            raise ValueError(f"domain {self.name}: write_needs: {'; '.join(problems)}")

    @cached_property
    def _record_validators(self) -> dict[str, Draft202012Validator]:
        # Checked and compiled on the first folder loaded, not at import: most runs use the generated data.
        validators = {}
        for table, schema in self.record_schemas.items():
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                problem = f"record_schemas[{table!r}] is not a valid JSON Schema: {exc.message}"
                raise ValueError(f"domain {self.name}: {problem}") from None
            validators[table] = Draft202012Validator(schema)
        return validators

    @cached_property
    def _seeded(self) -> JSON:
        # Generated once per domain object (registered or not); every load hands out a copy.
        return self.generate(self.default_seed)

    def load(self, data_dir: str | Path | None = None) -> JSON:
        """A fresh database: from a tau-bench-layout folder when given (records checked), else the seeded data."""
        if data_dir is None:
            return copy_state(self._seeded)
        return load_tables(self.tables, Path(data_dir), self._record_validators)

    def policy_text(self, data_dir: str | Path | None = None) -> str:
        """The folder's `policy.md` when it has one, else the domain's own policy."""
        if data_dir is not None and (Path(data_dir) / "policy.md").is_file():
            return (Path(data_dir) / "policy.md").read_text(encoding="utf-8")
        return self.policy

    def environment(self, db: JSON) -> Environment:
        return Environment.fresh(self, db)


def load_tables(tables: Sequence[str], data_dir: Path, validators: Mapping[str, Draft202012Validator]) -> JSON:
    """Read `<table>.json` for each table as strict JSON and check each record with its table's validator, if any.

    Raises DataError naming the file, and for a bad record its key and first problem:
    `orders.json: #W2890441: missing required field 'status'`.
    """
    folder_problem = _unusable(data_dir, folder=True)
    if folder_problem is not None:
        raise DataError(f"data folder {folder_problem}")
    missing = []
    for table in tables:
        problem = _unusable(data_dir / f"{table}.json", folder=False)
        if problem == _MISSING:
            missing.append(f"{table}.json")
        elif problem is not None:
            raise DataError(problem)
    if missing:
        expected = ", ".join(f"{t}.json" for t in tables)
        raise DataError(f"data folder {data_dir} is missing {', '.join(missing)} (expected {expected})")
    db: dict[str, Any] = {}
    for table in tables:
        path = data_dir / f"{table}.json"
        records = _read_table(path)
        validator = validators.get(table)
        if validator is not None:
            for key, record in records.items():
                error = next(validator.iter_errors(record), None)
                if error is not None:
                    raise DataError(f"{path}: {key}: {_plain(error)}")
        db[table] = records
    return db


_MISSING = "missing"


def _unusable(path: Path, *, folder: bool) -> str | None:
    """Why `path` cannot be used as a folder (or a table file): `_MISSING`, or a message naming it; None if it can.

    A folder, a symlink loop or an unreadable file is named as what it is, never as missing."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path} is a symlink to {os.readlink(path)}, which does not exist"
        return f"{path} does not exist" if folder else _MISSING
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symlink loop (following its links leads back to it)"
        return f"{path} cannot be read: {exc.strerror}"
    if folder and not stat.S_ISDIR(mode):
        return f"{path} is a file, not a folder"
    if not folder and stat.S_ISDIR(mode):
        return f"{path} is a folder, not a file"
    if not folder and not stat.S_ISREG(mode):
        return f"{path} is not a regular file (a pipe, socket or device cannot hold a table)"
    return None


def _read_table(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        records = loads_strict(text, str(path))
    except StrictJSONError as exc:
        raise DataError(str(exc)) from None
    if not isinstance(records, dict):
        raise DataError(f"{path} must hold a JSON object keyed by record id, not {_kind(records)}")
    return records


_KINDS = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _kind(value: Any) -> str:
    """The JSON kind of a decoded value in words; ints and floats are both "a number", as JSON has one kind."""
    if isinstance(value, bool):
        return _KINDS["boolean"]
    if isinstance(value, (int, float)):
        return _KINDS["number"]
    if isinstance(value, str):
        return _KINDS["string"]
    if isinstance(value, dict):
        return _KINDS["object"]
    if isinstance(value, list):
        return _KINDS["array"]
    return _KINDS["null"]


def _show(value: Any) -> str:
    shown = repr(value) if isinstance(value, str) else json.dumps(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


def _plain(error: ValidationError) -> str:
    """One schema error in plain words, prefixed with its path inside the record (`items[0].price: ...`)."""
    prefix = _path_prefix(error.absolute_path)
    instance, expected = error.instance, error.validator_value
    if error.validator == "required":
        # jsonschema reports missing fields in the schema's order, one error each; this is the first.
        field_name = next(name for name in expected if name not in instance)
        return f"{prefix}missing required field {field_name!r}"
    if error.validator == "type":
        wanted = " or ".join(_KINDS.get(kind, kind) for kind in ([expected] if isinstance(expected, str) else expected))
        return f"{prefix}expected {wanted}, got {_kind(instance)}"
    if error.validator == "enum":
        return f"{prefix}expected one of {', '.join(map(_show, expected))}, got {_show(instance)}"
    if error.validator == "const":
        return f"{prefix}expected {_show(expected)}, got {_show(instance)}"
    if error.validator in ("anyOf", "oneOf") and error.context:
        return _plain_union(error, prefix)
    return f"{prefix}{error.message}"


def _path_prefix(parts: Sequence[str | int]) -> str:
    """`payment_methods.credit_card_7447.last_four: `, or nothing for the record itself."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")
    return f"{where}: " if where else ""


def _plain_union(error: ValidationError, prefix: str) -> str:
    """A value that fits no branch of a union. Tagged unions (every branch requires one enum field, like a
    payment method's `source`) are explained by the branch the tag selects; others by their first branch."""
    branches, instance = error.validator_value, error.instance
    tag = _union_tag(branches) if isinstance(instance, dict) else None
    chosen = 0
    if tag is not None:
        if tag not in instance:
            return f"{prefix}missing required field {tag!r}"
        fitting = [index for index, branch in enumerate(branches) if instance[tag] in branch["properties"][tag]["enum"]]
        if not fitting:
            allowed = [value for branch in branches for value in branch["properties"][tag]["enum"]]
            tag_prefix = _path_prefix([*error.absolute_path, tag])
            return f"{tag_prefix}expected one of {', '.join(map(_show, allowed))}, got {_show(instance[tag])}"
        chosen = fitting[0]
    return _plain(next(sub for sub in error.context if sub.schema_path[0] == chosen))


def _union_tag(branches: list[Any]) -> str | None:
    """The first field that every branch requires and restricts to an enum, if there is one."""
    if not all(isinstance(branch, dict) and "properties" in branch for branch in branches):
        return None
    for name in branches[0]["properties"]:
        tags_every_branch = all(
            name in branch.get("required", ()) and "enum" in branch["properties"].get(name, {}) for branch in branches
        )
        if tags_every_branch:
            return name
    return None
