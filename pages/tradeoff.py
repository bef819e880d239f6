"""Trade-off: a sweep of uniform settings with its Pareto frontier, the recommended per-layer
recipe within an accuracy budget, and which layer breaks accuracy.

Every figure is the one ``apply`` reports for that setting on the same data; results are cached
per model, so the page is instant after the first visit.
"""

from functools import partial

import streamlit as st

from optimizers.pipeline import Techniques, describe
from optimizers.recommend import LEVELS
from ui import loading, services, settings, state, tradeoff, views
from ui.explain import format_bytes, percent
from ui.setting import config_words

session = st.session_state
loading.bootstrap(session)
model = views.require_keras(loading.current(session))
if not model.has_data:
    st.info(
        "Add evaluation data (an .npz with x and optionally y) on the Model page: the trade-off "
        "is measured on it.",
        icon=":material/info:",
    )
    st.stop()

quality_name = "accuracy" if model.has_labels else "agreement"
st.title("Trade-off")
st.caption(
    f"{views.model_title(model)} · every point is measured as `apply` measures it; click one "
    "to set the sliders to it."
)

with st.expander("Sweep grid and budget"):
    left, middle, right, last = st.columns(4, gap="large")
    left.multiselect(
        "Pruning",
        list(range(0, settings.MAX_SPARSITY + 1, settings.SPARSITY_STEP)),
        default=state.get(session, state.SWEEP_SPARSITIES),
        key=state.SWEEP_SPARSITIES,
        format_func=lambda v: f"{v}%",
    )
    middle.multiselect(
        "Clustering",
        settings.CLUSTER_OPTIONS,
        default=state.get(session, state.SWEEP_CLUSTERS),
        key=state.SWEEP_CLUSTERS,
        format_func=settings.cluster_label,
    )
    right.multiselect(
        "Quantization",
        settings.BIT_OPTIONS,
        default=state.get(session, state.SWEEP_BITS),
        key=state.SWEEP_BITS,
        format_func=settings.bits_label,
    )
    last.number_input(
        f"Budget: {quality_name} points to lose at most",
        0.0,
        100.0,
        value=float(state.get(session, state.BUDGET)),
        step=0.5,
        key=state.BUDGET,
    )
    settings.draw_calibration(model)  # every point data-aware, as the setting is
try:
    grid = tradeoff.grid_from_state(session)
except ValueError as e:
    st.error(f"Choose at least one value on each axis of the grid ({e}).")
    st.stop()
budget = float(state.get(session, state.BUDGET))
config = state.setting(session).config
settings.draw_recipe(model.layers)

bar = st.progress(0.0)
more = tradeoff.MORE_TRIALS if session.pop(tradeoff.RUN_MORE, False) else 0
found = services.swept(
    model,
    grid,
    lambda done, total: bar.progress(min(done / total, 1.0), f"Measuring {done} of {total}…"),
    more,
    budget,
)
bar.progress(1.0, "Searching per-layer settings…")
recommended = services.recommended(model, grid, budget)
bar.empty()
result = found.sweep
best = result.uniform().best_within(budget)
searched = result.best_within(budget)  # the study's own per-layer settings may do better
if searched is not None and searched.per_layer and searched.packed_bytes < recommended.packed_bytes:
    recommended = searched


def chart() -> bool:
    """The study as it stands, from every worker; whether all its trials are done."""
    now = services.swept(model, grid)
    st.caption(
        f"Sweep {now.name}: {now.done} of {now.target} trials done"
        + (f", {now.running} running in other workers" if now.running else "")
        + (f", {now.measured_twice} measured twice" if now.measured_twice else "")
        + ". It is kept, and shared with `python -m optimizers sweep` workers on the same "
        "storage."
    )
    st.plotly_chart(
        tradeoff.scatter(now.sweep, config, recommended, quality_name),
        key=tradeoff.SCATTER,
        on_select=partial(tradeoff.pick, now.sweep.uniform().points, session),
        selection_mode="points",
        config={"displayModeBar": False},
    )
    return now.done >= now.target


def polled() -> None:
    """The chart again every ``POLL_SECONDS`` while other workers measure; then the page."""
    if chart():
        st.rerun()


if found.done < found.target:
    st.fragment(run_every=tradeoff.POLL_SECONDS)(polled)()
