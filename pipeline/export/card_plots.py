"""The dataset card's plots, drawn with matplotlib from the overview charts' data (`pipeline.export.charts`), the
same data the run viewer draws:

```
plots/funnel.png       one funnel per phase (Phase 1's proposal rounds when it ran, Phase 2's trials), its stages
                       in order, each bar labelled with its count and the share of the stage before it kept
plots/pass-k.png       pass^k for each k
plots/failures.png     whose fault the trials not accepted are, how episodes ended, policy violations by rule
plots/turns.png        trials by agent turns, accepted and not
plots/tool-calls.png   trials by the agent's tool calls, accepted and not
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apigen_mt.pipeline.export.charts import Bin, Overview, Stage, share_text

PLOTS = ("funnel.png", "pass-k.png", "failures.png", "turns.png", "tool-calls.png")
_KEPT, _OTHER = "#4878a8", "#d08050"  # accepted or kept; not accepted


def draw_plots(folder: Path, charts: Overview) -> list[Path]:
    """Write every plot of `PLOTS` into `folder`; their paths, in that order."""
    paths = [folder / name for name in PLOTS]
    funnel, pass_k, failures, turns, tool_calls = paths
    funnels = [("Phase 1: proposal rounds", charts.phase1)] if charts.phase1 is not None else []
    _funnels(funnel, [*funnels, ("Phase 2: trials", charts.phase2)])
    _pass_k(pass_k, charts)
    _failures(failures, charts)
    _histogram(turns, charts.turns, title="Agent turns per trial", unit="agent turns")
    _histogram(tool_calls, charts.tool_calls, title="Tool calls per trial", unit="tool calls by the agent")
    return paths


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _funnels(path: Path, funnels: Sequence[tuple[str, Sequence[Stage]]]) -> None:
    """Each stage a bar centred on one axis, so that the funnel narrows down the page."""
    heights = [0.42 * len(stages) + 0.9 for _, stages in funnels]
    figure = _figure(9, sum(heights))
    for axes, (title, stages) in zip(
        figure.subplots(len(funnels), 1, height_ratios=heights, squeeze=False)[:, 0], funnels, strict=True
    ):
        widest = max([stage.count for stage in stages] + [1])
        rows = range(len(stages))[::-1]  # the first stage on top
        counts = [stage.count for stage in stages]
        axes.barh(rows, counts, left=[(widest - count) / 2 for count in counts], color=_KEPT, height=0.7)
        for row, stage in zip(rows, stages, strict=True):
            text = f"{stage.count}" if stage.kept is None else f"{stage.count} ({share_text(stage.kept)} kept)"
            axes.text(
                widest / 2,
                row,
                text,
                ha="center",
                va="center",
                color="black",
                bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1.5},
            )
        axes.set_yticks(list(rows), [stage.label for stage in stages])
        axes.set_xlim(0, widest)
        axes.set_xticks([])
        axes.set_title(title)
        for side in ("top", "right", "bottom"):
            axes.spines[side].set_visible(False)
    figure.savefig(path, format="png")


def _pass_k(path: Path, charts: Overview) -> None:
    figure = _figure(8, 3.6)
    axes = figure.subplots()
    if charts.pass_k:
        bars = axes.bar(
            [str(point.k) for point in charts.pass_k], [point.value for point in charts.pass_k], color=_KEPT
        )
        axes.bar_label(bars, labels=[f"{point.value:.3f}" for point in charts.pass_k], padding=2)
        axes.set_xlim(-0.6, max(len(charts.pass_k), 4) - 0.4)  # a run of one or two k: bars of a usual width
    else:
        _nothing(axes, "no trial")
    axes.set_ylim(0, 1.1)
    axes.set_title("pass^k over blueprints with at least k trials")
    axes.set_xlabel("k")
    axes.set_ylabel("pass^k")
    figure.savefig(path, format="png")


def _failures(path: Path, charts: Overview) -> None:
    panels = [
        ("Whose fault (trials not accepted)", charts.attribution),
        ("How episodes ended", charts.terminations),
        ("Policy violations by rule (trials)", charts.violations_by_rule),
    ]
    figure = _figure(8, sum(0.35 * max(len(counts), 1) + 0.9 for _, counts in panels))
    heights = [max(len(counts), 1) + 1.5 for _, counts in panels]
    for axes, (title, counts) in zip(figure.subplots(3, 1, height_ratios=heights), panels, strict=True):
        if counts:
            bars = axes.barh([name for name, _ in counts][::-1], [count for _, count in counts][::-1], color=_OTHER)
            axes.bar_label(bars, padding=3)
            axes.margins(x=0.12)
            _counted(axes.xaxis)
        else:
            _nothing(axes, "none")
        axes.set_title(title)
    figure.savefig(path, format="png")


def _histogram(path: Path, bins: Sequence[Bin], *, title: str, unit: str) -> None:
    figure = _figure(8, 4)
    axes = figure.subplots()
    if bins:
        values = [entry.value for entry in bins]
        accepted = [entry.accepted for entry in bins]
        axes.bar(values, accepted, color=_KEPT, label="accepted")
        axes.bar(values, [entry.other for entry in bins], bottom=accepted, color=_OTHER, label="rejected or failed")
        axes.legend()
        _counted(axes.xaxis)
        _counted(axes.yaxis)
    else:
        _nothing(axes, "no trial")
    axes.set_title(title)
    axes.set_xlabel(unit)
    axes.set_ylabel("trials")
    figure.savefig(path, format="png")


def _nothing(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="gray")
    axes.set_xticks([])
    axes.set_yticks([])


def _counted(axis: Any) -> None:
    """Ticks at whole numbers only: the axis counts trials, turns or calls."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
