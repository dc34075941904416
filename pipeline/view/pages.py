"""What the trial page and the blueprint page show, gathered from a `Snapshot` (the page's rows read whole from
their shards, nothing else)."""

from __future__ import annotations

from typing import Any

import polars as pl

from apigen_mt.pipeline.view import conversation
from apigen_mt.pipeline.view.index import LOC, RunIndex, Snapshot


class NotFound(LookupError):
    """The run folder holds no such trial or blueprint; the message says which."""


def _trials_of(snapshot: Snapshot, blueprint_id: str) -> list[dict[str, Any]]:
    frame = snapshot.frame.filter(pl.col("blueprint_id") == blueprint_id).sort("trial")
    return frame.select("trial", "status", "attribution", "turns", LOC).to_dicts()


def trial_page(index: RunIndex, snapshot: Snapshot, blueprint_id: str, trial: int) -> dict[str, Any]:
    """One trial (`trial_view`) and the other trials of its blueprint."""
    siblings = _trials_of(snapshot, blueprint_id)
    found = [sibling for sibling in siblings if sibling["trial"] == trial]
    if not found:
        raise NotFound(f"the run folder holds no trial {trial} of blueprint {blueprint_id!r}")
    row = index.trial_row(snapshot, found[0][LOC])
    return trial_view(row) | {"siblings": siblings}


def trial_view(row: dict[str, Any]) -> dict[str, Any]:
    """What the trial page shows of one stored trial row (the static file shows the same)."""
    messages = conversation.decode(row["messages"])
    bubbles = conversation.chat(messages if isinstance(messages, list) else [])
    blueprint = conversation.decode(row["blueprint"]) or {}
    truth = (blueprint.get("actions") or []) if isinstance(blueprint, dict) else []
    return {
        "row": row,
        "bubbles": bubbles,
        "blueprint": blueprint,
        "actions": conversation.actions_against_truth(bubbles, truth),
        "reasons": conversation.linked_reasons(row["reasons"], bubbles),
        "difference": conversation.database_difference(row["reasons"]),
    }


def blueprint_page(index: RunIndex, snapshot: Snapshot, blueprint_id: str) -> dict[str, Any]:
    """One blueprint: every Phase 1 round (proposal, failed stage, votes and reflections, the feedback each round
    answered), the parts of a recombination and the recombinations it is part of, and its trials."""
    proposals = pl.from_arrow(snapshot.proposals)
    assert isinstance(proposals, pl.DataFrame)
    mine = proposals.filter(pl.col("blueprint_id") == blueprint_id).sort("round")
    rounds = []
    for loc in mine.get_column(LOC).to_list():
        row = index.proposal_row(snapshot, loc)
        rounds.append(
            row
            | {
                "blueprint": conversation.decode(row["blueprint"]),
                "votes": conversation.decode(row["votes"]),
                "diff_patch": conversation.decode(row["diff_patch"]),
            }
        )
    trials = _trials_of(snapshot, blueprint_id)
    if not rounds and not trials:
        raise NotFound(f"the run folder holds no proposal and no trial of blueprint {blueprint_id!r}")
    finals = proposals.filter(pl.col("final"))
    part_of = [
        row["blueprint_id"]
        for row in finals.select("blueprint_id", "parents").to_dicts()
        if blueprint_id in row["parents"]
    ]
    played = None
    if not rounds:  # a task file's blueprint: what its trials played
        played = conversation.decode(index.trial_row(snapshot, trials[0][LOC])["blueprint"])
    return {
        "blueprint_id": blueprint_id,
        "rounds": rounds,
        "parts": rounds[-1]["parents"] if rounds else [],
        "part_of": part_of,
        "trials": trials,
        "played": played,
    }
