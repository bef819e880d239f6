"""The one-page report for whoever decides: a self-contained HTML file of one setting (or of two,
A and B, side by side).

It holds what the Download page shows, from the same functions (``views.cards``,
``views.compare_rows``, ``downloads.export_rows``, ``explain.headline``, the histogram's bins and
marks from ``figures``): when it was made, the recommendation, the setting in words, the
headline, the metric cards, the weight histogram, the verified files, a link back to these
settings, and the recipe as an appendix. No script and no outside resource: the histogram is
inline SVG, so the file is small and opens offline. The layout is a fixed A4 width with text of
at least 9 pt, so what the screen shows is what prints: the main part on one page, the
appendix on the next.
"""

from __future__ import annotations

import datetime
import html
import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from optimizers.delivery import Exported
from ui import downloads, explain, figures, services, views
from ui.setting import Setting

WIDTH, HEIGHT = 700, 200  # px of the histogram; 12 px text is 9 pt, in print as on screen
SMALL_WIDTH, SMALL_HEIGHT = 342, 170  # each of the two histograms of A and B
TEXT = 12  # px of the histogram's labels
LEFT, RIGHT, TOP, BOTTOM = 58, 10, 26, 36  # px around the plot: tick labels, marks, titles

STYLE = """
@page { size: A4 portrait; margin: 10mm; }
* { box-sizing: border-box; }
body { font: 10pt/1.35 system-ui, sans-serif; color: #1f2328; margin: 0 auto; width: 190mm; }
h1 { font-size: 17pt; margin: 0 0 2px; }
h2 { font-size: 11pt; margin: 9px 0 3px; }
p { margin: 0 0 3px; }
.meta { color: #59636e; }
.recommendation { border-left: 4px solid #0072b2; background: #eef5fb; padding: 5px 9px;
                  margin: 7px 0; }
.headline { font-size: 15pt; font-weight: 600; margin: 7px 0; }
.versus { font-size: 11pt; margin: 4px 0; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 5px; }
.card { border: 1px solid #d1d9e0; border-radius: 5px; padding: 3px 7px; }
.label, .delta { color: #59636e; font-size: 9pt; }
.value { font-size: 14pt; font-weight: 600; }
.good { color: #1a7f37; }
.bad { color: #d1242f; }
.pair { display: flex; justify-content: space-between; }
svg { display: block; font-family: system-ui, sans-serif; }
table { border-collapse: collapse; width: 100%; font-size: 9pt; }
th, td { border-bottom: 1px solid #d1d9e0; padding: 1px 0 1px 5px; text-align: left;
         vertical-align: top; }
th:first-child, td:first-child { padding-left: 0; }
.n { text-align: right; }
a { color: #0072b2; word-break: break-all; }
.appendix { break-before: page; }
pre { font-size: 9pt; line-height: 1.3; background: #f6f8fa; padding: 6px; margin: 0;
      white-space: pre-wrap; }
"""


