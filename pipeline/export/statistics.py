"""The figures of an export's dataset card, counted with polars from the run's trials (one row per trial, the
last written): statuses, failure attribution, termination, pass^k, turns, tool calls, tokens, tools used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from apigen_mt.pipeline.store.schemas import STATUSES
from apigen_mt.validators.sampling import pass_hat_k

_COLUMNS = [
    "blueprint_id",
    "domain",
    "trial",
    "status",
    "attribution",
    "termination",
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
    statuses: dict[str, int]
    unique_accepted: int
    blueprints: int  # with at least one trial
    blueprints_solved: int  # with at least one accepted trial
    domains: dict[str, dict[str, int]]  # domain -> trials, unique_accepted
    pass_k: dict[int, tuple[float, int]]  # k -> (pass^k, blueprints with at least k trials)
    attribution: dict[str, int]  # of rejected and failed trials
    termination: dict[str, int]
    train_turns: dict[str, float | None]  # mean, median, max agent turns
    train_tool_calls: dict[str, float | None]
    train_tokens: dict[str, float | None]  # mean tokens per trajectory
    tool_usage: list[tuple[str, int]]  # tool -> calls in train, most used first
    turns_accepted: list[int]
    turns_other: list[int]  # rejected and failed trials


def run_statistics(trials: pa.Table, unique: Sequence[bool]) -> RunStatistics:
    """Statistics of one row per trial; `unique[i]` marks row i as a train (unique accepted) trajectory."""
    frame = pl.from_arrow(trials.select(_COLUMNS)).with_columns(pl.Series("unique", list(unique), dtype=pl.Boolean))
    train = frame.filter(pl.col("unique"))
    outcomes = frame.group_by("blueprint_id", maintain_order=True).agg((pl.col("status") == "accepted").alias("ok"))
    results = dict(outcomes.rows())
    most_trials = max((len(ok) for ok in results.values()), default=0)
    pass_k = {
        k: (pass_hat_k(results, k), sum(1 for ok in results.values() if len(ok) >= k))
        for k in range(1, most_trials + 1)
    }
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
        statuses={status: frame.filter(pl.col("status") == status).height for status in STATUSES},
        unique_accepted=train.height,
        blueprints=len(results),
        blueprints_solved=sum(1 for ok in results.values() if any(ok)),
        domains=domains,
        pass_k=pass_k,
        attribution=_counts(frame.filter(pl.col("status") != "accepted"), "attribution"),
        termination=_counts(frame, "termination"),
        train_turns=_summary(train, "turns"),
        train_tool_calls=_summary(train, "tool_calls"),
        train_tokens={
            column: train.select(pl.col(column).mean()).item()
            for column in ("prompt_tokens", "completion_tokens", "human_prompt_tokens", "human_completion_tokens")
        },
        tool_usage=[(name, count) for name, count in usage.rows()],
        turns_accepted=train.get_column("turns").to_list(),
        turns_other=frame.filter(pl.col("status") != "accepted").get_column("turns").to_list(),
    )


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    counted = frame.get_column(column).fill_null("none").value_counts(sort=True)
    return {str(value): count for value, count in counted.rows()}


def _summary(frame: pl.DataFrame, column: str) -> dict[str, float | None]:
    values = frame.select(
        pl.col(column).mean().alias("mean"), pl.col(column).median().alias("median"), pl.col(column).max().alias("max")
    )
    return values.row(0, named=True)
