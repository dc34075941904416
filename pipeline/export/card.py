"""The dataset card of an export, `RUN/README.md`: the figures of `pipeline.export.statistics`, PNG plots.

A run with Phase 1 (blueprint shards) gets its funnel and diversity section too (`pipeline.export.card_phase1`).

The README's YAML front matter holds only what is known for certain (name, task, tags, size) and one
config per layout pointing at `data/<format>/<split>-*.parquet`, so the Hub viewer finds every split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from apigen_mt.pipeline.export.card_phase1 import Phase1Statistics, phase1_section, phase1_statistics
from apigen_mt.pipeline.export.layouts import SetAside
from apigen_mt.pipeline.export.statistics import RunStatistics
from apigen_mt.pipeline.store.manifest import RunManifest
from apigen_mt.pipeline.store.schemas import STATUSES

CARD = "README.md"
PLOTS_DIR = "plots"
PLOTS = ("funnel.png", "turns.png")


def write_card(
    staging: Path,
    run_dir: Path,
    statistics: RunStatistics,
    manifest: RunManifest | None,
    *,
    exported: Mapping[str, Mapping[str, int]],
    dataset_dirs: Mapping[str, str],
    set_aside: SetAside,
) -> None:
    """Write the card of `run_dir` into `staging` (the export's temp folder, swapped in whole): `plots/*.png` and
    `README.md`; `exported` is format -> split -> rows written, `set_aside` the trials in no split."""
    phase1 = phase1_statistics(run_dir)
    stages = funnel(statistics, manifest, phase1)
    (staging / PLOTS_DIR).mkdir()
    funnel_png, turns_png = (staging / PLOTS_DIR / name for name in PLOTS)
    _bar_chart(funnel_png, stages, title="Funnel")
    _turns_chart(turns_png, statistics)
    text = card_text(run_dir.name, statistics, manifest, stages, exported, dataset_dirs, phase1, set_aside)
    (staging / CARD).write_text(text, encoding="utf-8")


def funnel(
    statistics: RunStatistics, manifest: RunManifest | None, phase1: Phase1Statistics | None = None
) -> list[tuple[str, int]]:
    """Every stage's count: the manifest's blueprint stages (Phase 1's recounted from its shards when there are
    any), then the trajectories counted from the shards."""
    # `blueprints` holds both phases' blueprint stages (`proposals` and `tasks` apart); the trajectories are
    # recounted from the shards below, which a resumed run may have added to.
    counts = {"blueprints": manifest.counts["blueprints"]} if manifest and "blueprints" in manifest.counts else {}
    if phase1 is not None:
        counts["blueprints"] = {**counts.get("blueprints", {}), **phase1.funnel}
    stages: list[tuple[str, int]] = []
    for stage, by_status in counts.items():
        for status, count in by_status.items():
            if isinstance(count, dict):  # Phase 1's accepted_by_round
                stages += [(f"{stage}: {status} {key}", value) for key, value in count.items()]
            else:
                stages.append((f"{stage}: {status}", count))
    return stages + [
        ("blueprints with trials", statistics.blueprints),
        ("trials", statistics.trials),
        *((f"trials {status}", statistics.statuses[status]) for status in STATUSES),
        ("unique accepted trajectories", statistics.unique_accepted),
        ("blueprints with a verified trajectory", statistics.blueprints_solved),
    ]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _bar_chart(path: Path, stages: Sequence[tuple[str, int]], *, title: str) -> None:
    figure = _figure(8, 0.45 * len(stages) + 1.2)
    axes = figure.subplots()
    labels = [label for label, _ in stages][::-1]
    values = [value for _, value in stages][::-1]
    bars = axes.barh(labels, values, color="#4878a8")
    axes.bar_label(bars, padding=3)
    axes.set_title(title)
    axes.set_xlabel("count")
    axes.margins(x=0.12)
    figure.savefig(path, format="png")


def _turns_chart(path: Path, statistics: RunStatistics) -> None:
    figure = _figure(8, 4)
    axes = figure.subplots()
    longest = max([*statistics.turns_accepted, *statistics.turns_other, 1])
    bins = [edge - 0.5 for edge in range(longest + 2)]
    series = [
        (statistics.turns_accepted, "unique accepted", "#4878a8"),
        (statistics.turns_other, "rejected or failed", "#d08050"),
    ]
    plotted = [(values, label, color) for values, label, color in series if values]
    for values, label, color in plotted:
        axes.hist(values, bins=bins, alpha=0.6, label=label, color=color)
    axes.set_title("Agent turns per episode")
    axes.set_xlabel("agent turns")
    axes.set_ylabel("episodes")
    if plotted:  # a legend of nothing is a matplotlib warning on stderr
        axes.legend()
    figure.savefig(path, format="png")


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
    stages: Sequence[tuple[str, int]],
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
        "## Funnel",
        "",
        "| stage | count |",
        "|---|---:|",
        *(f"| {label} | {count} |" for label, count in stages),
        "",
        "![funnel](plots/funnel.png)",
        "",
        *(phase1_section(phase1) if phase1 is not None else []),
        "## pass^k",
        "",
        "tau-bench's estimator: the mean over blueprints of C(c, k) / C(n, k) for n trials with c accepted; "
        "failed trials count as unsuccessful.",
        "",
        "| k | pass^k | blueprints with at least k trials |",
        "|---:|---:|---:|",
        *(f"| {k} | {value:.4f} | {blueprints} |" for k, (value, blueprints) in s.pass_k.items()),
        "",
        "## Failures",
        "",
        "Attribution of rejected and failed trials (agent, simulated human, or system):",
        "",
        "| attribution | trials |",
        "|---|---:|",
        *(f"| {name} | {count} |" for name, count in s.attribution.items()),
        "",
        "How episodes ended:",
        "",
        "| termination | trials |",
        "|---|---:|",
        *(f"| {name} | {count} |" for name, count in s.termination.items()),
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
        "![turns per episode](plots/turns.png)",
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
