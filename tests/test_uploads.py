"""Uploads are never lost: a rerun that cuts a load short resumes it, data dropped during a
model's load is checked against that model, and sessions uploading at once keep their own."""

from __future__ import annotations

import io
import threading
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import sample_models
from ui import loading, services, state

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
EXPLORE = "pages/explore.py"
DEFAULT = sample_models.SAMPLES[0]  # the digits CNN: input (8, 8, 1)
MLP = sample_models.get("digits_mlp")  # input (64,): its data does not fit the CNN
CANCER = sample_models.get("breast_cancer_mlp")


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def to_upload_source(at: AppTest) -> AppTest:
    at.segmented_control(key=state.SOURCE).set_value(state.UPLOAD_SOURCE).run()
    return at


def upload(at: AppTest, key: str, name: str, data: bytes) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    return at


def caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("File "))


def interrupt_when_done(monkeypatch: pytest.MonkeyPatch, name: str, then: dict) -> list[str]:
    """Make ``services.<name>`` behave as if the user changed a widget while it ran: when it
    returns, ``then`` is put into the session (what the widget's callback queues) and a rerun
    is requested, so Streamlit stops the run at its next element, as it does in a browser."""
    from streamlit.proto.WidgetStates_pb2 import WidgetStates
    from streamlit.runtime.scriptrunner import RerunData, get_script_run_ctx

    real, calls = getattr(services, name), []

    def cut_short(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(args[0] if isinstance(args[0], str) else args[1])
        if len(calls) == 1:
            ctx = get_script_run_ctx()
            for key, value in then.items():
                ctx.session_state[key] = value
            widgets = WidgetStates()
            widgets.widgets.extend(ctx.session_state.get_widget_states())
            assert ctx.script_requests.request_rerun(
                RerunData(widget_states=widgets, page_script_hash=ctx.page_script_hash)
            )
        return result

    monkeypatch.setattr(services, name, cut_short)
    return calls


def test_data_dropped_while_a_model_loads_goes_with_that_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = to_upload_source(start())
    data = (MLP.data_path.name, MLP.data_path.read_bytes())
    calls = interrupt_when_done(monkeypatch, "open_upload", {state.PENDING_DATA: data})
    upload(at, state.MODEL_FILE, "mlp.keras", MLP.model_path.read_bytes())
    assert calls[0] == "mlp.keras"  # the load really was cut short once
    assert not at.error, [e.value for e in at.error]
    assert "mlp.keras" in at.subheader[0].value
    assert caption(at) == f"File mlp.keras · evaluation data: {MLP.data_path.name}"
    assert state.PENDING_MODEL not in at.session_state
    assert state.PENDING_DATA not in at.session_state
    accuracy = next(m.value for m in at.metric if m.label == "Baseline accuracy")
    assert float(accuracy.rstrip("%")) > 90


def test_data_load_cut_short_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    at = start()
    calls = interrupt_when_done(monkeypatch, "with_data", {})
    upload(at, state.DATA_FILE, "again.npz", DEFAULT.data_path.read_bytes())
    assert calls == ["again.npz"]  # applied once, not lost and not reloaded
    assert not at.error
    assert caption(at).endswith("evaluation data: again.npz")


def test_model_and_data_queued_together_load_together() -> None:
    at = to_upload_source(start())
    at.session_state[state.PENDING_MODEL] = ("mlp.keras", MLP.model_path.read_bytes())
    at.session_state[state.PENDING_DATA] = ("mlp.npz", MLP.data_path.read_bytes())
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert caption(at) == "File mlp.keras · evaluation data: mlp.npz"


def test_data_that_does_not_fit_the_new_model_is_refused_and_the_model_stays() -> None:
    at = to_upload_source(start())
    at.session_state[state.PENDING_MODEL] = ("mlp.keras", MLP.model_path.read_bytes())
    at.session_state[state.PENDING_DATA] = ("cnn.npz", DEFAULT.data_path.read_bytes())
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "cnn.npz: x has shape (360, 8, 8, 1) but the model expects (n, 64)"
    ]
    assert caption(at) == "File mlp.keras · evaluation data: none"


def test_data_in_its_uploader_goes_with_the_next_model() -> None:
    at = to_upload_source(start())
    upload(at, state.DATA_FILE, "mlp.npz", MLP.data_path.read_bytes())
    assert len(at.error) == 1 and "(n, 8, 8, 1)" in at.error[0].value  # not for the CNN
    upload(at, state.MODEL_FILE, "mlp.keras", MLP.model_path.read_bytes())
    assert not at.error
    assert caption(at) == "File mlp.keras · evaluation data: mlp.npz"


def test_a_refused_model_refuses_the_data_queued_with_it() -> None:
    at = to_upload_source(start())
    at.session_state[state.PENDING_MODEL] = ("junk.keras", b"junk")
    at.session_state[state.PENDING_DATA] = ("mlp.npz", MLP.data_path.read_bytes())
    at.run()
    assert [e.value for e in at.error] == [
        "junk.keras is not a Keras archive (a .keras file is a zip archive)",
        "mlp.npz was not used, as junk.keras was refused",
    ]
    assert at.subheader[0].value == DEFAULT.title  # the previous model stays
    assert caption(at).endswith(DEFAULT.data_path.name)