else:
    chart()
st.button(
    f"Run {tradeoff.MORE_TRIALS} more trials here",
    icon=":material/add_chart:",
    key="run_more",
    on_click=tradeoff.ask_more,
    args=(session,),
    help="Per-layer settings beyond the grid, chosen by a multi-objective sampler (Optuna's "
    "TPE) from the points so far; they are added to the stored sweep.",
)
stored = services.stored_sweeps(model, grid)
with st.expander(f"Stored sweeps of this model and data ({len(stored)})"):
    st.dataframe(tradeoff.stored_rows(stored, found.name), hide_index=True, key="stored_sweeps")

st.subheader(f"Within {budget:g} point{'' if budget == 1 else 's'} of the float model")
uniform_col, recommended_col = st.columns(2, gap="large")
with uniform_col:
    if best is None:
        st.metric("Best uniform setting", "none in budget", border=True)
    else:
        st.metric(
            f"Best uniform setting: {config_words(best.config)}",
            format_bytes(best.packed_bytes),
            f"{quality_name} {percent(best.quality, 2)}",
            delta_color="off",
            help="The smallest packed size of the grid's points within the budget.",
            border=True,
        )
with recommended_col:
    smaller = "" if best is None else f", {1 - recommended.packed_bytes / best.packed_bytes:.0%}"
    st.metric(
        "Recommended per-layer recipe",
        format_bytes(recommended.packed_bytes),
        f"{quality_name} {percent(recommended.quality, 2)}{smaller} smaller",
        delta_color="off",
        help="Fragile layers get gentler settings, robust ones harsher: a greedy search over "
        "the grid's settings per layer, for the smallest packed size within the budget, or the "
        "sweep's own per-layer trials when one of them is smaller.",
        border=True,
    )
    st.markdown(
        "\n".join(
            f"- **{layer}**: {describe(recommended.config.for_layer(layer))}"
            for layer in model.layers
        )
    )
    apply_col, download_col = st.columns(2)
    apply_col.button(
        "Apply this recipe",
        icon=":material/tune:",
        key="apply_recommended",
        on_click=tradeoff.apply_recipe,
        args=(session, recommended.config),
        help="Sets every layer as listed above and opens Explore on it.",
    )
    if state.APPLIED in session:  # the click's callback ran: show the result
        st.switch_page("pages/explore.py")
    download_col.download_button(
        "Download recipe (.json)",
        services.recipe_json(recommended.config),
        file_name=f"{model.stem}_recommended.json",
        mime="application/json",
        icon=":material/description:",
        on_click="ignore",
        key="download_recommended",
    )

st.subheader("Which layer breaks accuracy")
current = Techniques(config.pruning, config.clustering, config.quantization)
levels = (current, *LEVELS) if current.active and current not in LEVELS else LEVELS
bar = st.progress(0.0)
rows = services.sensitivity(
    model,
    levels,
    grid,
    lambda done, total: bar.progress(done / total, "Optimizing one layer at a time…"),
)
bar.empty()
st.caption(
    f"The model's {quality_name} with only that layer optimized (every other layer float); "
    "most fragile layer on top."
)
st.plotly_chart(
    tradeoff.heatmap(rows, result.baseline.quality, quality_name),
    key="sensitivity_heatmap",
    config={"displayModeBar": False},
)
ordered = [r.layer for r in rows]
pick_col, float_col, setting_col, give_col = st.columns([2, 1, 2, 1], vertical_alignment="bottom")
layer = pick_col.selectbox(
    "Layer",
    ordered,
    index=state.index_of(session, state.FRAGILE_LAYER, ordered),
    key=state.FRAGILE_LAYER,
)
float_col.button(
    "Keep in float",
    on_click=tradeoff.keep_float,
    args=(session, layer),
    disabled=layer in state.get(session, state.SKIP),
    key="keep_float",
)
choice = setting_col.selectbox(
    "Its own setting",
    range(len(levels)),
    index=min(state.get(session, state.LAYER_SETTING), len(levels) - 1),
    key=state.LAYER_SETTING,
    format_func=lambda i: describe(levels[i]),
)
give_col.button(
    "Give it this setting",
    on_click=tradeoff.give_setting,
    args=(session, layer, levels[choice]),
    key="give_setting",
)