# --- the histogram, drawn as SVG ---


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) within ``[lo, hi]``."""
    raw = (hi - lo) / count
    step = 10.0 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    return [i * step for i in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def number(value: float, digits: int = 0) -> str:
    """A tick label with ``digits`` decimals, a typographic minus, and thousands and millions
    as ``k`` and ``M`` (``10k``)."""
    if abs(value) >= 1e6:
        text = f"{value / 1e6:g}M"
    elif abs(value) >= 1e3:
        text = f"{value / 1e3:g}k"
    else:
        text = f"{value:.{digits}f}"
    return text.replace("-", "−")


Pair = tuple[figures.Values, figures.Values]  # a setting's original and optimized weights


def histograms_svg(
    pairs: Sequence[Pair],
    marks_names: Sequence[str],
    *,
    log_y: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> list[str]:
    """Each pair's weight histogram as inline SVG, binned as the page bins it and all on one
    scale, so that two settings compare at a glance: the original in grey, the optimized in
    blue over it, and, when the optimized values are few, a vermillion triangle above each
    one (no lines across the bars)."""
    edges = figures._bins([v for pair in pairs for v in pair])
    counts = [[figures.bin_counts(v, edges).astype(float) for v in pair] for pair in pairs]
    most = max(1.0, *(c.max() for pair in counts for c in pair))
    if log_y:  # decades from one weight; an empty bin draws nothing
        top = max(1, math.ceil(math.log10(most)))
        y_ticks = [10.0**k for k in range(top + 1)]
    else:
        top = most
        y_ticks = nice_ticks(0, most, 4)
    x_ticks = nice_ticks(edges[0], edges[-1])
    digits = max(0, -math.floor(math.log10(x_ticks[1] - x_ticks[0]))) if len(x_ticks) > 1 else 2
    x0, x1, y0, y1 = LEFT, width - RIGHT, height - BOTTOM, TOP

    def x(v: float) -> float:
        return x0 + (v - edges[0]) / (edges[-1] - edges[0]) * (x1 - x0)

    def y(count: float) -> float:
        v = math.log10(max(count, 1)) if log_y else count
        return y0 - v / top * (y0 - y1)

    def steps(bins: np.ndarray) -> str:
        path = f"M{x0},{y0}"
        for right, count in zip(edges[1:], bins, strict=True):
            path += f"V{y(count):.1f}H{x(right):.1f}"
        return path + f"V{y0}Z"

    axes = "".join(
        f'<text x="{x0 - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{number(v)}</text>'
        f'<path d="M{x0},{y(v):.1f}H{x1}" stroke="#d1d9e0" stroke-width="0.5"/>'
        for v in y_ticks
    ) + "".join(
        f'<text x="{x(v):.1f}" y="{y0 + TEXT + 3}" text-anchor="middle">{number(v, digits)}</text>'
        for v in x_ticks
    )
    axes += (
        f'<path d="M{x0},{y0}H{x1}" stroke="#59636e"/>'
        f'<text x="{(x0 + x1) / 2}" y="{height - 4}" text-anchor="middle">weight value</text>'
        f'<text transform="translate({TEXT + 2},{(y0 + y1) / 2}) rotate(-90)" '
        f'text-anchor="middle">weights per bin{" (log)" if log_y else ""}</text>'
    )
    drawn = []
    for (original, optimized), (before, after), name in zip(
        pairs, counts, marks_names, strict=True
    ):
        levels = figures.few_levels(optimized)[0]
        if not figures.changed(original, optimized) or levels.size > figures.MAX_MARKS:
            levels = levels[:0]  # nothing changed, or each tensor's few are many together
        marks = "".join(f"M{x(v) - 4:.1f},{y1 - 9}h8l-4,7z" for v in levels)
        key = figures.marks_words(levels.size, name, optimized) if levels.size else ""
        drawn.append(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-size="{TEXT}" role="img" '
            'aria-label="Weight histogram, original and optimized">'
            f'<path d="{steps(before)}" fill="{figures.ORIGINAL_COLOR}"/>'
            f'<path d="{steps(after)}" fill="{figures.OPTIMIZED_COLOR}" fill-opacity="0.8"/>'
            f'{axes}<path d="{marks}" fill="{figures.MARK_COLOR}"/>'
            f"{legend(key, width)}</svg>"
        )
    return drawn


def legend(marks: str, width: int) -> str:
    """The histogram's key, along its top edge (names spaced at 7 px a letter); the marks'
    name loses its "in N tensors" when the chart is too narrow for it."""
    out, x = "", 4
    for name, color in (
        ("original", figures.ORIGINAL_COLOR),
        ("optimized", figures.OPTIMIZED_COLOR),
    ):
        out += f'<rect x="{x}" y="2" width="10" height="10" fill="{color}"/>'
        out += f'<text x="{x + 14}" y="11">{name}</text>'
        x += 14 + 7 * len(name) + 14
    if marks:
        if x + 14 + 7 * len(marks) > width:
            marks = marks.split(" in ")[0]
        out += f'<path d="M{x},3h10l-5,8z" fill="{figures.MARK_COLOR}"/>'
        out += f'<text x="{x + 14}" y="11">{html.escape(marks)}</text>'
    return out


# --- cards and tables ---


def delta_class(card: views.Card) -> str:
    """``good`` or ``bad`` for a card's change, as the page colours it."""
    if card.delta is None or card.color == "off":
        return ""
    up = not card.delta.startswith("-")
    return "good" if up == (card.color == "normal") else "bad"


def card_html(card: views.Card) -> str:
    delta = "" if card.delta is None else card.delta
    return (
        f'<div class="card" title="{html.escape(card.help or "")}">'
        f'<div class="label">{html.escape(card.label)}</div>'
        f'<div class="value">{html.escape(card.value)}</div>'
        f'<div class="delta {delta_class(card)}">{html.escape(delta) or "&nbsp;"}</div></div>'
    )


