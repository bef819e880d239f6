"""Which model the session works on: the default sample, a chosen sample, or an upload.

Uploads reach the app through the file uploaders' ``on_change`` callbacks, which only queue the
file under ``state.PENDING_MODEL``/``state.PENDING_DATA``; ``apply_pending`` loads it. A file
that cannot be used leaves the session's model and settings exactly as they were.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import streamlit as st

import sample_models
from optimizers.keras_io import InputError
from ui import services, state

DEFAULT_SAMPLE = sample_models.SAMPLES[0].name


def leave_folder_mode() -> None:
    """Rerun through ``app.py`` if Streamlit ran this page script on its own.

    Streamlit treats a ``pages/`` folder beside the entry script as an old-style multipage app
    until ``st.navigation`` has run once in the process: the first session that opens a page
    URL directly, and every ``AppTest`` rerun, would run the page alone, without ``app.py``'s
    navigation and page config. ``st.navigation`` clears the same flag.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def bootstrap(session: MutableMapping[str, Any]) -> None:
    """Session defaults and a model; ``app.py`` and every page call this first."""
    leave_folder_mode()
    state.init(session, DEFAULT_SAMPLE)
    ensure_model(session)


def current(session: MutableMapping[str, Any]) -> services.KerasModel | services.TfliteModel:
    return session[state.MODEL]


def ensure_model(session: MutableMapping[str, Any]) -> None:
    """Load the chosen sample on a session's first run, so every page has a model at once."""
    if state.MODEL not in session:
        with st.spinner("Loading the sample model…"):
            state.set_model(session, services.open_sample(state.get(session, state.SAMPLE)))


def queue_upload(widget_key: str, pending_key: str) -> None:
    """``on_change`` of a file uploader: remember the new file for ``apply_pending``."""
    uploaded = st.session_state.get(widget_key)
    if uploaded is not None:
        st.session_state[pending_key] = (uploaded.name, uploaded.getvalue())


def _uploaded_data(session: MutableMapping[str, Any]) -> tuple[str, bytes] | None:
    uploaded = session.get(state.DATA_FILE)
    return None if uploaded is None else (uploaded.name, uploaded.getvalue())


def apply_pending(session: MutableMapping[str, Any]) -> str | None:
    """Load a queued model or data upload; returns the error sentence if it was refused."""
    model_file = session.pop(state.PENDING_MODEL, None)
    data_file = session.pop(state.PENDING_DATA, None)
    try:
        if model_file is not None:
            with st.spinner(f"Loading {model_file[0]}…"):
                # A data file already in its uploader goes with the new model.
                model = services.open_upload(*model_file, data_file or _uploaded_data(session))
            state.set_model(session, model, uploaded=True)
            state.put(session, state.SOURCE, state.UPLOAD_SOURCE)
        elif data_file is not None:
            with st.spinner(f"Evaluating on {data_file[0]}…"):
                model = services.with_data(current(session), *data_file)
            uploaded = session.get(state.UPLOADED) is session[state.MODEL]
            state.set_model(session, model, uploaded=uploaded, same_layers=True)
    except InputError as e:
        return str(e)
    return None


def sync_source(session: MutableMapping[str, Any]) -> None:
    """Follow the source choice: the selected sample, or the last uploaded model."""
    model = current(session)
    if state.get(session, state.SOURCE) == state.SAMPLE_SOURCE:
        chosen = state.get(session, state.SAMPLE)
        if getattr(model, "sample", None) != chosen:
            with st.spinner("Loading the sample model…"):
                state.set_model(session, services.open_sample(chosen))
    elif state.UPLOADED in session and getattr(model, "sample", None) is not None:
        state.set_model(session, session[state.UPLOADED])
