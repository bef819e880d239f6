"""Links that carry the setting: on Explore and Download the address bar is always a link to
the view on screen, e.g. ``?sample=digits_cnn&sparsity=0.6&clusters=16&bits=4``.

A link is written from the session's one ``Setting`` and read back into it, so it carries all of
it: the sample, the three techniques, the advanced settings that differ from their defaults, the
layers to skip, each per-layer setting as ``layer.NAME=0.9,4,off`` (sparsity, clusters, bits,
then ``;option=value`` for the options that differ from the library's defaults), and a setting
pinned to compare with as the same parameters prefixed ``a.``.

A parameter's name comes from ``state.LINK_PARAMS`` (the CLI's option names) and the values it
may hold are the ones the page offers (``ui.settings`` and the library's own lists), so a link
can never ask for a setting the page cannot show. Pruning, clustering and quantization are always
written; the advanced settings only when they differ from their defaults.

A session applies the link it was opened with once, before any widget is drawn (``follow``);
after that the pages only write the address bar (``write``). So a slider move is never undone
by an older address that the browser sends back while the new one is on its way, and opening a
link always means a fresh session (the browser reloads the page). A value the page does not
offer is ignored with one sentence. An uploaded or fine-tuned model cannot travel in a link:
the link then carries the settings only, and the page says so.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import streamlit as st

import sample_models
from optimizers import clustering, pruning, quantization
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import Techniques
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from ui import loading, settings, state
from ui.setting import Setting
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
    state.BLOCK_SIZE: (OFF, *quantization.BLOCK_SIZES),
    state.DATA_AWARE: (True, False),
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
    """Whether a link's ``text`` names ``option``; words compare in any case (``True``, ``OFF``),
    numbers as numbers (``0.60``, ``16.0``)."""
    if text.lower() == option.lower():
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


LAYER = "layer."  # prefix of a per-layer setting's parameter
PINNED = "a."  # prefix of the pinned setting's parameters
# A per-layer setting's options, by the link name of the global setting they mirror.
OPTIONS_OF: dict[str, tuple[str, str]] = {  # link name -> (stage, field)
    "structure": ("pruning", "structure"),
    "scope": ("pruning", "scope"),
    "init": ("clustering", "init"),
    "preserve_sparsity": ("clustering", "preserve_sparsity"),
    "cluster_granularity": ("clustering", "granularity"),
    "mode": ("quantization", "mode"),
    "granularity": ("quantization", "granularity"),
}
STAGE_DEFAULTS = {
    "pruning": PruningConfig(),
    "clustering": ClusteringConfig(),
    "quantization": QuantizationConfig(),
}


def techniques_text(t: Techniques) -> str:
    """A per-layer setting as a link writes it: ``0.9,4,off`` then ``;mode=asymmetric`` for
    each option that differs from the library's default."""
    p, c, q = t.pruning, t.clustering, t.quantization
    main = [
        f"{p.sparsity:g}" if p else "0",
        str(c.clusters) if c else "off",
        str(q.bits) if q else "off",
    ]
    extra = [
        f"{name}={link_text(state.PRESERVE_SPARSITY, value) if isinstance(value, bool) else value}"
        for name, (stage, attr) in OPTIONS_OF.items()
        if (config := getattr(t, stage)) is not None
        and (value := getattr(config, attr)) != getattr(STAGE_DEFAULTS[stage], attr)
    ]
    return ";".join([",".join(main), *extra])


def parse_techniques(layer: str, text: str) -> Techniques:
    """The per-layer setting ``text`` names; ``ValueError`` says in one sentence why not."""
    where = f"The link's {quoted(LAYER + layer)}={quoted(text)} was ignored"
    main, *extra = text.split(";")
    values = main.split(",")
    if len(values) != 3:
        raise ValueError(f"{where}: it takes sparsity, clusters and bits, e.g. 0.9,4,off.")
    options: dict[str, dict[str, Any]] = {stage: {} for stage in STAGE_DEFAULTS}
    for item in extra:
        name, _, value = item.partition("=")
        if name not in OPTIONS_OF:
            raise ValueError(f"{where}: {quoted(name)} is not one of {', '.join(OPTIONS_OF)}.")
        stage, attr = OPTIONS_OF[name]
        options[stage][attr] = {"true": True, "false": False}.get(value, value)
    sparsity, clusters, bits = values
    try:
        share = float(sparsity)
        structured = options["pruning"].get("structure", "unstructured") != "unstructured"
        return Techniques(
            PruningConfig(share, **options["pruning"]) if share > 0 or structured else None,
            None if clusters == "off" else ClusteringConfig(int(clusters), **options["clustering"]),
            None if bits == "off" else QuantizationConfig(int(bits), **options["quantization"]),
        )
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {' '.join(str(e).split())[:120]}.") from None


