"""Download: the optimized model in every format, each file verified by running it; the recipe."""

import streamlit as st

from optimizers.pipeline import describe
from ui import explain, loading, services, settings, views

session = st.session_state
loading.bootstrap(session)
model = views.require_keras(loading.current(session))
config = settings.config_from_state(session)

st.title("Download")
st.caption(f"{views.model_title(model)} · settings: **{describe(config)}**")

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
