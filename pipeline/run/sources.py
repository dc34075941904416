"""Phase 2's input: read the task files a config (or `--tasks`) names as blueprints, give every blueprint a
stable id, and run stage 1 (format, execution, policy) once per blueprint before any episode is played.

A blueprint's id is its task's own `id` when it has one (an integer id becomes its decimal text; any other
non-string id is a format rejection), else `DOMAIN-` and the first 12 hex digits of the SHA-256 of its content,
so resuming a run finds the same ids even when the file's order changes. A record that repeats an earlier one
(the same record, or one without an id and with the same task) is a format rejection naming the earlier one;
two different tasks with one id are an error naming both records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from apigen_mt.pipeline.config import EXAMPLES_PREFIX
from apigen_mt.pipeline.store.io import InputError, read_records
from apigen_mt.simulators.domain import DataError, Domain, get_domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Blueprint, Verdict
from apigen_mt.validators.blueprint import STAGES, validate_blueprint, validation_record, with_comparable_outputs
from apigen_mt.validators.format import STAGE as FORMAT_STAGE


class SourceError(ValueError):
    """A task file cannot be used: unknown domain, unreadable file, bad data folder."""


@dataclass
class LoadedSource:
    """One task file's blueprints (or Phase 1's accepted ones of a domain) with the database and policy their
    episodes run on."""

    domain: Domain
    data_dir: Path | None
    db: JSON
    policy: str
    blueprints: list[Blueprint]
    rejected: list[dict[str, Any]] = field(default_factory=list)  # `validate` records of blueprints stage 1 refused
    ground_truth: dict[str, str] = field(default_factory=dict)  # blueprint id -> final digest of its actions
    origin: str = ""  # where the blueprints come from, as the stored rejections name it: the task file, or Phase 1
    records: dict[str, int] = field(default_factory=dict)  # blueprint id -> its record's index in the task file

    @property
    def label(self) -> str:
        return self.domain.name if self.data_dir is None else f"{self.domain.name} ({self.data_dir})"


def blueprint_id(domain: str, raw: dict[str, Any]) -> str:
    content = {key: raw.get(key) for key in ("user_id", "instruction", "actions", "outputs")}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return f"{domain}-{digest[:12]}"


def _records(path: Path | str, domain: str) -> list[Any]:
    if isinstance(path, str) and path.startswith(EXAMPLES_PREFIX):
        name = path.removeprefix(EXAMPLES_PREFIX) or domain
        try:
            text = (
                files(f"apigen_mt.simulators.domains.{name}").joinpath("example_tasks.json").read_text(encoding="utf-8")
            )
        except (ModuleNotFoundError, FileNotFoundError):
            raise SourceError(f"{path}: domain {name!r} ships no example_tasks.json") from None
        return json.loads(text)
    try:
        return read_records(Path(path))
    except InputError as exc:
        raise SourceError(str(exc)) from None


def _format_rejection(index: int, raw: Any, reasons: list[str]) -> dict[str, Any]:
    """The `validate` record of a record refused before it could become a `Blueprint`."""
    return validation_record(index, raw, [Verdict(stage=FORMAT_STAGE, passed=False, reasons=reasons)])


def load_source(
    domain_name: str, path: Path | str, *, data_dir: Path | None = None, limit: int | None = None
) -> LoadedSource:
    """Read one task file's tasks as blueprints (ids assigned, repeats rejected), at most `limit` of them, and the
    domain's database; no validation yet. SourceError for two different tasks with one id."""
    try:
        domain = get_domain(domain_name)
        db = domain.load(data_dir)
    except KeyError as exc:
        raise SourceError(exc.args[0]) from None
    except DataError as exc:
        raise SourceError(str(exc)) from None
    records = _records(path, domain_name)
    source = LoadedSource(domain, data_dir, db, domain.policy_text(data_dir), [], origin=str(path))
    first: dict[str, tuple[int, dict[str, Any], bool]] = {}  # id -> the record that has it, and whether it gave none
    for index, raw in enumerate(records):
        if limit is not None and len(source.blueprints) + len(source.rejected) >= limit:
            break
        if not isinstance(raw, dict):
            source.rejected.append(_format_rejection(index, raw, [f"{path}: record {index + 1} is not a JSON object"]))
            continue
        given = raw.get("id")
        if isinstance(given, bool) or not isinstance(given, int | str | None):
            reason = f"id: must be a string or an integer, not {json.dumps(given)}"
            source.rejected.append(_format_rejection(index, raw, [reason]))
            continue
        raw = {**raw, "id": blueprint_id(domain_name, raw) if given is None else str(given)}
        if raw.get("domain") not in (None, domain_name):
            reason = f"the blueprint is for domain {raw['domain']!r}, the source is {domain_name!r}"
            source.rejected.append(_format_rejection(index, raw, [reason]))
            continue
        if raw["id"] in first:
            earlier, earlier_raw, earlier_had_none = first[raw["id"]]
            # Without an id, the id is the task's content: two such records with one id are one task.
            if raw != earlier_raw and not (given is None and earlier_had_none):
                raise SourceError(
                    f"{path}: records {earlier + 1} and {index + 1} are different tasks with the same id "
                    f"{raw['id']!r}; give each its own id"
                )
            reason = f"record {index + 1} repeats record {earlier + 1} (id {raw['id']!r}), which is played once"
            source.rejected.append(_format_rejection(index, raw, [reason]))
            continue
        first[raw["id"]] = (index, raw, given is None)
        try:
            source.blueprints.append(Blueprint.model_validate({**raw, "domain": domain_name}))
        except ValidationError as exc:
            reasons = [f"{'.'.join(str(p) for p in e['loc']) or 'blueprint'}: {e['msg']}" for e in exc.errors()]
            source.rejected.append(_format_rejection(index, raw, reasons))
            continue
        source.records[raw["id"]] = index
    return source


def validate_source(source: LoadedSource) -> None:
    """Stage 1 on every blueprint: keep those that pass (with their ground-truth digest and their outputs as the
    verifier compares them), record the rest."""
    kept = []
    for position, blueprint in enumerate(map(with_comparable_outputs, source.blueprints)):
        verdicts = validate_blueprint(source.domain, source.db, blueprint, STAGES)
        record = validation_record(source.records.get(str(blueprint.id), position), blueprint, verdicts)
        if record["accepted"]:
            kept.append(blueprint)
            execution = next(verdict for verdict in verdicts if verdict.stage == "execution")
            source.ground_truth[str(blueprint.id)] = execution.details["final_digest"]
        else:
            source.rejected.append(record)
    source.blueprints = kept
