"""The whole flow in a real browser: upload a model, move a slider, download the result.

Runs ``streamlit run app.py`` on a free port (``bench.serve``, which the benchmark uses too) and
drives Debian's chromium with Playwright
(``make chromium`` installs it; Playwright's own browser download is never used).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

import sample_models
from bench.serve import CHROMIUM, CHROMIUM_ARGS, streamlit_app
from optimizers import export

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 60_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with streamlit_app(tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make chromium`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def metric_value(page: Page, label: str) -> Locator:
    card = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    )
    return card.get_by_test_id("stMetricValue")


def histogram_counts(page: Page) -> list[list[float]]:
    """The bar heights of the weight histogram, read from the Plotly figure in the page."""
    return page.evaluate(
        "() => document.querySelector('.js-plotly-plot')._fullData"
        ".filter(t => t.type === 'bar').map(t => Array.from(t.y))"
    )


def wait_for_change(page: Page, before: list[list[float]], seconds: float = 30) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = histogram_counts(page)
        if now != before:
            return now
        page.wait_for_timeout(200)
    raise AssertionError("the histogram did not change")


def test_upload_explore_and_download(app_url: str, browser: Browser, tmp_path: Path) -> None:
    import keras

    sample = sample_models.get("digits_mlp")
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    expect(metric_value(page, "Baseline accuracy")).to_be_visible()

    # Upload a model and its test data through the real file uploaders.
    page.get_by_role("radio", name="Upload a model").click()
    inputs = page.locator("input[type=file]")
    expect(inputs).to_have_count(2)
    inputs.nth(0).set_input_files(str(sample.model_path))
    expect(page.get_by_role("heading", name=sample.model_path.name)).to_be_visible()
    page.locator("input[type=file]").nth(1).set_input_files(str(sample.data_path))
    expect(page.get_by_text(f"evaluation data: {sample.data_path.name}")).to_be_visible()
    expect(metric_value(page, "Baseline accuracy")).to_have_text(re.compile(r"9\d\.\d%"))
    expect(page.get_by_test_id("stException")).to_have_count(0)

    # Explore: move the pruning slider with the keyboard and watch the figures follow.
    page.get_by_role("link", name="Explore").click()
    expect(metric_value(page, "Sparsity")).to_have_text("0.0%")
    page.wait_for_function("() => document.querySelector('.js-plotly-plot')?.data?.length > 0")
    before = histogram_counts(page)
    gzip_before = metric_value(page, "Download size (gzip)").inner_text()
    slider = page.get_by_test_id("stSlider").locator("input[type=range]").first
    slider.focus()
    for _ in range(10):  # 10 steps of 5%
        slider.press("ArrowRight")
    expect(metric_value(page, "Sparsity")).to_have_text("50.0%")
    expect(metric_value(page, "Download size (gzip)")).not_to_have_text(gzip_before)
    after = wait_for_change(page, before)
    assert max(after[1]) > max(before[1])  # the pruned weights pile up in the zero bin

    # Download: the optimized .keras file loads safely and carries the pruned weights.
    page.get_by_role("link", name="Download").click()
    button = page.get_by_role("button", name="Download .keras")
    expect(button).to_be_visible()
    with page.expect_download() as download:
        button.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "digits_mlp_optimized.keras"
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    kernel = model.get_layer("dense_1").get_weights()[0]
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)

    # ... and the LiteRT file runs in the interpreter as accurately as the page said it would.
    button = page.get_by_role("button", name="Download float32 .tflite")
    with page.expect_download() as download:
        button.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "digits_mlp_float32.tflite"
    with np.load(sample.data_path) as arrays:
        x, y = arrays["x"], arrays["y"]
    outputs = export.run_tflite(path.read_bytes(), x)
    accuracy = f"{100 * np.mean(outputs.argmax(axis=1) == y):.1f}%"
    expect(metric_value(page, "Test accuracy")).to_have_text(accuracy)  # the preview's figure
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.close()


# --- an upload is never lost: data dropped while the model loads ---

# Loaded into the server through PYTHONPATH: holds the load of any model named ``gated_*`` until
# the session has a rerun waiting (the data upload), so the data always arrives mid-load, with
# no timing to tune. It leaves a marker when a rerun released it.
GATE = """
import time
from pathlib import Path

