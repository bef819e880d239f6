"""Links that carry the settings: the pure functions on a plain session, then the pages."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

import sample_models
from optimizers import clustering, quantization
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, Techniques
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from ui import links, services, settings, state

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
EXPLORE, DOWNLOAD = "pages/explore.py", "pages/download.py"
DEFAULT = sample_models.SAMPLES[0]
OTHER = sample_models.SAMPLES[1]


def session(sample: str = DEFAULT.name) -> dict[str, Any]:
    """A fresh session as ``loading.bootstrap`` leaves it, on a bundled sample."""
    s: dict[str, Any] = {}
    state.init(s, DEFAULT.name)
    state.put(s, state.SAMPLE, sample)
    state.set_model(s, services.open_sample(sample))
    return s


def names(**params: Any) -> dict[str, str]:
    """Query parameters by state key, e.g. ``names(SPARSITY="0.6")``."""
    return {state.LINK_PARAMS[getattr(state, k)]: v for k, v in params.items()}


# --- writing ---


def test_a_fresh_session_links_its_sample_and_the_three_techniques() -> None:
    assert links.settings_to_params(session()) == {
        "sample": DEFAULT.name,
        "sparsity": "0",
        "clusters": "off",
        "bits": "off",
    }


def test_advanced_settings_are_written_only_when_not_default() -> None:
    s = session()
    state.put(s, state.QUANT_MODE, "asymmetric")
    state.put(s, state.PRESERVE_SPARSITY, False)
    state.put(s, state.SKIP, ["conv", "dense"])
    params = links.settings_to_params(s)
    assert params["mode"] == "asymmetric"
    assert params["preserve_sparsity"] == "false"
    assert params["skip"] == "conv,dense"
    assert "scope" not in params and "init" not in params


# --- reading: every good link reproduces its settings ---


SETTINGS = [
    {state.SPARSITY: 60, state.CLUSTERS: 16, state.BITS: 4},
    {state.SPARSITY: 95, state.CLUSTERS: 2, state.BITS: 2},
    {state.SPARSITY: 5, state.CLUSTERS: state.OFF, state.BITS: 16},
    {
        state.STRUCTURE: "2:4",
        state.INIT: "kmeans++",
        state.CLUSTER_GRANULARITY: "per-channel",
        state.QUANT_GRANULARITY: "per-tensor",
        state.QUANT_MODE: "asymmetric",
        state.PRESERVE_SPARSITY: False,
        state.SCOPE: "global",
        state.CLUSTERS: 8,
        state.BITS: 8,
        state.SKIP: ["dense"],
    },
    {state.SPARSITY: 50, state.BITS: 4, state.BLOCK_SIZE: 32, state.DATA_AWARE: True},
]


@pytest.mark.parametrize("changes", SETTINGS)
def test_a_link_round_trips_to_the_same_config(changes: dict[str, Any]) -> None:
    source = session(OTHER.name)
    for key, value in changes.items():
        if key == state.SKIP:
            value = [source[state.MODEL].layers[0]]
        state.put(source, key, value)
    params = links.settings_to_params(source)
    target = session()
    assert links.apply_params(params, target) == []
    assert target[state.MODEL].sample == OTHER.name
    assert state.setting(target).config == state.setting(source).config
    assert links.settings_to_params(target) == params


def test_numbers_may_be_written_in_any_form() -> None:
    s = session()
    assert links.apply_params({"sparsity": "0.60", "clusters": "16.0", "bits": "04"}, s) == []
    assert (state.get(s, state.SPARSITY), state.get(s, state.CLUSTERS)) == (60, 16)
    assert state.get(s, state.BITS) == 4


def test_words_may_be_written_in_any_case() -> None:
    s = session()
    params = {"data_aware": "True", "clusters": "OFF", "granularity": "Per-Tensor"}
    assert links.apply_params(params, s) == []
    assert state.get(s, state.DATA_AWARE) is True and state.get(s, state.CLUSTERS) == "Off"
    assert state.get(s, state.QUANT_GRANULARITY) == "per-tensor"


def test_every_choice_the_page_offers_can_be_linked() -> None:
    offered = {
        state.CLUSTERS: settings.CLUSTER_OPTIONS,
        state.BITS: settings.BIT_OPTIONS,
        state.INIT: clustering.INITS,
        state.QUANT_MODE: quantization.MODES,
        state.QUANT_GRANULARITY: quantization.GRANULARITIES,
        state.BLOCK_SIZE: (state.OFF, *quantization.BLOCK_SIZES),
        state.DATA_AWARE: (True, False),
    }
    for key, options in offered.items():
        for option in options:
            s = session()
            notes = links.apply_params({state.LINK_PARAMS[key]: links.link_text(key, option)}, s)
            assert notes == [] and state.get(s, key) == option


# --- reading: every bad value is ignored with one sentence ---


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (names(SPARSITY="0.63"), "sparsity is one of 0, 0.05, …, 0.95"),
        (names(SPARSITY="1.5"), "sparsity is one of 0, 0.05, …, 0.95"),
        (names(SPARSITY="-0.1"), "sparsity=`-0.1` was ignored"),
        (names(SPARSITY="nan"), "sparsity=`nan` was ignored"),
        (names(SPARSITY="sixty"), "sparsity=`sixty` was ignored"),
        (names(CLUSTERS="7"), "clusters is one of off, 256, 128, 64, 32, 16, 8, 4, 2"),
        (names(CLUSTERS="0"), "clusters=`0` was ignored"),
        (names(BITS="1"), "bits is one of off, 16, 8, 7, 6, 5, 4, 3, 2"),
        (names(BITS="32"), "bits=`32` was ignored"),
        (names(STRUCTURE="3:4"), "structure=`3:4` was ignored"),
        (names(INIT="random"), "init is one of linear, density, kmeans++"),
        (names(PRESERVE_SPARSITY="yes"), "preserve_sparsity is one of true, false"),
        (names(SAMPLE="imagenet"), "sample is one of digits_cnn, digits_mlp, breast_cancer_mlp"),
        (names(SKIP="dense,nonsense"), "this model has no layer named `nonsense`"),
        ({"zoom": "2"}, "parameter `zoom` was ignored: it is not a setting"),
        (names(BITS="`" + "x" * 100), "bits=`'xxxxxxxxx"),
    ],
)
def test_a_bad_value_is_ignored_with_one_sentence(params: dict[str, str], expected: str) -> None:
    s = session()
    before = links.settings_to_params(s)
    config = state.setting(s).config
    notes = links.apply_params(params, s)
    assert len(notes) == 1 and expected in notes[0], notes
    assert "\n" not in notes[0] and notes[0].endswith(".")
    assert links.settings_to_params(s) == before
    assert state.setting(s).config == config


def test_good_values_beside_a_bad_one_still_apply() -> None:
    s = session()
    notes = links.apply_params(names(SPARSITY="0.6", CLUSTERS="7", BITS="4"), s)
    assert len(notes) == 1 and "clusters" in notes[0]
    assert (state.get(s, state.SPARSITY), state.get(s, state.BITS)) == (60, 4)
    assert state.get(s, state.CLUSTERS) == state.OFF


def test_layers_to_skip_are_checked_against_the_linked_sample() -> None:
    default_layers = services.open_sample(DEFAULT.name).layers
    layer = next(n for n in services.open_sample(OTHER.name).layers if n not in default_layers)
    s = session()
    assert links.apply_params(names(SAMPLE=OTHER.name, SKIP=layer), s) == []
    assert state.get(s, state.SKIP) == (layer,)


# --- per-layer settings and a pinned setting travel too ---


def recipe(layers: tuple[str, ...]) -> OptimizationConfig:
    """A per-layer recipe as the Trade-off page recommends one, with unusual options."""
    first, *rest = layers
    return OptimizationConfig(
        pruning=PruningConfig(0.5),
        clustering=ClusteringConfig(4),
        skip=(rest[-1],),
        overrides=(
            (
                first,
                Techniques(
                    PruningConfig(0.9, scope="global"),
                    ClusteringConfig(16, preserve_sparsity=False, granularity="per-channel"),
                    QuantizationConfig(4, "asymmetric"),
                ),
            ),
            *((layer, Techniques(quantization=QuantizationConfig(8))) for layer in rest[:-1]),
        ),
    )


@pytest.mark.parametrize("sample", [s.name for s in sample_models.SAMPLES])
def test_a_link_carries_the_whole_setting_per_layer_recipe_included(sample: str) -> None:
    source = session(sample)
    layers = source[state.MODEL].layers
    settings.put_config(source, recipe(layers))
    params = links.settings_to_params(source)
    assert any(name.startswith("layer.") for name in params)
    target = session()  # a fresh browser on the default sample
    assert links.apply_params(params, target) == []
    assert target[state.MODEL].sample == sample
    assert state.setting(target).config == state.setting(source).config
    assert links.settings_to_params(target) == params


def test_a_pinned_setting_travels_beside_the_sliders() -> None:
    source = session()
    layers = source[state.MODEL].layers
    settings.put_config(source, recipe(layers))
    source[state.PINNED] = state.setting(source)
    settings.put_config(source, OptimizationConfig(quantization=QuantizationConfig(2)))
    params = links.settings_to_params(source)
    assert params["a.sparsity"] == "0.5" and params["bits"] == "2"
    target = session(sample_models.SAMPLES[1].name)
    assert links.apply_params(params, target) == []
    assert target[state.PINNED].config == source[state.PINNED].config
    assert state.setting(target).config == state.setting(source).config


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("layer.conv_1", "0.9,4", "it takes sparsity, clusters and bits"),
        ("layer.conv_1", "0.9,4,3;zoom=2", "`zoom` is not one of structure"),
        ("layer.conv_1", "1.5,off,off", "sparsity must be a number in [0, 1), got 1.5"),
        ("layer.conv_1", "0,1,off", "was ignored"),
        ("layer.nope", "0.5,off,off", "this model has no layer named `nope`"),
    ],
)
def test_a_bad_per_layer_value_is_ignored_in_one_sentence(
    name: str, text: str, expected: str
) -> None:
    s = session()
    before = state.setting(s)
    notes = links.apply_params({"sample": DEFAULT.name, "sparsity": "0.5", name: text}, s)
    assert len(notes) == 1 and expected in notes[0], notes
    assert "\n" not in notes[0] and notes[0].endswith(".")
    assert state.setting(s).config == replace(before, sparsity=50).config


# --- the pages ---


def open_link(page: str, **params: str) -> AppTest:
    """A fresh browser session opened on ``page`` with the link's ``params``."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


