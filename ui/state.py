"""Every session-state key of the app, in one place, with their defaults.

A session's choices live in ``st.session_state`` only (never in module globals), so two browser
tabs never see each other's model or settings. The user's optimization setting is one value,
``ui.setting.Setting``, under ``SETTING``: the pages, the address bar, the report and the recipe
all read it (``setting``), and nothing else holds a copy.

Streamlit drops a widget's value when the page that draws it is not shown, but the settings
must survive a trip to the Download page. So at the start of every run (``init``) each live
widget value is copied into the ``Setting`` (its field has the widget's key) or, for the other
widgets listed in ``DEFAULTS``, to a saved key; widgets are drawn with that value as their
default (``get``). Code never assigns a live widget key: it deletes it and stores the new value
(``put``, ``put_setting``), so the widget starts again from that value. (Assigning widget keys
on every run races with a slider that is still moving, and leaves stale values behind.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from optimizers.finetune import FinetuneConfig
from optimizers.sweep import Grid
from ui.setting import FIELDS, OFF, ModelRef, Setting, config_words

# --- the model the session works on (not widgets) ---
MODEL = "model"  # services.KerasModel | services.TfliteModel
UPLOADED = "uploaded_model"  # the last model loaded from an upload, restored with SOURCE
PENDING_MODEL = "pending_model"  # (file name, bytes) of an upload not yet loaded
PENDING_DATA = "pending_data"  # (file name, bytes) of evaluation data not yet loaded
OPENED = "opened_uploads"  # pending key -> (bytes, target, model or refusal), see ui/loading.py
REFUSED = "refused_uploads"  # sentences of refused uploads that the Model page has yet to show
ASKED = "asked_formats"  # {(model key, format)}: files made only when asked, asked for here

# --- widgets: Model page ---
SOURCE = "source"  # SAMPLE_SOURCE or UPLOAD_SOURCE
SAMPLE = "sample"  # name of the chosen bundled sample
MODEL_FILE = "model_file"  # file uploader: model
DATA_FILE = "data_file"  # file uploader: evaluation data
PIXEL_RANGE = "pixel_range"  # how images of a data .zip are scaled: AUTO_PIXELS or a range
INSPECT_TENSOR = "inspect_tensor"  # tensor shown on the Model page

# --- the user's setting (ui/setting.py): its fields are these widgets' keys ---
SETTING = "setting"  # ui.setting.Setting
SESSION_ID = "session_id"  # a random id: which background jobs this session asked for
APPLIED = "applied_recipe"  # the sentence Explore shows once, after Trade-off applied a recipe
PINNED = "pinned_setting"  # the Setting pinned as "A" to compare with the sliders ("B"), or None
SPARSITY = "sparsity"  # percent, 0..95
CLUSTERS = "clusters"  # OFF or an int
BITS = "bits"  # OFF or an int
STRUCTURE = "pruning_structure"
SCOPE = "pruning_scope"
INIT = "cluster_init"
PRESERVE_SPARSITY = "preserve_sparsity"
CLUSTER_GRANULARITY = "cluster_granularity"
QUANT_MODE = "quant_mode"
QUANT_GRANULARITY = "quant_granularity"
BLOCK_SIZE = "block_size"  # OFF or inputs per block of a blockwise grid
DATA_AWARE = "data_aware"  # prune, cluster and round with calibration data
SKIP = "skip_layers"

OVERRIDES = "layer_overrides"  # not a widget: ((layer, pipeline.Techniques), ...), see Trade-off

# --- widgets: the Trade-off page (its grid: percents, cluster and bit options as the sliders') ---
SWEEP_SPARSITIES = "sweep_sparsities"
SWEEP_CLUSTERS = "sweep_clusters"
SWEEP_BITS = "sweep_bits"
BUDGET = "budget"  # accuracy points the recommended recipe may lose
FRAGILE_LAYER = "fragile_layer"  # the layer the sensitivity actions apply to
LAYER_SETTING = "layer_setting"  # index of the setting to give that layer

# --- widgets: the histogram on the Explore page ---
HIST_TENSOR = "hist_tensor"  # ALL_TENSORS or a tensor path
LOG_Y = "log_y"

# --- widgets: the Learn page's own sliders, on its 16x16 example tensor ---
LEARN_SPARSITY = "learn_sparsity"  # percent
LEARN_CLUSTERS = "learn_clusters"
LEARN_BITS = "learn_bits"

# --- fine-tuning on the Explore page (ui/finetune.py) ---
FT_EPOCHS = "finetune_epochs"  # widget
FT_LEARNING_RATE = "finetune_learning_rate"  # widget
FT_DATA_FILE = "finetune_data_file"  # file uploader: training data for an uploaded model
FT_TRAIN = "finetune_train"  # (model key, services.TrainingData) uploaded for that model
FT_REFUSED = "finetune_refused"  # (digest, sentence) of the training file last refused
FT_JOB = "finetune_job"  # ui.finetune.Job: the session's fine-tuning run, running or done

# --- links: the query parameter that carries each setting (ui/links.py), named as the CLI's
# options are ---
LINK_PARAMS: dict[str, str] = {
    SAMPLE: "sample",
    SPARSITY: "sparsity",
    CLUSTERS: "clusters",
    BITS: "bits",
    STRUCTURE: "structure",
    SCOPE: "scope",
    INIT: "init",
    PRESERVE_SPARSITY: "preserve_sparsity",
    CLUSTER_GRANULARITY: "cluster_granularity",
    QUANT_MODE: "mode",
    QUANT_GRANULARITY: "granularity",
    BLOCK_SIZE: "block_size",
    DATA_AWARE: "data_aware",
    SKIP: "skip",
}
LINK_OPENED = "link_opened"  # set once the session has applied the link it was opened with

ALL_TENSORS = "all"
SAMPLE_SOURCE, UPLOAD_SOURCE = "sample", "upload"
AUTO_PIXELS = "auto"  # datasets' default pixel range for the model

# Defaults of the optimization settings are ``Setting()``'s, from the library's config defaults.
DEFAULTS: dict[str, Any] = {
    SOURCE: SAMPLE_SOURCE,
    SAMPLE: None,  # ``init`` uses the first bundled sample
    PIXEL_RANGE: AUTO_PIXELS,
    **{key: getattr(Setting(), key) for key in FIELDS},
    SWEEP_SPARSITIES: [round(100 * s) for s in Grid().sparsities],
    SWEEP_CLUSTERS: [OFF if k is None else k for k in Grid().clusters],
    SWEEP_BITS: [OFF if b is None else b for b in Grid().bits],
    BUDGET: 1.0,
    FRAGILE_LAYER: None,
    LAYER_SETTING: 0,
    HIST_TENSOR: ALL_TENSORS,
    LOG_Y: False,
    LEARN_SPARSITY: 50,
    LEARN_CLUSTERS: 8,
    LEARN_BITS: 4,
    FT_EPOCHS: FinetuneConfig().epochs,
    FT_LEARNING_RATE: FinetuneConfig().learning_rate,
}


SAVED_PREFIX = "saved:"


def saved(key: str) -> str:
    """The key under which the value of widget ``key`` outlives the widget."""
    return SAVED_PREFIX + key


def init(session: MutableMapping[str, Any], default_sample: str) -> None:
    """Keep every live widget value (in the ``Setting`` or a saved key); fill in defaults for
    the ones never set."""
    if SETTING not in session:
        session[SETTING] = Setting()
        session[PINNED] = None
    live = {key: session[key] for key in FIELDS if key in session}
    if SKIP in live:
        live[SKIP] = tuple(live[SKIP])
    if any(getattr(session[SETTING], key) != value for key, value in live.items()):
        session[SETTING] = replace(session[SETTING], **live)
    for key, default in DEFAULTS.items():
        if key in FIELDS:
            continue
        if key in session:
            session[saved(key)] = session[key]
        elif saved(key) not in session:
            value = default_sample if key == SAMPLE else default
            session[saved(key)] = list(value) if isinstance(value, list) else value


def session_id(session: MutableMapping[str, Any]) -> str:
    """This session's id, made on first use (background jobs are asked for under it)."""
    return session.setdefault(SESSION_ID, uuid.uuid4().hex)


