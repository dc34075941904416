"""Phase 1's funnel: how far the stored proposals (`pipeline.proposals.stored_proposals`) got, stage by stage."""

from __future__ import annotations

from typing import TypedDict

import pyarrow as pa

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
