"""Execution stage: replay a blueprint's actions on a fresh copy of the database and record what changed.

A write whose observation is an error rejects the blueprint: its ground truth would not do what the
instruction asks. A failing read is allowed, because curated ground truth contains reads that are meant to
fail (in tau-bench's retail test split, `get_product_details` of an item id answers `Error: product not
found`); it is recorded in details.
"""

from __future__ import annotations

from typing import Any

from apigen_mt.simulators.domain import Domain
from apigen_mt.simulators.state import JSON, diff_patch, state_digest
from apigen_mt.simulators.trace import ActionTrace, trace_calls
from apigen_mt.simulators.types import Blueprint, Verdict

STAGE = "execution"


def replay_blueprint(domain: Domain, db: JSON, blueprint: Blueprint) -> ActionTrace:
    """The blueprint's ground-truth actions run in order on a fresh copy of `db`."""
    return trace_calls(domain, db, blueprint.actions, user_id=blueprint.user_id, episode=False)


def check_execution(domain: Domain, trace: ActionTrace) -> Verdict:
    tools = domain.toolkit.tools()
    reasons = []
    failed_reads = []
    for call in trace.calls:
        bound = tools.get(call.name)
        if bound is None:
            reasons.append(f"{call.label()}: {call.observation}; {domain.name} has no such tool")
        elif call.failed and call.writes:
            reasons.append(f"{call.label()} failed: {call.observation}")
        elif call.failed:
            failed_reads.append({"index": call.index, "name": call.name, "observation": call.observation})
        if bound is not None and bound.spec.terminates and call.index < len(trace.calls) - 1:
            following = len(trace.calls) - 1 - call.index
            reasons.append(
                f"{call.label()} ends the episode, yet {following} more action(s) follow it; put it last or remove it"
            )
    details: dict[str, Any] = {
        "diff_patch": diff_patch(trace.initial, trace.final),
        "final_digest": state_digest(trace.final),
        "observations": [call.observation for call in trace.calls],
        "failed_reads": failed_reads,
    }
    return Verdict(stage=STAGE, passed=not reasons, reasons=reasons, details=details)
