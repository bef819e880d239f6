"""Download: the optimized model in every format, each file verified by running it; the recipe."""

from functools import partial

import streamlit as st

from optimizers.pipeline import describe
from ui import explain, links, loading, report, services, settings, state, views

session = st.session_state
loading.bootstrap(session)
ignored = links.follow(session)
model = views.require_keras(loading.current(session))
config = settings.config_from_state(session)
links.write(session)

st.title("Download")
st.caption(f"{views.model_title(model)} · settings: **{describe(config)}**")
links.show(ignored, model)

result = services.compare(model, config)
recipe = services.recipe_json(config)
views.metric_cards(result.outcome, result.baseline)

st.subheader("Files, verified")
st.write(
    "Each file below was written, loaded back (LiteRT's interpreter for `.tflite`, Keras for "
    "`.keras`) and run on the evaluation data before it is offered, so its accuracy is the "
    "file's own, measured, next to the preview's. " + explain.container(config.quantization)
)
exports = views.verified_exports(model, config)
views.export_table(exports)
views.latency_note()
views.export_warnings(exports, config)
views.export_buttons(model, exports, config)

st.subheader("Report")
st.write(
    "One page for whoever decides: the headline, these figures, the weight histogram, the "
    "verified files and the recipe, in an HTML file that opens offline and prints on one page."
)
shown = state.get(session, state.HIST_TENSOR)
st.download_button(
    "Download report",
    partial(  # written when the button is clicked
        report.build,
        model,
        config,
        result,
        exports,
        links.settings_to_params(session),
        None if shown == state.ALL_TENSORS else shown,
        state.get(session, state.LOG_Y),
    ),
    file_name=f"{model.stem}_report.html",
    mime="text/html",
    icon=":material/summarize:",
    on_click="ignore",
    key="download_report",
)

st.subheader("Recipe")
st.write("The settings as JSON; the command line applies them to any model and writes any format:")
st.code(
    f"python -m optimizers export {model.name} --recipe {model.stem}_recipe.json "
    f"--format tflite-int8-dynamic --output {model.stem}_optimized.tflite",
    language="bash",
    wrap_lines=True,
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
    st.code(recipe, language="json")
