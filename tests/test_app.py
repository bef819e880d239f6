"""AppTest checks of every page: the default sample, each control, and each refused input."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import sample_models
from optimizers import delivery, keras_io
from optimizers.export import FORMAT_NAMES
from optimizers.pipeline import OptimizationConfig, config_from_dict
from optimizers.pruning import PruningConfig
from optimizers.size import gzip_size
from ui import downloads, services, state
from ui.explain import format_bytes

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
EXPLORE, DOWNLOAD = "pages/explore.py", "pages/download.py"
DEFAULT = sample_models.SAMPLES[0]


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    found = [m for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return found[0].value


def number(text: str) -> float:
    """``"12.3 kB"`` -> 12300.0, ``"61"`` -> 61.0, ``"50.0%"`` -> 50.0."""
    value, *unit = text.replace(",", "").replace("×", "").replace("%", "").split()
    return float(value) * {"": 1, "B": 1, "kB": 1e3, "MB": 1e6}[unit[0] if unit else ""]


def histogram(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert charts, "no histogram on the page"
    return json.loads(charts[0].proto.spec)


def array(field: list | dict) -> np.ndarray:
    """A plotly trace's data: a list, or plotly's packed form ``{"dtype", "bdata"}``."""
    if isinstance(field, dict):
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"])
    return np.asarray(field)


def model_name(at: AppTest) -> str:
    return at.subheader[0].value


def change(at: AppTest, kind: str, key: str, value: object) -> AppTest:
    getattr(at, kind)(key=key).set_value(value).run()
    assert not at.exception, at.exception
    return at


# --- every page, default sample ---


@pytest.mark.parametrize("page", [None, EXPLORE, DOWNLOAD])
def test_every_page_shows_the_default_sample(page: str | None) -> None:
    at = start(page)
    assert not at.error
    if page is None:
        assert model_name(at) == DEFAULT.title
        assert number(metric(at, "Parameters")) > 0
        assert number(metric(at, "Baseline accuracy")) > 90
    else:
        assert DEFAULT.title in at.caption[0].value
        assert number(metric(at, "Test accuracy")) > 90
        assert metric(at, "Sparsity") == "0.0%"


# --- each control changes what it should ---


def test_sparsity_slider_changes_sparsity_histogram_and_sizes() -> None:
    at = start(EXPLORE)
    before_chart, before_gzip = histogram(at), number(metric(at, "Download size (gzip)"))
    change(at, "slider", state.SPARSITY, 60)
    assert metric(at, "Sparsity") == "60.0%"
    assert histogram(at) != before_chart
    assert number(metric(at, "Download size (gzip)")) < before_gzip
    assert any("60% smallest-magnitude" in md.value for md in at.markdown)


def test_bits_slider_changes_distinct_values_and_packed_size() -> None:
    at = start(EXPLORE)
    before_packed = number(metric(at, "Packed weights (estimate)"))
    change(at, "select_slider", state.BITS, 8)
    distinct_8 = number(metric(at, "Distinct values"))
    assert number(metric(at, "Packed weights (estimate)")) < before_packed / 3
    change(at, "select_slider", state.BITS, 2)
    assert number(metric(at, "Distinct values")) < distinct_8
    assert "2-bit grid" in " ".join(md.value for md in at.markdown)


def test_cluster_slider_limits_distinct_values_and_marks_centroids() -> None:
    at = start(EXPLORE)
    change(at, "select_slider", state.CLUSTERS, 16)
    assert number(metric(at, "Distinct values")) <= 16
    change(at, "selectbox", state.HIST_TENSOR, "dense/kernel")
    marks = [t for t in histogram(at)["data"] if "cluster centroids" in t.get("name", "")]
    levels = array(marks[0]["x"]) if marks else np.zeros(0)
    assert 2 <= levels.size <= 16 and np.unique(levels).size == levels.size
    assert marks[0]["name"] == f"{levels.size} cluster centroids"


def test_log_scale_toggle_changes_the_y_axis() -> None:
    at = start(EXPLORE)
    assert histogram(at)["layout"]["yaxis"]["type"] == "linear"
    change(at, "toggle", state.LOG_Y, True)
    assert histogram(at)["layout"]["yaxis"]["type"] == "log"


def test_advanced_options_change_the_outcome() -> None:
    at = start(EXPLORE)
    change(at, "radio", state.STRUCTURE, "2:4")
    assert 45 < number(metric(at, "Sparsity")) <= 50  # a 1-wide input axis keeps its weight
    assert at.slider(key=state.SPARSITY).disabled
    change(at, "radio", state.STRUCTURE, "unstructured")
    change(at, "slider", state.SPARSITY, 50)
    change(at, "radio", state.SCOPE, "global")
    assert "one magnitude threshold" in " ".join(md.value for md in at.markdown)
    change(at, "multiselect", state.SKIP, ["dense"])
    rows = at.dataframe[-1].value.set_index("tensor")
    assert rows.loc["dense/kernel", "applied"] == "none"
    assert rows.loc["dense/kernel", "sparsity"] == 0
    change(at, "select_slider", state.BITS, 4)
    change(at, "radio", state.QUANT_GRANULARITY, "per-tensor")
    change(at, "radio", state.QUANT_MODE, "asymmetric")
    assert "4-bit grid of 16 evenly spaced levels (asymmetric, one scale)" in " ".join(
        md.value for md in at.markdown
    )
    change(at, "select_slider", state.CLUSTERS, 8)
    change(at, "selectbox", state.INIT, "density")
    change(at, "toggle", state.PRESERVE_SPARSITY, False)
    change(at, "radio", state.CLUSTER_GRANULARITY, "per-channel")
    assert "each output channel" in " ".join(md.value for md in at.markdown)


def test_settings_survive_a_trip_to_download_and_back() -> None:
    at = start(EXPLORE)
    change(at, "slider", state.SPARSITY, 40)
    change(at, "select_slider", state.BITS, 4)
    at.switch_page(DOWNLOAD).run()
    assert "prune 40% → int4" in at.caption[0].value
    recipe = config_from_dict(json.loads(at.json[-1].value))
    assert recipe.pruning == PruningConfig(0.4) and recipe.quantization.bits == 4
    at.switch_page(EXPLORE).run()
    assert at.slider(key=state.SPARSITY).value == 40
    assert metric(at, "Sparsity") == "40.0%"


def test_sample_choice_switches_the_model() -> None:
    at = start()
    other = sample_models.SAMPLES[2]
    change(at, "selectbox", state.SAMPLE, other.name)
    assert model_name(at) == other.title
    at.switch_page(EXPLORE).run()
    assert other.title in at.caption[0].value


def test_sessions_are_isolated() -> None:
    first, second = start(EXPLORE), start(EXPLORE)
    change(first, "slider", state.SPARSITY, 70)
    second.run()
    assert metric(second, "Sparsity") == "0.0%"


# --- uploads: good ones through the real uploader, bad ones refused with one sentence ---


def upload(at: AppTest, key: str, name: str, data: bytes) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    return at


def to_upload_source(at: AppTest) -> AppTest:
    return change(at, "segmented_control", state.SOURCE, state.UPLOAD_SOURCE)


def test_uploaded_model_and_data_through_the_uploader() -> None:
    mlp = sample_models.get("digits_mlp")
    at = to_upload_source(start())
    upload(at, state.MODEL_FILE, "mine.keras", mlp.model_path.read_bytes())
    assert model_name(at) == "digits_mlp (mine.keras)" and not at.error
    assert metric(at, "Baseline accuracy") == "—"
    upload(at, state.DATA_FILE, "test.npz", mlp.data_path.read_bytes())
    assert number(metric(at, "Baseline accuracy")) > 90
    at.switch_page(EXPLORE).run()
    assert "mine.keras" in at.caption[0].value


def test_data_without_labels_reports_agreement() -> None:
    x = np.load(DEFAULT.data_path)["x"]
    buffer = io.BytesIO()
    np.savez(buffer, x=x)
    at = start()
    upload(at, state.DATA_FILE, "unlabelled.npz", buffer.getvalue())
    at.switch_page(EXPLORE).run()
    assert metric(at, "Top-1 agreement") == "100.0%"


def refused(at: AppTest, pending_key: str, name: str, data: bytes) -> str:
    """Queue a file as the uploader's callback does; the page must refuse it and keep going."""
    at.session_state[pending_key] = (name, data)
    at.run()
    assert not at.exception, at.exception
    assert len(at.error) == 1, [e.value for e in at.error]
    assert model_name(at) == DEFAULT.title  # the previous model stays
    return at.error[0].value


