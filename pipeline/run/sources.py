"""Phase 2's input: read the task files a config (or `--tasks`) names as blueprints, give every blueprint a
stable id, and run stage 1 (format, execution, policy) once per blueprint before any episode is played.

A blueprint's id is its task's own `id` when it has one (an integer id becomes its decimal text; any other
non-string id is a format rejection), else `DOMAIN-` and the first 12 hex digits of the SHA-256 of its content,
so resuming a run finds the same ids even when the file's order changes. A record that repeats an earlier one
(the same record, or one without an id and with the same task) is a format rejection naming the earlier one;
two different tasks with one id are an error naming both records.

A task file may be tau-bench's, tau2-bench's or JSON Lines of blueprints (`apigen_mt.blueprints.task_files`).
tau2's split file, `split_tasks.json` beside its task file, selects a split (`split="test"`); a tau2 task file with
a `policy.md` beside it is played under that policy (tau2's text differs from tau-bench's), which
`LoadedSource.policy_origin` names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from apigen_mt.blueprints.task_files import read_tasks
from apigen_mt.pipeline.config import EXAMPLES_PREFIX
from apigen_mt.pipeline.store.io import InputError, read_json, read_records
from apigen_mt.simulators.domain import DataError, Domain, get_domain
from apigen_mt.simulators.state import JSON, state_digest
from apigen_mt.simulators.types import Blueprint, Verdict
from apigen_mt.validators.blueprint import STAGES, validate_blueprint, validation_record, with_comparable_outputs
from apigen_mt.validators.execution import replay_blueprint
from apigen_mt.validators.format import STAGE as FORMAT_STAGE

SPLIT_FILE = "split_tasks.json"  # tau2-bench's: split name -> the ids of its tasks


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
    split: str | None = None  # the split of a tau2 task file these tasks are
    policy_origin: str = ""  # the policy's file, or "domain NAME" for the domain's own
    unscored_assertions: dict[str, int] = field(default_factory=dict)  # tau2 id -> nl_assertions not scored here
    # With validate_source(filter=False): the `validate` records of the blueprints stage 1 refused, played anyway.
    stage_one_problems: list[dict[str, Any]] = field(default_factory=list)

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
    domain_name: str,
    path: Path | str,
    *,
    data_dir: Path | None = None,
    limit: int | None = None,
    split: str | None = None,
) -> LoadedSource:
    """Read one task file's tasks (of `split`, from the split file beside it) as blueprints (ids assigned, repeats
    rejected), at most `limit` of them, and the domain's database; no validation yet. SourceError for an unknown
    split or none to choose from, and for two different tasks with one id."""
    try:
        domain = get_domain(domain_name)
        db = domain.load(data_dir)
    except KeyError as exc:
        raise SourceError(exc.args[0]) from None
    except DataError as exc:
        raise SourceError(str(exc)) from None
    split_ids = None if split is None else read_split_ids(path, split)
    read = read_tasks(_records(path, domain_name), domain=domain_name, db=db, split_ids=split_ids)
    policy, policy_origin = _policy(domain, path, data_dir, tau2=any(task.format == "tau2" for task in read))
    source = LoadedSource(domain, data_dir, db, policy, [], origin=str(path), split=split, policy_origin=policy_origin)
    first: dict[str, tuple[int, dict[str, Any], bool]] = {}  # id -> the record that has it, and whether it gave none
    for task in read:
        index, raw = task.index, task.record
        if limit is not None and len(source.blueprints) + len(source.rejected) >= limit:
            break
        if not isinstance(raw, dict):
            source.rejected.append(_format_rejection(index, raw, [f"{path}: record {index + 1} is not a JSON object"]))
            continue
        if task.problem is not None:
            source.rejected.append(_format_rejection(index, raw, [task.problem]))
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
        if task.format == "tau2":
            source.unscored_assertions[raw["id"]] = task.unscored_assertions
    return source


def split_file(path: Path | str) -> Path:
    """Where a task file's split file is: beside it."""
    return Path(path).parent / SPLIT_FILE


def read_split_ids(path: Path | str, split: str) -> set[str]:
    """The ids of `split` in the split file beside the task file `path`; SourceError naming the file and the splits
    it has when there is no such split or no split file."""
    where = split_file(path)
    if (isinstance(path, str) and path.startswith(EXAMPLES_PREFIX)) or not where.is_file():
        raise SourceError(f"{path} has no split file beside it ({where} not found) to choose split {split!r} from")
    try:
        splits = read_json(where)
    except InputError as exc:
        raise SourceError(str(exc)) from None
    if not isinstance(splits, dict) or not all(isinstance(ids, list) for ids in splits.values()):
        raise SourceError(f"{where} must be a JSON object of split name -> list of task ids")
    if split not in splits:
        raise SourceError(f"{where} has no split {split!r}; its splits: {', '.join(splits) or 'none'}")
    return {str(task_id) for task_id in splits[split]}


def _policy(domain: Domain, path: Path | str, data_dir: Path | None, *, tau2: bool) -> tuple[str, str]:
    """(the policy the agent plays under, where it comes from): a tau2 task file's own policy.md beside it, else the
    data folder's, else the domain's."""
    beside = Path(path).parent / "policy.md"
    if tau2 and beside.is_file():
        return beside.read_text(encoding="utf-8"), str(beside)
    if data_dir is not None and (data_dir / "policy.md").is_file():
        return domain.policy_text(data_dir), str(data_dir / "policy.md")
    return domain.policy, f"domain {domain.name}"


def validate_source(source: LoadedSource, *, filter: bool = True) -> None:
    """Stage 1 on every blueprint, each given its ground-truth digest (the final state of its actions' replay) and
    its outputs as the verifier compares them. filter=True keeps those that pass and records the rest in
    `rejected`; filter=False (eval: every task is played) keeps them all and records the refused ones' verdicts in
    `stage_one_problems`."""
    kept = []
    for position, blueprint in enumerate(map(with_comparable_outputs, source.blueprints)):
        verdicts = validate_blueprint(source.domain, source.db, blueprint, STAGES)
        record = validation_record(source.records.get(str(blueprint.id), position), blueprint, verdicts)
        execution = next((verdict for verdict in verdicts if verdict.stage == "execution"), None)
        if record["accepted"] or not filter:
            kept.append(blueprint)
            digest = (
                execution.details["final_digest"]
                if execution is not None
                else state_digest(replay_blueprint(source.domain, source.db, blueprint).final)
            )
            source.ground_truth[str(blueprint.id)] = digest
        if not record["accepted"]:
            (source.rejected if filter else source.stage_one_problems).append(record)
    source.blueprints = kept
