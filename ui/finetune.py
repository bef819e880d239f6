"""Fine-tuning on the Explore page: train the model toward the current setting, watch it, stop
it, compare it, and explore the fine-tuned model.

Training runs in a background thread that the session owns (``Job``, under ``state.FT_JOB``),
so neither a slider move (which reruns the Explore fragment) nor the Stop button (which reruns
it too) interrupts it: the page only reads the job's epochs, and Stop sets the job's event,
which ``finetune.finetune`` polls after every batch before it keeps the best epoch so far. A
small fragment redraws the progress every ``POLL_SECONDS`` while the job runs. Nothing starts
training but the Fine-tune button.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from optimizers import constraints
from optimizers.finetune import FinetuneConfig, check_plans
from optimizers.keras_io import InputError
from optimizers.pipeline import OptimizationConfig
from ui import loading, services, settings, state
from ui.explain import percent
from ui.figures import MARK_COLOR, OPTIMIZED_COLOR, legible
from ui.setting import config_words

POLL_SECONDS = 0.5
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
MAX_EPOCHS = 200
log = logging.getLogger(__name__)
Epoch = tuple[int, float, "float | None"]  # (epoch, training loss, validation accuracy)


@dataclass
class Job:
    """One fine-tuning run in a background thread; the thread writes ``epochs`` and then
    ``done`` (or ``error``), the page reads them."""

    model: services.KerasModel
    config: OptimizationConfig
    settings: FinetuneConfig
    stop: threading.Event = field(default_factory=threading.Event)
    epochs: list[Epoch] = field(default_factory=list)
    done: services.Finetuned | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.done is None and self.error is None

    def run(self, train: services.TrainingData) -> None:
        def on_epoch(epoch: int, loss: float, val_accuracy: float | None) -> None:
            self.epochs.append((epoch, loss, val_accuracy))

        try:
            self.done = services.finetuned(
                self.model, self.config, self.settings, train, on_epoch, self.stop.is_set
            )
        except ValueError as e:  # one sentence: a refused setting, model or data
            self.error = str(e)
        except Exception as e:  # a bug: log it, and say so in one sentence
            log.exception("fine-tuning failed")
            self.error = f"fine-tuning failed ({type(e).__name__}: {' '.join(str(e).split())})"


def start(
    model: services.KerasModel, config: OptimizationConfig, train: services.TrainingData
) -> None:
    """``on_click`` of Fine-tune: train toward the setting the button was drawn for, with the
    epochs and learning rate its widgets hold now."""
    session = st.session_state
    settings = FinetuneConfig(
        epochs=int(session[state.FT_EPOCHS]), learning_rate=session[state.FT_LEARNING_RATE]
    )
    job = Job(model, config, settings)
    session[state.FT_JOB] = job
    threading.Thread(target=job.run, args=(train,), daemon=True, name="finetune").start()


def switch(model: services.KerasModel) -> None:
    """``on_click``: make ``model`` the session's model; a fine-tuned one comes with the setting
    it was trained toward, so its preview is the file Download writes. ``draw`` then reruns the
    whole page for it."""
    session = st.session_state
    state.set_model(session, model, same_layers=True)
    if model.tuned_toward is not None:
        settings.put_config(session, model.tuned_toward)


def progress_chart(epochs: list[Epoch], total: int) -> go.Figure:
    """Training loss (left axis) and validation accuracy (right axis) per epoch."""
    x = [epoch for epoch, _, _ in epochs]
    fig = go.Figure()
    fig.add_scatter(
        x=x,
        y=[loss for _, loss, _ in epochs],
        name="training loss",
        mode="lines+markers",
        line={"color": OPTIMIZED_COLOR},
    )
    fig.add_scatter(
        x=x,
        y=[None if acc is None else 100 * acc for _, _, acc in epochs],
        name="validation accuracy (%)",
        mode="lines+markers",
        line={"color": MARK_COLOR},
        yaxis="y2",
    )
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"title": "epoch", "range": [0.5, total + 0.5]},
        yaxis={"title": "loss", "rangemode": "tozero"},
        yaxis2={"title": "validation accuracy (%)", "overlaying": "y", "side": "right"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    return legible(fig)


def _live(job: Job) -> None:
    """Progress bar, chart and Stop while ``job`` runs; the whole page once it ends."""
    if not job.running:
        st.rerun()
    done = len(job.epochs)
    words = (
        f"Fine-tuning {job.model.name} toward {config_words(job.config)}: "
        f"epoch {done} of {job.settings.epochs}"
    )
    if job.epochs:
        _, loss, accuracy = job.epochs[-1]
        words += f" · loss {loss:.3f}"
        if accuracy is not None:
            words += f" · validation accuracy {percent(accuracy)}"
    st.progress(done / job.settings.epochs, text=words)
    st.plotly_chart(
        progress_chart(job.epochs, job.settings.epochs),
        key="finetune_progress",
        config={"displayModeBar": False},
    )
    stopping = job.stop.is_set()
    st.button(
        "Stopping after this batch…" if stopping else "Stop",
        icon=":material/stop:",
        key="finetune_stop",
        on_click=job.stop.set,
        disabled=stopping,
        help="Ends training now and keeps the best epoch so far.",
    )


live = st.fragment(run_every=POLL_SECONDS)(_live)


def training_data(
    session: MutableMapping[str, Any], model: services.KerasModel
) -> services.TrainingData | None:
    """The sample's training split, or the training ``.npz`` uploaded here for this model
    (kept until another one is accepted; a refused file leaves it as it was)."""
    kept = session.get(state.FT_TRAIN)
    train = kept[1] if kept is not None and kept[0] == model.key else None
    if model.sample is not None:
        if train is None:
            train = services.sample_training_data(model)
            session[state.FT_TRAIN] = (model.key, train)
        return train
    uploaded = st.file_uploader(
        "Training data",
        type=[s.lstrip(".") for s in services.DATA_SUFFIXES],
        key=state.FT_DATA_FILE,
        help="An .npz with x (inputs shaped like the evaluation data) and y (class ids or "
        "one-hot), a .zip of images with one folder per class, or a .csv or .parquet table "
        "with a label column. A tenth of it is held out to pick the best epoch.",
    )
    if uploaded is not None:
        raw = uploaded.getvalue()
        pixels = loading.pixel_range(session)
        key = services.data_digest(raw, pixels)
        refused = session.get(state.FT_REFUSED)
        if refused is not None and refused[0] == key:
            st.error(refused[1], icon=":material/error:")
        elif train is None or train.digest != key:
            try:
                train = services.training_data(model, uploaded.name, raw, pixels)
            except InputError as e:
                session[state.FT_REFUSED] = (key, str(e))
                st.error(str(e), icon=":material/error:")
            else:
                session[state.FT_TRAIN] = (model.key, train)
                st.rerun()  # the calibration switch, drawn above, can now use it
    if train is not None:
        st.caption(f"Training on {train.name}: {len(train.x):,} samples.")
    return train


def comparison(model: services.KerasModel, config: OptimizationConfig, job: Job) -> None:
    """Float, post-training and fine-tuned: accuracy, packed bytes and gzip bytes."""
    assert job.done is not None
    tuned = job.done
    result = tuned.result
    rows = [
        ("float", services.baseline(model)),
        ("post-training", services.measured(model, config)),
        ("fine-tuned", services.measured(tuned.model, result.config)),
    ]
    table = pd.DataFrame(
        {
            "model": [name for name, _ in rows],
            "accuracy": [100 * (o.accuracy or 0) for _, o in rows],
            "packed bytes": [o.sizes.packed for _, o in rows],
            "gzip bytes": [o.sizes.gzip for _, o in rows],
        }
    )
    how = "Stopped after" if result.stopped else "Trained for"
    estimated = " The optimized rows' gzip bytes are estimated from a sample (≈ on the cards)."
    if all(o.sizes.gzip_exact for _, o in rows):
        estimated = ""
    st.caption(
        f"{how} {result.epochs_run} full epochs in {result.seconds:.1f} s; "
        f"kept epoch {result.best_epoch}, the best on the held-out split.{estimated}"
    )
    st.dataframe(
        table,
        hide_index=True,
        key="finetune_table",
        column_config={
            "accuracy": st.column_config.NumberColumn(format="%.2f%%"),
            "packed bytes": st.column_config.NumberColumn(format="localized"),
            "gzip bytes": st.column_config.NumberColumn(format="localized"),
        },
    )
    st.button(
        "Explore the fine-tuned model",
        icon=":material/swap_horiz:",
        key="finetune_explore",
        on_click=switch,
        args=(tuned.model,),
        help="Makes the fine-tuned model this session's model, with the sliders at this "
        "setting: the Download page then writes and verifies its files.",
    )


def draw(model: services.KerasModel, config: OptimizationConfig) -> None:
    """The Fine-tune section for ``model`` at ``config``."""
    session = st.session_state
    if session[state.MODEL] is not model:  # switched by a button below: redraw the page
        st.rerun()
    st.subheader("Fine-tune")
    if model.origin is not None:
        st.caption(
            f"This is {model.origin.name} fine-tuned toward "
            f"{config_words(model.tuned_toward or config)}: every delta above is against "
            f"{model.origin.name}, the original float model. At this setting the pipeline "
            "leaves its weights as they are, so the Download page's files equal this preview."
        )
        st.button(
            f"Back to {model.origin.name}",
            key="finetune_back",
            on_click=switch,
            args=(model.origin,),
        )
        return
    st.caption(
        "Train the model with the current setting's structure in place, so the remaining "
        "weights make up for what pruning, clustering and quantization took."
    )
    job: Job | None = session.get(state.FT_JOB)
    if job is not None and job.running:
        live(job)
        return
    if not model.has_labels:
        st.info(
            "Fine-tuning is compared by accuracy: add evaluation data with labels (y) on the "
            "Model page.",
            icon=":material/info:",
        )
        return
    # Asked for before any setting: the same data calibrates *Use calibration data* above.
    train = training_data(session, model)
    if not config.active:
        st.info("Move a slider first: fine-tuning trains toward a setting.", icon=":material/info:")
        return
    try:
        check_plans(constraints.plan(model.prepared.refs, config))
    except ValueError as e:
        st.info(f"This setting cannot be fine-tuned: {e}.", icon=":material/info:")
        return
    epochs_col, rate_col, button_col = st.columns([1, 1, 1], vertical_alignment="bottom")
    epochs_col.number_input(
        "Epochs",
        1,
        MAX_EPOCHS,
        value=state.get(session, state.FT_EPOCHS),
        key=state.FT_EPOCHS,
        help="Passes over the training data; the best epoch is kept.",
    )
    rate_col.select_slider(
        "Learning rate",
        LEARNING_RATES,
        value=state.get(session, state.FT_LEARNING_RATE),
        key=state.FT_LEARNING_RATE,
        format_func=lambda r: f"{r:g}",
        help="Adam's peak step size, decayed to zero along a cosine.",
    )
    button_col.button(
        "Fine-tune",
        type="primary",
        icon=":material/model_training:",
        key="finetune_start",
        on_click=start,
        args=(model, config, train),
        disabled=train is None,
        help="Upload training data first." if train is None else None,
    )
    if job is not None and job.model.key == model.key and job.config == config:
        if job.error is not None:
            st.error(job.error, icon=":material/error:")
        else:
            comparison(model, config, job)