def keras_zip_without_config() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model.weights.h5", b"")
    return buffer.getvalue()


def lambda_model() -> bytes:
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    return keras_io.save_model_bytes(model)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("junk.keras", b"not a zip", "is not a Keras archive"),
        ("empty.keras", b"", "is empty"),
        ("config.keras", keras_zip_without_config(), "no config.json"),
        ("notes.txt", b"hello", "is not a model file"),
        ("broken.tflite", b"0123456789", "is not a TFLite model"),
    ],
)
def test_bad_model_files_are_refused(name: str, data: bytes, expected: str) -> None:
    message = refused(start(), state.PENDING_MODEL, name, data)
    assert expected in message and "\n" not in message


def test_lambda_layer_is_refused() -> None:
    message = refused(start(), state.PENDING_MODEL, "lambda.keras", lambda_model())
    assert "Lambda layer" in message


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (npz(x=np.zeros((5, 3), np.float32)), "but the model expects (n, 8, 8, 1)"),
        (npz(y=np.zeros(5)), "has no array named x"),
        (npz(x=np.zeros((5, 8, 8, 1)), y=np.arange(4)), "4 labels for 5 samples"),
        (npz(x=np.zeros((2, 8, 8, 1)), y=np.array([0, 99])), "holds class 99"),
        (npz(x=np.array([None, 1], dtype=object)), "pickled Python objects"),
        (npz(x=np.zeros((5, 8, 8, 1)))[:40], "not a readable .npz"),
    ],
)
def test_data_that_does_not_fit_is_refused(data: bytes, expected: str) -> None:
    at = start()
    message = refused(at, state.PENDING_DATA, "data.npz", data)
    assert expected in message
    assert at.caption[1].value.endswith(DEFAULT.data_path.name)  # the sample's data stays


