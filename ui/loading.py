"""Which model the session works on: the default sample, a chosen sample, or an upload.

Uploads reach the app through the file uploaders' ``on_change`` callbacks, which only queue the
file under ``state.PENDING_MODEL``/``state.PENDING_DATA``; ``apply_pending`` loads it. A queued
file stays queued until it has been applied or refused. Streamlit stops a run at its next
element when the user changes a widget (drops a second file during a long load, say), so the
session's model and the queue change together, with no element drawn in between, and the next
run resumes whatever is still queued. A file that cannot be used leaves the session's model and
settings exactly as they were; its sentence waits under ``state.REFUSED`` until the Model page
shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from functools import partial
from typing import Any, TypeVar

import streamlit as st

import sample_models
from optimizers.datasets import PixelRange
from optimizers.keras_io import InputError
from ui import services, state

T = TypeVar("T")
log = logging.getLogger(__name__)

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


def loaded(session: MutableMapping[str, Any]) -> services.KerasModel | services.TfliteModel:
    """The session's model as it is now, whether or not an upload is queued."""
    return session[state.MODEL]


def current(session: MutableMapping[str, Any]) -> services.KerasModel | services.TfliteModel:
    """The session's model, after any queued upload: a page change may have cut its load short."""
    if queued(session) is not None:
        apply_pending(session)
    return loaded(session)


def ensure_model(session: MutableMapping[str, Any]) -> None:
    """Load the chosen sample on a session's first run, so every page has a model at once."""
    if state.MODEL not in session:
        with st.spinner("Loading the sample model…"):
            state.set_model(session, services.open_sample(state.get(session, state.SAMPLE)))


def queue_upload(widget_key: str, pending_key: str) -> None:
    """``on_change`` of a file uploader: remember the new file for ``apply_pending``; a file
    the user removed before it was loaded is no longer wanted."""
    uploaded = st.session_state.get(widget_key)
    if uploaded is None:
        st.session_state.pop(pending_key, None)
    else:
        st.session_state[pending_key] = (uploaded.name, uploaded.getvalue())


def queued(session: MutableMapping[str, Any]) -> tuple[str, int] | None:
    """Name and size of the upload that waits to be applied (the model first), if any."""
    for key in (state.PENDING_MODEL, state.PENDING_DATA):
        if key in session:
            name, data = session[key]
            return name, len(data)
    return None


def size_words(n: int) -> str:
    """``103 MB``, ``2.3 MB``, ``87 kB``: a file's size as the loading message gives it."""
    if n >= 10**7:
        return f"{n / 1e6:.0f} MB"
    if n >= 10**6:
        return f"{n / 1e6:.1f} MB"
    return f"{max(1, round(n / 1e3))} kB"


def loading_words(name: str, n: int) -> str:
    return f"Loading {name} ({size_words(n)})…"


def pixel_range(session: MutableMapping[str, Any]) -> PixelRange | None:
    """The pixel range chosen for images in data files, or None for the model's default."""
    chosen = state.get(session, state.PIXEL_RANGE)
    return None if chosen == state.AUTO_PIXELS else chosen


def _uploaded_data(session: MutableMapping[str, Any]) -> tuple[str, bytes] | None:
    uploaded = session.get(state.DATA_FILE)
    return None if uploaded is None else (uploaded.name, uploaded.getvalue())


def _refuse(session: MutableMapping[str, Any], pending_key: str, sentence: str) -> None:
    session.pop(pending_key, None)
    session[state.REFUSED] = [*session.get(state.REFUSED, []), sentence]


def _opened(
    session: MutableMapping[str, Any],
    pending_key: str,
    target: object,
    load: Callable[[str, bytes], T],
) -> T | str:
    """What the queued file gave when loaded (for ``target``): a value, or the sentence that
    refuses it. Reading or writing ``st.session_state`` is where Streamlit stops a run that a
    widget change interrupted, so the outcome goes into a plain dict first: the next run finds
    it there instead of loading the file again."""
    name, raw = session[pending_key]
    kept = session.setdefault(state.OPENED, {})
    if pending_key in kept and kept[pending_key][0] is raw and kept[pending_key][1] is target:
        return kept[pending_key][2]
    try:
        result: T | str = load(name, raw)
    except InputError as e:
        result = str(e)
    except Exception as e:  # a bug: log it, but never leave the file queued to fail forever
        log.exception("loading %s failed", name)
        result = f"{name} could not be used ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    kept[pending_key] = (raw, target, result)
    return result


