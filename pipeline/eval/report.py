"""An eval run's report: `OUT/eval.json` (what produced it, and per domain the numbers of
`validators.pass_at_k.report_by_domain`) and `OUT/README.md` (the same as Markdown tables).

Only this eval's tasks and its first `trials` trials of each are reported: a run folder may hold other rows (an
earlier eval with more trials, another task file played into it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apigen_mt.pipeline.store.io import InputError, atomic_output, dumps_strict, read_json
from apigen_mt.pipeline.store.manifest import utc_now
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.validators.pass_at_k import CONFIDENCE, INTERVAL_METHOD, TOKEN_COLUMNS, report_by_domain

REPORT_NAME = "eval.json"
README_NAME = "README.md"
REPORT_FORMAT = "apigen-mt eval report"  # the value of eval.json's `format`: how `--compare` knows an eval run
_ROW_COLUMNS = [
    "blueprint_id",
    "domain",
    "trial",
    "status",
    "attribution",
    "reward",
    "policy_violations",
    *TOKEN_COLUMNS,
    "duration_s",
    "agent_model",
    "human_model",
]


class ReportError(ValueError):
    """A folder holds no readable eval report."""


@dataclass(frozen=True)
class EvalSetup:
    """What an eval played, as its report states it."""

    config_path: str
    config: dict[str, Any]  # the config as loaded
    fingerprint: str
    source: str  # the task file or run folder, as given
    source_kind: str  # "task file" or "run folder (accepted blueprints)"
    split: str | None
    data_dir: str | None
    policy: str  # where the agent's policy came from
    task_ids: frozenset[str]  # the tasks played (every parsed task)
    format_rejected: int  # records that could not be read as tasks (not played)
    stage_one_problems: list[dict[str, Any]]  # stage 1's records of the tasks it finds fault with (played all the same)
    nl_assertions_unscored: int | None  # tau2's natural-language assertions, not scored here; None: not tau2
    trials: int  # per task


def build_report(setup: EvalSetup, folder: RunFolder) -> dict[str, Any]:
    """The report of the folder's rows of this eval's tasks and trials."""
    table = folder.trials(_ROW_COLUMNS) if folder.has_trajectories() else None
    rows = [
        row
        for row in ([] if table is None else table.to_pylist())
        if row["blueprint_id"] in setup.task_ids and row["trial"] < setup.trials
    ]
    return {
        "format": REPORT_FORMAT,
        "written_at": utc_now(),
        "run": str(folder),
        "source": {
            "tasks": setup.source,
            "kind": setup.source_kind,
            "split": setup.split,
            "data_dir": setup.data_dir,
            "policy": setup.policy,
            "tasks_played": len(setup.task_ids),
            "format_rejected": setup.format_rejected,
            "stage_one_problems": [
                {key: record[key] for key in ("id", "failed_stage", "reasons")} for record in setup.stage_one_problems
            ],
            "nl_assertions_unscored": setup.nl_assertions_unscored,
        },
        "trials_per_task": setup.trials,
        "config_path": setup.config_path,
        "fingerprint": setup.fingerprint,
        "models": {
            "agent": sorted({row["agent_model"] for row in rows}),
            "human": sorted({row["human_model"] for row in rows}),
        },
        "interval": {"confidence": CONFIDENCE, "method": INTERVAL_METHOD},
        "domains": report_by_domain(rows, setup.trials),
        "config": setup.config,
    }


def write_report(folder: RunFolder, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """OUT/eval.json and OUT/README.md (each written whole or not at; a mirrored folder's mirror gets both)."""
    paths = folder.path / REPORT_NAME, folder.path / README_NAME
    with atomic_output(paths[0]) as out:
        out.write(dumps_strict(report, indent=2) + "\n")
    with atomic_output(paths[1]) as out:
        out.write(render_readme(report))
    if folder.remote is not None:
        for path in paths:
            folder.remote.push_file(path)
    return paths


def read_report(run: Path) -> dict[str, Any]:
    """RUN/eval.json, checked to be an eval report; ReportError naming the folder otherwise."""
    path = run / REPORT_NAME
    if not run.is_dir():
        raise ReportError(f"{run}: no such folder; --compare takes the output folders of `apigen-mt eval` runs")
    if not path.is_file():
        raise ReportError(f"{run} is not an eval run (it has no {REPORT_NAME}); give folders `apigen-mt eval` wrote")
    try:
        report = read_json(path)
    except InputError as exc:
        raise ReportError(str(exc)) from None
    if (
        not isinstance(report, dict)
        or report.get("format") != REPORT_FORMAT
        or not isinstance(report.get("domains"), dict)
    ):
        raise ReportError(f"{path} is not an eval report of apigen-mt (no `format: {REPORT_FORMAT}`)")
    return report


def _interval(estimate: Mapping[str, Any]) -> str:
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _pass_table(report: Mapping[str, Any]) -> list[str]:
    by_reward = {e["k"]: e for e in report["pass_by_reward"]}
    by_acceptance = {e["k"]: e for e in report["pass_by_acceptance"]}
    lines = ["| k | pass^k, reward = 1 [95% CI] | pass^k, accepted [95% CI] | tasks |", "|---|---|---|---|"]
    for k in sorted(by_reward):
        lines.append(f"| {k} | {_interval(by_reward[k])} | {_interval(by_acceptance[k])} | {by_reward[k]['tasks']} |")
    return lines


def _domain_section(name: str, report: Mapping[str, Any]) -> list[str]:
    unscored = report["unscored_system_failures"]
    lines = [
        f"## {name}",
        "",
        f"{_count(report['tasks'], 'task')}, {_count(report['trials'], 'trial')}: {report['scored_trials']} scored, "
        f"{unscored} not scored "
        "(the system failed them: an engine down, replies nothing could read).",
        "",
    ]
    lines += _pass_table(report) if report["pass_by_reward"] else ["No scored trial: pass^k cannot be estimated."]
    shares = report["failure_shares"]
    who = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    violations = ", ".join(f"{rule} {count}" for rule, count in report["violations_by_rule"].items()) or "none"
    per_trial = report["per_trial"]
    lines += ["", f"- Failures (trials not accepted): {report['failures']}" + (f" ({who})" if who else "")]
    lines += [f"- Policy violations by rule: {violations}"]
    if per_trial["duration_s"] is not None:
        lines.append(
            f"- Per trial (mean): agent {per_trial['prompt_tokens']:.0f} prompt / {per_trial['completion_tokens']:.0f} "
            f"completion tokens, human {per_trial['human_prompt_tokens']:.0f} / "
            f"{per_trial['human_completion_tokens']:.0f}, {per_trial['duration_s']:.1f} s"
        )
    return [*lines, ""]


def render_readme(report: Mapping[str, Any]) -> str:
    """The report as Markdown: what produced it, then a table per domain."""
    source, models = report["source"], report["models"]
    split = f", split {source['split']}" if source["split"] else ""
    lines = [
        f"# Evaluation: {', '.join(models['agent']) or 'no trial played'}",
        "",
        f"- Tasks: {source['tasks']} ({source['kind']}{split}); {source['tasks_played']} played, "
        f"{_count(report['trials_per_task'], 'trial')} each; data: {source['data_dir'] or 'the seeded data'}",
        f"- Policy: {source['policy']}",
        f"- Config: {report['config_path']} (fingerprint {report['fingerprint'][:12]}); agent "
        f"{', '.join(models['agent']) or '-'}, human {', '.join(models['human']) or '-'}",
        f"- pass^k is tau-bench's estimator (per task C(c, k) / C(n, k), averaged over tasks), by the benchmark's "
        f"reward (final state, outputs, termination: comparable to published numbers) and by our acceptance "
        f"(also no policy rule broken, no human error); interval: {report['interval']['method']}, "
        f"{report['interval']['confidence']:.0%}.",
    ]
    notes = _source_notes(source)
    if notes:
        lines.append(f"- {'; '.join(notes)}")
    lines.append("")
    for name, domain in report["domains"].items():
        lines += _domain_section(name, domain)
    return "\n".join(lines)


def _source_notes(source: Mapping[str, Any]) -> list[str]:
    notes = []
    if source["format_rejected"]:
        notes.append(f"{_count(source['format_rejected'], 'record')} could not be read as tasks and were not played")
    if source["stage_one_problems"]:
        notes.append(
            f"{_count(len(source['stage_one_problems']), 'task')} failing stage 1 (format, execution, policy) played "
            "all the same (eval.json lists them with their reasons)"
        )
    if source["nl_assertions_unscored"]:
        notes.append(f"{source['nl_assertions_unscored']} of tau2's nl_assertions left unscored (an LLM judge's)")
    return notes


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def figure_rows(report: Mapping[str, Any]) -> Sequence[tuple[str, int, str, Mapping[str, Any]]]:
    """(domain, k, measure, estimate) of every pass^k of a report, measure "reward" or "accepted"."""
    return [
        (domain, estimate["k"], measure, estimate)
        for domain, figures in report["domains"].items()
        for measure, key in (("reward", "pass_by_reward"), ("accepted", "pass_by_acceptance"))
        for estimate in figures[key]
    ]
