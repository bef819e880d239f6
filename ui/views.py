"""Rendering helpers shared by the pages: metric cards, tables, the model summary.

They take values that a service returned and draw them; every figure comes from ``explain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import sample_models
from optimizers.explore import Outcome
from optimizers.pipeline import OptimizationConfig, TensorReport
from ui import explain, services
from ui.explain import format_bytes, percent
from ui.setting import config_words


def model_title(model: services.KerasModel | services.TfliteModel) -> str:
    if isinstance(model, services.KerasModel) and model.origin is not None:
        return (
            f"{model_title(model.origin)}, fine-tuned toward "
            f"{config_words(model.tuned_toward or OptimizationConfig())}"
        )
    if isinstance(model, services.KerasModel) and model.sample is not None:
        return sample_models.get(model.sample).title
    if isinstance(model, services.KerasModel):  # the model's own name, its file beside it
        return f"{model.prepared.model.name} ({model.name})"
    return model.name


def require_keras(model: services.KerasModel | services.TfliteModel) -> services.KerasModel:
    """Stop the page with a note when the session's model cannot be optimized: an
    inspection-only TFLite file, or a model without eligible tensors."""
    if isinstance(model, services.TfliteModel):
        st.info(
            f"{model.name} is a TFLite file: it can be inspected on the Model page (tensors, "
            "histograms, sizes) but not optimized. Upload the .keras or .h5 model it came from "
            "to explore and download optimized versions.",
            icon=":material/info:",
        )
        st.stop()
    if not model.tensors:
        st.info(
            f"{model.name} has no kernels or embedding tables, the tensors these techniques "
            "optimize, so there is nothing to explore.",
            icon=":material/info:",
        )
        st.stop()
    return model


def _size_delta(now: int | None, before: int | None) -> str | None:
    if now is None or before is None or now == before:
        return None
    return f"{'+' if now > before else '-'}{format_bytes(abs(now - before))}"


def _points(now: float, before: float) -> str | None:
    diff = 100 * (now - before)
    return None if abs(diff) < 0.05 else f"{diff:+.1f} pp"


MEASURING = "measuring…"


@dataclass(frozen=True)
class Card:
    """One metric card, as the pages draw it and the report prints it."""

    label: str
    value: str
    delta: str | None = None
    help: str | None = None
    color: Literal["normal", "inverse", "off"] = "inverse"  # which way of the delta is good


def quality_card(outcome: Outcome, baseline: Outcome) -> Card:
    now, before = explain.quality(outcome), explain.quality(baseline)
    if not outcome.measured and baseline.fidelity is not None:
        return Card(
            "Test accuracy" if baseline.accuracy is not None else "Top-1 agreement",
            MEASURING,
            help="Running the optimized model on the evaluation data.",
        )
    if now is None or before is None:
        return Card(
            "Accuracy",
            "—",
            help="Add labelled evaluation data (an .npz, a .zip of image folders or a table) on "
            "the Model page to measure it.",
        )
    label = "Test accuracy" if now[0] == "accuracy" else "Top-1 agreement"
    hint = (
        "Share of the evaluation samples classified correctly."
        if now[0] == "accuracy"
        else "No labels: share of samples where the optimized model predicts the same class "
        "as the original."
    )
    return Card(label, percent(now[1]), _points(now[1], before[1]), hint, "normal")


DOWNLOAD = "Download size (gzip)"  # the headline's size figure, named the same everywhere
SMALLER = "Smaller download"  # the headline's ratio


def cards(outcome: Outcome, baseline: Outcome) -> list[Card]:
    """Eight cards, each with its change from the baseline: first the headline's two figures
    (quality, and the download size with its ratio), then the figures behind them, each with
    its basis in its label. The quality and download cards say "measuring…" until ``outcome``
    is measured."""
    s, b = outcome.sizes, baseline.sizes
    eligible, base_eligible = outcome.eligible, baseline.eligible
    sparsity, base_sparsity = (
        explain.overall_sparsity(eligible),
        explain.overall_sparsity(base_eligible),
    )
    distinct, base_distinct = explain.max_distinct(eligible), explain.max_distinct(base_eligible)
    smaller = explain.download_ratio(outcome, baseline)
    return [
        quality_card(outcome, baseline),
        Card(
            DOWNLOAD,
            explain.download_size(s.gzip, s.gzip_exact) if outcome.measured else MEASURING,
            _size_delta(s.gzip, b.gzip),
            explain.DOWNLOAD_DEFINITION,
        ),
        Card(
            SMALLER,
            f"{explain.approx(outcome, baseline)}{smaller:.1f}×"
            if smaller
            else MEASURING
            if not outcome.measured
            else "—",
            None,
            "The headline figure: the original model's download size ÷ this one's (both the "
            ".keras file, gzip -9).",
        ),
        Card(
            "Sparsity",
            percent(sparsity),
            _points(sparsity, base_sparsity),
            "Share of the eligible weights (kernels) that are exactly zero.",
            "off",  # more sparsity is neither good nor bad in itself
        ),
        Card(
            "Packed weights (estimate)",
            format_bytes(s.packed),
            _size_delta(s.packed, b.packed),
            "What a purpose-built encoder needs for the weights: b-bit codes or cluster "
            "indices plus their tables, and a 1-bit mask for zeros where that is smaller. An "
            "estimate, not a file: the Download page writes the real LiteRT files and "
            "measures them.",
        ),
        Card(
            "Packed vs float32 weights",
            explain.size_words(s.float32, s.packed),
            None,
            "float32 bytes of all weights ÷ their packed bytes: the most a purpose-built "
            "format could save, before any file overhead.",
        ),
        Card(
            ".keras file (float32)",
            format_bytes(s.file),
            _size_delta(s.file, b.file),
            "Bytes on disk of the .keras file as the app saves it (weights only, no optimizer "
            "state). It stores float32, so pruning and clustering do not shrink it by "
            "themselves; gzip and a quantized LiteRT file do.",
        ),
        Card(
            "Distinct values",
            f"{distinct:,}",
            None if distinct == base_distinct else f"{distinct - base_distinct:+,}",
            "The most distinct weight values in any one eligible tensor.",
        ),
    ]


def compare_rows(a: Outcome, b: Outcome, baseline: Outcome) -> pd.DataFrame:
    """The cards of two settings side by side: one row per figure, A's and B's value (each
    with its change from the baseline)."""

    def shown(card: Card) -> str:
        return card.value if card.delta is None else f"{card.value} ({card.delta})"

    a_cards, b_cards = cards(a, baseline), cards(b, baseline)
    return pd.DataFrame(
        {
            "figure": [c.label for c in b_cards],
            "A (pinned)": [shown(c) for c in a_cards],
            "B (the sliders)": [shown(c) for c in b_cards],
        }
    )


def metric_cards(outcome: Outcome, baseline: Outcome) -> None:
    """The ``cards`` in two rows of four."""
    columns = st.columns(4) + st.columns(4)
    for column, card in zip(columns, cards(outcome, baseline), strict=True):
        column.metric(
            card.label,
            card.value,
            card.delta,
            delta_color=card.color,
            help=card.help,
            border=True,
            height="stretch",
        )


def _shape(shape: Sequence[int]) -> str:
    return " × ".join(str(d) for d in shape)


def layer_table(reports: Sequence[TensorReport]) -> None:
    """One row per eligible tensor: what was done and what it left."""
    rows = pd.DataFrame(
        {
            "tensor": [r.path for r in reports],
            "shape": [_shape(r.shape) for r in reports],
            "parameters": [r.params for r in reports],
            "applied": [r.techniques for r in reports],
            "sparsity": [100 * r.sparsity for r in reports],
            "distinct values": [r.unique_values for r in reports],
            "bits": [r.bits if r.bits is not None else 32 for r in reports],
            "SQNR (dB)": [r.sqnr_db for r in reports],
        }
    )
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "tensor": st.column_config.TextColumn(width="medium"),
            "shape": st.column_config.TextColumn(width="small"),
            "parameters": st.column_config.NumberColumn(format="localized", width="small"),
            "applied": st.column_config.TextColumn(width="medium"),
            "sparsity": st.column_config.ProgressColumn(
                format="%.1f%%", min_value=0, max_value=100, width="small"
            ),
            "distinct values": st.column_config.NumberColumn(format="localized", width="small"),
            "bits": st.column_config.NumberColumn(width="small"),
            "SQNR (dB)": st.column_config.NumberColumn(
                format="%.1f",
                width="small",
                help="Signal-to-noise ratio of the weights; empty when unchanged.",
            ),
        },
    )


def bullets(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def measure(
    model: services.KerasModel, config: OptimizationConfig, slot: DeltaGenerator
) -> Outcome:
    """The measured outcome of ``config``, with a progress bar in ``slot`` while it is being
    measured (each step lets a newer slider move take over), unless it measures quickly."""
    outcome = services.first_answer(model, config)
    if outcome.measured:
        return outcome
    bar = slot.progress(0.0, text="Measuring the download size…")

    def on_batch(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Evaluating on {total:,} samples… {done:,} done")

    outcome = services.measured(model, config, on_batch)
    slot.empty()
    return outcome


def keras_summary(model: services.KerasModel, baseline: Outcome) -> None:
    """Name, layers, parameters, eligible tensors, float size and baseline quality."""
    prepared = model.prepared
    params = services.parameters(model)
    eligible_params = sum(r.params for r in baseline.eligible)
    cols = st.columns(3)
    cols[0].metric("Layers", f"{len(prepared.model.layers):,}", border=True, height="stretch")
    cols[1].metric("Parameters", f"{params:,}", border=True, height="stretch")
    cols[2].metric(
        "Eligible tensors",
        f"{len(prepared.refs)}",
        help="Kernels and embedding tables, which the techniques optimize; biases and "
        "normalization stay float32.",
        border=True,
        height="stretch",
    )
    cols = st.columns(3)
    cols[0].metric(
        "float32 weights",
        format_bytes(baseline.sizes.float32),
        help=f"{percent(eligible_params / params if params else 0)} of the parameters "
        "are in eligible tensors.",
        border=True,
        height="stretch",
    )
    cols[1].metric(
        f"File as given ({Path(model.name).suffix})",
        format_bytes(model.file_bytes),
        help=f"{model.name} as it was given. The Explore page's .keras figures are of the file "
        f"as the app saves it (weights only, no optimizer state): "
        f"{format_bytes(baseline.sizes.file)}, {format_bytes(baseline.sizes.gzip)} gzipped.",
        border=True,
        height="stretch",
    )
    quality = explain.quality(baseline)
    if quality is None:
        cols[2].metric(
            "Baseline accuracy", "—", help="No evaluation data.", border=True, height="stretch"
        )
    elif quality[0] == "accuracy":
        cols[2].metric("Baseline accuracy", percent(quality[1]), border=True, height="stretch")
    else:
        cols[2].metric(
            "Baseline accuracy",
            "no labels",
            help="The data has no y: the Explore page reports agreement with this model.",
            border=True,
            height="stretch",
        )


def eligible_table(model: services.KerasModel) -> None:
    refs = model.prepared.refs
    rows = pd.DataFrame(
        {
            "tensor": [r.path for r in refs],
            "layer type": [r.layer_type for r in refs],
            "shape": [_shape(r.shape) for r in refs],
            "parameters": [int(model.prepared.weights[r.index].size) for r in refs],
        }
    )
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={"parameters": st.column_config.NumberColumn(format="localized")},
    )


def tflite_summary(model: services.TfliteModel) -> None:
    params = sum(t.params for t in model.tensors)
    cols = st.columns(4)
    cols[0].metric("Constant tensors", f"{len(model.tensors)}", border=True, height="stretch")
    cols[1].metric("Parameters", f"{params:,}", border=True, height="stretch")
    cols[2].metric(".tflite file", format_bytes(model.file_bytes), border=True, height="stretch")
    cols[3].metric(
        "Download size (gzip)", format_bytes(model.gzip_bytes), border=True, height="stretch"
    )


def tflite_table(model: services.TfliteModel) -> None:
    tensors = model.tensors
    rows = pd.DataFrame(
        {
            "tensor": [t.name for t in tensors],
            "shape": [_shape(t.shape) for t in tensors],
            "stored as": [t.dtype for t in tensors],
            "bytes": [t.stored_bytes for t in tensors],
            "sparsity": [100 * t.sparsity for t in tensors],
            "distinct values": [t.distinct for t in tensors],
        }
    )
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "bytes": st.column_config.NumberColumn(format="localized"),
            "sparsity": st.column_config.NumberColumn(format="%.1f%%"),
        },
    )
