"""The numbers of an evaluation report: pass^k with a confidence interval, and the tallies of a domain's trials.

pass^k is tau-bench's estimator (`validators.sampling.blueprint_pass_hat_k`: per task C(c, k) / C(n, k), averaged
over the tasks with at least k scored trials). Its 95% interval is a percentile bootstrap over tasks: the tasks are
drawn with replacement, the mean of their per-task values taken, `RESAMPLES` times, from a fixed seed, so a report
is the same every time it is computed from the same trials. Trials the system failed (an engine down, replies
nothing could read) say nothing about the agent: they are counted apart and not scored.

Each trial is scored twice: by the benchmark's reward (`reward == 1`: final state, outputs, termination, as
tau-bench and tau2 score it; comparable to published numbers) and by our acceptance (status "accepted": the
reward, and no policy rule broken, and no human error).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from apigen_mt.validators.sampling import blueprint_pass_hat_k

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "human_prompt_tokens", "human_completion_tokens")
INTERVAL_METHOD = f"percentile bootstrap over tasks, {RESAMPLES} resamples, seed {SEED}"


class Estimate(BaseModel):
    """pass^k over `tasks` tasks (those with at least k scored trials) and its interval [low, high]."""

    k: int
    value: float
    low: float
    high: float
    tasks: int


def pass_hat_k_interval(
    outcomes: Mapping[str, Sequence[bool]], k: int, *, resamples: int = RESAMPLES, seed: int = SEED
) -> Estimate:
    """pass^k of the tasks' trial outcomes (task id -> True per success) and its `CONFIDENCE` bootstrap interval.
    ValueError when no task has k trials."""
    scores = [blueprint_pass_hat_k(trials, k) for _, trials in sorted(outcomes.items()) if len(trials) >= k]
    if not scores:
        most = max(map(len, outcomes.values()), default=0)
        raise ValueError(f"pass^{k} needs a task with at least {k} scored trials; the most any has is {most}")
    draw = random.Random(seed)
    means = sorted(sum(draw.choices(scores, k=len(scores))) / len(scores) for _ in range(resamples))
    tail = (1 - CONFIDENCE) / 2
    return Estimate(
        k=k,
        value=sum(scores) / len(scores),
        low=_quantile(means, tail),
        high=_quantile(means, 1 - tail),
        tasks=len(scores),
    )


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly between the two nearest ranks."""
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def pass_curve(outcomes: Mapping[str, Sequence[bool]], max_k: int) -> list[Estimate]:
    """pass^1 .. pass^max_k, each k some task has enough scored trials for."""
    most = max(map(len, outcomes.values()), default=0)
    return [pass_hat_k_interval(outcomes, k) for k in range(1, min(max_k, most) + 1)]


def intervals_apart(a: Estimate, b: Estimate) -> bool:
    """Whether the two intervals do not overlap: the difference a comparison marks."""
    return a.high < b.low or b.high < a.low


def rule_id(violation: str) -> str:
    """The rule of a policy violation `[R1] message`: "R1"; the whole text when it has no such prefix."""
    if violation.startswith("[") and "]" in violation:
        return violation[1 : violation.index("]")]
    return violation


def failed_by_system(row: Mapping[str, Any]) -> bool:
    return row["status"] == "failed" and row["attribution"] == "system"


def domain_report(rows: Iterable[Mapping[str, Any]], max_k: int) -> dict[str, Any]:
    """The report of one domain's trials (one row per trial, trajectory columns): pass^1..max_k by reward and by
    acceptance with their intervals, the unscored system failures, whose the failures are, the policy violations
    by rule, and tokens and seconds per trial."""
    rows = list(rows)
    scored = [row for row in rows if not failed_by_system(row)]
    failures = [row for row in rows if row["status"] != "accepted"]
    attribution = Counter(str(row["attribution"]) for row in failures)
    violations = Counter(rule_id(text) for row in scored for text in row["policy_violations"])
    per_trial = {column: _mean(row[column] for row in scored) for column in (*TOKEN_COLUMNS, "duration_s")}
    return {
        "tasks": len({row["blueprint_id"] for row in rows}),
        "trials": len(rows),
        "scored_trials": len(scored),
        "unscored_system_failures": len(rows) - len(scored),
        "pass_by_reward": [e.model_dump() for e in pass_curve(_outcomes(scored, _rewarded), max_k)],
        "pass_by_acceptance": [e.model_dump() for e in pass_curve(_outcomes(scored, _accepted), max_k)],
        "failures": len(failures),
        "failure_shares": {who: attribution[who] / len(failures) for who in ("agent", "human", "system")}
        if failures
        else {},
        "violations_by_rule": dict(sorted(violations.items(), key=lambda item: (-item[1], item[0]))),
        "per_trial": per_trial,
        "totals": {column: sum(row[column] for row in scored) for column in TOKEN_COLUMNS},
    }


def report_by_domain(rows: Iterable[Mapping[str, Any]], max_k: int) -> dict[str, dict[str, Any]]:
    """`domain_report` of each domain the rows hold, by domain name."""
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["domain"]].append(row)
    return {domain: domain_report(grouped[domain], max_k) for domain in sorted(grouped)}


def _rewarded(row: Mapping[str, Any]) -> bool:
    return row["reward"] == 1.0


def _accepted(row: Mapping[str, Any]) -> bool:
    return row["status"] == "accepted"


def _outcomes(rows: Sequence[Mapping[str, Any]], success: Callable[[Mapping[str, Any]], bool]) -> dict[str, list[bool]]:
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: (row["blueprint_id"], row["trial"])):
        outcomes[row["blueprint_id"]].append(success(row))
    return dict(outcomes)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None
