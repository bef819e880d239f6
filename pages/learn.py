"""Learn: pruning, clustering and quantization from the ground up, on one 16×16 kernel.

A teacher walks a class through it top to bottom in about ten minutes. Each technique's lesson
is a fragment, so its slider reruns only that lesson; the numbers and sentences come from
``ui.learn``, which runs the library's own functions on a fixed-seed kernel.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from ui import figures, learn, loading, settings, state

session = st.session_state
loading.bootstrap(session)
kernel = learn.kernel()
bound = float(np.abs(kernel).max())  # one colour scale for every heatmap of the page
CHART = {"displayModeBar": False}
HEIGHT = 280

st.title("Learn")
st.caption(
    f"Three ways to make a model smaller, each on one layer you can see whole: "
    f"{kernel.shape[0]} × {kernel.shape[1]} = {kernel.size} weights, drawn with a fixed seed "
    "the way trained weights look (most near zero, a few large). Every picture is computed "
    "live by the same library functions the Explore page runs on whole models."
)


def grid(w: np.ndarray, title: str, key: str) -> None:
    st.caption(title)
    st.plotly_chart(figures.weight_grid(w, bound, HEIGHT), key=key, config=CHART)


def histogram(before: np.ndarray, after: np.ndarray, marks: str, key: str) -> None:
    st.caption("How many weights have each value")
    figure = figures.weight_histogram(before, after, marks_name=marks)
    figure.update_layout(height=HEIGHT)
    st.plotly_chart(figure, key=key, config=CHART)


def before_and_after(lesson: learn.Lesson, marks: str, key: str) -> None:
    """The kernel before and after as heatmaps, both as one histogram, and the sentence."""
    left, middle, right = st.columns([1, 1, 1.5])
    with left:
        grid(kernel, "Before", f"{key}_before")
    with middle:
        grid(lesson.after, "After", f"{key}_after")
    with right:
        histogram(kernel, lesson.after, marks, f"{key}_histogram")
    st.markdown(lesson.sentence)


def lesson(
    title: str,
    label: str,
    key: str,
    options: Sequence[Any],
    teach: Callable[[np.ndarray, Any], learn.Lesson],
    marks: str,
    chart: str,
    **slider: Any,
) -> None:
    """One technique: its slider over ``options``, then what ``teach`` made of the kernel."""
    st.header(title, anchor=False)
    value = st.select_slider(label, options, value=state.get(session, key), key=key, **slider)
    before_and_after(teach(kernel, value), marks, chart)


@st.fragment
def pruning() -> None:
    lesson(
        "1. Pruning: remove the smallest weights",
        "Share of weights set to zero",
        state.LEARN_SPARSITY,
        range(0, settings.MAX_SPARSITY + 1, settings.SPARSITY_STEP),
        learn.pruning,
        "distinct values",
        "learn_pruning",
        format_func="{}%".format,
    )


@st.fragment
def clustering() -> None:
    lesson(
        "2. Clustering: share a few values",
        "Shared values",
        state.LEARN_CLUSTERS,
        learn.CLUSTER_CHOICES,
        learn.clustering,
        "shared values",
        "learn_clustering",
    )


@st.fragment
def quantization() -> None:
    lesson(
        "3. Quantization: round to a grid",
        "Bits per weight",
        state.LEARN_BITS,
        learn.BIT_CHOICES,
        learn.quantization,
        "grid levels in use",
        "learn_quantization",
    )


pruning()
clustering()
quantization()

st.header("4. Order matters", anchor=False)
st.subheader("Prune, then cluster: keep the zeros", anchor=False)
zeros = learn.zeros_kept(kernel)
columns = st.columns(3)
for column, (w, title, key) in zip(
    columns,
    [
        (zeros.pruned, f"Pruned {learn.ORDER_SPARSITY:.0%}", "learn_pruned"),
        (zeros.lost, f"{learn.ORDER_CLUSTERS} clusters, zeros not kept", "learn_lost"),
        (zeros.kept, f"{learn.ORDER_CLUSTERS} clusters, zeros kept", "learn_kept"),
    ],
    strict=True,
):
    with column:
        grid(w, title, key)
st.markdown(zeros.sentence)

st.subheader("Cluster, then quantize: values on the grid", anchor=False)
order = learn.grid_order(kernel)
left, right = st.columns(2)
with left:
    st.caption(f"Cluster into {learn.GRID_CLUSTERS}, then {learn.ORDER_BITS}-bit quantize")
    histogram(kernel, order.cluster_first, "values", "learn_cluster_first")
with right:
    st.caption(f"{learn.ORDER_BITS}-bit quantize, then cluster into {learn.GRID_CLUSTERS}")
    histogram(kernel, order.quantize_first, "values", "learn_quantize_first")
st.markdown(order.sentence)

st.header("5. What is stored", anchor=False)
st.subheader("Why gzip shrinks a pruned file and the raw file does not", anchor=False)
sweep = learn.size_sweep(kernel)
left, right = st.columns([3, 2], gap="large")
with left:
    st.plotly_chart(
        figures.size_sweep(sweep.percents, sweep.raw, sweep.gzipped),
        key="learn_sizes",
        config=CHART,
    )
with right:
    st.markdown(sweep.sentence)

st.subheader("What int8 and int4 mean", anchor=False)
stored = learn.storage(kernel)
left, right = st.columns([3, 2], gap="large")
with left:
    st.dataframe(
        pd.DataFrame(
            {
                "weight": stored.weights,
                **{f"int{b} code": stored.codes[b] for b in learn.STORAGE_BITS},
                **{f"int{b} code × scale": stored.values[b] for b in learn.STORAGE_BITS},
            }
        ),
        hide_index=True,
        column_config={"weight": st.column_config.NumberColumn(format="%.4f")}
        | {
            f"int{b} code × scale": st.column_config.NumberColumn(format="%.4f")
            for b in learn.STORAGE_BITS
        },
    )
    st.dataframe(
        pd.DataFrame({"stored as": list(stored.nbytes), "bytes": list(stored.nbytes.values())}),
        hide_index=True,
    )
with right:
    st.markdown(stored.sentence)
