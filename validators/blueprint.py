"""Blueprint validation: format, then execution, then policy, stopping at the first stage that fails.

`validation_record` turns the verdicts into the line `apigen-mt validate` writes (formats.md section 3).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.state import JSON
from apigen_mt.simulators.trace import ActionTrace
from apigen_mt.simulators.types import Blueprint, Verdict
from apigen_mt.validators import execution, policy
from apigen_mt.validators import format as format_stage
from apigen_mt.validators.trajectory import comparable_output

STAGES = (format_stage.STAGE, execution.STAGE, policy.STAGE)


def parse_stages(text: str) -> tuple[str, ...]:
    """`"format,policy"` -> the named stages in pipeline order;
    an unknown name is a ValueError naming the valid ones."""
    return ordered_stages([name.strip() for name in text.split(",") if name.strip()])


def ordered_stages(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise ValueError(f"unknown validation stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if not names:
        raise ValueError(f"no validation stage given; choose from {', '.join(STAGES)}")
    return tuple(stage for stage in STAGES if stage in names)


def validate_blueprint(
    domain: Domain, db: JSON, raw: dict[str, Any] | Blueprint, stages: Sequence[str] = STAGES
) -> list[Verdict]:
    """Verdicts of the requested stages, in pipeline order, up to and including the first failure.

    Execution and policy need a parsed blueprint; when the format stage is not requested and the input does
    not even parse, a failed format verdict says why. Both share one replay of the actions.
    """
    stages = ordered_stages(stages)
    verdicts: list[Verdict] = []
    if format_stage.STAGE in stages:
        verdicts.append(format_stage.check_format(domain, raw))
        if not verdicts[-1].passed:
            return verdicts
    if execution.STAGE not in stages and policy.STAGE not in stages:
        return verdicts
    try:
        blueprint = raw if isinstance(raw, Blueprint) else Blueprint.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or 'blueprint'}: {error['msg']}" for error in exc.errors()
        ]
        return [*verdicts, Verdict(stage=format_stage.STAGE, passed=False, reasons=problems)]
    trace: ActionTrace = execution.replay_blueprint(domain, db, blueprint)
    if execution.STAGE in stages:
        verdicts.append(execution.check_execution(domain, trace))
        if not verdicts[-1].passed:
            return verdicts
    if policy.STAGE in stages:
        verdicts.append(policy.check_policy(domain, trace))
    return verdicts


def stage_one(domain: Domain, db: JSON, blueprint: Blueprint) -> list[Verdict]:
    """Phase 1's stage 1: `validate_blueprint` on every stage, stricter for generated tasks, whose ground truth
    must be clean where tau-bench's curated tasks need not be:

    - format: no call repeated with the same arguments, no output listed twice;
    - execution: every call succeeds (a curated task may try a lookup that fails; a generated one that reads
      a missing record has invented it);
    - when a tool refused a write, the policy rules still judge the replay and their `[RULE]` reasons join
      the execution verdict's, so that the proposer's feedback (and a recombination's conflict) names the
      part of the policy the write breaks.
    """
    repeats = _repeats(blueprint)
    if repeats:
        return [Verdict(stage=format_stage.STAGE, passed=False, reasons=repeats)]
    verdicts = validate_blueprint(domain, db, blueprint)
    executed = next((verdict for verdict in verdicts if verdict.stage == execution.STAGE), None)
    if executed is None:
        return verdicts
    reasons = list(executed.reasons)
    if not executed.passed:
        reasons += policy.check_policy(domain, execution.replay_blueprint(domain, db, blueprint)).reasons
    reasons += [
        f"action {read['index']} ({read['name']}) failed: {read['observation']}; every call of a generated task "
        "must succeed"
        for read in executed.details["failed_reads"]
    ]
    if not reasons:
        return verdicts
    position = verdicts.index(executed)
    return [*verdicts[:position], executed.model_copy(update={"passed": False, "reasons": reasons})]


def with_comparable_outputs(blueprint: Blueprint) -> Blueprint:
    """Stage 1's form of a blueprint that goes on to episodes: its expected outputs as the trajectory verifier
    compares them (`comparable_output`: no commas, which replies lose before the comparison, so "1,234.50"
    becomes "1234.50" instead of never matching), each once."""
    outputs = list(dict.fromkeys(comparable_output(output) for output in blueprint.outputs))
    return blueprint if outputs == blueprint.outputs else blueprint.model_copy(update={"outputs": outputs})


def _repeats(blueprint: Blueprint) -> list[str]:
    reasons = []
    seen: dict[str, int] = {}
    for index, call in enumerate(blueprint.actions):
        key = json.dumps([call.name, call.arguments], sort_keys=True)
        if key in seen:
            reasons.append(f"action {index} ({call.name}) repeats action {seen[key]} with the same arguments")
        seen.setdefault(key, index)
    repeated = sorted({output for output in blueprint.outputs if blueprint.outputs.count(output) > 1})
    reasons += [f"output {output!r} is listed more than once" for output in repeated]
    return reasons


def validation_record(index: int, raw: Any, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """`{index, id, accepted, failed_stage, reasons, diff_patch}` for one input blueprint."""
    failed = next((verdict for verdict in verdicts if not verdict.passed), None)
    executed = next((verdict for verdict in verdicts if verdict.stage == execution.STAGE), None)
    blueprint_id = raw.id if isinstance(raw, Blueprint) else raw.get("id") if isinstance(raw, dict) else None
    return {
        "index": index,
        "id": blueprint_id if isinstance(blueprint_id, str) else None,
        "accepted": failed is None,
        "failed_stage": None if failed is None else failed.stage,
        "reasons": [reason for verdict in verdicts for reason in verdict.reasons],
        "diff_patch": None if executed is None else executed.details["diff_patch"],
    }
