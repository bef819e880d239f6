"""The one-page report for stakeholders: a self-contained HTML file of one model's settings.

It holds what the Download page shows, from the same functions (``views.cards``,
``views.export_rows``, ``explain.headline``, ``figures.weight_histogram``): the model, the
settings and their link, the headline, the metric cards, the weight histogram, the verified
files and the recipe. plotly.js is written into the file, so it opens offline; the layout is a
fixed A4 width, so what the screen shows is what prints, on one page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from urllib.parse import urlencode

from optimizers.explore import Exported
from optimizers.pipeline import OptimizationConfig, describe
from ui import explain, figures, services, views

CHART_WIDTH, CHART_HEIGHT = 430, 250  # pixels: half the A4 column, beside the recipe

STYLE = """
@page { size: A4 portrait; margin: 10mm; }
* { box-sizing: border-box; }
body { font: 11px/1.4 system-ui, sans-serif; color: #1f2328; margin: 0 auto; width: 190mm;
       padding: 4mm 0; }
h1 { font-size: 20px; margin: 0 0 2px; }
h2 { font-size: 13px; margin: 10px 0 4px; }
.meta { color: #59636e; margin: 0; }
.headline { font-size: 22px; font-weight: 600; margin: 10px 0; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 6px; }
.card { border: 1px solid #d1d9e0; border-radius: 6px; padding: 5px 8px; }
.label { color: #59636e; font-size: 10px; }
.value { font-size: 17px; font-weight: 600; }
.delta { font-size: 10px; color: #59636e; }
.good { color: #1a7f37; }
.bad { color: #d1242f; }
.side { display: flex; gap: 12px; align-items: flex-start; }
.side > div:last-child { flex: 1; min-width: 0; }
pre { font-size: 8px; line-height: 1.25; background: #f6f8fa; padding: 6px; margin: 0;
      white-space: pre-wrap; }
table { border-collapse: collapse; width: 100%; font-size: 10px; }
th, td { border-bottom: 1px solid #d1d9e0; padding: 2px 4px; text-align: right; }
th:first-child, td:first-child, th:last-child, td:last-child { text-align: left; }
footer { color: #59636e; margin-top: 8px; font-size: 10px; }
"""


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


FORMATS = {  # column of ``views.export_rows`` -> how the page formats its numbers
    "bytes": "{:,.0f}",
    "gzip bytes": "{:,.0f}",
    "× smaller than float32": "{:.2f}×",
    "preview accuracy": "{:.2f}%",
    "file accuracy": "{:.2f}%",
}


def cell(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if column in FORMATS:
        return FORMATS[column].format(value)
    if isinstance(value, float):  # a column the report has no format for: as short as exact
        return f"{value:,.0f}" if value.is_integer() else f"{value:.3g}"
    return str(value)


def table_html(exports: dict[str, Exported | str]) -> str:
    rows = views.export_rows(exports)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(c, row[c]))}</td>" for c in rows.columns) + "</tr>"
        for _, row in rows.iterrows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build(
    model: services.KerasModel,
    config: OptimizationConfig,
    result: services.Comparison,
    exports: dict[str, Exported | str],
    params: Mapping[str, str],
    tensor: str | None = None,
    log_y: bool = False,
) -> str:
    """The report as one HTML document. ``params`` are the link's query parameters of these
    settings; ``tensor`` and ``log_y`` pick the histogram as on the Explore page (``None``: all
    eligible weights)."""
    outcome, baseline = result.outcome, result.baseline
    original, optimized = figures.tensor_choice(model.prepared, outcome, tensor)
    figure = figures.weight_histogram(
        original, optimized, log_y=log_y, marks_name=figures.mark_label(config)
    )
    figure.update_layout(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        font={"size": 10},
        margin={"l": 55, "r": 10, "t": 30, "b": 40},  # room for the axis labels at this size
    )
    chart = figure.to_html(include_plotlyjs=True, full_html=False, config={"displayModeBar": False})
    title = views.model_title(model)
    data = model.data_name or "none"
    cards = "".join(card_html(c) for c in views.cards(outcome, baseline))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}: {html.escape(describe(config))}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">File {html.escape(model.name)} · evaluation data: {html.escape(data)} ·
settings: <b>{html.escape(describe(config))}</b></p>
<p class="headline">{html.escape(explain.headline(outcome, baseline))}</p>
<div class="cards">{cards}</div>
<div class="side">
<div><h2>Weights, original and optimized</h2>{chart}</div>
<div><h2>Recipe</h2><pre>{html.escape(services.recipe_json(config))}</pre></div>
</div>
<h2>Files, verified</h2>
<p class="meta">Each file was written, loaded back and run on the evaluation data; its accuracy
is the file's own.</p>
{table_html(exports)}
<footer>These settings in the Model Optimization Explorer (Explore or Download page):
<code>?{html.escape(urlencode(params))}</code></footer>
</body>
</html>
"""
