"""Links that carry the settings: on Explore and Download the address bar is always a link to
the view on screen, e.g. ``?sample=digits_cnn&sparsity=0.6&clusters=16&bits=4``.

A parameter's name comes from ``state.LINK_PARAMS`` (the CLI's option names) and the values it
may hold are the ones the page offers (``ui.settings`` and the library's own lists), so a link
can never ask for a setting the page cannot show. Pruning, clustering and quantization are always
written; the advanced settings only when they differ from their defaults.

A session applies the link it was opened with once, before any widget is drawn (``follow``);
after that the pages only write the address bar (``write``). So a slider move is never undone
by an older address that the browser sends back while the new one is on its way, and opening a
link always means a fresh session (the browser reloads the page). A value the page does not
offer is ignored with one sentence. An uploaded model cannot travel in a link: the link then
carries the settings only, and the page says so.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import streamlit as st

import sample_models
from optimizers import clustering, pruning, quantization
from ui import loading, services, settings, state
from ui.state import OFF

# The values each setting may take in a link: exactly the page's choices.
OPTIONS: dict[str, Sequence[Any]] = {
    state.SAMPLE: tuple(s.name for s in sample_models.SAMPLES),
    state.SPARSITY: range(0, settings.MAX_SPARSITY + 1, settings.SPARSITY_STEP),
    state.CLUSTERS: settings.CLUSTER_OPTIONS,
    state.BITS: settings.BIT_OPTIONS,
    state.STRUCTURE: pruning.STRUCTURES,
    state.SCOPE: pruning.SCOPES,
    state.INIT: clustering.INITS,
    state.PRESERVE_SPARSITY: (True, False),
    state.CLUSTER_GRANULARITY: clustering.GRANULARITIES,
    state.QUANT_MODE: quantization.MODES,
    state.QUANT_GRANULARITY: quantization.GRANULARITIES,
}
ALWAYS = (state.SPARSITY, state.CLUSTERS, state.BITS)  # written even at their defaults
LISTED = 10  # a longer list of allowed values is shortened to "first, second, …, last"
SHOWN = 40  # characters of a bad value repeated in its sentence


def link_text(key: str, value: Any) -> str:
    """How setting ``key``'s ``value`` reads in a link: sparsity as a fraction (``0.6``, as the
    CLI takes it), ``off``, ``true``/``false``, layer names separated by commas."""
    if key == state.SPARSITY:
        return f"{value / 100:g}"
    if key == state.SKIP:
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return "off" if value == OFF else str(value)


def same(text: str, option: str) -> bool:
    """Whether a link's ``text`` names ``option``; numbers compare as numbers (``0.60``, ``16.0``)."""
    if text == option:
        return True
    try:
        return float(text) == float(option)
    except ValueError:
        return False


def quoted(text: str) -> str:
    """A value from a link as code in a sentence, short and unable to close its backticks."""
    short = text if len(text) <= SHOWN else text[:SHOWN] + "…"
    return "`" + short.replace("`", "'") + "`"


def allowed(key: str) -> str:
    texts = [link_text(key, o) for o in OPTIONS[key]]
    return ", ".join(texts if len(texts) <= LISTED else [*texts[:2], "…", texts[-1]])


def parse(key: str, text: str, layers: Sequence[str]) -> Any:
    """The value of setting ``key`` that ``text`` names; ``ValueError`` says why there is none."""
    name = state.LINK_PARAMS[key]
    if key == state.SKIP:
        names = [n for n in text.split(",") if n]
        unknown = [n for n in names if n not in layers]
        if unknown:
            raise ValueError(
                f"The link's {name}={quoted(text)} was ignored: this model has no layer "
                f"named {quoted(unknown[0])}."
            )
        return names
    for option in OPTIONS[key]:
        if same(text, link_text(key, option)):
            return option
    raise ValueError(
        f"The link's {name}={quoted(text)} was ignored: {name} is one of {allowed(key)}."
    )


def settings_to_params(session: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters of the view on screen: the sample (not an upload), the three
    techniques, and every advanced setting that is not at its default."""
    params = {}
    sample = getattr(session.get(state.MODEL), "sample", None)
    if sample is not None:
        params[state.LINK_PARAMS[state.SAMPLE]] = sample
    for key, name in state.LINK_PARAMS.items():
        if key == state.SAMPLE:
            continue
        value = state.get(session, key)
        if key in ALWAYS or value != state.DEFAULTS[key]:
            params[name] = link_text(key, value)
    return params


def apply_params(params: Mapping[str, str], session: MutableMapping[str, Any]) -> list[str]:
    """Make the settings a link names the session's settings; one sentence for each value that
    was ignored. The sample comes first, as a new model starts its layer choices afresh; the
    layers to skip are checked against the model the link opens."""
    keys = {name: key for key, name in state.LINK_PARAMS.items()}
    notes = [
        f"The link's parameter {quoted(name)} was ignored: it is not a setting "
        f"(the settings are {', '.join(keys)})."
        for name in params
        if name not in keys
    ]
    # The sample first (it may load another model), the layers to skip last.
    order = sorted(state.LINK_PARAMS, key=lambda k: (k != state.SAMPLE, k == state.SKIP))
    for key in (k for k in order if state.LINK_PARAMS[k] in params):
        layers = getattr(loading.loaded(session), "layers", ())
        try:
            value = parse(key, params[state.LINK_PARAMS[key]], layers)
        except ValueError as e:
            notes.append(str(e))
            continue
        state.put(session, key, value)
        if key == state.SAMPLE:
            state.put(session, state.SOURCE, state.SAMPLE_SOURCE)
            loading.sync_source(session)
    return notes


def follow(session: MutableMapping[str, Any]) -> list[str]:
    """Apply the link this session was opened with, the first time a page that reads links runs;
    the sentences of the values it ignored."""
    if session.get(state.LINK_OPENED):
        return []
    notes = apply_params(st.query_params.to_dict(), session)
    session[state.LINK_OPENED] = True
    return notes


def write(session: Mapping[str, Any]) -> None:
    """Make the address bar a link to the current settings."""
    params = settings_to_params(session)
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def show(notes: Sequence[str], model: services.KerasModel) -> None:
    """The ignored values' sentences, and that an uploaded model stays out of the link."""
    for note in notes:
        st.warning(note, icon=":material/link_off:")
    if model.sample is None:
        st.caption(
            f"The address bar links to these settings, but {model.name} cannot travel in a "
            "link: whoever opens it sees the settings on a bundled sample."
        )