def apply_pending(session: MutableMapping[str, Any]) -> None:
    """Load the queued model and then the queued data; a refusal adds its sentence to
    ``state.REFUSED`` and leaves the session's model as it was."""
    if state.PENDING_MODEL in session:
        _apply_model(session)
    if state.PENDING_DATA in session:
        _apply_data(session)
    session.pop(state.OPENED, None)


def _open_with_data(
    name: str, raw: bytes, data: tuple[str, bytes] | None, pixels: PixelRange | None
) -> tuple[services.KerasModel | services.TfliteModel, tuple[str, bytes] | None]:
    """The uploaded model, with ``data`` when it fits (one preparation, the usual case), and
    the data that went with it."""
    if data is not None:
        try:
            return services.open_upload(name, raw, data, pixels), data
        except InputError:
            pass  # the model alone says whether the model or the data was at fault
    return services.open_upload(name, raw), None


def _apply_model(session: MutableMapping[str, Any]) -> None:
    name, raw = session[state.PENDING_MODEL]
    # Data queued while this model waited, or already in its uploader, is meant for this model.
    data = session.get(state.PENDING_DATA) or _uploaded_data(session)
    pixels = pixel_range(session)
    with st.spinner(loading_words(name, len(raw))):
        opened = _opened(
            session, state.PENDING_MODEL, None, lambda n, r: _open_with_data(n, r, data, pixels)
        )
    if isinstance(opened, str):
        _refuse(session, state.PENDING_MODEL, opened)
        if state.PENDING_DATA in session:
            data_name = session[state.PENDING_DATA][0]
            _refuse(session, state.PENDING_DATA, f"{data_name} was not used, as {name} was refused")
        return
    model, used = opened
    session[state.UPLOADED] = model
    if state.get(session, state.SOURCE) == state.UPLOAD_SOURCE:
        state.set_model(session, model, uploaded=True)
    del session[state.PENDING_MODEL]
    if used is not None and session.get(state.PENDING_DATA) == used:
        del session[state.PENDING_DATA]
    elif used is None and data is not None and isinstance(model, services.KerasModel):
        session[state.PENDING_DATA] = data  # it does not fit: its own sentence will say why


def _apply_data(session: MutableMapping[str, Any]) -> None:
    name, raw = session[state.PENDING_DATA]
    model = loaded(session)
    with st.spinner(f"Evaluating on {name} ({size_words(len(raw))})…"):
        load = partial(services.with_data, model, pixel_range=pixel_range(session))
        new = _opened(session, state.PENDING_DATA, model, load)
    if isinstance(new, str):
        _refuse(session, state.PENDING_DATA, new)
        return
    state.set_model(session, new, uploaded=session.get(state.UPLOADED) is model, same_layers=True)
    del session[state.PENDING_DATA]


def show_refusals(session: MutableMapping[str, Any]) -> None:
    """Each refused upload's sentence, once; a run stopped before it is drawn keeps it."""
    for sentence in session.get(state.REFUSED, []):
        st.error(sentence, icon=":material/error:")
    session.pop(state.REFUSED, None)


def sync_source(session: MutableMapping[str, Any]) -> None:
    """Follow the source choice: the selected sample, or the last uploaded model."""
    model = loaded(session)
    if state.get(session, state.SOURCE) == state.SAMPLE_SOURCE:
        chosen = state.get(session, state.SAMPLE)
        if getattr(model, "sample", None) != chosen:
            with st.spinner("Loading the sample model…"):
                state.set_model(session, services.open_sample(chosen))
    elif state.UPLOADED in session and session[state.UPLOADED] is not model:
        state.set_model(session, session[state.UPLOADED])
