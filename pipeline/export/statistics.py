"""The figures of an export's dataset card beside its overview charts (`pipeline.export.charts`), counted with
polars from the run's trials (one row per trial, the last written): blueprints played and solved, domains, and
over the unique accepted trajectories turns, tool calls, tokens and the tools used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

_COLUMNS = [
    "blueprint_id",
    "domain",
    "trial",
    "status",
    "turns",
    "tool_calls",
    "prompt_tokens",
    "completion_tokens",
    "human_prompt_tokens",
    "human_completion_tokens",
    "duration_s",
]


@dataclass(frozen=True)
class RunStatistics:
    """What the card reports; `train` figures are over the unique accepted trajectories."""

    trials: int
    unique_accepted: int
    blueprints: int  # with at least one trial
    blueprints_solved: int  # with at least one accepted trial
    domains: dict[str, dict[str, int]]  # domain -> trials, unique_accepted
    train_turns: dict[str, float | None]  # mean, median, max agent turns
    train_tool_calls: dict[str, float | None]
    train_tokens: dict[str, float | None]  # mean tokens per trajectory
    tool_usage: list[tuple[str, int]]  # tool -> calls in train, most used first


def run_statistics(trials: pa.Table, unique: Sequence[bool]) -> RunStatistics:
    """Statistics of one row per trial; `unique[i]` marks row i as a train (unique accepted) trajectory."""
    frame = pl.from_arrow(trials.select(_COLUMNS)).with_columns(pl.Series("unique", list(unique), dtype=pl.Boolean))
    train = frame.filter(pl.col("unique"))
    outcomes = frame.group_by("blueprint_id", maintain_order=True).agg((pl.col("status") == "accepted").alias("ok"))
    results = dict(outcomes.rows())
    domains = {
        domain: {"trials": trials_n, "unique_accepted": unique_n}
        for domain, trials_n, unique_n in frame.group_by("domain")
        .agg(pl.len().alias("trials"), pl.col("unique").sum().alias("unique_accepted"))
        .sort("domain")
        .rows()
    }
    names = [
        str((call.get("function") or {}).get("name", ""))
        for text in trials.filter(pa.array(list(unique), pa.bool_())).column("messages").to_pylist()
        for message in json.loads(text)
        for call in message.get("tool_calls") or []
    ]
    usage = pl.Series("tool", names, dtype=pl.String).value_counts(sort=True)
    return RunStatistics(
        trials=frame.height,
        unique_accepted=train.height,
        blueprints=len(results),
        blueprints_solved=sum(1 for ok in results.values() if any(ok)),
        domains=domains,
        train_turns=_summary(train, "turns"),
        train_tool_calls=_summary(train, "tool_calls"),
        train_tokens={
            column: train.select(pl.col(column).mean()).item()
            for column in ("prompt_tokens", "completion_tokens", "human_prompt_tokens", "human_completion_tokens")
        },
        tool_usage=[(name, count) for name, count in usage.rows()],
    )


def _summary(frame: pl.DataFrame, column: str) -> dict[str, float | None]:
    values = frame.select(
        pl.col(column).mean().alias("mean"), pl.col(column).median().alias("median"), pl.col(column).max().alias("max")
    )
    return values.row(0, named=True)
