"""The optimization controls, which read and write the session's one ``Setting``.

Every choice list comes from the library (``STRUCTURES``, ``INIT_LABELS``, ``BITS``, ...), so
the app can never offer a setting the library does not have. Each widget's key is its field of
``ui.setting.Setting`` (``ui.state`` keeps it), so the Download page runs the same config as the
Explore page without drawing any widget.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

import streamlit as st

from optimizers import clustering, pruning, quantization
from optimizers.pipeline import OptimizationConfig, describe
from ui import services, state
from ui.setting import OFF, STRUCTURED, Setting, recipe_words, with_config

MAX_SPARSITY = 95  # percent
SPARSITY_STEP = 5
# Left to right = more compression, for all three sliders.
CLUSTER_OPTIONS: tuple[Any, ...] = (OFF, 256, 128, 64, 32, 16, 8, 4, 2)
BIT_OPTIONS: tuple[Any, ...] = (OFF, *sorted(quantization.BITS, reverse=True))


def short(label: str) -> str:
    """The name part of a library label such as ``"Per tensor: one scale for the whole tensor"``."""
    return label.split(": ", 1)[0]


def detail(label: str) -> str:
    """The explanation part of a library label."""
    return label.split(": ", 1)[-1]


def cluster_label(value: Any) -> str:
    return "Off" if value == OFF else f"{value} values"


def bits_label(value: Any) -> str:
    return "Off (32-bit float)" if value == OFF else f"{value} bits"


def put_config(session: MutableMapping[str, Any], config: OptimizationConfig) -> None:
    """Make ``config`` the session's setting (for the same model); a stage that is off keeps
    its options. Its sparsity and cluster count must be ones the sliders offer."""
    state.put_setting(session, with_config(state.setting(session), config))


def _radio(title: str, key: str, labels: Mapping[str, str], **kwargs: Any) -> None:
    options = list(labels)
    st.radio(
        title,
        options,
        index=state.index_of(st.session_state, key, options),
        key=key,
        format_func=lambda v: short(labels[v]),
        captions=[detail(labels[v]) for v in options],
        **kwargs,
    )


def slider_layers(setting: Setting, layers: Sequence[str]) -> list[str]:
    """The layers the three sliders set: those without a setting of their own and not skipped."""
    own = {layer for layer, _ in setting.layer_overrides} | set(setting.skip_layers)
    return [layer for layer in layers if layer not in own]


def recipe_lines(setting: Setting, layers: Sequence[str]) -> list[str]:
    """One line per layer of a per-layer recipe: what that layer gets and from where."""
    config = setting.config
    own = dict(setting.layer_overrides)
    lines = []
    for layer in layers:
        if layer in setting.skip_layers:
            lines.append(f"**{layer}**: kept float")
        elif layer in own:
            lines.append(f"**{layer}**: {describe(own[layer])} (its own)")
        else:
            lines.append(f"**{layer}**: {describe(config.for_layer(layer))} (the sliders)")
    return lines


def clear_recipe(session: MutableMapping[str, Any]) -> None:
    """``on_click`` of Clear: every layer follows the sliders again."""
    state.put_setting(session, replace(state.setting(session), skip_layers=(), layer_overrides=()))


def draw_recipe(layers: Sequence[str]) -> None:
    """What runs, in plain sight, when some layers do not follow the sliders: a summary, a line
    per layer, and Clear. Nothing when every layer follows the sliders."""
    session = st.session_state
    setting = state.setting(session)
    if not setting.per_layer:
        return
    followers = slider_layers(setting, layers)
    with st.container(border=True):
        text, button = st.columns([5, 1], vertical_alignment="center")
        follow = (
            "the sliders set no layer: clear the recipe to use them"
            if not followers
            else f"the sliders set the other {len(followers)} "
            f"layer{'' if len(followers) == 1 else 's'}"
        )
        text.markdown(
            f":material/layers: **{recipe_words(setting.config).capitalize()}**; {follow}."
        )
        button.button(
            "Clear",
            icon=":material/close:",
            on_click=clear_recipe,
            args=(session,),
            key="clear_recipe",
            help="Remove every per-layer setting and layer kept float: all layers follow the "
            "sliders.",
        )
        with st.expander("Each layer's setting"):
            st.markdown("\n".join(f"- {line}" for line in recipe_lines(setting, layers)))


def draw_sliders(layers: Sequence[str] = ()) -> None:
    """The three main controls, side by side, in plain words; under a per-layer recipe their
    labels say they set only the other layers."""
    session = st.session_state
    setting = state.setting(session)
    structured = setting.pruning_structure == STRUCTURED
    others = " (other layers)" if setting.per_layer and layers else ""
    unit = "tensor" if setting.cluster_granularity == "per-tensor" else "channel"
    left, middle, right = st.columns(3, gap="large")
    with left:
        st.slider(
            f"Pruning: share of weights set to zero{others}",
            0,
            MAX_SPARSITY,
            value=state.get(session, state.SPARSITY),
            step=SPARSITY_STEP,
            format="%d%%",
            key=state.SPARSITY,
            disabled=structured,
            help="The smallest-magnitude weights of every eligible tensor become exactly zero "
            "(with channel pruning: this share of each layer's channels is removed)."
            + (" 2:4 structured pruning always removes 50%." if structured else ""),
        )
    with middle:
        st.select_slider(
            f"Clustering: shared values per {unit}{others}",
            CLUSTER_OPTIONS,
            value=state.get(session, state.CLUSTERS),
            key=state.CLUSTERS,
            format_func=cluster_label,
            help="Each weight is replaced by the nearest of this many shared values (k-means).",
        )
    with right:
        st.select_slider(
            f"Quantization: bits per weight{others}",
            BIT_OPTIONS,
            value=state.get(session, state.BITS),
            key=state.BITS,
            format_func=bits_label,
            help="Each weight is rounded to a uniform grid of 2^bits levels. 2, 4, 8 and 16 "
            "bits deploy as they are (LiteRT int2, int4, int8, float16 files); 3, 5, 6 and 7 bits "
            "are simulated in the next wider container, as the Download page says.",
        )


def draw_calibration(model: services.KerasModel) -> None:
    """The *Use calibration data* switch, and which data calibrates: a sample's training
    split, or the training data given for an upload under Fine-tune. Without such data the
    switch is off and says why; data that is the evaluation data is refused in one sentence."""
    session = st.session_state
    kept = session.get(state.FT_TRAIN)
    train = kept[1] if kept is not None and kept[0] == model.key else None
    train = train or services.sample_training_data(model)
    if train is None and state.get(session, state.DATA_AWARE):
        state.put(session, state.DATA_AWARE, False)
    st.toggle(
        "Use calibration data",
        value=state.get(session, state.DATA_AWARE),
        key=state.DATA_AWARE,
        disabled=train is None,
        help="Prune, cluster and round each layer knowing the inputs it sees on training "
        "samples: the error of each weight is made up by the weights not yet rounded, pruned "
        "or clustered (GPTQ, SparseGPT), clipping and shared values are chosen for the layer's "
        "outputs, and each output keeps its mean (bias correction). No training.",
    )
    if train is None:
        first = "" if model.has_labels else "add labelled evaluation data on the Model page, then "
        st.caption(
            f"To calibrate an uploaded model, {first}give its training data under Fine-tune."
        )
        return
    if not state.get(session, state.DATA_AWARE):
        return
    bar = st.empty()

    def on_batch(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Reading each layer's inputs: batch {done} of {total}")

    try:
        prepared = services.calibrate(model, train, on_batch)
    except ValueError as e:
        bar.empty()
        state.put(session, state.DATA_AWARE, False)
        st.error(f"{str(e)[:1].upper()}{str(e)[1:]}.")
        return
    bar.empty()
    assert prepared.calibration is not None
    st.caption(
        f"Calibrated on {prepared.calibration.words}; measured on "
        f"{model.data_name or 'no evaluation data'}."
    )


def draw_advanced(layers: Sequence[str]) -> None:
    """Technique options and layers to leave alone, in an expander."""
    session = st.session_state
    unstructured = state.get(session, state.STRUCTURE) == "unstructured"
    with st.expander("Advanced settings"):
        prune_col, cluster_col, quant_col = st.columns(3, gap="large")
        with prune_col:
            st.markdown("**Pruning**")
            _radio("Structure", state.STRUCTURE, pruning.STRUCTURE_LABELS)
            _radio("Scope", state.SCOPE, pruning.SCOPE_LABELS, disabled=not unstructured)
        with cluster_col:
            st.markdown("**Clustering**")
            st.selectbox(
                "Initialization",
                clustering.INITS,
                index=state.index_of(session, state.INIT, clustering.INITS),
                key=state.INIT,
                format_func=lambda v: short(clustering.INIT_LABELS[v]),
                help=" ".join(clustering.INIT_LABELS.values()),
            )
            _radio("Shared values", state.CLUSTER_GRANULARITY, clustering.GRANULARITY_LABELS)
            st.toggle(
                "Keep pruned zeros at zero",
                value=state.get(session, state.PRESERVE_SPARSITY),
                key=state.PRESERVE_SPARSITY,
                help="Zero counts as one of the shared values, so clustering keeps the sparsity.",
            )
        with quant_col:
            st.markdown("**Quantization**")
            clustered = state.get(session, state.CLUSTERS) != OFF
            _radio(
                "Scale",
                state.QUANT_GRANULARITY,
                quantization.GRANULARITY_LABELS,
                disabled=clustered,
                help="With clustering on, the scale follows the shared values (one scale per "
                "tensor or per channel, as *Shared values* says), so quantizing keeps every "
                "shared value and adds none."
                if clustered
                else None,
            )
            _radio("Grid", state.QUANT_MODE, quantization.MODE_LABELS)
            bits = state.get(session, state.BITS)
            blockwise = not clustered and quantization.takes_blocks(
                quantization.BLOCK_BITS if bits == OFF else int(bits),
                state.get(session, state.QUANT_MODE),
                state.get(session, state.QUANT_GRANULARITY),
            )
            blocks = (OFF, *quantization.BLOCK_SIZES)
            st.selectbox(
                "Blocks",
                blocks,
                index=state.index_of(session, state.BLOCK_SIZE, blocks),
                key=state.BLOCK_SIZE,
                format_func=lambda v: "Off: one scale per channel" if v == OFF else f"{v} inputs",
                disabled=not blockwise,
                help="Each output channel of a Dense kernel gets one scale per block of this many "
                "inputs (LiteRT's blockwise int4 weights, with float16 scales). Only for "
                f"symmetric per-channel grids of at most {quantization.BLOCK_BITS} bits, without "
                "clustering. Kernels whose inputs are not a whole number of blocks, and "
                "convolutions, keep one scale per channel.",
            )
        st.multiselect(
            "Layers to leave untouched",
            list(layers),
            default=[s for s in state.get(session, state.SKIP) if s in layers],
            key=state.SKIP,
            placeholder="None: every eligible layer is optimized",
            help="Often the first and last layers are the most sensitive to compression.",
        )
