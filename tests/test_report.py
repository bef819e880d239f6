"""The one-page report and the headline: the same figures as the pages, in a small file that
stands alone, opens offline and prints on one A4 page (the recipe on the next)."""

from __future__ import annotations

import datetime
import html
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright
from streamlit.testing.v1 import AppTest

import sample_models
from bench.serve import CHROMIUM, CHROMIUM_ARGS
from optimizers import delivery
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, describe
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from ui import downloads, explain, figures, report, services, state, views
from ui.setting import Setting, with_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = sample_models.get("digits_mlp")
CONFIG = OptimizationConfig(
    pruning=PruningConfig(0.6), clustering=ClusteringConfig(16), quantization=QuantizationConfig(4)
)
PINNED = OptimizationConfig(pruning=PruningConfig(0.5), quantization=QuantizationConfig(8))
FORMATS = ("keras", "tflite-float32", "tflite-int4")
PARAMS = {"sample": SAMPLE.name, "sparsity": "0.6", "clusters": "16", "bits": "4"}
LINK = "http://localhost:8501/download?sample=digits_mlp&sparsity=0.6&clusters=16&bits=4"
RECOMMENDATION = (  # as long as the Download page's: two lines
    "Ship digits_mlp_int4.tflite: the smallest file within 1 point of the float model's 95.6% "
    "(14.2 kB, 95.6%, 1.3× slower than the original); digits_mlp_int8.tflite is the fastest."
)
CREATED = datetime.datetime(2026, 3, 5, 14, 7)
PAGE_PX = (297 - 2 * 10) / 25.4 * 96  # A4's height inside the report's 10 mm margins


def build(model, result, exports, **changes) -> str:
    arguments = {
        "setting": with_config(Setting(model=state.model_ref(model)), CONFIG),
        "link": LINK,
        "recipe": services.recipe_json(CONFIG),
        "recommendation": RECOMMENDATION,
        "created": CREATED,
    }
    return report.build(model, result=result, exports=exports, **(arguments | changes))


@pytest.fixture(scope="module")
def made() -> tuple[services.KerasModel, services.Comparison, dict, str]:
    model = services.open_sample(SAMPLE.name)
    result = services.compare(model, CONFIG)
    made = {fmt: delivery.verify(model.prepared, result.outcome, fmt) for fmt in FORMATS}
    exports = delivery.time_exports(model.prepared, made)  # timed, as the Download page has them
    exports["tflite-int8"] = "this model cannot be written in this format"
    return model, result, exports, build(model, result, exports)


@pytest.fixture(scope="module")
def ab(made) -> tuple[services.Comparison, str]:
    """A (pinned) at ``PINNED`` beside B at ``CONFIG``, and their report."""
    model, result, exports, _ = made
    a = services.compare(model, PINNED)
    link = LINK + "&a.sparsity=0.5&a.bits=8"
    return a, build(model, result, exports, link=link, pinned=(with_config(Setting(), PINNED), a))


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


def test_report_holds_the_date_advice_headline_cards_files_link_and_recipe(made) -> None:
    model, result, exports, page = made
    text = html.unescape(page)
    assert views.model_title(model) in text and model.name in text
    assert '<time datetime="2026-03-05T14:07">5 March 2026, 14:07</time>' in page
    assert f"Setting: <b>{describe(CONFIG)}</b>" in text
    assert f'<p class="recommendation">{RECOMMENDATION}</p>' in text
    assert explain.headline(result.outcome, result.baseline) in text
    for card in views.cards(result.outcome, result.baseline):
        assert f'<div class="label">{card.label}</div><div class="value">{card.value}</div>' in text
    rows = downloads.export_rows(exports)  # whatever columns it has, every cell as text
    for column in rows.columns:
        assert re.search(f"<th[^>]*>{re.escape(column)}</th>", text)
    for value in rows.to_numpy().ravel():
        assert re.search(f"<td[^>]*>{re.escape(report.cell(value))}</td>", text)
    assert "not available: this model cannot be written in this format" in text
    assert f'<a href="{html.escape(LINK)}">{html.escape(LINK)}</a>' in page
    appendix = page.index('<section class="appendix">')
    recipe = re.search(r"<pre>(.*?)</pre>", page[appendix:], re.S).group(1)
    assert json.loads(html.unescape(recipe)) == json.loads(services.recipe_json(CONFIG))


def test_report_stands_alone_small_with_no_script_and_nothing_fetched(made) -> None:
    *_, page = made
    assert page.startswith("<!doctype html>")
    assert len(page.encode()) <= 1_000_000
    assert not re.search(r"<script|<link\b|<img|<iframe|\bsrc=|@import|url\(", page, re.I)
    addresses = set(re.findall(r"https?://[^\s\"<]+", page))
    assert addresses == {html.escape(LINK), "http://www.w3.org/2000/svg"}  # the link; a namespace
    assert "@page { size: A4 portrait" in page


