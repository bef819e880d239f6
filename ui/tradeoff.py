"""The Trade-off page's pieces: the grid its widgets describe, the scatter of packed size
against accuracy with its Pareto frontier, the sensitivity heatmap, and what clicking a point
or a layer action changes in the session.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import plotly.graph_objects as go

from optimizers import study
from optimizers.pipeline import OptimizationConfig, Techniques, describe
from optimizers.recommend import LayerSensitivity
from optimizers.sweep import Grid, Point, Sweep
from ui import settings, state
from ui.explain import download_size, format_bytes
from ui.figures import MARK_COLOR, OPTIMIZED_COLOR, ORIGINAL_COLOR, REFERENCE_COLOR, legible
from ui.setting import config_words, recipe_words

SCATTER = "tradeoff_scatter"  # the chart's key: a widget whose value is the selection
POINTS = 0  # the trace of the grid points, the only one a click selects
HEIGHT = 460
MORE_TRIALS = 12  # per-layer trials that "run more trials here" adds
RUN_MORE = "tradeoff_run_more"  # set by the button: the next run adds MORE_TRIALS
POLL_SECONDS = 2.0  # how often the chart reads a study other workers still measure


def grid_from_state(session: Mapping[str, Any]) -> Grid:
    """The grid of the page's three multiselects (percent, cluster and bit options as the
    sliders offer them), data-aware when the setting is (*Use calibration data*); raises
    ``ValueError`` when an axis is empty."""

    def values(key: str) -> tuple[Any, ...]:
        return tuple(None if v == state.OFF else v for v in state.get(session, key))

    return Grid(
        tuple(sorted(v / 100 for v in state.get(session, state.SWEEP_SPARSITIES))),
        values(state.SWEEP_CLUSTERS),
        values(state.SWEEP_BITS),
        data_aware=state.setting(session).config.data_aware,
    )


def hover(p: Point) -> str:
    words = config_words(p.config) + (f"; {recipe_words(p.config)}" if p.per_layer else "")
    return (
        f"{words}<br>{100 * p.quality:.2f}%<br>packed {format_bytes(p.packed_bytes)}"
        f"<br>gzip {download_size(p.gzip_bytes, p.gzip_exact)}"
        f"<br>entropy {format_bytes(p.entropy_bytes)}"
    )


def _marker(p: Point, name: str, symbol: str, color: str, size: int) -> go.Scatter:
    return go.Scatter(
        x=[p.packed_bytes],
        y=[100 * p.quality],
        mode="markers",
        name=name,
        marker={"symbol": symbol, "size": size, "color": color, "line": {"width": 2}},
        hoverinfo="skip",
    )


def _points(points: Sequence[Point], name: str, marker: dict[str, Any]) -> go.Scatter:
    """``points`` as markers, the frontier ones filled."""
    return go.Scatter(
        x=[p.packed_bytes for p in points],
        y=[100 * p.quality for p in points],
        mode="markers",
        name=name,
        marker=marker
        | {"color": [OPTIMIZED_COLOR if p.pareto else ORIGINAL_COLOR for p in points]},
        text=[hover(p) for p in points],
        hovertemplate="%{text}<extra></extra>",
    )


def scatter(
    result: Sweep, current: OptimizationConfig, recommended: Point | None, quality_name: str
) -> go.Figure:
    """Each uniform grid point (frontier ones filled), the frontier as a step line, the float
    model, the current setting, the recommended recipe and the study's per-layer settings; only
    the uniform points are clickable."""
    points = result.uniform().points
    fig = go.Figure(_points(points, "uniform setting", {"size": 10}))
    front = sorted((p for p in result.points if p.pareto), key=lambda p: p.packed_bytes)
    fig.add_trace(
        go.Scatter(
            x=[p.packed_bytes for p in front],
            y=[100 * p.quality for p in front],
            mode="lines",
            line={"shape": "hv", "color": OPTIMIZED_COLOR},
            name="Pareto frontier",
            hoverinfo="skip",
        )
    )
    fig.add_trace(_marker(result.baseline, "float model", "star", REFERENCE_COLOR, 16))
    here = [p for p in points if p.config == current]
    if here:
        fig.add_trace(_marker(here[0], "current setting", "circle-open", MARK_COLOR, 20))
    if recommended is not None:
        fig.add_trace(_marker(recommended, "recommended recipe", "diamond", MARK_COLOR, 14))
    layered = [p for p in result.points if p.per_layer]
    if layered:
        fig.add_trace(_points(layered, "per-layer setting", {"size": 7, "symbol": "triangle-up"}))
    fig.update_layout(
        height=HEIGHT,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        xaxis={
            "title": "packed size (bytes, log scale)",
            "type": "log",
            "tickvals": log_ticks([p.packed_bytes for p in (*result.points, result.baseline)]),
            "tickformat": "~s",
        },
        yaxis={"title": f"{quality_name} (%)"},
        hovermode="closest",
        clickmode="event+select",
    )
    return legible(fig)


def log_ticks(values: Sequence[float]) -> list[float]:
    """1, 2 and 5 times the powers of ten around ``values``: a log axis's labels all at one
    size (Plotly draws its own in-between digits smaller)."""
    lo, hi = min(values) / 2.5, max(values) * 2.5
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    return [m * 10.0**e for e in decades for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]


def pick(points: Sequence[Point], session: MutableMapping[str, Any]) -> None:
    """A click on a uniform point (``points``: the sweep's ``uniform().points``) sets every
    control to that point's setting."""
    chosen = [p for p in session[SCATTER]["selection"]["points"] if p.get("curve_number") == POINTS]
    if chosen:
        settings.put_config(session, points[chosen[0]["point_index"]].config)


def ask_more(session: MutableMapping[str, Any]) -> None:
    """``on_click`` of "run more trials here": the next run adds ``MORE_TRIALS`` trials."""
    session[RUN_MORE] = True


def stored_rows(found: Sequence[study.Stored], current: str) -> list[dict[str, Any]]:
    """The stored studies of the model as table rows, the one the page shows marked."""
    return [
        {
            "study": s.name + (" (shown)" if s.name == current else ""),
            "grid": study.grid_words(s.grid),
            "done": f"{s.done} of {s.target}",
        }
        for s in found
    ]


def heatmap(rows: Sequence[LayerSensitivity], reference: float, quality_name: str) -> go.Figure:
    """Layers (most fragile on top) by settings: points of quality lost with only that layer
    at that setting, the quality itself written in each cell."""
    columns = [describe(s.setting) for s in rows[0].scores] if rows else []
    z = [[100 * (s.quality - reference) for s in r.scores] for r in rows]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=[r.layer for r in rows],
            text=[[f"{100 * s.quality:.1f}%" for s in r.scores] for r in rows],
            texttemplate="%{text}",
            colorscale="Reds_r",
            zmax=0,
            colorbar={"title": "points"},
            hovertemplate=f"%{{y}} at %{{x}}: {quality_name} %{{text}}<extra></extra>",
        )
    )
    fig.update_layout(
        height=120 + 40 * len(rows),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis={"autorange": "reversed"},
    )
    return legible(fig)


def apply_recipe(session: MutableMapping[str, Any], config: OptimizationConfig) -> None:
    """``on_click`` of Apply: make ``config`` the setting, and leave the sentence the Explore
    page shows when it opens on it."""
    settings.put_config(session, config)
    own = recipe_words(config).removeprefix("per-layer recipe: ") or describe(config)
    session[state.APPLIED] = (
        f"Applied the recommended recipe: {own}. The box above the cards lists each layer's "
        "setting."
    )


def keep_float(session: MutableMapping[str, Any], layer: str) -> None:
    """Leave ``layer`` untouched (the skip list), whatever else is set."""
    state.put(session, state.SKIP, [*state.get(session, state.SKIP), layer])


def give_setting(session: MutableMapping[str, Any], layer: str, setting: Techniques) -> None:
    """Give ``layer`` its own ``setting`` (a per-layer override), and optimize it again."""
    others = [(name, t) for name, t in state.get(session, state.OVERRIDES) if name != layer]
    state.put(session, state.OVERRIDES, (*others, (layer, setting)))
    state.put(session, state.SKIP, [s for s in state.get(session, state.SKIP) if s != layer])
