"""Model: choose a bundled sample or upload a model (and evaluation data); see its summary.

While an upload is queued the summary names the file being loaded, and the load runs last, so
nothing on the page still describes the previous model; a rerun then draws the loaded model.
"""

import streamlit as st

import sample_models
from optimizers.datasets import PIXEL_RANGES
from ui import figures, loading, services, state, views

session = st.session_state
loading.bootstrap(session)
loading.sync_source(session)
model = loading.loaded(session)
queued = loading.queued(session)  # (name, bytes) of the upload that waits to be applied

st.title("Model")
st.caption(
    "Start from a bundled sample or upload your own model, then open **Explore** to prune, "
    "cluster and quantize it."
)

choose, summary = st.columns([2, 3], gap="large")
with choose:
    st.segmented_control(
        "Source",
        [state.SAMPLE_SOURCE, state.UPLOAD_SOURCE],
        default=state.get(session, state.SOURCE),
        key=state.SOURCE,
        format_func=lambda s: "Bundled sample" if s == state.SAMPLE_SOURCE else "Upload a model",
        required=True,
    )
    if state.get(session, state.SOURCE) == state.SAMPLE_SOURCE:
        names = [s.name for s in sample_models.SAMPLES]
        st.selectbox(
            "Sample model",
            names,
            index=state.index_of(session, state.SAMPLE, names),
            key=state.SAMPLE,
            format_func=lambda name: sample_models.get(name).title,
        )
    else:
        st.file_uploader(
            "Model file",
            type=[s.lstrip(".") for s in services.UPLOAD_SUFFIXES],
            key=state.MODEL_FILE,
            on_change=loading.queue_upload,
            args=(state.MODEL_FILE, state.PENDING_MODEL),
            help="A .keras or .h5 Keras model, loaded safely (no custom code runs). A .tflite "
            "file can be inspected here but not optimized.",
        )
    st.file_uploader(
        "Evaluation data (optional)",
        type=[s.lstrip(".") for s in services.DATA_SUFFIXES],
        key=state.DATA_FILE,
        on_change=loading.queue_upload,
        args=(state.DATA_FILE, state.PENDING_DATA),
        help="An .npz with x (inputs) and y (class ids or one-hot); a .zip of images with one "
        "folder per class; or a .csv or .parquet table with one column per input value and a "
        "label column (label, target, y or class). Without labels the app measures agreement "
        "with the original model instead of accuracy.",
    )
    st.selectbox(
        "Pixel range of images",
        [state.AUTO_PIXELS, *PIXEL_RANGES],
        index=state.index_of(session, state.PIXEL_RANGE, [state.AUTO_PIXELS, *PIXEL_RANGES]),
        key=state.PIXEL_RANGE,
        on_change=loading.queue_upload,
        args=(state.DATA_FILE, state.PENDING_DATA),
        format_func=lambda r: "as the model expects" if r == state.AUTO_PIXELS else r,
        help="How the pixels of images in a .zip are scaled: by default 0-255 when the model "
        "starts with a Rescaling or Normalization layer, else 0-1.",
    )
    loading.show_refusals(session)

if queued is not None:
    with summary:
        name = queued[0] if state.PENDING_MODEL in session else views.model_title(model)
        st.subheader(name)
        st.caption("The summary follows once the upload is loaded.")
        loading.apply_pending(session)  # last: every element above already shows the new file
    st.rerun()

with summary:
    st.subheader(views.model_title(model))
    if isinstance(model, services.TfliteModel):
        st.info(
            "TFLite files are inspection-only: tensors, histograms and sizes. Upload the "
            ".keras or .h5 model to optimize it.",
            icon=":material/info:",
        )
        views.tflite_summary(model)
    else:
        st.caption(
            f"File {model.name} · evaluation data: {model.data_name or 'none'}"
            + ("" if model.has_labels or not model.has_data else " (no labels)")
            + (f": {model.data_note}" if model.data_note else "")
        )
        samples = len(model.prepared.x) if model.has_data else 0
        with st.spinner(
            f"Evaluating on {samples:,} samples…" if samples else "Measuring the model…"
        ):
            baseline = services.baseline(model)
        views.keras_summary(model, baseline)

if isinstance(model, services.TfliteModel):
    st.subheader("Tensors")
    names = [t.name for t in model.tensors]
    chosen = st.selectbox("Tensor", names, key=state.INSPECT_TENSOR)
    tensor = next(t for t in model.tensors if t.name == chosen)
    st.plotly_chart(
        figures.weight_histogram(tensor.values),
        key="tflite_histogram",
        config={"displayModeBar": False},
    )
    views.tflite_table(model)
else:
    st.subheader("Eligible tensors")
    views.eligible_table(model)
    if model.sample is not None and (card := services.sample_card(model.sample)):
        with st.expander("Model card"):
            st.markdown(card)