def test_upload_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    at = start()
    monkeypatch.setattr(services, "max_upload_bytes", lambda: services.MB)
    message = refused(at, state.PENDING_MODEL, "big.keras", b"PK" + bytes(2 * services.MB))
    assert message == "big.keras is 2.0 MB, over the 1 MB upload limit"
    message = refused(at, state.PENDING_DATA, "big.npz", bytes(2 * services.MB))
    assert message == "big.npz is 2.0 MB, over the 1 MB upload limit"


def test_bad_upload_keeps_the_settings() -> None:
    at = start(EXPLORE)
    change(at, "slider", state.SPARSITY, 30)
    at.switch_page("pages/model.py").run()
    refused(at, state.PENDING_MODEL, "junk.keras", b"junk")
    at.switch_page(EXPLORE).run()
    assert metric(at, "Sparsity") == "30.0%"


def test_tflite_upload_is_inspection_only() -> None:
    import tensorflow as tf

    from optimizers import keras_io

    model = keras_io.load_model(sample_models.get("digits_mlp").model_path)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    at = to_upload_source(start())
    upload(at, state.MODEL_FILE, "mlp.tflite", converter.convert())
    assert model_name(at) == "mlp.tflite" and not at.error
    assert number(metric(at, "Constant tensors")) >= 3
    assert "int8" in set(at.dataframe[0].value["stored as"])
    assert histogram(at)["data"]
    at.switch_page(EXPLORE).run()
    assert not at.exception
    assert "inspected on the Model page" in at.info[0].value
    assert not at.metric


def test_model_without_eligible_tensors_has_nothing_to_explore() -> None:
    import keras

    inputs = keras.Input((3, 4))
    flat = keras.Model(inputs, keras.layers.Flatten()(inputs))
    at = to_upload_source(start())
    upload(at, state.MODEL_FILE, "flat.keras", keras_io.save_model_bytes(flat))
    assert "flat.keras" in model_name(at) and not at.error
    assert metric(at, "Eligible tensors") == "0"
    at.switch_page(EXPLORE).run()
    assert not at.exception and "nothing to explore" in at.info[0].value


# --- downloads and speed ---


def test_recipe_and_model_file_round_trip(tmp_path: Path) -> None:
    from optimizers import cli

    config = OptimizationConfig(pruning=PruningConfig(0.5))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(services.recipe_json(config))
    assert config_from_dict(json.loads(recipe.read_text())) == config
    out = tmp_path / "out.keras"
    assert cli.main([
        "apply", str(DEFAULT.model_path), "--recipe", str(recipe), "--output", str(out)
    ]) == 0  # fmt: skip
    assert out.exists()


