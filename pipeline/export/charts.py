"""The data of a run's overview charts, shared by the dataset card's plots and the run viewer's overview.

Pure functions, no drawing: Phase 1's funnel from its counts (`RunFolder.funnel()`, or the manifest's
`counts["proposals"]`), and Phase 2's charts from the trials, one row per (blueprint_id, trial), the last
written, holding the small columns `CHART_COLUMNS` (`RunFolder.trials(list(CHART_COLUMNS))`: no message is read).

A funnel is its stages in order, each a subset of the one before, so a stage never counts more than the one
before it. A funnel counts one kind of thing throughout: Phase 1's counts proposal rounds, Phase 2's counts
trials. Counts of another kind (proposals, recombinations, the task files' tasks at stage 1) stand beside the
funnel, not in it: between stages of another unit a funnel would widen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import polars as pl
import pyarrow as pa

from apigen_mt.pipeline.store.proposal_rows import Funnel
from apigen_mt.validators.sampling import blueprint_pass_hat_k

CHART_COLUMNS = (
    "blueprint_id",
    "trial",
    "status",
    "attribution",
    "termination",
    "state_match",
    "outputs_match",
    "terminated",
    "policy_violations",
    "signature",
    "turns",
    "tool_calls",
)


class Stage(NamedTuple):
    """One stage of a funnel: what got this far, and the share of the previous stage's count it kept (None for
    the first stage, and after a stage of 0, where there was nothing to keep)."""

    label: str
    count: int
    kept: float | None


class PassK(NamedTuple):
    """tau-bench's pass^k: the mean over blueprints with at least k trials of C(c, k) / C(n, k), for n trials of
    which c were accepted (a trial the system failed counts as not accepted)."""

    k: int
    value: float
    blueprints: int  # with at least k trials


class Bin(NamedTuple):
    """The trials of one value (agent turns, or tool calls), accepted and not (rejected or failed)."""

    value: int
    accepted: int
    other: int


@dataclass(frozen=True)
class Overview:
    """Every overview chart of a run; `phase1` is None when the run folder holds no Phase 1 rows."""

    phase1: list[Stage] | None
    phase2: list[Stage]
    pass_k: list[PassK]
    attribution: list[tuple[str, int]]
    terminations: list[tuple[str, int]]
    violations_by_rule: list[tuple[str, int]]
    turns: list[Bin]
    tool_calls: list[Bin]


def overview(trials: pa.Table, funnel: Funnel | None) -> Overview:
    """The charts of `trials` (one row per trial, `CHART_COLUMNS` at least) and of Phase 1's `funnel`, if any."""
    return Overview(
        phase1=None if funnel is None else phase1_funnel(funnel),
        phase2=phase2_funnel(trials),
        pass_k=pass_k(trials),
        attribution=attribution(trials),
        terminations=terminations(trials),
        violations_by_rule=violations_by_rule(trials),
        turns=turns_histogram(trials),
        tool_calls=tool_calls_histogram(trials),
    )


def share_text(kept: float | None) -> str:
    """A stage's share kept as a reader sees it: "38%"; "<1%" and ">99%" for shares that would round to 0% or
    100%, so that only none and all read so; "–" when there is no share."""
    if kept is None:
        return "–"
    percent = 100 * kept
    if 0 < percent < 0.5:
        return "<1%"
    if 99.5 <= percent < 100:
        return ">99%"
    return f"{percent:.0f}%"


def phase1_funnel(funnel: Funnel) -> list[Stage]:
    """Phase 1's proposal rounds (every proposal and each of its revisions), stage by stage, from the stored
    funnel (`pipeline.store.proposal_rows.Funnel`):

    - rounds proposed: every proposal (a sampled context) and each revision after the committee's feedback;
    - past the format check: the reply held a task of the right form (a round the system failed, an engine
      down or a reply that is not text, passed no check);
    - past the execution check: its ground-truth actions ran on the domain's database;
    - past the policy check: those actions break no rule of the domain's policy;
    - past the review committee: the committee voted for it;
    - not an excluded task: decontamination found no task of the excluded files it reproduces;
    - accepted blueprints: not a duplicate of a blueprint kept before it (deduplication).

    A proposal is accepted in at most one round, so the last stage counts accepted proposals too. Recombined
    blueprints are not proposal rounds: they are counted beside the funnel (`recombinations`, `recombined`).
    """
    not_excluded = funnel["passed_review"] - funnel["decontaminated"]
    return _stages(
        [
            ("rounds proposed", funnel["proposed"]),
            ("past the format check", funnel["passed_format"]),
            ("past the execution check", funnel["passed_execution"]),
            ("past the policy check", funnel["passed_policy"]),
            ("past the review committee", funnel["passed_review"]),
            ("not an excluded task", not_excluded),
            ("accepted blueprints", not_excluded - funnel["deduplicated"]),
        ]
    )


