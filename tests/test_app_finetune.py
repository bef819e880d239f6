"""AppTest checks of the Explore page's Fine-tune section: nothing starts without the button,
fine-tuning a sample shows the float / post-training / fine-tuned table with real figures, the
fine-tuned model can be explored (and left again), Stop keeps the best epoch so far, and a bad
training file for an uploaded model is refused in one sentence without losing anything."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import sample_models
from ui import finetune, services, state

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
EXPLORE, DOWNLOAD = "pages/explore.py", "pages/download.py"
DEFAULT = sample_models.SAMPLES[0]
WAIT_S = 600  # a generous limit for training to end on a loaded machine, not a measurement


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(EXPLORE).run()
    assert not at.exception, at.exception
    return at


def change(at: AppTest, kind: str, key: str, value: object) -> AppTest:
    getattr(at, kind)(key=key).set_value(value).run()
    assert not at.exception, at.exception
    return at


def job(at: AppTest) -> finetune.Job:
    return at.session_state[state.FT_JOB]


def wait(at: AppTest, until) -> None:
    deadline = time.monotonic() + WAIT_S
    while not until():
        assert time.monotonic() < deadline, "fine-tuning did not get there in time"
        time.sleep(0.5)
    at.run()
    assert not at.exception, at.exception


def table(at: AppTest) -> pd.DataFrame:
    found = [d.value for d in at.dataframe if "model" in d.value.columns]
    assert found, "no comparison table"
    return found[0].set_index("model")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def test_the_section_waits_for_a_setting_and_a_click() -> None:
    at = start()
    assert "Fine-tune" in [s.value for s in at.subheader]
    assert any("Move a slider first" in i.value for i in at.info)
    change(at, "select_slider", state.BITS, 2)
    assert at.button(key="finetune_start").label == "Fine-tune"
    assert at.number_input(key=state.FT_EPOCHS).value == finetune.FinetuneConfig().epochs
    change(at, "slider", state.SPARSITY, 60)  # moves never start training
    assert state.FT_JOB not in at.session_state


def test_finetune_a_sample_then_explore_the_fine_tuned_model() -> None:
    at = start()
    float_accuracy = metric(at, "Test accuracy")
    change(at, "select_slider", state.BITS, 2)
    post_training_accuracy = metric(at, "Test accuracy")
    change(at, "number_input", state.FT_EPOCHS, 2)
    at.button(key="finetune_start").click().run()
    assert not at.exception, at.exception
    assert job(at).settings.epochs == 2 and job(at).config.quantization.bits == 2
    wait(at, lambda: not job(at).running)

    rows = table(at)
    assert list(rows.index) == ["float", "post-training", "fine-tuned"]
    assert f"{rows.loc['float', 'accuracy']:.1f}%" == float_accuracy
    assert f"{rows.loc['post-training', 'accuracy']:.1f}%" == post_training_accuracy
    # 2 bits costs the CNN dozens of points after training; two epochs win most of them back
    assert rows.loc["fine-tuned", "accuracy"] > rows.loc["post-training", "accuracy"] + 10
    assert rows.loc["fine-tuned", "packed bytes"] < rows.loc["float", "packed bytes"] / 10
    assert rows.loc["fine-tuned", "gzip bytes"] < rows.loc["float", "gzip bytes"]
    tuned = job(at).done
    assert tuned is not None and tuned.result.epochs_run == 2

    at.button(key="finetune_explore").click().run()
    assert not at.exception, at.exception
    assert "fine-tuned toward int2" in at.caption[0].value
    assert at.session_state[state.MODEL].key == tuned.model.key
    assert at.select_slider(key=state.BITS).value == 2
    assert metric(at, "Test accuracy") == f"{rows.loc['fine-tuned', 'accuracy']:.1f}%"
    # The original float model stays the baseline: the deltas and the headline are against it.
    gained = rows.loc["fine-tuned", "accuracy"] - rows.loc["float", "accuracy"]
    accuracy = next(m for m in at.metric if m.label == "Test accuracy")
    assert accuracy.delta == f"{gained:+.1f} pp"
    smaller = rows.loc["float", "gzip bytes"] / rows.loc["fine-tuned", "gzip bytes"]
    headline = next(m.value for m in at.markdown if m.value.startswith("## "))
    assert f"{smaller:.1f}× smaller download" in headline, headline
    assert "fine-tuned" in captions(at)

    # Download writes the fine-tuned model's files: those that hold 2 bits equal the preview.
    at.switch_page(DOWNLOAD).run()
    assert not at.exception, at.exception
    files = at.dataframe[0].value.set_index("format")
    for _ in range(600):  # the files are offered as they are verified, in the background
        if (files.loc[["Keras", "LiteRT int2"], "accuracy (file)"] != "—").all():
            break
        time.sleep(0.2)
        at.run()
        files = at.dataframe[0].value.set_index("format")
    for name in ("Keras", "LiteRT int2"):
        assert files.loc[name, "accuracy (file)"] == f"{rows.loc['fine-tuned', 'accuracy']:.1f}%"
    at.switch_page(EXPLORE).run()

    at.button(key="finetune_back").click().run()  # the original model, with the same setting
    assert not at.exception, at.exception
    assert DEFAULT.title in at.caption[0].value
    assert list(table(at).index) == ["float", "post-training", "fine-tuned"]


def test_stop_ends_training_and_keeps_the_best_epoch_so_far() -> None:
    at = start()
    change(at, "select_slider", state.BITS, 4)
    change(at, "number_input", state.FT_EPOCHS, finetune.MAX_EPOCHS)
    at.button(key="finetune_start").click().run()
    wait(at, lambda: len(job(at).epochs) >= 1)
    (bar,) = at.get("progress")
    assert "toward int4: epoch" in bar.proto.text and "validation accuracy" in bar.proto.text
    at.button(key="finetune_stop").click().run()
    assert job(at).stop.is_set()
    wait(at, lambda: not job(at).running)
    result = job(at).done.result
    assert result.stopped and 1 <= result.epochs_run < finetune.MAX_EPOCHS
    assert 1 <= result.best_epoch <= result.epochs_run + 1
    assert "Stopped after" in captions(at)
    assert table(at).loc["fine-tuned", "accuracy"] > 0


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(at: AppTest, key: str, name: str, data: bytes) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    return at


def test_an_upload_without_labels_is_told_what_calibration_needs_first() -> None:
    """Fine-tune asks for labels before training data, so the calibration switch's caption
    says so too, instead of sending the user to a section with no place for the data."""
    bc = sample_models.get("breast_cancer_mlp")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    change(at, "segmented_control", state.SOURCE, state.UPLOAD_SOURCE)
    upload(at, state.MODEL_FILE, "mine.keras", bc.model_path.read_bytes())
    upload(at, state.DATA_FILE, "inputs.npz", npz(x=np.load(bc.data_path)["x"]))
    at.switch_page(EXPLORE).run()
    assert at.toggle(key=state.DATA_AWARE).disabled
    assert (
        "To calibrate an uploaded model, add labelled evaluation data on the Model page, then "
        "give its training data under Fine-tune." in captions(at)
    )
    assert any("add evaluation data with labels" in i.value for i in at.info)
    with pytest.raises(KeyError):
        at.file_uploader(key=state.FT_DATA_FILE)


def test_an_upload_takes_training_data_and_refuses_a_bad_file_in_one_sentence() -> None:
    bc = sample_models.get("breast_cancer_mlp")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    change(at, "segmented_control", state.SOURCE, state.UPLOAD_SOURCE)
    upload(at, state.MODEL_FILE, "mine.keras", bc.model_path.read_bytes())
    upload(at, state.DATA_FILE, "test.npz", bc.data_path.read_bytes())
    at.switch_page(EXPLORE).run()
    # Asked for before any setting: the calibration switch's caption sends the user here.
    assert any("Move a slider first" in i.value for i in at.info)
    assert at.file_uploader(key=state.FT_DATA_FILE) is not None
    assert at.toggle(key=state.DATA_AWARE).disabled
    change(at, "select_slider", state.BITS, 4)
    assert at.button(key="finetune_start").disabled  # no training data yet
    model = at.session_state[state.MODEL]

    x = np.load(bc.train_path)["x"]
    upload(at, state.FT_DATA_FILE, "unlabelled.npz", npz(x=x))
    assert [e.value for e in at.error] == [
        "unlabelled.npz has no array named y; fine-tuning needs labels"
    ]
    assert at.button(key="finetune_start").disabled

    upload(at, state.FT_DATA_FILE, "train.npz", bc.train_path.read_bytes())
    assert not at.error and not at.button(key="finetune_start").disabled
    assert not at.toggle(key=state.DATA_AWARE).disabled  # at once: it calibrates too
    assert "give its training data under Fine-tune" not in captions(at)
    assert f"Training on train.npz: {len(x):,} samples." in captions(at)

    objects = np.empty(3, dtype=object)
    objects[:] = [{"a": 1}, None, 2]
    upload(at, state.FT_DATA_FILE, "pickled.npz", npz(x=objects, y=np.zeros(3)))
    (message,) = [e.value for e in at.error]
    assert "pickled.npz" in message and "pickle" in message and "\n" not in message
    # nothing lost: the same model, the accepted training data, the button still ready
    assert at.session_state[state.MODEL] is model
    assert at.session_state[state.FT_TRAIN][1].name == "train.npz"
    assert not at.button(key="finetune_start").disabled
    assert isinstance(at.session_state[state.FT_TRAIN][1], services.TrainingData)
