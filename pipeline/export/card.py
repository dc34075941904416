"""The dataset card of an export, `RUN/README.md`: the overview charts of `pipeline.export.charts` as tables and
PNG plots (`pipeline.export.card_plots`), one funnel per phase, and the figures of `pipeline.export.statistics`.

A run with Phase 1 (blueprint shards) gets its funnel and diversity section too (`pipeline.export.card_phase1`).

The README's YAML front matter holds only what is known for certain (name, task, tags, size) and one
config per layout pointing at `data/<format>/<split>-*.parquet`, so the Hub viewer finds every split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from apigen_mt.pipeline.export.card_phase1 import Phase1Statistics, phase1_section, phase1_statistics
from apigen_mt.pipeline.export.card_plots import draw_plots
from apigen_mt.pipeline.export.charts import Bin, Overview, Stage, overview, share_text
from apigen_mt.pipeline.export.layouts import SetAside
from apigen_mt.pipeline.export.statistics import RunStatistics
from apigen_mt.pipeline.store.manifest import RunManifest

CARD = "README.md"
PLOTS_DIR = "plots"


def write_card(
    staging: Path,
    run_dir: Path,
    trials: pa.Table,
    statistics: RunStatistics,
    manifest: RunManifest | None,
    *,
    exported: Mapping[str, Mapping[str, int]],
    dataset_dirs: Mapping[str, str],
    set_aside: SetAside,
) -> None:
    """Write the card of `run_dir` into `staging` (the export's temp folder, swapped in whole): `plots/*.png` and
    `README.md`; `trials` holds one row per trial, `exported` is format -> split -> rows written, `set_aside` the
    trials in no split."""
    phase1 = phase1_statistics(run_dir)
    charts = overview(trials, None if phase1 is None else phase1.funnel)
    (staging / PLOTS_DIR).mkdir()
    draw_plots(staging / PLOTS_DIR, charts)
    text = card_text(run_dir.name, statistics, manifest, charts, exported, dataset_dirs, phase1, set_aside)
    (staging / CARD).write_text(text, encoding="utf-8")


def _funnel_section(charts: Overview, statistics: RunStatistics, manifest: RunManifest | None) -> list[str]:
    """The card's `## Funnel`: one table per phase, with what stands beside each funnel (counted in another unit)."""
    tasks = manifest.counts.get("tasks") if manifest else None
    lines = [
        "## Funnel",
        "",
        "One funnel per phase, each counting one kind of thing: Phase 1 its proposal rounds, Phase 2 its trials. A "
        "stage holds what got past the stage before and one more check, so it never grows; `kept` is its share of "
        "the stage before.",
        "",
    ]
    if charts.phase1 is not None:
        lines += [
            "### Phase 1: proposal rounds",
            "",
            *_stage_table(charts.phase1, "rounds"),
            "",
            "Each proposal is a sampled context, revised after the committee's feedback until accepted or out of "
            "rounds; recombined blueprints are not rounds (see Phase 1 below).",
            "",
        ]
    lines += ["### Phase 2: trials", ""]
    if tasks:  # the task files' tasks at stage 1, counted in tasks, not trials
        lines += [
            f"Stage 1 of the tasks given to Phase 2: {tasks.get('input', 0)} given, {tasks.get('valid', 0)} valid, "
            f"{tasks.get('rejected', 0)} rejected (their reasons in `tasks-rejected.jsonl`).",
            "",
        ]
    return [
        *lines,
        f"{statistics.blueprints} blueprints have trials; {statistics.blueprints_solved} of them a verified "
        "trajectory.",
        "",
        *_stage_table(charts.phase2, "trials"),
        "",
        "![one funnel per phase](plots/funnel.png)",
        "",
    ]


def _stage_table(stages: Sequence[Stage], unit: str) -> list[str]:
    return [
        f"| stage | {unit} | kept |",
        "|---|---:|---:|",
        *(f"| {stage.label} | {stage.count} | {share_text(stage.kept)} |" for stage in stages),
    ]


def _counts_table(heading: str, counts: Sequence[tuple[str, int]], empty: str) -> list[str]:
    return [
        f"| {heading} | trials |",
        "|---|---:|",
        *(f"| {name} | {count} |" for name, count in counts),
        *([] if counts else [f"| ({empty}) | 0 |"]),
    ]


def _histogram_table(unit: str, bins: Sequence[Bin]) -> list[str]:
    """The histogram's bins that hold a trial."""
    return [
        f"| {unit} | accepted | rejected or failed |",
        "|---:|---:|---:|",
        *(f"| {entry.value} | {entry.accepted} | {entry.other} |" for entry in bins if entry.accepted or entry.other),
        *([] if bins else ["| (no trial) | 0 | 0 |"]),
    ]


def size_category(rows: int) -> str:
    """The Hub's size bucket for a row count."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def front_matter(run_name: str, statistics: RunStatistics, exported: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    configs: list[dict[str, Any]] = []
    for format_, splits in exported.items():
        files = [
            {"split": split, "path": f"data/{format_}/{split}-*.parquet"}
            for split in ("train", "rejected")
            if split in splits
        ]
        if files:
            configs.append({"config_name": format_, "data_files": files} | ({} if configs else {"default": True}))
    preference = next((format_ for format_, splits in exported.items() if "preference" in splits), None)
    if preference:
        files = [{"split": "train", "path": f"data/{preference}/preference-*.parquet"}]
        configs.append({"config_name": "preference", "data_files": files})
    return {
        "pretty_name": f"APIGen-MT synthetic tool-use trajectories ({run_name})",
        "task_categories": ["text-generation"],
        "tags": ["tool-use", "function-calling", "multi-turn", "synthetic", "apigen-mt", *statistics.domains],
        "size_categories": [size_category(statistics.unique_accepted)],
        "configs": configs,
    }


def _set_aside_lines(set_aside: SetAside | None) -> list[str]:
    """A sentence for each kind of trial in no split."""
    if set_aside is None:
        return []
    lines = []
    if set_aside.system_failures:
        lines.append(
            f"Left out of every split: {_total(set_aside.system_failures)} trial(s) that failed because of the system "
            "(status `failed`: an endpoint or engine that was down or answered garbage). They say nothing about the "
            "agent or the simulated human, so they are not data; a rerun plays them again while they have attempts "
            f"left, and they stay in `trajectories/` with their reasons: {_how(set_aside.system_failures)}."
        )
    if set_aside.no_conversation:
        lines.append(
            f"Left out of every split: {_total(set_aside.no_conversation)} trial(s) with no conversation (the "
            "simulated human said nothing, so there is nothing to learn from; they stay in `trajectories/` with their "
            f"reasons): {_how(set_aside.no_conversation)}."
        )
    if set_aside.unknown_status:
        lines.append(
            f"Left out of every split: {_total(set_aside.unknown_status)} row(s) of a status apigen-mt does not write "
            f"(the shards were edited): {_how(set_aside.unknown_status)}."
        )
    return [line for sentence in lines for line in ("", sentence)]


def _total(counts: Mapping[str, int]) -> int:
    return sum(counts.values())


def _how(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def card_text(
    run_name: str,
    statistics: RunStatistics,
    manifest: RunManifest | None,
    charts: Overview,
    exported: Mapping[str, Mapping[str, int]],
    dataset_dirs: Mapping[str, str],
    phase1: Phase1Statistics | None = None,
    set_aside: SetAside | None = None,
) -> str:
    matter = yaml.safe_dump(front_matter(run_name, statistics, exported), sort_keys=False, allow_unicode=True)
    s = statistics
    lines = [
        f"---\n{matter}---",
        f"# APIGen-MT synthetic tool-use trajectories: {run_name}",
        "",
        "Multi-turn conversations between a simulated human and a tool-using agent, generated with apigen-mt after "
        "Salesforce's APIGen-MT: each episode plays a task blueprint against the domain's environment and is kept "
        "only when the final database, the agent's replies and the episode's end match the blueprint's ground truth.",
        f"Domains: {', '.join(s.domains) or 'none'}."
        + ("" if s.trials else " The run holds no trials (it played none), so every split is empty."),
        "",
        "## Layout",
        "",
        "| folder | content |",
        "|---|---|",
        *(
            f"| `{folder}/` | `save_to_disk` of the {format_} layout (`load_from_disk`) |"
            for format_, folder in dataset_dirs.items()
        ),
        *(f"| `data/{format_}/` | Parquet: {_split_sizes(splits)} |" for format_, splits in exported.items()),
        "",
        "Splits: `train` = unique accepted trajectories (the same agent calls and replies count once per blueprint); "
        "`rejected` = trials rejected because of the agent or the simulated human, with `reasons` and `attribution` "
        "(negative examples); `preference` = "
        "DPO pairs (`prompt` = system prompt and first user turn, `chosen` = a verified continuation, `rejected` = "
        "one the agent got wrong, from the same blueprint) in OpenAI messages. The `sharegpt` layout is APIGen-MT-5k's "
        "(`conversations`, `system`, `tools`); the `openai` layout keeps `messages` as a list for "
        '`tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]))`. '
        "A split with no rows is not written.",
        *_set_aside_lines(set_aside),
        "",
        "```python",
        "from datasets import load_dataset",
        load_example(exported),
        "```",
        "",
        *_funnel_section(charts, s, manifest),
        *(phase1_section(phase1) if phase1 is not None else []),
        "## pass^k",
        "",
        "tau-bench's estimator: the mean over blueprints of C(c, k) / C(n, k) for n trials with c accepted; "
        "failed trials count as unsuccessful.",
        "",
        "| k | pass^k | blueprints with at least k trials |",
        "|---:|---:|---:|",
        *(f"| {point.k} | {point.value:.4f} | {point.blueprints} |" for point in charts.pass_k),
        "",
        "![pass^k](plots/pass-k.png)",
        "",
        "## Failures",
        "",
        "Attribution of rejected and failed trials (agent, simulated human, or system):",
        "",
        *_counts_table("attribution", charts.attribution, "every trial accepted"),
        "",
        "How episodes ended:",
        "",
        *_counts_table("termination", charts.terminations, "no trial"),
        "",
        "Policy violations by rule (the trials breaking each rule of the domain's policy at least once):",
        "",
        *_counts_table("rule", charts.violations_by_rule, "no violation"),
        "",
        "![failures](plots/failures.png)",
        "",
        "## Turns and tool calls",
        "",
        "Over the unique accepted trajectories:",
        "",
        "| per trajectory | mean | median | max |",
        "|---|---:|---:|---:|",
        _summary_row("agent turns", s.train_turns),
        _summary_row("tool calls", s.train_tool_calls),
        "",
        "Mean tokens per trajectory: "
        + ", ".join(f"{name.replace('_', ' ')} {_number(value)}" for name, value in s.train_tokens.items())
        + ".",
        "",
        "| tool | calls |",
        "|---|---:|",
        *(f"| `{name}` | {count} |" for name, count in s.tool_usage),
        *([] if s.tool_usage else ["| (no accepted trajectory) | 0 |"]),
        "",
        "Every trial by agent turns and by the agent's tool calls:",
        "",
        *_histogram_table("agent turns", charts.turns),
        "",
        "![agent turns per trial](plots/turns.png)",
        "",
        *_histogram_table("tool calls", charts.tool_calls),
        "",
        "![tool calls per trial](plots/tool-calls.png)",
        "",
        "| domain | trials | unique accepted |",
        "|---|---:|---:|",
        *(f"| {domain} | {row['trials']} | {row['unique_accepted']} |" for domain, row in s.domains.items()),
        "",
        *_fallbacks_section(manifest),
        *_run_section(manifest),
    ]
    return "\n".join(lines) + "\n"


def _fallbacks_section(manifest: RunManifest | None) -> list[str]:
    """What the endpoints refused (an HTTP 400 naming the feature) and what the run did instead."""
    lines = ["## Endpoint fallbacks", ""]
    if manifest is None:
        return [*lines, "Not known: the run folder has no manifest.json.", ""]
    if not manifest.fallbacks:
        return [*lines, "none: every endpoint took each request as the pipeline shaped it.", ""]
    return [
        *lines,
        "Features an endpoint refused, and what the run did instead from the first refusal on (structured outputs: "
        "json_schema, then json_object, then the format the prompt describes; `n` > 1: single requests):",
        "",
        "| endpoint | fallbacks |",
        "|---|---|",
        *(f"| {endpoint} | {'; '.join(used)} |" for endpoint, used in manifest.fallbacks.items()),
        "",
    ]


def _run_section(manifest: RunManifest | None) -> list[str]:
    if manifest is None:
        return ["## Run", "", "The run folder has no manifest.json, so its config is not known."]
    details = [f"started {manifest.started_at}", f"finished {manifest.finished_at or '(not finished)'}"]
    if manifest.data_dir:
        details.append(f"data folder `{manifest.data_dir}`")
    versions = ", ".join(f"{name} {version}" for name, version in manifest.versions.items())
    return [
        "## Run",
        "",
        f"Config fingerprint `{manifest.fingerprint}`; {'; '.join(details)}; versions: {versions}.",
        "",
        "```yaml",
        yaml.safe_dump(manifest.config, sort_keys=False, allow_unicode=True).rstrip(),
        "```",
    ]


def load_example(exported: Mapping[str, Mapping[str, int]]) -> str:
    """The card's `load_dataset` line, for a split this export wrote: `train` when it has rows."""
    for format_, splits in exported.items():
        written = [split for split, rows in splits.items() if rows]
        if written:
            split = "train" if "train" in written else written[0]
            return f'data = load_dataset("parquet", data_files={{"{split}": "data/{format_}/{split}-*.parquet"}})'
    return "# this export wrote no rows: there is nothing to load yet"


def _split_sizes(splits: Mapping[str, int]) -> str:
    return ", ".join(f"{split} ({rows} rows)" for split, rows in splits.items()) or "no rows"


def _summary_row(label: str, summary: Mapping[str, float | None]) -> str:
    return f"| {label} | {_number(summary['mean'])} | {_number(summary['median'])} | {_number(summary['max'])} |"


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
