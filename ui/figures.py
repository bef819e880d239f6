"""Plotly figures: the weight histogram, original and optimized overlaid.

Histograms are binned here with numpy and drawn as bars, so the browser receives a few hundred
numbers instead of every weight of the model.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import plotly.graph_objects as go

from optimizers.explore import Outcome, Prepared
from optimizers.pipeline import OptimizationConfig
from optimizers.workers import POOL

T = TypeVar("T")

BINS = 101  # odd, so that one bin is centred on zero for a symmetric range
MAX_MARKS = 64  # mark every distinct optimized value when there are at most this many
SAMPLE = 65_536  # values looked at before counting all of them
# Colour-blind-safe (Paul Tol's high-contrast blue, Okabe and Ito's vermillion), apart in every
# common colour-vision deficiency, in greyscale and on a washed-out projector: the original a
# light neutral grey behind the optimized dark blue (5:1 contrast), marks in vermillion, the
# float model (where a chart marks it) black.
ORIGINAL_COLOR = "#bbbbbb"
OPTIMIZED_COLOR = "#004488"
MARK_COLOR = "#d55e00"
REFERENCE_COLOR = "#000000"
FONT_SIZE = 16  # px: axis titles, tick labels and legends that read on a projector
HEIGHT = 440


def legible(fig: go.Figure) -> go.Figure:
    """``fig`` with every axis title, tick label and legend at ``FONT_SIZE``: set on each, since
    Streamlit's theme sets them smaller one by one."""
    text = {"size": FONT_SIZE}
    fig.update_xaxes(title_font=text, tickfont=text)
    fig.update_yaxes(title_font=text, tickfont=text)
    return fig.update_layout(font=text, legend_font=text)


Counted = tuple[np.ndarray, np.ndarray]  # distinct values (sorted), and how many weights hold each
Part = np.ndarray | Counted
Values = np.ndarray | Sequence[Part]  # one array, or the parts of several tensors


def tensor_choice(
    prepared: Prepared, outcome: Outcome, path: str | None
) -> tuple[list[np.ndarray], list[Part]]:
    """Original and optimized values of one eligible tensor, or of all of them (``None``), as
    parts: a changed tensor whose report counted its values is given by those counts."""
    refs = [r for r in prepared.refs if path is None or r.path == path] or list(prepared.refs)
    levels = {r.index: r.levels for r in outcome.eligible if r.sqnr_db is not None}
    original = [prepared.weights[r.index] for r in refs]
    optimized = [
        levels[r.index] if w is not o and levels.get(r.index) else w
        for r, o, w in zip(refs, original, (outcome.weights[r.index] for r in refs), strict=True)
    ]
    return original, optimized


def mark_label(config: OptimizationConfig) -> str:
    """What the distinct optimized values are, in the words of the active technique (cluster
    centroids rounded to the grid are no longer centroids, but still the shared values)."""
    if config.clustering is not None:
        return "cluster centroids" if config.quantization is None else "shared values"
    if config.quantization is not None:
        return "quantization levels"
    return "distinct values"


def _parts(values: Values) -> list[Part]:
    """The non-empty parts of ``values``."""
    parts = [values] if isinstance(values, np.ndarray) else list(values)
    return [p for p in parts if (p[0] if isinstance(p, tuple) else p).size]


MEMO_SIZE = 4096
_memo: OrderedDict[tuple, tuple[weakref.ref, object]] = OrderedDict()
_memo_lock = threading.Lock()


def memo(array: np.ndarray, key: tuple, make: Callable[[np.ndarray], T]) -> T:
    """``make(array)``, remembered while ``array`` lives: a prepared model's original weights
    are the same arrays on every slider move, so their ranges and counts are made once."""
    full = (id(array), *key)
    with _memo_lock:
        found = _memo.get(full)
        if found is not None and found[0]() is array:
            _memo.move_to_end(full)
            return found[1]  # type: ignore[return-value]
    value = make(array)
    with _memo_lock:
        _memo[full] = (weakref.ref(array), value)
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    return value


