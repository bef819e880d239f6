"""Streamlit's per-run housekeeping that a TensorFlow app cannot afford.

After every script run Streamlit calls ``keras.backend.clear_session()``, meant for apps that
build a new model on each run: it runs a full garbage collection over TensorFlow's millions of
objects and empties TensorFlow's kernel cache, so the next prediction rebuilds its kernels.
Together with its own ``gc.collect(2)`` after each run (turned off in
``.streamlit/config.toml``, ``runner.postScriptGC``), that cost about 0.4 s per slider move here,
several times the work of the answer itself. This app builds models only when one is loaded,
and keeps them, so it skips the Keras part (plain reference counting still frees every array).
"""

from __future__ import annotations


def _clean_problem_modules_but_keras() -> None:
    import sys

    if "matplotlib.pyplot" in sys.modules:  # the rest of what Streamlit cleans, unchanged
        sys.modules["matplotlib.pyplot"].close("all")


def keep_keras_session() -> None:
    """Stop Streamlit from clearing the Keras session after each run (idempotent)."""
    from streamlit.runtime.scriptrunner import script_runner

    script_runner._clean_problem_modules = _clean_problem_modules_but_keras