def test_the_explore_page_resumes_an_upload_the_model_page_left_queued() -> None:
    at = to_upload_source(start())
    at.session_state[state.PENDING_MODEL] = ("mlp.keras", MLP.model_path.read_bytes())
    at.switch_page(EXPLORE).run()
    assert not at.exception, at.exception
    assert "mlp.keras" in at.caption[0].value
    assert state.PENDING_MODEL not in at.session_state


def test_loading_words_name_the_file_and_its_size() -> None:
    assert (
        loading.loading_words("resnet50.keras", 102_900_000) == "Loading resnet50.keras (103 MB)…"
    )
    assert loading.loading_words("mnv2.keras", 2_273_446) == "Loading mnv2.keras (2.3 MB)…"
    assert loading.loading_words("tiny.keras", 87_344) == "Loading tiny.keras (87 kB)…"
    assert loading.loading_words("empty.keras", 0) == "Loading empty.keras (1 kB)…"


def test_sessions_uploading_at_the_same_moment_each_get_their_own_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One server's sessions share one ScriptCache, whose lock compiles the page scripts one at a
    # time; each AppTest has its own, and CPython 3.11.7's compiler is not safe in two threads
    # at once ("AST constructor recursion depth mismatch", gh-106905). So the sessions here
    # share one lock for compiling, as on a server; their uploads still load at the same moment.
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    compiling, get_bytecode = threading.Lock(), ScriptCache.get_bytecode

    def one_at_a_time(cache: ScriptCache, script_path: str) -> object:
        with compiling:
            return get_bytecode(cache, script_path)

    monkeypatch.setattr(ScriptCache, "get_bytecode", one_at_a_time)
    samples = {"mlp.keras": MLP, "cancer.keras": CANCER, "cnn.keras": DEFAULT}
    sessions = {name: to_upload_source(start()) for name in samples}
    for name, at in sessions.items():
        data = samples[name].model_path.read_bytes()
        at.file_uploader(key=state.MODEL_FILE).set_value((name, data, "application/octet-stream"))
    barrier, failures = threading.Barrier(len(sessions)), []

    def run(at: AppTest) -> None:
        try:
            barrier.wait()
            at.run()
        except Exception as e:  # reported below, in the test's own thread
            failures.append(e)

    threads = [threading.Thread(target=run, args=(at,)) for at in sessions.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for name, at in sessions.items():
        assert not at.exception, (name, at.exception)
        assert state.PENDING_MODEL not in at.session_state
        model = at.session_state[state.MODEL]
        assert model.name == name
        assert model.prepared.model.name == samples[name].name  # its own model, not another's
        assert model.file_bytes == samples[name].model_path.stat().st_size
    # AppTest sessions running in threads do not always draw the run that follows st.rerun;
    # the page is checked with one more run of each session.
    for name, at in sessions.items():
        at.run()
        assert not at.exception and not at.error, (name, at.exception, at.error)
        assert caption(at) == f"File {name} · evaluation data: none"
        model = at.session_state[state.MODEL]
        assert list(at.dataframe[-1].value["tensor"]) == list(model.tensors)


def baseline_accuracy(at: AppTest) -> str:
    return next(m.value for m in at.metric if m.label == "Baseline accuracy")


def test_image_folders_and_a_csv_give_the_accuracy_of_their_npz(user_files) -> None:
    at = start()
    npz_accuracy = baseline_accuracy(at)  # the digits CNN on its own .npz test set
    upload(at, state.DATA_FILE, "digits.zip", user_files.digits_zip.read_bytes())
    assert not at.error, [e.value for e in at.error]
    assert baseline_accuracy(at) == npz_accuracy
    assert "pixels 0-1 (the default for this model)" in caption(at)
    at.selectbox(key=state.PIXEL_RANGE).set_value("0-255").run()  # the page reloads the zip
    assert not at.exception and not at.error
    assert "pixels 0-255" in caption(at) and baseline_accuracy(at) != npz_accuracy

    at.selectbox(key=state.SAMPLE).set_value(CANCER.name).run()
    npz_accuracy = baseline_accuracy(at)
    upload(at, state.DATA_FILE, "cancer.csv", user_files.cancer_csv.read_bytes())
    assert not at.error, [e.value for e in at.error]
    assert baseline_accuracy(at) == npz_accuracy
    assert caption(at).endswith("labels from column target")


def test_a_damaged_image_zip_is_refused_and_the_data_stays(user_files) -> None:
    at = start()
    before = caption(at)
    damaged = io.BytesIO()
    with zipfile.ZipFile(user_files.digits_zip) as z, zipfile.ZipFile(damaged, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            out.writestr(info, data[:50] if info.filename == "digits/7/0000.png" else data)
    upload(at, state.DATA_FILE, "damaged.zip", damaged.getvalue())
    assert [e.value for e in at.error] == [
        "damaged.zip: entry digits/7/0000.png is not a readable image (damaged, or not PNG, "
        "JPEG, BMP or GIF)"
    ]
    assert caption(at) == before
