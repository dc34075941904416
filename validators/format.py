"""Format stage: is this a well-formed blueprint whose every action is a valid call of a domain tool?

Input is a blueprint as read from a JSON line (`{user_id?, instruction, actions: [{name, arguments|kwargs}],
outputs?, id?}`) or a `Blueprint`. Arguments are checked against the tool's full JSON Schema (Draft 2020-12:
types, enums, nested items, required keys, no unknown top-level argument), which is stricter than the
environment's own check: a blueprint is ground truth, so a value the tool would merely tolerate is still wrong.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.toolkit import BoundTool
from apigen_mt.simulators.types import Blueprint, Verdict
from apigen_mt.validators.trajectory import comparable_output

STAGE = "format"


def check_format(domain: Domain, blueprint: dict[str, Any] | Blueprint) -> Verdict:
    raw = blueprint.model_dump(mode="json") if isinstance(blueprint, Blueprint) else blueprint
    if not isinstance(raw, dict):
        reason = f"a blueprint must be a JSON object with instruction and actions, got {_json_type(raw)}"
        return Verdict(stage=STAGE, passed=False, reasons=[reason])
    reasons = [*_header_problems(domain, raw), *_output_problems(raw)]
    actions = raw.get("actions")
    if not isinstance(actions, list):
        reasons.append(f"actions must be a list of {{name, arguments}} objects, got {_json_type(actions)}")
    else:
        tools = domain.toolkit.tools()
        for index, action in enumerate(actions):
            reasons.extend(_action_problems(domain, tools, index, action))
    return Verdict(stage=STAGE, passed=not reasons, reasons=reasons)


def _header_problems(domain: Domain, raw: dict[str, Any]) -> list[str]:
    problems = []
    instruction = raw.get("instruction")
    if not isinstance(instruction, str):
        problems.append(f"instruction must be a string, got {_json_type(instruction)}")
    elif not instruction.strip():
        problems.append("instruction is empty")
    for key in ("id", "user_id"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            problems.append(f"{key} must be a string, got {_json_type(raw[key])}")
    if raw.get("domain") is not None and raw["domain"] != domain.name:
        problems.append(f"the blueprint is for domain {raw['domain']!r} but is validated against {domain.name!r}")
    return problems


def _output_problems(raw: dict[str, Any]) -> list[str]:
    outputs = raw.get("outputs", [])
    if outputs is None:
        return []
    if not isinstance(outputs, list):
        return [f"outputs must be a list of strings, got {_json_type(outputs)}"]
    return [
        f"outputs[{i}] must be a string, got {_json_type(o)}"
        if not isinstance(o, str)
        else (
            f"outputs[{i}] {o!r} is empty once commas are removed (as they are from replies), "
            "so every reply would match it"
        )
        for i, o in enumerate(outputs)
        if not isinstance(o, str) or not comparable_output(o).strip()
    ]


def _action_problems(domain: Domain, tools: dict[str, BoundTool], index: int, action: Any) -> list[str]:
    where = f"action {index}"
    if not isinstance(action, dict):
        return [f"{where} must be an object {{name, arguments}}, got {_json_type(action)}"]
    name = action.get("name")
    if not isinstance(name, str) or not name:
        return [f"{where} needs a tool name as a non-empty string, got {_json_type(name)}"]
    where = f"{where} ({name})"
    if "arguments" in action and "kwargs" in action:
        return [f"{where} gives both arguments and kwargs; give one of them"]
    if "arguments" not in action and "kwargs" not in action:
        return [f"{where} has no arguments object (use {{}} for a tool without parameters)"]
    arguments = action.get("arguments", action.get("kwargs"))
    if not isinstance(arguments, dict):
        return [f"{where}: arguments must be an object, got {_json_type(arguments)}"]
    bound = tools.get(name)
    if bound is None:
        return [f"{where}: unknown tool {name!r}; {domain.name} tools are {', '.join(sorted(tools))}"]
    # The full schema, stricter than the environment's own check: ground truth must not merely be tolerated.
    errors = sorted(
        bound.validator.iter_errors(arguments), key=lambda error: [str(part) for part in error.absolute_path]
    )
    return [f"{where}: {_argument_path(error)}{error.message}" for error in errors]


def _argument_path(error: jsonschema.ValidationError) -> str:
    if not error.absolute_path:
        return ""
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return f"argument {text}: "


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