def params(setting: Setting, pinned: Setting | None = None, prefix: str = "") -> dict[str, str]:
    """The query parameters of ``setting``: its sample (when it travels), the three
    techniques, every advanced setting that is not at its default, its per-layer settings, and
    the ``pinned`` setting under ``a.``."""
    found = {}
    if not prefix and setting.model.travels:
        found[state.LINK_PARAMS[state.SAMPLE]] = str(setting.model.sample)
    for key, name in state.LINK_PARAMS.items():
        if key == state.SAMPLE:
            continue
        value = getattr(setting, key)  # a setting's fields are named by their keys
        if key in ALWAYS or value != getattr(Setting(), key):
            found[prefix + name] = link_text(key, value)
    for layer, t in setting.layer_overrides:
        found[prefix + LAYER + layer] = techniques_text(t)
    if pinned is not None:
        found |= params(pinned, prefix=PINNED)
    return found


def settings_to_params(session: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters of the view on screen (``params`` of the session's setting)."""
    return params(state.setting(session), session.get(state.PINNED))


def url(session: Mapping[str, Any], page: str = "explore") -> str:
    """The whole link to the view on screen, as a person can paste it."""
    base = "http://localhost:8501"
    try:
        base = str(st.context.url).split("?")[0].rsplit("/", 1)[0] or base
    except Exception:  # no browser behind this run (AppTest, a report built in a script)
        pass
    return f"{base}/{page}?{urlencode(settings_to_params(session))}"


def read_setting(
    found: Mapping[str, str], base: Setting, layers: Sequence[str], prefix: str = ""
) -> tuple[Setting, list[str]]:
    """``base`` with every setting ``found`` names under ``prefix`` (not the sample); one
    sentence for each value that was ignored."""
    notes, changes, overrides = [], {}, []
    for key, name in state.LINK_PARAMS.items():
        if key == state.SAMPLE or prefix + name not in found:
            continue
        try:
            value = parse(key, found[prefix + name], layers)
        except ValueError as e:
            notes.append(str(e))
            continue
        changes[key] = tuple(value) if key == state.SKIP else value
    for name, text in found.items():
        if not name.startswith(prefix + LAYER):
            continue
        layer = name.removeprefix(prefix + LAYER)
        try:
            if layer not in layers:
                raise ValueError(
                    f"The link's {quoted(name)} was ignored: this model has no layer named "
                    f"{quoted(layer)}."
                )
            overrides.append((layer, parse_techniques(layer, text)))
        except ValueError as e:
            notes.append(str(e))
    if overrides:
        changes[state.OVERRIDES] = tuple(overrides)
    return replace(base, **changes), notes


def is_setting(name: str) -> bool:
    """Whether a query parameter's ``name`` is one a link may carry (the sample only once)."""
    bare = name.removeprefix(PINNED)
    sample = bare == state.LINK_PARAMS[state.SAMPLE]
    return bare.startswith(LAYER) or (
        bare in state.LINK_PARAMS.values() and not (sample and bare != name)
    )


def apply_params(found: Mapping[str, str], session: MutableMapping[str, Any]) -> list[str]:
    """Make the setting a link names the session's setting; one sentence for each value that
    was ignored. The sample comes first, as a new model starts its layer choices afresh; the
    layers are checked against the model the link opens."""
    notes = [
        f"The link's parameter {quoted(name)} was ignored: it is not a setting "
        f"(the settings are {', '.join(state.LINK_PARAMS.values())}, {LAYER}NAME and the same "
        f"prefixed {PINNED})."
        for name in found
        if not is_setting(name)
    ]
    sample = state.LINK_PARAMS[state.SAMPLE]
    if sample in found:
        try:
            state.put(session, state.SAMPLE, parse(state.SAMPLE, found[sample], ()))
            state.put(session, state.SOURCE, state.SAMPLE_SOURCE)
            loading.sync_source(session)
        except ValueError as e:
            notes.append(str(e))
    layers = getattr(loading.loaded(session), "layers", ())
    fresh = Setting(model=state.setting(session).model)  # what the link leaves out is default
    setting, ignored = read_setting(found, fresh, layers)
    notes += ignored
    state.put_setting(session, setting)
    if any(name.startswith(PINNED) for name in found):
        pinned, ignored = read_setting(found, fresh, layers, PINNED)
        notes += ignored
        session[state.PINNED] = pinned
    return notes


def follow(session: MutableMapping[str, Any]) -> list[str]:
    """Apply the link this session was opened with, the first time a page that reads links runs;
    the sentences of the values it ignored."""
    if session.get(state.LINK_OPENED):
        return []
    found = st.query_params.to_dict()
    notes = apply_params(found, session) if found else []  # no link: the session's own setting
    session[state.LINK_OPENED] = True
    return notes


def write(session: Mapping[str, Any]) -> None:
    """Make the address bar a link to the current settings."""
    params = settings_to_params(session)
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def show(notes: Sequence[str], session: Mapping[str, Any]) -> None:
    """The ignored values' sentences, and that an uploaded or fine-tuned model stays out of
    the link."""
    for note in notes:
        st.warning(note, icon=":material/link_off:")
    ref = state.setting(session).model
    if not ref.travels:
        what = "a fine-tuned model" if ref.tuned_from else "an uploaded file"
        st.caption(
            f"The address bar carries these settings only: {ref.name} is {what} and cannot "
            "travel in a link, so whoever opens it sees the settings on a bundled sample, not "
            "this model."
        )
