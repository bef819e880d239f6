"""The optimization controls, and the one ``OptimizationConfig`` their values describe.

Every choice list comes from the library (``STRUCTURES``, ``INIT_LABELS``, ``BITS``, ...), so
the app can never offer a setting the library does not have. Widget values live in session
state under the keys of ``ui.state``; ``config_from_state`` reads them, so the Download page
builds the same config as the Explore page without drawing any widget.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import streamlit as st

from optimizers import clustering, pruning, quantization
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, describe
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from ui import state
from ui.state import OFF

MAX_SPARSITY = 95  # percent
SPARSITY_STEP = 5
# Left to right = more compression, for all three sliders.
CLUSTER_OPTIONS: tuple[Any, ...] = (OFF, 256, 128, 64, 32, 16, 8, 4, 2)
BIT_OPTIONS: tuple[Any, ...] = (OFF, *sorted(quantization.BITS, reverse=True))
STRUCTURED = "2:4"


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


def config_from_state(session: Mapping[str, Any]) -> OptimizationConfig:
    """The config the current settings describe (every stage may be off)."""

    def get(key: str) -> Any:
        return state.get(session, key)

    prune = None
    if get(state.STRUCTURE) == STRUCTURED:
        prune = PruningConfig(0.5, STRUCTURED)
    elif get(state.SPARSITY) > 0:
        structure = get(state.STRUCTURE)  # unstructured or channels: the slider sets the share
        scope = get(state.SCOPE) if structure == "unstructured" else "per-layer"
        prune = PruningConfig(round(get(state.SPARSITY) / 100, 4), structure, scope)
    cluster = None
    if get(state.CLUSTERS) != OFF:
        cluster = ClusteringConfig(
            int(get(state.CLUSTERS)),
            init=get(state.INIT),
            preserve_sparsity=bool(get(state.PRESERVE_SPARSITY)),
            granularity=get(state.CLUSTER_GRANULARITY),
        )
    quantize = None
    if get(state.BITS) != OFF:
        quantize = QuantizationConfig(
            int(get(state.BITS)), get(state.QUANT_MODE), get(state.QUANT_GRANULARITY)
        )
    return OptimizationConfig(
        pruning=prune,
        clustering=cluster,
        quantization=quantize,
        skip=tuple(get(state.SKIP)),
        overrides=tuple(get(state.OVERRIDES)),
    )


def put_config(session: MutableMapping[str, Any], config: OptimizationConfig) -> None:
    """Set every setting so that ``config_from_state`` gives ``config`` (a stage that is off
    keeps its options); its sparsity and cluster count must be ones the sliders offer."""
    p, c, q = config.pruning, config.clustering, config.quantization
    state.put(session, state.STRUCTURE, p.structure if p else PruningConfig().structure)
    state.put(session, state.SPARSITY, round(100 * p.sparsity) if p and p.sparsity else 0)
    if p:
        state.put(session, state.SCOPE, p.scope)
    state.put(session, state.CLUSTERS, c.clusters if c else OFF)
    if c:
        state.put(session, state.INIT, c.init)
        state.put(session, state.PRESERVE_SPARSITY, c.preserve_sparsity)
        state.put(session, state.CLUSTER_GRANULARITY, c.granularity)
    state.put(session, state.BITS, q.bits if q else OFF)
    if q:
        state.put(session, state.QUANT_MODE, q.mode)
        state.put(session, state.QUANT_GRANULARITY, q.granularity)
    state.put(session, state.SKIP, list(config.skip))
    state.put(session, state.OVERRIDES, config.overrides)


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


def draw_sliders() -> None:
    """The three main controls, side by side, in plain words."""
    session = st.session_state
    structured = state.get(session, state.STRUCTURE) == STRUCTURED
    left, middle, right = st.columns(3, gap="large")
    with left:
        st.slider(
            "Pruning: share of weights set to zero",
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
            "Clustering: shared values per tensor",
            CLUSTER_OPTIONS,
            value=state.get(session, state.CLUSTERS),
            key=state.CLUSTERS,
            format_func=cluster_label,
            help="Each weight is replaced by the nearest of this many shared values (k-means).",
        )
    with right:
        st.select_slider(
            "Quantization: bits per weight",
            BIT_OPTIONS,
            value=state.get(session, state.BITS),
            key=state.BITS,
            format_func=bits_label,
            help="Each weight is rounded to a uniform grid of 2^bits levels. 2, 4, 8 and 16 "
            "bits deploy as they are (LiteRT int2, int4, int8, float16 files); 3, 5, 6 and 7 bits "
            "are simulated in the next wider container, as the Download page says.",
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
            _radio("Scale", state.QUANT_GRANULARITY, quantization.GRANULARITY_LABELS)
            _radio("Grid", state.QUANT_MODE, quantization.MODE_LABELS)
        st.multiselect(
            "Layers to leave untouched",
            list(layers),
            default=[s for s in state.get(session, state.SKIP) if s in layers],
            key=state.SKIP,
            placeholder="None: every eligible layer is optimized",
            help="Often the first and last layers are the most sensitive to compression.",
        )
        overrides = state.get(session, state.OVERRIDES)
        if overrides:
            st.caption(
                "Per-layer settings (from the Trade-off page) are active: "
                + "; ".join(f"{layer}: {describe(t)}" for layer, t in overrides)
                + ". The settings above apply to the other layers."
            )
            st.button(
                "Clear per-layer settings",
                on_click=state.put,
                args=(session, state.OVERRIDES, ()),
                key="clear_overrides",
            )