def phase2_funnel(trials: pa.Table) -> list[Stage]:
    """Phase 2's trials, stage by stage; each stage holds the trials of the one before that also pass its check:

    - trials played: each (blueprint, trial) once, its last row;
    - judged: the system did not fail them (status `failed`: an endpoint or engine down or answering garbage);
    - final database right: the agent's actions left the database as the ground truth's did;
    - expected outputs said: every output the blueprint expects is in one of the agent's replies;
    - episode ended: by the simulated human's stop, a transfer, or a terminating tool (these three make reward 1);
    - no policy violation: the episode breaks no rule of the domain's policy;
    - accepted: the verifier accepted it (also: the simulated human made no mistake);
    - unique accepted trajectories: one per blueprint and distinct agent behaviour (the trajectory signature:
      its calls and replies), the `train` split.

    The task files' tasks (stage 1: given, valid) are counted in tasks, not trials, so they stand beside it.
    """
    frame = _frame(trials)
    checks = [
        ("judged", pl.col("status") != "failed"),
        ("final database right", pl.col("state_match")),
        ("expected outputs said", pl.col("outputs_match")),
        ("episode ended", pl.col("terminated")),
        ("no policy violation", pl.col("policy_violations").list.len() == 0),
        ("accepted", pl.col("status") == "accepted"),
    ]
    counts = [("trials played", frame.height)]
    for label, check in checks:
        frame = frame.filter(check)
        counts.append((label, frame.height))
    unique = frame.select(pl.struct("blueprint_id", "signature").n_unique()).item() if frame.height else 0
    return _stages([*counts, ("unique accepted trajectories", unique)])


def pass_k(trials: pa.Table) -> list[PassK]:
    """pass^k for k = 1 up to the most trials any blueprint has; empty when there is no trial."""
    per_blueprint = (
        _frame(trials)
        .group_by("blueprint_id")
        .agg(pl.len().alias("trials"), (pl.col("status") == "accepted").sum().alias("accepted"))
    )
    # Blueprints of equal (trials, accepted) have one pass^k: each such pair is computed once, a large run has few.
    kinds = (
        per_blueprint.group_by("trials", "accepted").agg(pl.len().alias("blueprints")).sort("trials", "accepted").rows()
    )
    points = []
    for k in range(1, max((trials for trials, _, _ in kinds), default=0) + 1):
        counted = [(trials, accepted, blueprints) for trials, accepted, blueprints in kinds if trials >= k]
        total = sum(blueprints for _, _, blueprints in counted)
        value = sum(
            blueprints * blueprint_pass_hat_k([True] * accepted + [False] * (trials - accepted), k)
            for trials, accepted, blueprints in counted
        )
        points.append(PassK(k, value / total, total))
    return points


def attribution(trials: pa.Table) -> list[tuple[str, int]]:
    """Whose fault the trials not accepted are (agent, human, system), most first."""
    return _tally(_frame(trials).filter(pl.col("status") != "accepted"), "attribution")


def terminations(trials: pa.Table) -> list[tuple[str, int]]:
    """How every trial's episode ended (`termination`), most first."""
    return _tally(_frame(trials), "termination")


def violations_by_rule(trials: pa.Table) -> list[tuple[str, int]]:
    """Rule id -> trials breaking it at least once, most first. A violation reads "[RULE] message"; one that
    names no rule is counted under "unnamed"."""
    rules = (
        _frame(trials)
        .select(pl.int_range(pl.len()).alias("trial"), "policy_violations")
        .explode("policy_violations")
        .drop_nulls("policy_violations")  # a trial without violations explodes to one null
        .select(
            "trial", pl.col("policy_violations").str.extract(r"^\[([^\]]+)\]", 1).fill_null("unnamed").alias("rule")
        )
        .unique()
    )
    return _tally(rules, "rule")


# Of a histogram's values: ten times the most turns an episode may have (EpisodeSettings.max_turns <= 1000).
_WIDEST_RANGE = 10_000


def turns_histogram(trials: pa.Table) -> list[Bin]:
    """Trials by agent turns, from the fewest to the most (values no trial has are bins of 0 up to a range of
    10,000 values; beyond it, as from an edited shard, only the values trials have)."""
    return _histogram(_frame(trials), "turns")


def tool_calls_histogram(trials: pa.Table) -> list[Bin]:
    """Trials by tool calls the agent made, binned as `turns_histogram`."""
    return _histogram(_frame(trials), "tool_calls")


def _frame(trials: pa.Table) -> pl.DataFrame:
    missing = [name for name in CHART_COLUMNS if name not in trials.column_names]
    if missing:
        raise ValueError(f"the trials lack the column(s) {', '.join(missing)} the charts read; read CHART_COLUMNS")
    frame = pl.from_arrow(trials.select(list(CHART_COLUMNS)))
    assert isinstance(frame, pl.DataFrame)  # a Table, not an array, becomes a DataFrame
    return frame


def _stages(counts: list[tuple[str, int]]) -> list[Stage]:
    previous: int | None = None
    stages = []
    for label, count in counts:
        stages.append(Stage(label, count, count / previous if previous else None))
        previous = count
    return stages


def _tally(frame: pl.DataFrame, column: str) -> list[tuple[str, int]]:
    counted = frame.get_column(column).cast(pl.String).fill_null("none").value_counts(name="trials")
    return [(value, count) for value, count in counted.sort(["trials", column], descending=[True, False]).rows()]


def _histogram(frame: pl.DataFrame, column: str) -> list[Bin]:
    if not frame.height:
        return []
    per_value = frame.group_by(column).agg(
        (pl.col("status") == "accepted").sum().alias("accepted"), (pl.col("status") != "accepted").sum().alias("other")
    )
    found = {value: (accepted, other) for value, accepted, other in per_value.rows()}
    # Bins of 0 fill the gaps of a usual range; values far apart (an edited shard) get only the bins they hold.
    span = range(min(found), max(found) + 1)
    values = span if len(span) <= _WIDEST_RANGE else sorted(found)
    return [Bin(value, *found.get(value, (0, 0))) for value in values]