def _range(part: Part) -> tuple[float, float]:
    if isinstance(part, tuple):
        return float(part[0][0]), float(part[0][-1])
    return memo(part, ("range",), lambda a: (float(a.min()), float(a.max())))


def few_levels(values: Values) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``values`` and their counts when each part (tensor) holds at most
    ``MAX_MARKS``, else empty arrays; several parts together may hold more. Counted parts give
    theirs at once; of the arrays a spread sample is looked at first: if it alone holds more,
    so does the whole, and the full sort (a quarter second for a MobileNet's weights) is
    skipped."""
    parts = _parts(values)
    none = np.zeros(0, np.float32), np.zeros(0, np.int64)
    found = [p for p in parts if isinstance(p, tuple)]
    arrays = [p.ravel() for p in parts if not isinstance(p, tuple)]
    step = max(1, sum(a.size for a in arrays) // SAMPLE)
    if any(p[0].size > MAX_MARKS for p in found) or any(
        np.unique(a[::step]).size > MAX_MARKS for a in arrays
    ):
        return none
    found += [np.unique(a, return_counts=True) for a in arrays]
    return none if any(p[0].size > MAX_MARKS for p in found) else merged(found)


def merged(parts: Sequence[Counted]) -> Counted:
    """The distinct values of several counted parts, with their summed counts."""
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    levels, which = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    counts = np.bincount(which, weights=np.concatenate([p[1] for p in parts]))
    return levels, counts.astype(np.int64)


def _bins(values: Sequence[Values]) -> np.ndarray:
    ranges = [_range(p) for v in values for p in _parts(v)]
    lo = min((r[0] for r in ranges), default=0.0)
    hi = max((r[1] for r in ranges), default=0.0)
    bound = max(abs(lo), abs(hi)) or 1.0
    if lo < 0 < hi:  # symmetric around zero, so pruned weights fall in one central bin
        lo, hi = -bound, bound
    if hi == lo:
        lo, hi = lo - 0.5 * bound, hi + 0.5 * bound
    return np.linspace(lo, hi, BINS + 1)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    bins = len(edges) - 1
    index = ((values.ravel() - edges[0]) * (bins / (edges[-1] - edges[0]))).astype(np.intp)
    return np.clip(index, 0, bins - 1, out=index)


def bin_counts(values: Values, edges: np.ndarray) -> np.ndarray:
    """Values per bin of evenly spaced ``edges`` (the last bin holds its right edge), in one
    pass per array, side by side: twice as fast as ``np.histogram`` on a MobileNet's 3.5
    million weights. A value within float rounding of an inner edge may land in the bin beside
    it, which no eye can see. Counted parts bin their distinct values."""
    bins = len(edges) - 1

    def one(part: Part) -> np.ndarray:
        if isinstance(part, tuple):
            return np.bincount(bin_index(part[0], edges), part[1], bins).astype(np.int64)
        return memo(
            part,
            ("counts", edges.tobytes()),
            lambda a: np.bincount(bin_index(a, edges), minlength=bins),
        )

    return sum(POOL.map(one, _parts(values)), np.zeros(bins, np.int64))


def _bars(values: np.ndarray, edges: np.ndarray, name: str, color: str, opacity: float) -> go.Bar:
    counts = bin_counts(values, edges)
    centers = (edges[:-1] + edges[1:]) / 2
    return go.Bar(
        x=centers,
        y=counts,
        width=np.diff(edges),
        name=name,
        marker={"color": color, "line": {"width": 0}},
        opacity=opacity,
        customdata=np.stack([edges[:-1], edges[1:]], axis=1),
        hovertemplate="%{customdata[0]:.4g} to %{customdata[1]:.4g}: %{y:,} weights"
        f"<extra>{name}</extra>",
    )


def changed(original: Values, optimized: Values) -> bool:
    """Whether any optimized part differs from its original (a counted part is a change)."""
    return any(
        isinstance(b, tuple) or (a is not b and not np.array_equal(a, b))
        for a, b in zip(_parts(original), _parts(optimized), strict=True)
    )


def marks_words(levels: int, marks_name: str, optimized: Values) -> str:
    """The marks' legend: ``16 cluster centroids``, ``59 shared values in 5 tensors``."""
    tensors = len(_parts(optimized))
    return f"{levels:,} {marks_name}" + (f" in {tensors} tensors" if tensors > 1 else "")


def weight_histogram(
    original: Values,
    optimized: Values | None = None,
    *,
    log_y: bool = False,
    marks_name: str = "distinct values",
) -> go.Figure:
    """Histogram of ``original`` with ``optimized`` overlaid; when the optimized values are few
    (at most ``MAX_MARKS``) each one is marked with a triangle above the bars. Several tensors, each with
    its own few values, are named so in the legend ("59 shared values in 5 tensors"), and
    over ``MAX_MARKS`` together the legend says they are too many to mark."""
    edges = _bins([original] if optimized is None else [original, optimized])
    fig = go.Figure(_bars(original, edges, "original", ORIGINAL_COLOR, 1.0))
    if optimized is not None:
        fig.add_trace(_bars(optimized, edges, "optimized", OPTIMIZED_COLOR, 0.8))
        levels, counts = few_levels(optimized)
        if levels.size and changed(original, optimized):
            name = marks_words(levels.size, marks_name, optimized)
            marked = levels.size <= MAX_MARKS  # else each tensor's own few, too many together
            fig.add_trace(
                go.Scatter(
                    # Not marked: a legend entry alone (plotly lists a trace of one empty point).
                    x=levels if marked else [None],
                    y=np.ones(levels.size) if marked else [None],
                    yaxis="y2",
                    mode="markers",
                    marker={"symbol": "triangle-down", "size": 9, "color": MARK_COLOR},
                    name=name if marked else f"{name}: too many to mark",
                    customdata=counts,
                    hovertemplate="value %{x:.5g}: %{customdata:,} weights<extra></extra>",
                )
            )
    fig.update_layout(
        barmode="overlay",
        bargap=0,
        height=HEIGHT,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        xaxis={"title": "weight value", "zeroline": False},
        yaxis={"title": "weights per bin", "type": "log" if log_y else "linear"},
        yaxis2={"overlaying": "y", "range": [0, 1.04], "visible": False, "fixedrange": True},
        hovermode="closest",
    )
    return legible(fig)


ZERO_COLOR = "#3d444d"


def weight_grid(w: np.ndarray, bound: float, height: int = 280) -> go.Figure:
    """A 2-D tensor as a heatmap, one cell per weight: blue negative, red positive, white near
    zero on a scale of ``±bound`` (pass the original's largest magnitude, so a before and an
    after share one scale), and exact zeros in dark grey, so pruned weights stand out."""
    zeros = np.where(w == 0, 1.0, np.nan)
    fig = go.Figure(
        [
            go.Heatmap(
                z=w,
                zmin=-bound,
                zmax=bound,
                colorscale="RdBu_r",
                colorbar={"thickness": 10},
                hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra></extra>",
            ),
            go.Heatmap(
                z=zeros,
                colorscale=[[0, ZERO_COLOR], [1, ZERO_COLOR]],
                showscale=False,
                hovertemplate="exactly 0<extra></extra>",
            ),
        ]
    )
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"visible": False, "constrain": "domain"},
        yaxis={"visible": False, "autorange": "reversed", "scaleanchor": "x"},
    )
    return legible(fig)


def size_sweep(percents: Sequence[int], raw: Sequence[int], gzipped: Sequence[int]) -> go.Figure:
    """Bytes of a tensor's raw float32 data and of the same bytes gzipped, against sparsity."""
    fig = go.Figure(
        [
            go.Scatter(x=list(percents), y=list(raw), name="raw float32", mode="lines+markers"),
            go.Scatter(x=list(percents), y=list(gzipped), name="gzipped", mode="lines+markers"),
        ]
    )
    fig.update_layout(
        height=340,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        colorway=[OPTIMIZED_COLOR, MARK_COLOR],
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        xaxis={"title": "weights pruned (%)"},
        yaxis={"title": "bytes", "rangemode": "tozero"},
    )
    return legible(fig)