LINK = {"sample": "digits_mlp", "sparsity": "0.6", "clusters": "16", "bits": "4"}


def test_a_link_shows_what_the_sliders_show() -> None:
    linked = open_link(EXPLORE, **LINK)
    assert not linked.warning
    by_hand = AppTest.from_file(APP, default_timeout=120)
    by_hand.run()
    by_hand.selectbox(key=state.SAMPLE).set_value("digits_mlp").run()
    by_hand.switch_page(EXPLORE).run()
    by_hand.slider(key=state.SPARSITY).set_value(60).run()
    by_hand.select_slider(key=state.CLUSTERS).set_value(16).run()
    by_hand.select_slider(key=state.BITS).set_value(4).run()
    assert metrics(linked) == metrics(by_hand)
    assert metrics(linked)["Sparsity"] == "60.0%"
    assert by_hand.query_params == LINK  # the address bar is the link


def test_a_slider_move_rewrites_the_address_and_an_old_address_is_not_reapplied() -> None:
    at = open_link(EXPLORE, **LINK)
    at.slider(key=state.SPARSITY).set_value(30).run()
    assert at.query_params == {**LINK, "sparsity": "0.3"}
    at.query_params["sparsity"] = "0.6"  # the browser still sending the address before the move
    at.run()
    assert at.slider(key=state.SPARSITY).value == 30
    assert at.query_params["sparsity"] == "0.3"