def test_report_draws_the_histogram_with_a_mark_for_each_distinct_value(made) -> None:
    model, result, _, page = made
    original, optimized = figures.tensor_choice(model.prepared, result.outcome, None)
    levels = figures.few_levels(optimized)[0]
    assert 0 < levels.size <= figures.MAX_MARKS
    (svg,) = re.findall(r"<svg.*?</svg>", page, re.S)
    marks = re.search(f'<path d="([^"]*)" fill="{figures.MARK_COLOR}"/>', svg).group(1)
    assert marks.count("z") == levels.size
    name = figures.mark_label(CONFIG)  # named as on the page
    assert f"{figures.marks_words(levels.size, name, optimized)}</text>" in svg
    assert f'font-size="{report.TEXT}"' in svg and report.TEXT >= 12  # 9 pt in print


def test_histogram_draws_each_bin_and_marks_only_a_change() -> None:
    rng = np.random.default_rng(0)
    original = rng.normal(size=1000).astype(np.float32)
    levels = np.array([-1.0, 0.0, 1.0], np.float32)
    optimized = levels[np.abs(original[:, None] - levels).argmin(axis=1)]
    changed, same = report.histograms_svg(
        [(original, optimized), (original, original)], ["distinct values"] * 2
    )
    for svg in (changed, same):  # two filled step outlines of every bin
        bars = re.findall(r'<path d="(M[^"]*Z)"', svg)
        assert len(bars) == 2 and all(b.count("H") == figures.BINS for b in bars)
    assert "3 distinct values" in changed and "distinct values" not in same
    # Two tensors of 40 values each, 80 together: too many to mark, as on the page.
    parts = [original[:500], original[500:]]
    forty = [(np.arange(500) % 40 + i / 2).astype(np.float32) / 100 for i in range(2)]
    assert figures.few_levels(forty)[0].size > figures.MAX_MARKS
    assert "distinct values" not in report.histograms_svg([(parts, forty)], ["distinct values"])[0]
    (logged,) = report.histograms_svg([(original, optimized)], ["distinct values"], log_y=True)
    assert "weights per bin (log)" in logged and ">100</text>" in logged  # decades as ticks
    assert report.nice_ticks(-0.8, 0.8) == pytest.approx([-0.5, 0.0, 0.5])
    assert report.nice_ticks(0, 12_000, 4) == pytest.approx([0, 5000, 10_000])
    assert [report.number(v) for v in (0.0, 1500, 10_000, 2e6)] == ["0", "1.5k", "10k", "2M"]
    assert report.number(-0.25, 2) == "−0.25"


def test_the_link_says_whether_it_opens_this_model(made) -> None:
    model, result, exports, page = made
    assert "This view in the Model Optimization Explorer:" in page
    upload = replace(model, name="mine.keras", sample=None)
    text = html.unescape(build(upload, result, exports))
    assert "settings only: mine.keras cannot travel in a link" in text


def test_report_escapes_what_it_is_given(made) -> None:
    model, result, exports, _ = made
    odd = replace(model, name="<b>m</b>.keras", sample=None)
    page = build(odd, result, exports, recommendation="<i>w</i>", link='http://x/?a="><script>')
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt;.keras" in page
    assert "<i>w</i>" not in page and "<script>" not in page


def test_report_of_a_and_b_side_by_side(made, ab) -> None:
    model, result, exports, _ = made
    a, page = ab
    text = html.unescape(page)
    assert f"A (pinned):</b> {describe(PINNED)} — {explain.headline(a.outcome, a.baseline)}" in text
    assert f"B (the sliders):</b> {describe(CONFIG)} — " in text
    assert explain.headline(result.outcome, result.baseline) in text
    rows = views.compare_rows(a.outcome, result.outcome, result.baseline)
    for value in rows.to_numpy().ravel():
        assert re.search(f"<td[^>]*>{re.escape(report.cell(value))}</td>", text)
    assert len(re.findall(r"<svg ", page)) == 2
    assert f'width="{report.SMALL_WIDTH}"' in page
    assert "&amp;a.sparsity=0.5&amp;a.bits=8" in page
    assert len(page.encode()) <= 1_000_000 and "<script" not in page