from optimizers import keras_io

real_load = keras_io.load_model_bytes


def gated_load(data, name):
    if Path(name).name.startswith("gated_"):
        from streamlit.runtime.scriptrunner import get_script_run_ctx
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

        requests = get_script_run_ctx().script_requests
        deadline = time.monotonic() + 60
        while requests._state == ScriptRequestType.CONTINUE and time.monotonic() < deadline:
            time.sleep(0.05)
        if requests._state != ScriptRequestType.CONTINUE:
            Path(__file__).with_name("released_by_rerun").touch()
    return real_load(data, name)


keras_io.load_model_bytes = gated_load
"""


@pytest.fixture(scope="module")
def gated_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    gate = tmp_path_factory.mktemp("gate")
    (gate / "sitecustomize.py").write_text(GATE)
    with streamlit_app(gate / "server.log", {"PYTHONPATH": f"{gate}:{ROOT}"}) as url:
        yield url, gate


def test_data_dropped_while_the_model_loads_is_evaluated_on_that_model(
    gated_app: tuple[str, Path], browser: Browser, tmp_path: Path
) -> None:
    import keras

    url, gate = gated_app
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((256,), name="features"),
            keras.layers.Dense(1024, activation="relu", name="wide"),
            keras.layers.Dense(512, activation="relu", name="narrow"),
            keras.layers.Dense(4, activation="softmax", name="classes"),
        ],
        name="gated_mlp",
    )
    model_path, data_path = tmp_path / "gated_model.keras", tmp_path / "gated_data.npz"
    model.save(model_path)
    rng = np.random.default_rng(0)
    np.savez(data_path, x=rng.random((16, 256), np.float32), y=rng.integers(0, 4, 16))

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(metric_value(page, "Baseline accuracy")).to_be_visible()  # the digits CNN
    page.get_by_role("radio", name="Upload a model").click()
    inputs = page.locator("input[type=file]")
    expect(inputs).to_have_count(2)
    inputs.nth(0).set_input_files(str(model_path))
    size = model_path.stat().st_size / 1e6
    expect(page.get_by_text(f"Loading gated_model.keras ({size:.1f} MB)…")).to_be_visible()
    expect(page.get_by_role("heading", name="gated_model.keras")).to_be_visible()
    page.locator("input[type=file]").nth(1).set_input_files(str(data_path))

    expect(
        page.get_by_text("File gated_model.keras · evaluation data: gated_data.npz")
    ).to_be_visible()
    expect(metric_value(page, "Baseline accuracy")).to_have_text(re.compile(r"\d+\.\d%"))
    assert (gate / "released_by_rerun").exists()  # the data really arrived during the load
    expect(page.get_by_test_id("stAlert")).to_have_count(0)  # no refusal
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.close()


# --- links carry the settings; the report stands alone ---

LINKED = {"sample": "digits_mlp", "sparsity": "0.6", "clusters": "16", "bits": "4"}


CARDS_JS = """() => [...document.querySelectorAll('[data-testid="stMetric"]')].map(m => [
    m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() ?? "",
    m.querySelector('[data-testid="stMetricValue"]')?.innerText ?? "",
])"""


CARDS = 8  # views.cards: two rows of four


def measured_cards(page: Page) -> dict[str, str]:
    """Every metric card's value once the answer is measured, by label: each card read whole
    in one script, until two reads a moment apart agree on all eight (the fragment redraws its
    cards, and a card being replaced is missing from the page for a moment)."""
    expect(page.get_by_test_id("stMetricValue").filter(has_text="measuring…")).to_have_count(0)
    previous = None
    for _ in range(100):
        cards = page.evaluate(CARDS_JS)
        settled = len(cards) == CARDS and all(k and v != "measuring…" for k, v in cards)
        if cards == previous and settled:
            return dict(cards)
        previous = cards
        page.wait_for_timeout(100)
    raise AssertionError(f"the metric cards did not settle: {previous}")


def press(page: Page, index: int, times: int) -> None:
    """Move the ``index``-th slider on the page ``times`` steps to the right."""
    handle = page.get_by_test_id("stSlider").nth(index).get_by_role("slider")
    handle.focus()
    for _ in range(times):
        handle.press("ArrowRight")


# Notes, from now on in the page, every card that shows "measuring…" and every progress bar drawn.
WATCH_STAGES_JS = """() => {
    window.stages = [];
    new MutationObserver(() => {
        const cards = [...document.querySelectorAll('[data-testid="stMetricValue"]')];
        if (cards.some(c => c.innerText === "measuring…")) window.stages.push("measuring");
        if (document.querySelector('[data-testid="stProgress"]')) window.stages.push("progress");
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def test_a_sample_answers_a_move_in_one_stage(app_url: str, browser: Browser) -> None:
    """A model measured in milliseconds is answered whole, once: no card flashes "measuring…"
    and no progress bar flashes between a move and its answer."""
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{app_url}/explore?sample=digits_cnn")
    measured_cards(page)
    page.evaluate(WATCH_STAGES_JS)
    press(page, 0, 2)
    expect(metric_value(page, "Sparsity")).to_have_text("10.0%")
    cards = measured_cards(page)
    assert cards["Test accuracy"].endswith("%")
    assert page.evaluate("() => window.stages") == []
    page.context.close()


def test_a_link_reproduces_the_view_and_the_report_opens_offline(
    app_url: str, browser: Browser, tmp_path: Path
) -> None:
    query = "&".join(f"{k}={v}" for k, v in LINKED.items())
    linked = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    linked.set_default_timeout(TIMEOUT_MS)
    linked.goto(f"{app_url}/explore?{query}")
    expect(metric_value(linked, "Sparsity")).to_have_text("60.0%")
    from_link = measured_cards(linked)
    headline = linked.locator("h2", has_text="smaller download")
    expect(headline).to_be_visible()
    headline_text = headline.inner_text()

    # The same settings by hand, in a fresh browser session.
    by_hand = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    by_hand.set_default_timeout(TIMEOUT_MS)
    by_hand.goto(app_url)
    expect(metric_value(by_hand, "Baseline accuracy")).to_be_visible()
    title = sample_models.get(LINKED["sample"]).title
    by_hand.get_by_test_id("stSelectbox").filter(has_text="Sample model").click()
    by_hand.get_by_role("option", name=title).click()
    expect(by_hand.get_by_role("heading", name=title)).to_be_visible()
    by_hand.get_by_role("link", name="Explore").click()
    expect(metric_value(by_hand, "Sparsity")).to_have_text("0.0%")
    press(by_hand, 0, 12)  # 12 steps of 5%
    expect(metric_value(by_hand, "Sparsity")).to_have_text("60.0%")
    press(by_hand, 1, 5)  # Off, 256, 128, 64, 32, 16
    press(by_hand, 2, 6)  # Off, 16, 8, 7, 6, 5, 4
    expect(by_hand.locator("h2", has_text="smaller download")).to_have_text(headline_text)
    assert measured_cards(by_hand) == from_link
    for key, value in LINKED.items():  # the address bar is that link
        assert f"{key}={value}" in by_hand.url

    # The report, downloaded from the linked session, opened from disk with the network blocked.
    linked.get_by_role("link", name="Download").click()
    button = linked.get_by_role("button", name="Download report")
    expect(button).to_be_visible()
    on_page = measured_cards(linked)
    with linked.expect_download() as download:
        button.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "digits_mlp_report.html"

    offline = browser.new_context(offline=True, viewport={"width": 1000, "height": 1400})
    requested: list[str] = []

    def block(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    offline.route("**/*", block)
    report = offline.new_page()
    report.goto(path.as_uri())
    expect(report.locator("svg")).to_have_count(1)  # the histogram, drawn inline
    assert report.locator(".headline").inner_text() == headline_text
    labels = report.locator(".card .label").all_inner_texts()
    values = report.locator(".card .value").all_inner_texts()
    assert dict(zip(labels, values, strict=True)) == on_page
    assert requested == []
    pdf = report.pdf(format="A4", print_background=True)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 2  # one page, then the recipe
    for context in (linked.context, by_hand.context, offline):
        context.close()


def test_an_applied_recipe_travels_whole_in_its_link(app_url: str, browser: Browser) -> None:
    """Trade-off → Apply: Explore shows the per-layer recipe in sight, and its address opened
    in a fresh browser shows the same cards."""
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.set_default_timeout(3 * TIMEOUT_MS)
    page.goto(f"{app_url}/tradeoff")
    page.get_by_role("button", name="Apply this recipe").click()
    expect(page.get_by_role("heading", name="Explore", exact=True)).to_be_visible()
    expect(page.get_by_text("Applied the recommended recipe")).to_be_visible()  # the toast
    expect(page.get_by_text(re.compile(r"Per-layer recipe: .*the sliders set"))).to_be_visible()
    applied = measured_cards(page)
    assert "layer." in page.url  # the per-layer settings are in the address

    fresh = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    fresh.set_default_timeout(TIMEOUT_MS)
    fresh.goto(page.url)
    expect(fresh.get_by_text(re.compile(r"Per-layer recipe: "))).to_be_visible()
    expect(metric_value(fresh, "Sparsity")).to_be_visible()
    assert measured_cards(fresh) == applied
    for p in (page, fresh):
        p.context.close()


# --- fine-tuning: a real click starts it, the chart follows, Stop ends it ---


def test_finetune_draws_its_progress_and_stop_keeps_the_best_epoch(
    app_url: str, browser: Browser
) -> None:
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{app_url}/explore")
    expect(metric_value(page, "Sparsity")).to_have_text("0.0%")
    float_accuracy = float(measured_cards(page)["Test accuracy"].rstrip("%"))
    assert float_accuracy > 50
    press(page, 2, 6)  # Off, 16, 8, 7, 6, 5, 4 bits
    expect(page.get_by_role("button", name="Fine-tune")).to_be_enabled()
    epochs = page.get_by_label("Epochs", exact=True).and_(page.get_by_role("spinbutton"))
    epochs.fill("200")
    epochs.press("Enter")
    page.get_by_role("button", name="Fine-tune").click()

    progress = page.get_by_text(re.compile(r"toward int4: epoch [1-9]\d* of 200"))
    expect(progress).to_be_visible()  # at least one epoch drawn live, while training goes on
    page.wait_for_function(  # the chart's validation accuracy has a point per epoch so far
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => (p._fullData || [])"
        ".some(t => t.name.startsWith('validation') && t.y.length > 0))"
    )
    page.get_by_role("button", name="Stop").click()
    stopped = page.get_by_text(re.compile(r"Stopped after (\d+) full epochs"))
    expect(stopped).to_be_visible()
    epochs_run = int(re.search(r"after (\d+)", stopped.inner_text()).group(1))
    assert 1 <= epochs_run < 200
    expect(page.get_by_test_id("stDataFrame").filter(has_text="post-training")).to_be_visible()

    # A button inside the fragment switches the whole page to the fine-tuned model, and back.
    page.get_by_role("button", name="Explore the fine-tuned model").click()
    expect(page.get_by_text(re.compile(r"fine-tuned toward int4 · every change"))).to_be_visible()
    # The original float model stays the baseline: the deltas are against it, not the tuned one.
    tuned = float(measured_cards(page)["Test accuracy"].rstrip("%"))
    delta = page.get_by_test_id("stMetric").filter(has_text="Test accuracy")
    delta = delta.get_by_test_id("stMetricDelta")
    # Cards and delta are each rounded to 0.1, so the delta may differ from the cards' difference
    # by one step; a tuned model that were its own baseline would draw no delta at all.
    if delta.count():
        drawn = float(delta.inner_text().removesuffix(" pp"))
        assert abs(drawn - (tuned - float_accuracy)) <= 0.1 + 1e-9, (drawn, tuned, float_accuracy)
    else:  # no delta drawn: as accurate as the float model, to the card's precision
        assert abs(tuned - float_accuracy) <= 0.1 + 1e-9, (tuned, float_accuracy)
    expect(page.locator("h2", has_text="smaller download")).to_be_visible()
    page.get_by_role("button", name="Back to digits_cnn.keras").click()
    expect(page.get_by_role("button", name="Explore the fine-tuned model")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.context.close()
