"""The trials table and the blueprints list: filters, sort and pages over a `Snapshot`'s small columns (polars), and
the overview's chart data (`pipeline.export.charts`, the same as the dataset card's), once per snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from apigen_mt.pipeline.export import charts
from apigen_mt.pipeline.store.proposal_rows import proposal_funnel
from apigen_mt.pipeline.store.schemas import STATUSES
from apigen_mt.pipeline.view.index import LOC, RunIndex, Snapshot

# Why a trial was not accepted, from the verifier's columns: the reasons' own wording names ids and values.
REASON_KINDS: dict[str, pl.Expr] = {
    "database differs": (pl.col("status") != "failed") & ~pl.col("state_match"),
    "outputs missing": (pl.col("status") != "failed") & ~pl.col("outputs_match"),
    "did not end": (pl.col("status") != "failed") & ~pl.col("terminated"),
    "policy violation": pl.col("policy_violations").list.len() > 0,
    "human error": pl.col("human_errors").list.len() > 0,
    "system failure": pl.col("status") == "failed",
}
SORTS = {
    "written": LOC,
    "blueprint": "blueprint_id",
    "turns": "turns",
    "tool_calls": "tool_calls",
    "tokens": "tokens",
    "duration": "duration_s",
}
PER_PAGE = 50


class TrialQuery(BaseModel):
    """The trials table's filters, sort and page, as the page's form sends them (empty means any)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["", "accepted", "rejected", "failed"] = Field("", description="Only trials of this status.")
    attribution: str = Field("", description="Only trials attributed to agent, human or system.")
    reason: str = Field("", description=f"Only trials rejected for this kind of reason: {', '.join(REASON_KINDS)}.")
    rule: str = Field("", description="Only trials breaking this policy rule id.")
    domain: str = Field("", description="Only trials of this domain.")
    termination: str = Field("", description="Only trials whose episode ended this way.")
    blueprint: str = Field("", description="Only trials whose blueprint id contains this text.")
    min_turns: int | None = Field(None, ge=0, description="Only trials with at least this many agent turns.")
    max_turns: int | None = Field(None, ge=0, description="Only trials with at most this many agent turns.")
    text: str = Field("", description="Only trials whose conversation contains this text (any case).")
    sort: Literal["written", "blueprint", "turns", "tool_calls", "tokens", "duration"] = Field(
        "written", description="The column to sort by."
    )
    descending: bool = Field(False, description="Sort from the largest.")
    page: int = Field(1, ge=1, description="The page, from 1.")


@dataclass(frozen=True)
class TrialsPage:
    rows: list[dict[str, Any]]
    total: int  # trials matching the filters
    page: int
    pages: int


def trials_page(index: RunIndex, snapshot: Snapshot, query: TrialQuery, per_page: int = PER_PAGE) -> TrialsPage:
    """One page of the trials matching `query`, sorted."""
    frame = snapshot.frame
    exact = ("status", "attribution", "domain", "termination")
    conditions = [pl.col(name) == value for name in exact if (value := getattr(query, name))]
    if query.reason:
        if query.reason not in REASON_KINDS:
            raise ValueError(f"reason {query.reason!r} is not one of {', '.join(REASON_KINDS)}")
        conditions.append(REASON_KINDS[query.reason])
    if query.rule:
        prefix = f"[{query.rule}]"
        conditions.append(pl.col("policy_violations").list.eval(pl.element().str.starts_with(prefix)).list.any())
    if query.blueprint:
        conditions.append(pl.col("blueprint_id").str.contains(query.blueprint, literal=True))
    if query.min_turns is not None:
        conditions.append(pl.col("turns") >= query.min_turns)
    if query.max_turns is not None:
        conditions.append(pl.col("turns") <= query.max_turns)
    if query.text:
        conditions.append(pl.col(LOC).is_in(index.search(snapshot, query.text).to_pylist()))
    if conditions:
        frame = frame.filter(pl.all_horizontal(conditions))
    frame = frame.sort([SORTS[query.sort], LOC], descending=[query.descending, False])
    pages = max(1, -(-frame.height // per_page))
    page = min(query.page, pages)
    rows = frame.slice((page - 1) * per_page, per_page).to_dicts()
    return TrialsPage(rows=rows, total=frame.height, page=page, pages=pages)


def facets(snapshot: Snapshot) -> dict[str, list[str]]:
    """The values each filter of the trials table can take in this run, for its drop-downs."""

    def values(column: str) -> list[str]:
        return sorted(value for value in snapshot.frame.get_column(column).unique().to_list() if value is not None)

    memo = snapshot.memo
    if "facets" not in memo:
        memo["facets"] = {
            "status": list(STATUSES),
            "attribution": values("attribution"),
            "reason": list(REASON_KINDS),
            "rule": [rule for rule, _ in overview(snapshot)["violations"]],
            "domain": values("domain"),
            "termination": values("termination"),
        }
    return memo["facets"]


def overview(snapshot: Snapshot) -> dict[str, Any]:
    """The overview's figures and chart data: counts per status, both funnels, pass^k, attribution, terminations,
    violations by rule, turns and tool calls per episode."""
    memo = snapshot.memo
    if "overview" not in memo:
        trials = snapshot.trials
        phase2 = charts.phase2_funnel(trials)
        statuses = snapshot.frame.get_column("status").value_counts()
        memo["overview"] = {
            "counts": {
                "trials": len(trials),
                **{status: 0 for status in STATUSES},
                **dict(statuses.rows()),
                "unique_accepted": phase2[-1].count,
            },
            "phase1": proposal_funnel(snapshot.proposals) if len(snapshot.proposals) else None,
            "phase2": phase2,
            "pass_k": charts.pass_k(trials),
            "attribution": charts.attribution(trials),
            "terminations": charts.terminations(trials),
            "violations": charts.violations_by_rule(trials),
            "turns": charts.turns_histogram(trials),
            "tool_calls": charts.tool_calls_histogram(trials),
        }
    return memo["overview"]


def blueprints_page(snapshot: Snapshot, page: int, per_page: int = PER_PAGE) -> tuple[list[dict[str, Any]], int]:
    """One page of Phase 1's proposals (their final rounds, in the order written), and the number of pages."""
    finals = pl.from_arrow(snapshot.proposals.filter(snapshot.proposals.column("final")))
    assert isinstance(finals, pl.DataFrame)
    pages = max(1, -(-finals.height // per_page))
    page = min(max(page, 1), pages)
    return finals.slice((page - 1) * per_page, per_page).to_dicts(), pages
