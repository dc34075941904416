"""`apigen-mt eval --compare RUN RUN ...`: the eval runs' pass^k side by side in one table, per domain, k and
measure (the benchmark's reward, our acceptance), each run's value marked where its interval does not overlap the
first run's (`validators.pass_at_k.intervals_apart`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apigen_mt.pipeline.eval.report import README_NAME, figure_rows, read_report
from apigen_mt.pipeline.store.io import atomic_output, dumps_strict
from apigen_mt.validators.pass_at_k import Estimate, intervals_apart

COMPARE_NAME = "compare.json"
MARK = "†"


class CompareError(ValueError):
    """The runs cannot be compared: fewer than two, or one is not an eval run."""


def compare_runs(runs: Sequence[Path]) -> dict[str, Any]:
    """The comparison of the eval runs' reports: a row per (domain, k, measure) any run has, each run's estimate
    (None where it has none) and whether it differs from the first run's."""
    if len(runs) < 2:
        raise CompareError(f"--compare needs at least two eval runs, got {len(runs)}")
    reports = [read_report(run) for run in runs]
    figures = [{(domain, k, measure): e for domain, k, measure, e in figure_rows(report)} for report in reports]
    keys = sorted({key for run in figures for key in run}, key=lambda key: (key[0], key[1], key[2] != "reward"))
    rows = []
    for domain, k, measure in keys:
        first = figures[0].get((domain, k, measure))
        values = []
        for run in figures:
            estimate = run.get((domain, k, measure))
            differs = (
                estimate is not None
                and first is not None
                and estimate is not first
                and intervals_apart(Estimate(**first), Estimate(**estimate))
            )
            values.append(None if estimate is None else {**estimate, "differs_from_first": differs})
        rows.append({"domain": domain, "k": k, "measure": measure, "values": values})
    return {
        "runs": [str(run) for run in runs],
        "models": [", ".join(report["models"]["agent"]) or "-" for report in reports],
        "sources": [_source_label(report) for report in reports],
        "rows": rows,
    }


def _source_label(report: dict[str, Any]) -> str:
    source = report["source"]
    return source["tasks"] + (f" ({source['split']})" if source["split"] else "")


def render_comparison(comparison: dict[str, Any]) -> str:
    """The comparison as one Markdown table, runs as columns."""
    runs = comparison["runs"]
    header = " | ".join(f"{run}: {model}" for run, model in zip(runs, comparison["models"], strict=True))
    lines = [
        "# Eval runs compared",
        "",
        f"pass^k [95% CI]; {MARK}: the interval does not overlap the first run's. Tasks: "
        + "; ".join(f"{run}: {source}" for run, source in zip(runs, comparison["sources"], strict=True)),
        "",
        f"| domain | k | measure | {header} |",
        "|---|---|---|" + "---|" * len(runs),
    ]
    for row in comparison["rows"]:
        cells = [_cell(value) for value in row["values"]]
        lines.append(f"| {row['domain']} | {row['k']} | {row['measure']} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _cell(value: dict[str, Any] | None) -> str:
    if value is None:
        return "-"
    mark = f" {MARK}" if value["differs_from_first"] else ""
    return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]{mark}"


def write_comparison(comparison: dict[str, Any], output: Path) -> tuple[Path, Path]:
    """OUTPUT/README.md and OUTPUT/compare.json (the folder made when missing)."""
    paths = output / README_NAME, output / COMPARE_NAME
    with atomic_output(paths[0]) as out:
        out.write(render_comparison(comparison))
    with atomic_output(paths[1]) as out:
        out.write(dumps_strict(comparison, indent=2) + "\n")
    return paths
