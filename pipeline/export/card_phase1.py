"""The dataset card's Phase-1 section: the blueprint funnel and the diversity of the accepted blueprints.

Counted from `RUN/blueprints/part-*.parquet` (the proposals `RunFolder.proposals` keeps), so a
card is current even when the manifest was written by an earlier session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from apigen_mt.blueprints.dedup import write_tool_names
from apigen_mt.pipeline.store.manifest import ExcludedTasks
from apigen_mt.pipeline.store.proposal_rows import Funnel, final_rows, proposal_funnel
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.simulators.domain import get_domain


@dataclass(frozen=True)
class DomainDiversity:
    proposals: int
    accepted: int
    tool_sequences: int  # distinct sequences of called tools, in order
    users: int  # distinct users
    write_tools: list[str]  # the domain's write tools some accepted blueprint calls
    write_tools_total: int


@dataclass(frozen=True)
class Phase1Statistics:
    funnel: Funnel
    domains: dict[str, DomainDiversity]
    excluded: ExcludedTasks | None = None  # what the manifest says Phase 1 was decontaminated against


def phase1_statistics(run_dir: Path) -> Phase1Statistics | None:
    """The Phase-1 figures of a run folder; None when it holds no blueprint shards."""
    run = RunFolder(run_dir)
    if not run.has_proposals():
        return None
    stored = run.proposals()
    finals = final_rows(stored)
    records = []
    for row in finals:
        blueprint = json.loads(row["blueprint"]) if row["status"] == "accepted" else None
        names = [action["name"] for action in blueprint["actions"]] if blueprint else []
        records.append(
            {
                "domain": row["domain"],
                "accepted": blueprint is not None,
                "user_id": row["user_id"],
                "sequence": " > ".join(names),
                "tools": names,
            }
        )
    schema = {
        "domain": pl.String,
        "accepted": pl.Boolean,
        "user_id": pl.String,
        "sequence": pl.String,
        "tools": pl.List(pl.String),
    }
    frame = pl.DataFrame(records, schema=schema)
    per_domain = (
        frame.group_by("domain", maintain_order=True)
        .agg(
            pl.len().alias("proposals"),
            pl.col("accepted").sum().alias("accepted"),
            pl.col("sequence").filter(pl.col("accepted")).n_unique().alias("tool_sequences"),
            pl.col("user_id").filter(pl.col("accepted")).n_unique().alias("users"),
            pl.col("tools").filter(pl.col("accepted")).explode().drop_nulls().unique().alias("called"),
        )
        .sort("domain")
    )
    domains = {}
    for row in per_domain.iter_rows(named=True):
        writes = write_tool_names(get_domain(row["domain"]))
        domains[row["domain"]] = DomainDiversity(
            proposals=row["proposals"],
            accepted=row["accepted"],
            tool_sequences=row["tool_sequences"],
            users=row["users"],
            write_tools=sorted(writes & set(row["called"])),
            write_tools_total=len(writes),
        )
    manifest = run.manifest()
    excluded = None if manifest is None else manifest.excluded_tasks
    return Phase1Statistics(funnel=proposal_funnel(stored), domains=domains, excluded=excluded)


def proposal_counts(statistics: Phase1Statistics) -> list[tuple[str, int]]:
    """What the stored proposals came to, counted in proposals (the Phase 1 funnel counts their rounds)."""
    funnel = statistics.funnel
    return [
        ("proposals (sampled contexts)", funnel["proposals"]),
        *((f"accepted in round {round}", count) for round, count in funnel["accepted_by_round"].items()),
        ("rejected by decontamination", funnel["decontaminated"]),
        ("rejected as duplicates", funnel["deduplicated"]),
        ("recombinations tried (groups of one user's accepted blueprints)", funnel["recombinations"]),
        ("recombinations accepted", funnel["recombined"]),
        ("proposals accepted", funnel["proposals_accepted"]),
        ("proposals rejected", funnel["proposals_rejected"]),
        ("proposals failed", funnel["proposals_failed"]),
    ]


def phase1_section(statistics: Phase1Statistics) -> list[str]:
    """The card's `## Phase 1: blueprints` section as lines."""
    return [
        "## Phase 1: blueprints",
        "",
        "Every proposal and each of its revisions is a row of `blueprints/part-*.parquet` with its status, the stage "
        "that rejected it and the reasons. A round passes the format, execution and policy checks, then the review "
        "committee's vote; an accepted blueprint is then checked against the excluded tasks and the blueprints "
        "kept before it. The funnel above counts the rounds; in proposals:",
        "",
        "| proposals | count |",
        "|---|---:|",
        *(f"| {label} | {count} |" for label, count in proposal_counts(statistics)),
        "",
        decontamination_line(statistics),
        "",
        "Diversity of the accepted blueprints:",
        "",
        "| domain | proposals | accepted | distinct tool sequences | distinct users | write tools covered |",
        "|---|---:|---:|---:|---:|---|",
        *(
            f"| {name} | {d.proposals} | {d.accepted} | {d.tool_sequences} | {d.users} | "
            f"{len(d.write_tools)} of {d.write_tools_total}{_named(d.write_tools)} |"
            for name, d in statistics.domains.items()
        ),
        "",
    ]


def decontamination_line(statistics: Phase1Statistics) -> str:
    """What the run's accepted blueprints were checked against (`--exclude-tasks`, `--exclude-split`), as the
    manifest records it."""
    excluded = statistics.excluded
    if excluded is None:
        return "Decontamination: not checked against any benchmark's tasks (the run was given no `--exclude-tasks`)."
    split = f" of split `{excluded.split}`" if excluded.split else ""
    return (
        f"Decontamination: the accepted blueprints were checked against the {excluded.tasks} tasks{split} of "
        f"`{excluded.file}`; {statistics.funnel['decontaminated']} proposals were rejected for reproducing one "
        "(the same write actions, or a too similar instruction)."
    )


def _named(tools: list[str]) -> str:
    return f" ({', '.join(f'`{tool}`' for tool in tools)})" if tools else ""