def test_download_page_offers_every_format_verified(monkeypatch) -> None:
    # Nothing made before (another test's files), and each file's gzip size measured meanwhile.
    files_before = services.FILES
    monkeypatch.setattr(
        services, "FILES", services.ByteCache(files_before.budget, files_before.size)
    )
    meanwhile = {}
    gzip_meanwhile_before = delivery.gzip_meanwhile

    def gzip_meanwhile(exported):
        meanwhile[exported.fmt] = gzipping = gzip_meanwhile_before(exported)
        return gzipping

    monkeypatch.setattr(delivery, "gzip_meanwhile", gzip_meanwhile)
    at = start(EXPLORE)
    change(at, "slider", state.SPARSITY, 60)
    change(at, "select_slider", state.BITS, 4)
    at.switch_page(DOWNLOAD).run()  # one run: the page follows its files until all are timed
    assert not at.exception, at.exception
    labels = [b.label for b in at.download_button]
    assert sorted(labels) == sorted(
        ["Download .keras", "Download recipe (.json)", "Download report"]
        + [f"Download {name} .tflite" for name in ("float32", "float16", "int4", "int2")]
        + ["Download int8 dynamic range .tflite", "Download int8 full integer .tflite"]
    )
    # One sentence names the file to ship; its button comes first, as the primary one.
    advice = at.info[0].value
    assert advice.startswith(("Ship ", "No file is within 1 point of the float model's"))
    shipped = re.search(rf"{DEFAULT.model_path.stem}_([\w-]+\.(tflite|keras))", advice)
    assert shipped, advice
    buttons = {  # the end of a file's name -> its button
        "optimized.keras": "Download .keras",
        "float32.tflite": "Download float32 .tflite",
        "float16.tflite": "Download float16 .tflite",
        "int8-dynamic.tflite": "Download int8 dynamic range .tflite",
        "int8.tflite": "Download int8 full integer .tflite",
        "int4.tflite": "Download int4 .tflite",
        "int2.tflite": "Download int2 .tflite",
    }
    assert labels[0] == buttons[shipped.group(1)], (advice, labels)
    kinds = [b.proto.type for b in at.download_button if b.label in buttons.values()]
    assert kinds == ["primary"] + ["secondary"] * 6
    rows = at.dataframe[0].value
    assert list(rows.columns) == [
        "format", "size", "download (gzip)", "vs float32", "accuracy (preview)", "accuracy (file)",
        "speed", "vs original", "all cores", "activations", "check",
    ]  # fmt: skip
    assert rows.map(lambda cell: isinstance(cell, str) and cell not in ("None", "nan")).all().all()
    table = rows.set_index("format")
    for name in ("Keras", "LiteRT float32", "LiteRT int8 dynamic range", "LiteRT int4"):
        row = table.loc[name]
        assert not row["check"].startswith("departs"), (name, row)  # within 0.5 points, exactly
        file, preview = number(row["accuracy (file)"]), number(row["accuracy (preview)"])
        assert abs(file - preview) <= 0.5 + 0.1, (name, row)  # shown to 0.1
    assert table.loc["Keras", "speed"] == table.loc["Keras", "vs original"] == "—"
    for name in ("LiteRT float32", "LiteRT int4"):
        assert re.fullmatch(r"\d+(\.\d)? (µs|ms|s)", table.loc[name, "speed"]), table.loc[name]
        words = table.loc[name, "vs original"]
        assert re.fullmatch(r"\d+\.\d× (faster|slower)|same speed", words), words
    size = table["size"].map(number)
    assert size["LiteRT int4"] < size["LiteRT int8 dynamic range"] < size["LiteRT float16"]
    assert size["LiteRT float16"] < size["LiteRT float32"]
    # int2 cannot hold the 4-bit preview: the page says so instead of offering it silently.
    assert table.loc["LiteRT int2", "check"].startswith("departs from the preview")
    assert any("LiteRT int2" in w.value and "4-bit" in w.value for w in at.warning)
    # Each file's gzip size was measured while the next ones were made, and is its own.
    [files] = [f for f, _ in services.FILES._items.values() if f.timed]
    assert set(meanwhile) == set(files.made) and not services.GZIPPING  # all taken
    for fmt, e in files.made.items():
        assert e.data is meanwhile[fmt].data and e.gzip_bytes == gzip_size(e.data), fmt
        assert table.loc[FORMAT_NAMES[fmt], "download (gzip)"] == format_bytes(e.gzip_bytes)


def test_a_slow_format_of_a_large_model_is_made_when_asked(monkeypatch) -> None:
    """Full-integer int8 of a large model waits until asked (ResNet50: a conversion of 26 s);
    the other files and the report come without it, and one click asks for it."""
    monkeypatch.setattr(services, "MADE_WHEN_ASKED_FROM", 0)  # the sample counts as large
    at = start(EXPLORE)
    change(at, "slider", state.SPARSITY, 50)
    at.switch_page(DOWNLOAD).run()
    assert not at.exception, at.exception
    full_integer = "Download int8 full integer .tflite"
    labels = [b.label for b in at.download_button]
    assert full_integer not in labels and "Download report" in labels, labels
    assert all(not b.disabled for b in at.download_button), labels
    check = at.dataframe[0].value.set_index("format").loc["LiteRT int8 full integer", "check"]
    assert check == downloads.WHEN_ASKED
    make = [b for b in at.button if b.label == "Make int8 full integer .tflite"]
    assert len(make) == 1
    make[0].click().run()
    assert not at.exception, at.exception
    offered = {b.label: b for b in at.download_button}
    assert not offered[full_integer].disabled and "Download report" in offered
    assert not [b for b in at.button if b.label.startswith("Make ")]
    rows = at.dataframe[0].value.set_index("format")
    assert number(rows.loc["LiteRT int8 full integer", "size"]) > 0