def cell(value: object) -> str:
    """A table cell as text: "—" for nothing, a float as short as exact, and a number kept on
    one line with its unit (``113.8 kB``)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        value = f"{value:,.0f}" if value.is_integer() else f"{value:.3g}"
    return re.sub(r"(?<=\d) ", "\u00a0", str(value))


def table_html(rows: pd.DataFrame) -> str:
    """Every column ``rows`` has, as it has them; a column of numbers aligned right."""
    columns = [[cell(v) for v in rows[c]] for c in rows.columns]
    right = [all(t == "—" or re.match(r"[−-]?\d", t) for t in texts) for texts in columns]

    def tag(name: str, text: str, numbers: bool) -> str:
        attribute = ' class="n"' if numbers else ""
        return f"<{name}{attribute}>{html.escape(text)}</{name}>"

    head = "".join(tag("th", str(c), r) for c, r in zip(rows.columns, right, strict=True))
    body = "".join(
        "<tr>"
        + "".join(tag("td", texts[i], r) for texts, r in zip(columns, right, strict=True))
        + "</tr>"
        for i in range(len(rows))
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def made(created: datetime.datetime) -> str:
    """``2 December 2026, 15:59`` (with the time zone when ``created`` knows it)."""
    zone = created.strftime(" %Z").rstrip()
    words = f"{created.day} {created:%B %Y, %H:%M}{zone}"
    return f'<time datetime="{created.isoformat(timespec="minutes")}">{words}</time>'


def paragraphs(lines: Sequence[str], css: str | None = None) -> str:
    """Each of ``lines`` (HTML) as a paragraph."""
    attribute = "" if css is None else f' class="{css}"'
    return "".join(f"<p{attribute}>{line}</p>" for line in lines)


# --- the report ---


def weights(model: services.KerasModel, result: services.Comparison, tensor: str | None) -> Pair:
    """The original and optimized weights the histogram shows (``None``: every eligible one)."""
    return figures.tensor_choice(model.prepared, result.outcome, tensor)


def link_words(setting: Setting) -> str:
    """What the report's link opens: this view, or these settings only on a bundled sample when
    the model cannot travel in a link."""
    if setting.model.travels:
        return "This view in the Model Optimization Explorer:"
    return (
        f"These settings in the Model Optimization Explorer (settings only: {setting.model.name} "
        "cannot travel in a link, so it opens them on a bundled sample):"
    )


def build(
    model: services.KerasModel,
    setting: Setting,
    result: services.Comparison,
    exports: dict[str, Exported | str],
    link: str,
    recipe: str,
    recommendation: str,
    created: datetime.datetime,
    tensor: str | None = None,
    log_y: bool = False,
    pinned: tuple[Setting, services.Comparison] | None = None,
) -> str:
    """The report as one HTML document of ``setting``'s ``result``; ``link`` the whole
    address of these settings in the app (both settings when one is ``pinned``), ``recipe`` the
    JSON the command line reads; ``tensor`` and ``log_y`` pick the histogram as on the Explore
    page (``None``: all eligible weights). ``pinned`` (A's setting and result) puts A beside
    these settings (B): headlines, figures and histograms."""
    e = html.escape
    words, marks = setting.words, figures.mark_label(setting.config)
    title = views.model_title(model)
    outcome, baseline = result.outcome, result.baseline
    if pinned is None:
        said = f"<p>Setting: <b>{e(words)}</b></p>"
        headline = paragraphs([e(explain.headline(outcome, baseline))], "headline")
        cards = "".join(card_html(c) for c in views.cards(outcome, baseline))
        figures_html = f'<div class="cards">{cards}</div>'
        charts = histograms_svg([weights(model, result, tensor)], [marks], log_y=log_y)[0]
    else:
        a_setting, a = pinned
        a_words = a_setting.words
        said = ""
        headline = paragraphs(
            [
                f"<b>A (pinned):</b> {e(a_words)} — {e(explain.headline(a.outcome, a.baseline))}",
                f"<b>B (the sliders):</b> {e(words)} — {e(explain.headline(outcome, baseline))}",
            ],
            "versus",
        )
        figures_html = table_html(views.compare_rows(a.outcome, outcome, baseline))
        pairs = [weights(model, a, tensor), weights(model, result, tensor)]
        small = histograms_svg(
            pairs,
            [figures.mark_label(a_setting.config), marks],
            log_y=log_y,
            width=SMALL_WIDTH,
            height=SMALL_HEIGHT,
        )
        charts = f'<div class="pair">{"".join(small)}</div>'
    advice = paragraphs([e(recommendation)], "recommendation") if recommendation else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}: {e(words)}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>{e(title)}</h1>
<p class="meta">File {e(model.name)} · evaluation data: {e(model.data_name or "none")} ·
made {made(created)}</p>
{said}
{advice}
{headline}
{figures_html}
<h2>Weights, original and optimized{"" if pinned is None else ": A left, B right"}</h2>
{charts}
<h2>Files, verified</h2>
<p class="meta">Each file was written, loaded back and run on the evaluation data; its accuracy
is the file's own.</p>
{table_html(downloads.export_rows(exports))}
<p class="meta">{e(link_words(setting))}
<a href="{e(link)}">{e(link)}</a></p>
</main>
<section class="appendix">
<h2>Appendix: the recipe</h2>
<p class="meta">The settings as JSON: <code>python -m optimizers apply MODEL --recipe
recipe.json</code> applies them to a model.</p>
<pre>{e(recipe)}</pre>
</section>
</body>
</html>
"""
