"""Rendering helpers shared by the pages: metric cards, tables, the model summary.

They take values that a service returned and draw them; every figure comes from ``explain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import sample_models
from optimizers import latency
from optimizers.explore import Exported, Outcome
from optimizers.export import FORMAT_LABELS, FORMAT_NAMES, FORMAT_SUFFIXES, FORMATS, natural_format
from optimizers.pipeline import OptimizationConfig, TensorReport
from ui import explain, services
from ui.explain import format_bytes, percent, ratio


def model_title(model: services.KerasModel | services.TfliteModel) -> str:
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
            help="Add evaluation data (an .npz with x and y) on the Model page to measure it.",
        )
    label = "Test accuracy" if now[0] == "accuracy" else "Top-1 agreement"
    hint = (
        "Share of the evaluation samples classified correctly."
        if now[0] == "accuracy"
        else "No labels: share of samples where the optimized model predicts the same class "
        "as the original."
    )
    return Card(label, percent(now[1]), _points(now[1], before[1]), hint, "normal")


def cards(outcome: Outcome, baseline: Outcome) -> list[Card]:
    """Eight cards, each with its change from the untouched model, the quality first; the
    quality and gzip cards say "measuring…" until ``outcome`` is measured."""
    s, b = outcome.sizes, baseline.sizes
    eligible, base_eligible = outcome.eligible, baseline.eligible
    sparsity, base_sparsity = (
        explain.overall_sparsity(eligible),
        explain.overall_sparsity(base_eligible),
    )
    distinct, base_distinct = explain.max_distinct(eligible), explain.max_distinct(base_eligible)
    packed_ratio, gzip_ratio = ratio(s.float32, s.packed), ratio(b.gzip, s.gzip)
    return [
        quality_card(outcome, baseline),
        Card(
            "Packed size",
            format_bytes(s.packed),
            _size_delta(s.packed, b.packed),
            "What a purpose-built encoder needs: b-bit codes or cluster indices plus their "
            "tables, and a 1-bit mask for zeros where that is smaller. An estimate, not a file: "
            "the Download page writes the real LiteRT files and measures them.",
        ),
        Card(
            "gzip size",
            format_bytes(s.gzip) if outcome.measured else MEASURING,
            _size_delta(s.gzip, b.gzip),
            "The .keras file compressed with gzip -9: roughly what an app download transfers. "
            "Zeros and repeated values compress well. Exact for a file up to 2 MB; for a larger "
            "one the changed kernels are compressed on a spread sample for each setting "
            "(measured within 2% of compressing the whole file).",
        ),
        Card(
            ".keras file size",
            format_bytes(s.file),
            _size_delta(s.file, b.file),
            "Bytes on disk. A .keras file stores float32, so pruning and clustering do not "
            "shrink it by themselves; a quantized TFLite export does.",
        ),
        Card(
            "Sparsity",
            percent(sparsity),
            _points(sparsity, base_sparsity),
            "Share of the eligible weights (kernels) that are exactly zero.",
            "off",  # more sparsity is neither good nor bad in itself
        ),
        Card(
            "Distinct values",
            f"{distinct:,}",
            None if distinct == base_distinct else f"{distinct - base_distinct:+,}",
            "The most distinct weight values in any one eligible tensor.",
        ),
        Card(
            "Compression (packed)",
            f"{packed_ratio:.1f}×" if packed_ratio else "—",
            None,
            "float32 bytes ÷ packed bytes.",
        ),
        Card(
            "Compression (gzip)",
            f"{gzip_ratio:.1f}×" if gzip_ratio else MEASURING if not outcome.measured else "—",
            None,
            "gzip size of the original .keras file ÷ gzip size of this one.",
        ),
    ]


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
    measured (each step lets a newer slider move take over)."""
    outcome = services.optimized(model, config)
    if outcome.measured:
        return outcome
    bar = slot.progress(0.0, text="Measuring the gzip size…")

    def on_batch(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Evaluating on {total:,} samples… {done:,} done")

    outcome = services.measured(model, config, on_batch)
    slot.empty()
    return outcome


def keras_summary(model: services.KerasModel, baseline: Outcome) -> None:
    """Name, layers, parameters, eligible tensors, float size and baseline quality."""
    prepared = model.prepared
    params = sum(int(w.size) for w in prepared.weights)
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
    cols[1].metric(".keras file", format_bytes(model.file_bytes), border=True, height="stretch")
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
    cols[3].metric("gzip size", format_bytes(model.gzip_bytes), border=True, height="stretch")


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


def verified_exports(
    model: services.KerasModel, config: OptimizationConfig
) -> dict[str, Exported | str]:
    """Every format's verified file (or why it cannot be made), with progress while they are
    written the first time."""
    bar = st.progress(0.0)
    exports = {}
    for i, fmt in enumerate(FORMATS):
        bar.progress(i / len(FORMATS), text=f"Writing and checking {FORMAT_NAMES[fmt]}…")
        exports[fmt] = services.export(model, config, fmt)
    bar.empty()
    return exports


def export_rows(exports: dict[str, Exported | str]) -> pd.DataFrame:
    """One row per format: bytes, gzip bytes, ratio to the float32 LiteRT file, preview and
    file accuracy (percent) and whether the file does what the preview promised."""
    made = {f: e for f, e in exports.items() if isinstance(e, Exported)}
    float32 = made.get("tflite-float32")
    timed = {f: e.latency for f, e in made.items() if e.latency is not None}
    base = {f: e.baseline_latency for f, e in made.items() if e.baseline_latency is not None}

    def acc(value: float | None) -> float | None:
        return None if value is None else 100 * value

    return pd.DataFrame(
        {
            "format": [FORMAT_NAMES[f] for f in exports],
            "bytes": [made[f].size_bytes if f in made else None for f in exports],
            "gzip bytes": [made[f].gzip_bytes if f in made else None for f in exports],
            "× smaller than float32": [
                ratio(float32.size_bytes, made[f].size_bytes) if f in made and float32 else None
                for f in exports
            ],
            "preview accuracy": [
                acc(made[f].preview_accuracy) if f in made else None for f in exports
            ],
            "file accuracy": [acc(made[f].file_accuracy) if f in made else None for f in exports],
            "ms (1 thread)": [timed[f].median_ms if f in timed else None for f in exports],
            "p90 ms": [timed[f].p90_ms if f in timed else None for f in exports],
            "ms (all cores)": [timed[f].threads_ms if f in timed else None for f in exports],
            "× faster than original": [
                base[f].median_ms / timed[f].median_ms if f in timed else None for f in exports
            ],
            "peak activation bytes": [
                timed[f].activation_bytes if f in timed else None for f in exports
            ],
            "check": [
                explain.verdict(made[f]) if f in made else f"not available: {e}"
                for f, e in exports.items()
            ],
        }
    )


def export_table(exports: dict[str, Exported | str]) -> None:
    """The ``export_rows`` as a table."""
    st.dataframe(
        export_rows(exports),
        hide_index=True,
        width="stretch",
        column_config={
            "format": st.column_config.TextColumn(width="medium"),
            "bytes": st.column_config.NumberColumn(format="localized", width="small"),
            "gzip bytes": st.column_config.NumberColumn(format="localized", width="small"),
            "× smaller than float32": st.column_config.NumberColumn(
                format="%.2f×",
                width="small",
                help="Raw bytes of the float32 LiteRT file ÷ this file's.",
            ),
            "preview accuracy": st.column_config.NumberColumn(format="%.2f%%", width="small"),
            "file accuracy": st.column_config.NumberColumn(
                format="%.2f%%", width="small", help="The downloaded file itself, run on the data."
            ),
            "ms (1 thread)": st.column_config.NumberColumn(
                format="%.3f", width="small", help="Median time of one sample (batch 1)."
            ),
            "p90 ms": st.column_config.NumberColumn(
                format="%.3f", width="small", help="9 of 10 runs with one thread are this fast."
            ),
            "ms (all cores)": st.column_config.NumberColumn(
                format="%.3f", width="small", help="Median with one thread per core."
            ),
            "× faster than original": st.column_config.NumberColumn(
                format="%.2f×",
                width="small",
                help="The original model's float32 LiteRT file's time ÷ this file's (1 thread).",
            ),
            "peak activation bytes": st.column_config.NumberColumn(
                format="localized",
                width="small",
                help="The file's largest tensor computed at run time (dequantized weights too); "
                "the interpreter needs at least this much memory besides the file.",
            ),
            "check": st.column_config.TextColumn(width="large"),
        },
    )


def latency_note() -> None:
    """One sentence on where and how the latency columns were measured."""
    st.caption(
        f"Latency: each LiteRT file run by LiteRT's interpreter (XNNPack) at batch 1 on this "
        f"server's processor ({latency.processor_name()}), median of at least "
        f"{latency.MIN_RUNS} runs after warm-up, against the original model's float32 file; "
        "phones and other processors differ, so compare the ratios rather than the milliseconds."
    )


def export_warnings(exports: dict[str, Exported | str], config: OptimizationConfig) -> None:
    """Say plainly which files do not do what the preview promised, and why."""
    for fmt, e in exports.items():
        if isinstance(e, Exported) and e.departs:
            st.warning(
                f"The {FORMAT_NAMES[fmt]} file scores {percent(e.file_accuracy or 0)} where the "
                f"preview promised {percent(e.preview_accuracy or 0)}: "
                f"{explain.departure_reason(fmt, config)}",
                icon=":material/warning:",
            )


def export_buttons(
    model: services.KerasModel, exports: dict[str, Exported | str], config: OptimizationConfig
) -> None:
    """One download button per format; the container the bit-width setting deploys in first."""
    bits = None if config.quantization is None else config.quantization.bits
    best = natural_format(bits)
    order = [best, *(f for f in exports if f != best)]
    for fmt, column in zip(order, st.columns(4) + st.columns(4), strict=False):
        e = exports[fmt]
        suffix = FORMAT_SUFFIXES[fmt]
        name = "optimized" if fmt == "keras" else fmt.removeprefix("tflite-")
        label = FORMAT_NAMES[fmt].removeprefix("LiteRT ")
        column.download_button(
            "Download .keras" if fmt == "keras" else f"Download {label} {suffix}",
            e.data if isinstance(e, Exported) else b"",
            file_name=f"{model.stem}_{name}{suffix}",
            mime="application/octet-stream",
            icon=":material/download:",
            type="primary" if fmt == best else "secondary",
            disabled=not isinstance(e, Exported),
            help=FORMAT_LABELS[fmt] if isinstance(e, Exported) else e,
            on_click="ignore",
            key=f"download_{fmt}",
            width="stretch",
        )
