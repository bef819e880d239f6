"""Explore: move the sliders and see weights, sizes and accuracy respond.

The controls and everything they change form one fragment, so a slider move reruns only that
part of the page. Its answer comes in two stages: at once what is exact and cheap (the weights'
histogram, sizes, sparsity, the per-tensor table), then accuracy and the gzip figure with a
progress bar. A newer move stops an older measurement at its next batch.
"""

import streamlit as st

from ui import explain, figures, finetune, links, loading, services, settings, state, views

session = st.session_state
loading.bootstrap(session)
ignored = links.follow(session)
model = views.require_keras(loading.current(session))

st.title("Explore")
st.caption(
    f"{views.model_title(model)} · every change re-optimizes the model; accuracy and the gzip "
    "size follow as soon as they are measured."
)
links.show(ignored, model)


@st.fragment
def answer(model: services.KerasModel) -> None:
    state.init(session, loading.DEFAULT_SAMPLE)  # a fragment rerun skips the page's own init
    settings.draw_sliders()
    settings.draw_advanced(model.layers)
    config = settings.config_from_state(session)
    links.write(session)

    progress = st.empty()
    baseline = views.measure(model, services.NO_CONFIG, progress)
    outcome = services.optimized(model, config)
    cards = st.empty()
    with cards.container():
        views.metric_cards(outcome, baseline)
    headline = st.empty()
    headline.markdown(f"## {explain.headline(outcome, baseline)}", anchors=False)
    progress = st.empty()

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
            model.prepared, outcome, None if tensor == state.ALL_TENSORS else tensor
        )
        st.plotly_chart(
            figures.weight_histogram(
                original, optimized, log_y=log_y, marks_name=figures.mark_label(config)
            ),
            key="histogram",
            config={"displayModeBar": False},
        )
    with words:
        st.subheader("What just happened")
        sentences = st.empty()
        sentences.markdown(views.bullets(explain.sentences(config, outcome, baseline)))

    st.subheader("Per tensor")
    views.layer_table(outcome.eligible)

    if not outcome.measured:
        outcome = views.measure(model, config, progress)
        with cards.container():
            views.metric_cards(outcome, baseline)
        headline.markdown(f"## {explain.headline(outcome, baseline)}", anchors=False)
        sentences.markdown(views.bullets(explain.sentences(config, outcome, baseline)))

    finetune.draw(model, config)


answer(model)
