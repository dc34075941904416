"""Task files of three formats, read as blueprint records: what `load_source`, `validate` and `--exclude-tasks` read.

Formats, told apart by their keys (`task_format`):
- tau2-bench: `{id, user_scenario: {instructions: {reason_for_call, known_info, unknown_info, task_instructions}},
  evaluation_criteria: {actions: [{name, arguments}], communicate_info, nl_assertions, reward_basis}}`;
- tau-bench: `{user_id, instruction, actions: [{name, kwargs}], outputs}`;
- blueprint: ours, tau-bench's keys with `id`, `domain`, `provenance` (and `scenario`).

A tau2 task becomes a blueprint (`from_tau2`): its scenario, whose text joined is the instruction; its
`evaluation_criteria.actions` as the ground-truth actions; its `communicate_info` as the expected outputs when
"COMMUNICATE" is in its `reward_basis`, as tau2 scores them only then, else none. tau2 scores `nl_assertions`
with an LLM judge, which is not done here: each record says how many it leaves unscored (`unscored_assertions`).

tau2 tasks name no user; the blueprint's user is found, in this order: a user id of the database written in the
scenario's known_info ("Your user id is X", "You are X"); an action's `user_id` argument; the answer of the
lookup actions (`find_user_id_by_*`) replayed on the database; the owner (`user_id`) of a record an action names
(an order or a reservation id); a user whose email, or whose full name and zip code, the scenario states (a task
without actions). Without a database (decontamination, which compares writes and instructions, not users), only
the `user_id` arguments are read.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.environment import Environment
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.types import Scenario

TaskFormat = Literal["tau2", "tau-bench", "blueprint"]

LOOKUP_PREFIX = "find_user_id_by_"  # retail's find_user_id_by_email / find_user_id_by_name_zip
_WORD = re.compile(r"[\w.+@-]+")


def task_format(record: Any) -> TaskFormat | None:
    """Which format a record is in; None for a record that is not a JSON object."""
    if not isinstance(record, dict):
        return None
    if "user_scenario" in record or "evaluation_criteria" in record:
        return "tau2"
    if any(key in record for key in ("id", "domain", "provenance", "scenario")):
        return "blueprint"
    return "tau-bench"


@dataclass(frozen=True)
class TaskRecord:
    """One record of a task file as a blueprint record: a tau2 task converted, any other record as given.
    `problem` says why a tau2 task could not be converted (the record is then as given)."""

    index: int  # its position in the file
    record: Any
    format: TaskFormat | None
    problem: str | None = None
    unscored_assertions: int = 0  # tau2 nl_assertions, which need an LLM judge and are not scored here


def read_tasks(
    records: Sequence[Any], *, domain: str | None, db: JSON | None, split_ids: Collection[str] | None = None
) -> list[TaskRecord]:
    """Every record (of the split, when `split_ids` is given: the records whose id is in it) as a blueprint record.

    domain: the domain the tasks are for (a tau2 task of another domain keeps its own, which the caller refuses);
    None: each tau2 task's own. db: the database the tasks' users are looked up in (see the module's doc)."""
    finder = _UserFinder(domain, db)
    read = []
    for index, record in enumerate(records):
        if split_ids is not None and not (isinstance(record, dict) and str(record.get("id")) in split_ids):
            continue
        kind = task_format(record)
        if kind != "tau2":
            read.append(TaskRecord(index, record, kind))
            continue
        try:
            blueprint, unscored = from_tau2(record, domain, finder)
        except ValueError as exc:
            read.append(TaskRecord(index, record, kind, problem=str(exc)))
            continue
        read.append(TaskRecord(index, blueprint, kind, unscored_assertions=unscored))
    return read


def from_tau2(task: dict[str, Any], domain: str | None, finder: _UserFinder) -> tuple[dict[str, Any], int]:
    """(blueprint record, nl_assertions left unscored) of one tau2 task; ValueError says what is wrong with it."""
    where = f"tau2 task {task.get('id')!r}"
    scenario_given = _object(task.get("user_scenario"), f"{where}: user_scenario").get("instructions")
    criteria = _object(task.get("evaluation_criteria"), f"{where}: evaluation_criteria")
    if isinstance(scenario_given, str):  # tau2 allows plain-text instructions: an instruction without parts
        scenario, own_domain = None, None
        instruction = scenario_given
    else:
        parts = _object(scenario_given, f"{where}: user_scenario.instructions")
        for key in ("reason_for_call", "known_info", "unknown_info", "task_instructions", "domain"):
            if parts.get(key) is not None and not isinstance(parts[key], str):
                raise ValueError(f"{where}: user_scenario.instructions.{key} must be a string or null")
        scenario = Scenario.model_validate(parts)
        own_domain, instruction = parts.get("domain"), scenario.text()
    actions = _list(criteria.get("actions"), f"{where}: evaluation_criteria.actions")
    calls = [
        {"name": action.get("name"), "arguments": action.get("arguments") or {}} if isinstance(action, dict) else action
        for action in actions
    ]
    reward_basis = _list(criteria.get("reward_basis"), f"{where}: evaluation_criteria.reward_basis")
    outputs = _list(criteria.get("communicate_info"), f"{where}: evaluation_criteria.communicate_info")
    assertions = _list(criteria.get("nl_assertions"), f"{where}: evaluation_criteria.nl_assertions")
    user = task.get("user_id") or finder.user_of(scenario, calls)
    if user is None and finder.db is not None:
        raise ValueError(
            f"{where}: no user found: no user id in its known_info or its actions' arguments, no lookup or record "
            "of its actions gives one, and its scenario names no user by email or by name and zip"
        )
    blueprint = {
        "id": task.get("id"),
        "domain": own_domain or domain,
        "user_id": user,
        "instruction": instruction,
        "actions": calls,
        "outputs": list(outputs) if "COMMUNICATE" in reward_basis else [],
        "scenario": None if scenario is None else scenario.model_dump(),
    }
    return blueprint, len(assertions)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list or null")
    return value


class _UserFinder:
    """The user of a tau2 task, looked up in one database (see the module's doc for the order)."""

    def __init__(self, domain: str | None, db: JSON | None) -> None:
        self.domain = domain
        self.db = db
        self.users: dict[str, Any] = {} if db is None else db.get("users", {})
        self._environment: Environment | None = None  # made on the first lookup; lookups only read

    def user_of(self, scenario: Scenario | None, calls: list[Any]) -> str | None:
        arguments = [
            call["arguments"] for call in calls if isinstance(call, dict) and isinstance(call["arguments"], dict)
        ]
        known = "" if scenario is None else scenario.known_info or ""
        for found in (
            self._named(known),
            self._argument(arguments),
            self._looked_up(calls),
            self._owner(arguments),
            self._described("" if scenario is None else scenario.text()),
        ):
            if found is not None:
                return found
        return None

    def _named(self, text: str) -> str | None:
        return next((word for word in _words(text) if word in self.users), None)

    def _argument(self, arguments: list[dict[str, Any]]) -> str | None:
        given = (args.get("user_id") for args in arguments)
        return next((user for user in given if isinstance(user, str) and (self.db is None or user in self.users)), None)

    def _looked_up(self, calls: list[Any]) -> str | None:
        if self.db is None or self.domain is None:
            return None
        for call in calls:
            if isinstance(call, dict) and isinstance(call["name"], str) and call["name"].startswith(LOOKUP_PREFIX):
                if self._environment is None:
                    self._environment = get_domain(self.domain).environment(self.db)
                result = self._environment.step(call)
                if not result.failed and result.observation in self.users:
                    return result.observation
        return None

    def _owner(self, arguments: list[dict[str, Any]]) -> str | None:
        if self.db is None:
            return None
        for args in arguments:
            for value in args.values():
                for table, records in self.db.items():
                    if table == "users" or not isinstance(records, dict) or not isinstance(value, str):
                        continue
                    record = records.get(value)
                    if isinstance(record, dict) and record.get("user_id") in self.users:
                        return record["user_id"]
        return None

    def _described(self, text: str) -> str | None:
        """The one user whose email, or whose full name and zip code, `text` states."""
        words = set(_words(text))
        lowered = " ".join(text.lower().split())
        matches = [user for user, record in self.users.items() if _describes(record, words, lowered)]
        return matches[0] if len(matches) == 1 else None


def _words(text: str) -> Iterator[str]:
    return (word.strip(".,;:'\"") for word in _WORD.findall(text))


def _describes(record: Any, words: set[str], lowered: str) -> bool:
    if not isinstance(record, dict):
        return False
    if record.get("email") in words:
        return True
    name, address = record.get("name") or {}, record.get("address") or {}
    full = f"{name.get('first_name', '')} {name.get('last_name', '')}".lower()
    return bool(name) and full in lowered and address.get("zip") in words