@pytest.mark.parametrize("page", [EXPLORE, DOWNLOAD])
def test_a_bad_link_warns_in_one_sentence_and_the_page_works(page: str) -> None:
    at = open_link(page, sample="digits_mlp", sparsity="1.7", clusters="16", bits="banana")
    warnings = [w.value for w in at.warning if w.value.startswith("The link's")]
    assert len(warnings) == 2
    assert "sparsity=`1.7` was ignored" in warnings[0]
    assert "bits=`banana` was ignored" in warnings[1]
    assert metrics(at)["Sparsity"] == "0.0%"  # the out-of-range value changed nothing
    assert "Digits MLP" in at.caption[0].value
    assert at.query_params == {
        "sample": "digits_mlp",
        "sparsity": "0",
        "clusters": "16",
        "bits": "off",
    }


def test_the_download_page_reads_and_writes_links() -> None:
    at = open_link(DOWNLOAD, **LINK, mode="asymmetric")
    assert "prune 60% → 16 clusters → int4" in at.caption[0].value
    assert at.query_params == {**LINK, "mode": "asymmetric"}


def test_an_uploaded_model_cannot_travel_in_a_link() -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.segmented_control(key=state.SOURCE).set_value(state.UPLOAD_SOURCE).run()
    raw = OTHER.model_path.read_bytes()
    at.file_uploader(key=state.MODEL_FILE).set_value(("mine.keras", raw, "application/x")).run()
    at.switch_page(EXPLORE).run()
    assert not at.exception, at.exception
    assert any("mine.keras is an uploaded file and cannot travel" in c.value for c in at.caption)
    assert "sample" not in at.query_params and at.query_params["sparsity"] == "0"
