"""Model Optimization Explorer: prune, cluster and quantize a Keras model and watch the effect.

Run with ``streamlit run app.py``. This entry point sets up the navigation and the session
(defaults, the sample model); the pages live in ``pages/``.
"""

import streamlit as st

from ui import loading, runtime

runtime.keep_keras_session()
st.set_page_config(
    page_title="Model Optimization Explorer", page_icon=":material/compress:", layout="wide"
)
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
