"""Download: the optimized model in every format, each file verified by running it; the recipe."""

import itertools
from datetime import datetime

import streamlit as st

from optimizers.delivery import Exported
from ui import downloads, explain, links, loading, report, services, settings, state, views

POLL_SECONDS = 0.25  # the page looks again this often, and as soon as a file is made
session = st.session_state
loading.bootstrap(session)
ignored = links.follow(session)
model = views.require_keras(loading.current(session))
setting = state.setting(session)
config = setting.config
links.write(session)

st.title("Download")
st.caption(f"{views.model_title(model)} · setting: **{setting.words}**")
links.show(ignored, session)
settings.draw_recipe(model.layers)

formats = downloads.download_order(config)
asked = state.asked(session, model.key)
later = [f for f in formats if services.made_when_asked(model, f) and f not in asked]
formats = [f for f in formats if f not in later]
# Ask for the files first, so that their conversion runs while the rest of the page is drawn.
services.exports(state.session_id(session), model, config, formats)
result = services.compare(model, config)
recipe = services.recipe_json(config)
views.metric_cards(result.outcome, result.baseline)

st.subheader("Files, verified")
st.write(
    "Each file below was written, loaded back (LiteRT's interpreter for `.tflite`, Keras for "
    "`.keras`) and run on the evaluation data before it is offered, so its accuracy is the "
    "file's own, measured, next to the preview's. Each is offered as soon as it is verified, "
    "the one that holds your bit width first; then they are timed together. "
    + explain.container(config.grid)
)
budget = float(state.get(session, state.BUDGET))
pinned = session.get(state.PINNED)
shown = state.get(session, state.HIST_TENSOR)
tensor, log_y = None if shown == state.ALL_TENSORS else shown, state.get(session, state.LOG_Y)
link = links.url(session, "download")


def files(exports: dict, waiting: dict, drawing: int) -> None:
    """The files as far as they are made: table, advice, buttons; the report once all are
    timed. ``drawing`` counts this run's drawings of them (their buttons' keys differ)."""
    float_accuracy = result.baseline.accuracy
    advice = (
        None if waiting else explain.recommend_file(exports, float_accuracy, model.stem, budget)
    )
    if advice is None:
        st.info(
            "The recommended file follows once every file is verified and timed.",
            icon=":material/hourglass_top:",
        )
    else:
        st.info(advice, icon=":material/recommend:")
    unmade = [f for f in later if f not in exports]  # another session may have asked
    downloads.export_table(exports, waiting | dict.fromkeys(unmade, downloads.WHEN_ASKED))
    downloads.latency_note()
    downloads.export_warnings(exports, config)
    recommended = (
        formats[0] if waiting else explain.recommended_format(exports, float_accuracy, budget)
    )
    downloads.export_buttons(
        model,
        exports,
        recommended,
        waiting,
        drawing,
        unmade,
        lambda f: state.ask(session, model.key, f),
    )

    st.subheader("Report")
    st.write(
        "One page for whoever decides: the recommendation, the headline, these figures, the "
        "weight histogram and the verified files, in an HTML file that opens offline and "
        "prints on one A4 page, with the recipe as an appendix."
    )
    if waiting:
        st.caption("The report is offered once every file is verified and timed.")
        return
    compared = None if pinned is None else (pinned, services.compare(model, pinned.config))
    st.download_button(
        "Download report",
        lambda: report.build(  # written (and dated) when the button is clicked
            model,
            setting,
            result,
            exports,
            link,
            recipe,
            recommendation=advice or "",
            created=datetime.now(),
            tensor=tensor,
            log_y=log_y,
            pinned=compared,
        ),
        file_name=f"{model.stem}_report.html",
        mime="text/html",
        icon=":material/summarize:",
        on_click="ignore",
        key=f"download_report_{drawing}",
    )


area = st.empty()  # the files: drawn last, below, and again each time one more is ready

# The recipe without st.code: its highlighter, 1.5 MB of script loaded on the page's first code
# block (st.json's viewer is 0.1 MB), held chromium 0.4 s before it drew the first file.
st.subheader("Recipe")
st.write("The settings as JSON; the command line applies them to any model and writes any format:")
st.markdown(
    f"`python -m optimizers export {model.name} --recipe {model.stem}_recipe.json "
    f"--format tflite-int8-dynamic --output {model.stem}_optimized.tflite`"
)
st.download_button(
    "Download recipe (.json)",
    recipe,
    file_name=f"{model.stem}_recipe.json",
    mime="application/json",
    icon=":material/description:",
    on_click="ignore",
    key="download_recipe",
)
with st.expander("Show recipe"):
    st.json(recipe)

# The server follows the files itself until every one is timed: a page whose browser stopped
# asking (a timer's tick lost) would otherwise wait forever. Any click ends this run at its next
# look, as it ends every run.
drawn = None
for drawing in itertools.count():
    seen = services.CONVERSIONS.finished
    exports, waiting = services.exports(state.session_id(session), model, config, formats)
    # What is ready (and its gzip size, measured meanwhile), what the rest wait for.
    sizes = [e.gzip_bytes if isinstance(e, Exported) else e for e in exports.values()]
    now = tuple(zip(exports, sizes, strict=True)), waiting
    if now != drawn:
        drawn = now
        with area.container():
            files(exports, waiting, drawing)
    if not waiting:
        break
    services.CONVERSIONS.wait(seen, POLL_SECONDS)
