"""Phase 1's rows as a run folder stores them (`BLUEPRINT_SCHEMA`): the proposals kept, their accepted
blueprints, and the funnel: how far the stored proposals got, stage by stage.

A proposal's rows arrive together and are written one after another; `final` marks the last. A run killed
between two rows of a proposal leaves rounds without a final row; the next run proposes it again from round 0,
and `stored_proposals` keeps only the rows of the run that wrote the final row (per round, the row written
last, up to the final round).
"""

from __future__ import annotations

from typing import Any, TypedDict

import pyarrow as pa

from apigen_mt.simulators.types import Blueprint

# The stages a proposal passes in order; a row's `failed_stage` is the first it did not pass.
STAGE_ORDER = ("format", "execution", "policy", "review", "decontamination", "dedup")


class Funnel(TypedDict):
    """Phase 1's funnel: `proposals` counts sampled contexts, `proposed` every proposal and revision,
    `passed_<stage>` the rounds that got past that stage, `accepted_by_round` the accepted blueprints by the
    round that made them; `recombinations` the groups joined and `recombined` those accepted; `proposals_<status>`
    count proposals (recombinations aside) by how they ended."""

    proposals: int
    proposed: int
    passed_format: int
    passed_execution: int
    passed_policy: int
    passed_review: int
    decontaminated: int
    deduplicated: int
    accepted_by_round: dict[str, int]
    recombinations: int
    recombined: int
    proposals_accepted: int
    proposals_rejected: int
    proposals_failed: int


def proposal_funnel(stored: pa.Table) -> Funnel:
    """The funnel of the stored proposals (`stored_proposals`); recombinations are counted apart."""
    every = stored.to_pylist()
    rows = [row for row in every if not row["parents"]]
    joined = [row for row in every if row["final"] and row["parents"]]
    reached = [len(STAGE_ORDER) if row["status"] == "accepted" else _stage_index(row["failed_stage"]) for row in rows]
    finals = [row for row in rows if row["final"]]
    accepted = [row for row in finals if row["status"] == "accepted"]
    by_round: dict[str, int] = {}
    for row in sorted(accepted, key=lambda row: row["round"]):
        by_round[str(row["round"])] = by_round.get(str(row["round"]), 0) + 1

    def past(stage: str) -> int:
        return sum(1 for stage_reached in reached if stage_reached > STAGE_ORDER.index(stage))

    def ended(status: str) -> int:
        return sum(1 for row in finals if row["status"] == status)

    return Funnel(
        proposals=len(finals),
        proposed=len(rows),
        passed_format=past("format"),
        passed_execution=past("execution"),
        passed_policy=past("policy"),
        passed_review=past("review"),
        decontaminated=sum(1 for row in finals if row["failed_stage"] == "decontamination"),
        deduplicated=sum(1 for row in finals if row["failed_stage"] == "dedup"),
        accepted_by_round=by_round,
        recombinations=len(joined),
        recombined=sum(1 for row in joined if row["status"] == "accepted"),
        proposals_accepted=ended("accepted"),
        proposals_rejected=ended("rejected"),
        proposals_failed=ended("failed"),
    )


def _stage_index(stage: str | None) -> int:
    # No stage: the system failed before the format check could run, so the round passed nothing.
    return 0 if stage is None else STAGE_ORDER.index(stage)


def stored_proposals(table: pa.Table) -> pa.Table:
    """The rows of every proposal whose final row is stored, as the run that wrote that row left them."""
    ids = table.column("blueprint_id").to_pylist()
    rounds = table.column("round").to_pylist()
    final_round = {
        blueprint_id: round
        for blueprint_id, round, final in zip(ids, rounds, table.column("final").to_pylist(), strict=True)
        if final
    }
    latest = {
        (blueprint_id, round): position
        for position, (blueprint_id, round) in enumerate(zip(ids, rounds, strict=True))
        if round <= final_round.get(blueprint_id, -1)
    }
    return table.take(pa.array(sorted(latest.values()), pa.int64()))


def final_rows(stored: pa.Table) -> list[dict[str, Any]]:
    """The final row of each stored proposal, in the order written."""
    return [row for row in stored.to_pylist() if row["final"]]


def accepted_blueprints(stored: pa.Table) -> list[Blueprint]:
    """The blueprints of the stored proposals that ended accepted (after decontamination and dedup)."""
    finals = final_rows(stored)
    return [Blueprint.model_validate_json(row["blueprint"]) for row in finals if row["status"] == "accepted"]