def test_report_prints_its_main_part_on_one_a4_page(made, ab) -> None:
    """Printed by chromium with the network blocked: the main part on one page, the appendix
    (which starts a page of its own) on the next, so two pages in all."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make chromium`"
    *_, single = made
    _, both = ab
    fetched: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True)
        context.route("**/*", lambda route: fetched.append(route.request.url) or route.abort())
        page = context.new_page()
        for document in (single, both):
            page.set_content(document)
            pdf = page.pdf(format="A4", print_background=True)
            assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 2
            page.emulate_media(media="print")
            assert page.locator("main").bounding_box()["height"] <= PAGE_PX
            width = page.locator("body").bounding_box()["width"]
            assert all(t.bounding_box()["width"] <= width for t in page.locator("table").all())
            page.emulate_media(media="screen")
        browser.close()
    assert fetched == []


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


def test_download_page_offers_the_report_once_every_file_is_timed() -> None:
    """One run of the page, with nothing asking again (AppTest has no browser timer), ends
    with every file verified and timed and the report offered: the server follows the files
    itself, so a browser whose polling stopped never leaves the page waiting."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params.update(PARAMS)
    at.switch_page("pages/download.py").run()
    assert not at.exception, at.exception
    labels = [b.label for b in at.download_button]
    assert "Download report" in labels, labels
    assert all(not b.disabled for b in at.download_button), labels


def test_files_on_their_way_say_what_they_wait_for(made) -> None:
    """The Download page's table while it follows its files: a file not yet made says so in
    its check, a made one waiting to be timed says so in its timed columns, never a blank; a
    gzip size measured meanwhile is shown before the speed."""
    _, _, exports, _ = made
    ready, later = "tflite-int4", "tflite-float32"
    assert isinstance(exports[ready], delivery.Exported) and later in exports
    untimed = replace(exports[ready], gzip_bytes=None, latency=None)
    waiting = {ready: "measuring gzip and speed…", later: "converting and verifying…"}
    rows = downloads.export_rows({ready: untimed}, waiting).set_index("format")
    made_row, later_row = rows.loc[downloads.FORMAT_NAMES[ready]], rows.loc["LiteRT float32"]
    assert made_row["size"] == explain.format_bytes(exports[ready].size_bytes)
    for column in ("download (gzip)", "speed", "vs original", "all cores", "activations"):
        assert made_row[column] == "measuring gzip and speed…", column
    assert made_row["check"] == explain.verdict(exports[ready])
    assert later_row["check"] == "converting and verifying…"
    assert (later_row.drop(["format", "check"], errors="ignore") == "—").all(), later_row
    gzipped = replace(untimed, gzip_bytes=exports[ready].gzip_bytes)
    waiting[ready] = "measuring speed…"
    row = downloads.export_rows({ready: gzipped}, waiting).set_index("format").iloc[0]
    assert row["download (gzip)"] == explain.format_bytes(exports[ready].gzip_bytes)
    for column in ("speed", "vs original", "all cores", "activations"):
        assert row[column] == "measuring speed…", column


def test_a_gzip_size_measured_meanwhile_is_shown_before_the_timing(made, monkeypatch) -> None:
    """``services.exports`` gives a file the gzip size measured for its very bytes while the
    next files were made, and says it waits for its speed only; the cache keeps the file as it
    was until it is timed, and a setting left behind keeps the sizes measured for it."""
    from concurrent.futures import Future

    model, _, exports, _ = made
    key = (model.key, CONFIG)
    untimed = {
        f: replace(e, gzip_bytes=None, latency=None, baseline_latency=None)
        for f, e in exports.items()
        if isinstance(e, delivery.Exported)
    }
    measured: Future[int] = Future()
    measured.set_result(1234)
    int4, float32 = untimed["tflite-int4"].data, untimed["tflite-float32"].data
    monkeypatch.setattr(
        services, "FILES", services.ByteCache(services.FILES.budget, services.FILES.size)
    )
    monkeypatch.setattr(services, "GZIPPING", {})
    services.FILES.put(key, services.Files(untimed))
    services.GZIPPING[key] = {  # the float32 size is another copy's
        "tflite-int4": delivery.Gzipping(int4, measured),
        "tflite-float32": delivery.Gzipping(bytes(bytearray(float32)), measured),
    }

    class Timing:  # the timing running, as the conversion thread would report it
        def ask(self, owner, wanted):
            return {k: services.TIMING for k in wanted}

    monkeypatch.setattr(services, "CONVERSIONS", Timing())
    files, waiting = services.exports("a session", model, CONFIG, list(untimed))
    assert files["tflite-int4"].gzip_bytes == 1234 and files["tflite-float32"].gzip_bytes is None
    assert waiting == {
        "keras": services.TIMING,
        "tflite-float32": services.TIMING,
        "tflite-int4": "measuring speed…",
    }
    assert services.FILES.get(key).made["tflite-int4"].gzip_bytes is None
    services._measuring((model.key, PINNED))  # another setting's files are made now
    assert key not in services.GZIPPING
    kept = services.FILES.get(key).made
    assert kept["tflite-int4"].gzip_bytes == 1234 and kept["tflite-float32"].gzip_bytes is None
