"""The overview's charts as inline SVG, drawn on the server from `pipeline.export.charts`' data: no script and no
asset, so the static file shows them as the app does. Every text goes through `escape`."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from apigen_mt.pipeline.export.charts import Bin, PassK, Stage

WIDTH = 640
LABEL = 230  # the width of the labels left of horizontal bars
ROW = 24
ACCEPTED, OTHER, BAR = "#4878a8", "#d08050", "#4878a8"


def _svg(height: int, body: list[str], title: str) -> Markup:
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{"".join(body)}</svg>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", css: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}">{escape(text)}</text>'


def horizontal_bars(items: Sequence[tuple[str, float, str]], title: str, largest: float | None = None) -> Markup:
    """One bar per (label, length, text written after the bar), scaled so that `largest` (default: the longest)
    fills the width."""
    if not items:
        return _svg(ROW, [_text(4, 16, "nothing yet", css="muted")], title)
    largest = largest or max(length for _, length, _ in items) or 1
    span = WIDTH - LABEL - 170
    body = []
    for row, (label, length, shown) in enumerate(items):
        y = row * ROW
        width = span * length / largest
        body.append(_text(LABEL - 6, y + 16, label, "end"))
        body.append(f'<rect x="{LABEL}" y="{y + 4}" width="{width:.1f}" height="{ROW - 8}" fill="{BAR}"/>')
        body.append(_text(LABEL + width + 4, y + 16, shown, css="value"))
    return _svg(len(items) * ROW, body, title)


def funnel(stages: Sequence[Stage], title: str) -> Markup:
    """A funnel's stages in order, each with its count and the share of the stage before that it kept."""
    return horizontal_bars(
        [
            (
                stage.label,
                stage.count,
                f"{stage.count:,}" + ("" if stage.kept is None else f"  ({stage.kept:.0%} kept)"),
            )
            for stage in stages
        ],
        title,
    )


def tally(counts: Sequence[tuple[str, int]], title: str) -> Markup:
    return horizontal_bars([(label, count, f"{count:,}") for label, count in counts], title)


def histogram(bins: Sequence[Bin], title: str, axis: str) -> Markup:
    """Trials per value, stacked: accepted below, rejected or failed above; the values along the bottom."""
    height, top, bottom = 200, 14, 36
    if not bins:
        return _svg(ROW, [_text(4, 16, "nothing yet", css="muted")], title)
    largest = max(b.accepted + b.other for b in bins) or 1
    step = (WIDTH - 40) / len(bins)
    scale = (height - top - bottom) / largest
    body = [_text(4, 12, f"max {largest:,} trials", css="muted")]
    label_every = max(1, len(bins) // 20)
    for column, b in enumerate(bins):
        x = 30 + column * step
        base = height - bottom
        for count, color in ((b.accepted, ACCEPTED), (b.other, OTHER)):
            if count:
                body.append(
                    f'<rect x="{x + 1:.1f}" y="{base - count * scale:.1f}" width="{max(step - 2, 1):.1f}" '
                    f'height="{count * scale:.1f}" fill="{color}"><title>{b.value}: {count:,}</title></rect>'
                )
                base -= count * scale
        if column % label_every == 0:
            body.append(_text(x + step / 2, height - bottom + 14, str(b.value), "middle"))
    body.append(_text(WIDTH / 2, height - 4, axis, "middle", css="muted"))
    body.append(f'<rect x="{WIDTH - 200}" y="2" width="10" height="10" fill="{ACCEPTED}"/>')
    body.append(_text(WIDTH - 186, 11, "accepted"))
    body.append(f'<rect x="{WIDTH - 110}" y="2" width="10" height="10" fill="{OTHER}"/>')
    body.append(_text(WIDTH - 96, 11, "not accepted"))
    return _svg(height, body, title)


def pass_k(points: Sequence[PassK], title: str) -> Markup:
    """pass^k for each k, as bars from 0 to 1."""
    items = [(f"pass^{p.k}", p.value, f"{p.value:.3f}  ({p.blueprints:,} blueprints)") for p in points]
    return horizontal_bars(items, title, largest=1.0)
