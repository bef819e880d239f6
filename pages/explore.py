"""Explore: move the sliders and see weights, sizes and accuracy respond.

The controls and everything they change form one fragment, so a slider move reruns only that
part of the page. Its answer comes in two stages: at once what is exact and cheap (the weights'
histogram, sizes, sparsity, the per-tensor table), then accuracy and the gzip figure with a
progress bar; a model measured in milliseconds (the samples) is answered once, whole
(``services.first_answer``). A newer move stops an older measurement at its next batch. A
setting pinned as A is shown beside the sliders' (B).
"""

import streamlit as st

from ui import (
    background,
    explain,
    figures,
    finetune,
    links,
    loading,
    services,
    settings,
    state,
    views,
)

session = st.session_state
loading.bootstrap(session)
ignored = links.follow(session)
model = views.require_keras(loading.current(session))

st.title("Explore")
st.caption(
    f"{views.model_title(model)} · every change re-optimizes the model; accuracy and the gzip "
    "size follow as soon as they are measured."
)
links.show(ignored, session)
if applied := session.pop(state.APPLIED, None):
    st.toast(applied, icon=":material/check_circle:")


def pin(pinned: bool) -> None:
    """``on_click`` of Pin as A / Unpin: keep the sliders' setting as A, or drop A."""
    session[state.PINNED] = state.setting(session) if pinned else None


def histogram(original: list, optimized: list, config, log_y: bool, key: str) -> None:
    st.plotly_chart(
        figures.weight_histogram(
            original, optimized, log_y=log_y, marks_name=figures.mark_label(config)
        ),
        key=key,
        config={"displayModeBar": False},
    )


@st.fragment
@background.answering()  # a model converted ahead waits until no answer is being made
def answer(model: services.KerasModel) -> None:
    state.init(session, loading.DEFAULT_SAMPLE)  # a fragment rerun skips the page's own init
    settings.draw_sliders(model.layers)
    settings.draw_calibration(model)
    settings.draw_advanced(model.layers)
    settings.draw_recipe(model.layers)
    setting = state.setting(session)
    config = setting.config
    pinned = session.get(state.PINNED)
    links.write(session)

    progress = st.empty()
    baseline = views.measure(model.origin or model, services.NO_CONFIG, progress)
    outcome = services.first_answer(model, config)  # whole at once when measured quickly
    a = None if pinned is None else views.measure(model, pinned.config, progress)
    cards = st.empty()
    with cards.container():
        views.metric_cards(outcome, baseline)
    headline = st.empty()
    headline.markdown(f"## {explain.headline(outcome, baseline)}", anchors=False)
    pin_col, words_col = st.columns([1, 4], vertical_alignment="center")
    pin_col.button(
        "Unpin A" if pinned else "Pin as A",
        icon=":material/push_pin:",
        key="pin",
        on_click=pin,
        args=(pinned is None,),
        help="Keep this setting as A and compare it, side by side, with what you set next (B).",
    )
    words_col.caption(f"Setting: **{setting.words}**")
    progress = st.empty()

    compared = st.empty()
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
        path = None if tensor == state.ALL_TENSORS else tensor
        original, optimized = figures.tensor_choice(model.prepared, outcome, path)
        if a is not None:
            st.markdown(f"**B (the sliders):** {setting.words}")
        histogram(original, optimized, config, log_y, "histogram")
        if a is not None:
            st.markdown(f"**A (pinned):** {pinned.words}")
            a_original, a_optimized = figures.tensor_choice(model.prepared, a, path)
            histogram(a_original, a_optimized, pinned.config, log_y, "histogram_a")
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
    if a is not None:
        with compared.container(border=True):
            st.markdown(
                f"**A (pinned):** {pinned.words} — {explain.headline(a, baseline)}  \n"
                f"**B (the sliders):** {setting.words} — {explain.headline(outcome, baseline)}"
            )
            st.dataframe(
                views.compare_rows(a, outcome, baseline),
                hide_index=True,
                width="stretch",
                key="compare_table",
            )

    finetune.draw(model, config)
    services.warm_exports(state.session_id(session), model)


answer(model)
