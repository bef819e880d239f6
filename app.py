"""Model Optimization Explorer: prune, cluster and quantize a Keras model and watch the effect.

Run with ``streamlit run app.py``. This entry point sets up the navigation and the session
(defaults, the sample model); the pages live in ``pages/``.
"""

import streamlit as st

from ui import loading, runtime

runtime.keep_keras_session()
# The tab's icon drawn here (Material's "compress"), not named: Streamlit fetches a named
# ":material/...:" page icon from fonts.gstatic.com, which fails offline. The icons on the page
# come from the font Streamlit serves itself.
ICON = (
    f'<svg viewBox="0 0 24 24" fill="{st.get_option("theme.primaryColor")}"><path d="M8 19h3v3h2'
    'v-3h3l-4-4-4 4zm8-15h-3V1h-2v3H8l4 4 4-4zM4 9v2h16V9H4zm0 3h16v2H4z"/></svg>'
)
st.set_page_config(page_title="Model Optimization Explorer", page_icon=ICON, layout="wide")
page = st.navigation(
    [
        st.Page("pages/model.py", title="Model", icon=":material/deployed_code:", default=True),
        st.Page("pages/explore.py", title="Explore", icon=":material/tune:"),
        st.Page("pages/download.py", title="Download", icon=":material/download:"),
        st.Page("pages/tradeoff.py", title="Trade-off", icon=":material/scatter_plot:"),
        st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
    ],
    position="top",
)
# Less empty space between the top navigation bar and the page title.
st.html("<style>[data-testid='stMainBlockContainer'] {padding-top: 3rem}</style>")
loading.bootstrap(st.session_state)
page.run()
