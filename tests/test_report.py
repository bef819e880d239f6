"""The one-page report and the headline: the same figures as the pages, in a file that stands
alone."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import sample_models
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from ui import explain, report, services, views

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = sample_models.get("digits_mlp")
CONFIG = OptimizationConfig(
    pruning=PruningConfig(0.6), clustering=ClusteringConfig(16), quantization=QuantizationConfig(4)
)
FORMATS = ("keras", "tflite-float32", "tflite-int4")
PARAMS = {"sample": SAMPLE.name, "sparsity": "0.6", "clusters": "16", "bits": "4"}


@pytest.fixture(scope="module")
def made() -> tuple[services.KerasModel, services.Comparison, dict, str]:
    model = services.open_sample(SAMPLE.name)
    result = services.compare(model, CONFIG)
    exports = {fmt: services.export(model, CONFIG, fmt) for fmt in FORMATS}
    exports["tflite-int8"] = "this model cannot be written in this format"
    return model, result, exports, report.build(model, CONFIG, result, exports, PARAMS)


# --- the headline ---


def test_headline_gives_the_gzip_ratio_and_the_accuracy_change(made) -> None:
    _, result, _, _ = made
    outcome, baseline = result.outcome, result.baseline
    smaller = baseline.sizes.gzip / outcome.sizes.gzip
    diff = 100 * (outcome.accuracy - baseline.accuracy)
    assert smaller > 1 and abs(diff) >= 0.05
    sign = "+" if diff > 0 else "−"
    assert explain.headline(outcome, baseline) == (
        f"{smaller:.1f}× smaller download, accuracy {100 * outcome.accuracy:.1f}% "
        f"({sign}{abs(diff):.1f} points)"
    )


def test_headline_of_the_untouched_model_and_of_an_unmeasured_one(made) -> None:
    _, result, _, _ = made
    baseline = result.baseline
    assert explain.headline(baseline, baseline) == (
        f"Same download size ({explain.format_bytes(baseline.sizes.gzip)}), accuracy "
        f"{100 * baseline.accuracy:.1f}% (unchanged)"
    )
    unmeasured = replace(result.outcome, measured=False)
    assert explain.headline(unmeasured, baseline).startswith("Measuring")


def test_headline_without_data_says_accuracy_is_not_measured() -> None:
    model = services.open_keras(SAMPLE.model_path.name, SAMPLE.model_path.read_bytes())
    result = services.compare(model, CONFIG)
    assert explain.headline(result.outcome, result.baseline).endswith(
        "accuracy not measured (no evaluation data)"
    )


# --- the report ---


def test_report_holds_the_headline_cards_files_and_recipe(made) -> None:
    model, result, exports, page = made
    text = html.unescape(page)
    assert views.model_title(model) in text and model.name in text
    assert explain.headline(result.outcome, result.baseline) in text
    for card in views.cards(result.outcome, result.baseline):
        assert f'<div class="label">{card.label}</div><div class="value">{card.value}</div>' in text
    rows = views.export_rows(exports)
    for _, row in rows.iterrows():
        assert f"<td>{row['format']}</td>" in text
    int4 = rows.set_index("format").loc["LiteRT int4"]
    assert f"<td>{int4['bytes']:,.0f}</td>" in text
    assert f"<td>{int4['file accuracy']:.2f}%</td>" in text
    assert "not available: this model cannot be written in this format" in text
    recipe = re.search(r"<pre>(.*?)</pre>", page, re.S).group(1)
    assert json.loads(html.unescape(recipe)) == json.loads(services.recipe_json(CONFIG))
    assert "?sample=digits_mlp&amp;sparsity=0.6&amp;clusters=16&amp;bits=4" in page


def test_report_stands_alone(made) -> None:
    *_, page = made
    assert page.startswith("<!doctype html>")
    assert not re.search(r"<(script|img|iframe)[^>]+src=|<link\b|@import", page)
    assert "Plotly.newPlot" in page and "plotly.js v" in page  # the library itself is inside
    assert "@page { size: A4 portrait" in page


def test_report_escapes_what_it_is_given(made) -> None:
    model, result, exports, _ = made
    odd = replace(model, name="<b>m</b>.keras", sample=None)
    page = report.build(odd, CONFIG, result, exports, {"x": "<script>"})
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt;.keras" in page
    assert "x=%3Cscript%3E" in page


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        (views.Card("Test accuracy", "95%", "-1.7 pp", color="normal"), "bad"),
        (views.Card("Test accuracy", "99%", "+0.3 pp", color="normal"), "good"),
        (views.Card("gzip size", "15 kB", "-50.9 kB"), "good"),
        (views.Card(".keras file size", "90 kB", "+1 kB"), "bad"),
        (views.Card("Sparsity", "60%", "+60.0 pp", color="off"), ""),
        (views.Card("Compression", "4×"), ""),
    ],
)
def test_a_change_is_coloured_as_the_page_colours_it(card: views.Card, expected: str) -> None:
    assert report.delta_class(card) == expected


def test_download_page_offers_the_report() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update(PARAMS)
    at.switch_page("pages/download.py").run()
    assert not at.exception, at.exception
    assert "Download report" in [b.label for b in at.download_button]