def asked(session: Mapping[str, Any], model_key: str) -> set[str]:
    """The formats this session asked to be made for the model ``model_key`` (those made only
    when asked, ``services.made_when_asked``): made for its every setting from then on."""
    return {fmt for key, fmt in session.get(ASKED, ()) if key == model_key}


def ask(session: MutableMapping[str, Any], model_key: str, fmt: str) -> None:
    """Ask for ``fmt``'s files of the model ``model_key`` (a button's callback)."""
    session[ASKED] = {*session.get(ASKED, ()), (model_key, fmt)}


def setting(session: Mapping[str, Any]) -> Setting:
    """The session's setting: what runs, what the address bar and the report say."""
    return session[SETTING]


def put_setting(session: MutableMapping[str, Any], new: Setting) -> None:
    """Make ``new`` the session's setting; every control restarts from it when next drawn."""
    for key in FIELDS:
        if key in session:
            del session[key]
    session[SETTING] = new


def get(session: Mapping[str, Any], key: str) -> Any:
    """The current value of setting ``key``, whether or not its widget is on this page."""
    if key in FIELDS:
        return getattr(session[SETTING], key)
    return session[saved(key)]


def index_of(session: Mapping[str, Any], key: str, options: Sequence[Any]) -> int:
    """Position of setting ``key`` among a widget's ``options`` (the first if it is not there)."""
    value = get(session, key)
    return list(options).index(value) if value in options else 0


def put(session: MutableMapping[str, Any], key: str, value: Any) -> None:
    """Change a setting from code; its widget restarts from ``value`` when next drawn."""
    if key in session:
        del session[key]
    if key in FIELDS:
        session[SETTING] = replace(session[SETTING], **{key: value})
    else:
        session[saved(key)] = value


def set_model(
    session: MutableMapping[str, Any],
    model: Any,
    *,
    uploaded: bool = False,
    same_layers: bool = False,
) -> None:
    """Make ``model`` the session's model; per-model widget values start afresh unless the
    model has ``same_layers`` (the same model with other evaluation data)."""
    session[MODEL] = model
    if uploaded:
        session[UPLOADED] = model
    session[SETTING] = replace(session[SETTING], model=model_ref(model))
    if not same_layers:
        put(session, SKIP, ())
        put(session, OVERRIDES, ())
        session[PINNED] = None
        put(session, FRAGILE_LAYER, None)
        put(session, HIST_TENSOR, ALL_TENSORS)
        if INSPECT_TENSOR in session:
            del session[INSPECT_TENSOR]


def model_ref(model: Any) -> ModelRef:
    """Which model ``model`` (a ``services.KerasModel`` or ``TfliteModel``) is, in a setting."""
    origin = getattr(model, "origin", None)
    tuned_from = None
    if origin is not None:
        tuned_from = f"{origin.name} at {config_words(model.tuned_toward)}"
    return ModelRef(model.name, getattr(model, "sample", None), tuned_from)
