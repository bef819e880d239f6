"""Explore: move the sliders and see weights, sizes and accuracy respond."""

import streamlit as st

from ui import explain, figures, loading, services, settings, state, views

session = st.session_state
loading.bootstrap(session)
model = views.require_keras(loading.current(session))

st.title("Explore")
st.caption(f"{views.model_title(model)} · every change re-optimizes and re-evaluates the model.")

settings.draw_sliders()
settings.draw_advanced(model.layers)
config = settings.config_from_state(session)

with st.spinner("Optimizing and evaluating…"):
    result = services.compare(model, config)

views.metric_cards(result.outcome, result.baseline)

chart, words = st.columns([3, 2], gap="large")
with chart:
    pick, scale = st.columns([3, 1], vertical_alignment="bottom")
    shown = [state.ALL_TENSORS, *model.tensors]
    tensor = pick.selectbox(
        "Weights shown",
        shown,
        index=state.index_of(session, state.HIST_TENSOR, shown),
        key=state.HIST_TENSOR,
        format_func=lambda t: "All eligible weights" if t == state.ALL_TENSORS else t,
    )
    log_y = scale.toggle("Log scale", value=state.get(session, state.LOG_Y), key=state.LOG_Y)
    original, optimized = figures.tensor_choice(
        model.prepared, result.outcome, None if tensor == state.ALL_TENSORS else tensor
    )
    st.plotly_chart(
        figures.weight_histogram(
            original,
            optimized,
            log_y=log_y,
            marks_name=figures.mark_label(config),
        ),
        key="histogram",
        config={"displayModeBar": False},
    )
with words:
    st.subheader("What just happened")
    views.explanation(explain.sentences(config, result.outcome, result.baseline))

st.subheader("Per tensor")
views.layer_table(result.outcome.eligible)
