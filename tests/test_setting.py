"""The one setting: its config, its words, and links that carry all of it (per-layer settings
and a pinned setting included) on the real samples."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import sample_models
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, Techniques
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from ui import state
from ui.setting import OFF, Setting, config_words, with_config

DEFAULT = sample_models.SAMPLES[0]


CONFIGS = [
    OptimizationConfig(),
    OptimizationConfig(pruning=PruningConfig(0.6), clustering=ClusteringConfig(16)),
    OptimizationConfig(
        pruning=PruningConfig(0.8, scope="global"),
        clustering=ClusteringConfig(8, init="density", granularity="per-channel"),
        quantization=QuantizationConfig(4, "asymmetric", "per-tensor"),
        skip=("dense",),
    ),
    OptimizationConfig(pruning=PruningConfig(0.5, "2:4"), quantization=QuantizationConfig(8)),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_a_config_put_into_a_setting_runs_as_itself(config: OptimizationConfig) -> None:
    before = Setting(sparsity=40, bits=8, quant_mode="asymmetric")
    assert with_config(before, config).config == config


def test_a_stage_that_is_off_keeps_its_options() -> None:
    s = with_config(Setting(quant_mode="asymmetric"), OptimizationConfig())
    assert s.bits == OFF and s.quant_mode == "asymmetric"


def test_the_words_name_a_per_layer_recipe_truthfully() -> None:
    uniform = OptimizationConfig(pruning=PruningConfig(0.5), clustering=ClusteringConfig(4))
    assert config_words(uniform) == "prune 50% → 4 clusters"
    recipe = replace(
        uniform,
        skip=("a", "b"),
        overrides=(("c", Techniques(quantization=QuantizationConfig(8))),),
    )
    assert config_words(recipe) == (
        "per-layer recipe: 1 layer with its own setting, 2 kept float; the others prune 50% → "
        "4 clusters"
    )
    assert "the others stay float" in config_words(replace(OptimizationConfig(), skip=("a",)))


def test_the_words_name_blocks_and_calibration_where_they_apply() -> None:
    from ui import explain

    blocks = OptimizationConfig(quantization=QuantizationConfig(4, block_size=32), data_aware=True)
    assert config_words(blocks) == "int4 in blocks of 32, calibrated"
    assert "blocks of 32 inputs" in explain.container(blocks.grid)
    clustered = replace(blocks, clustering=ClusteringConfig(16))  # its scales follow clusters
    assert config_words(clustered) == "16 clusters → int4, calibrated"
    assert "blocks" not in explain.container(clustered.grid)
    assert config_words(OptimizationConfig(data_aware=True)) == "float"


def test_only_one_setting_is_kept_in_the_session() -> None:
    s: dict[str, Any] = {}
    state.init(s, DEFAULT.name)
    state.put(s, state.SPARSITY, 30)
    assert not any(k.startswith(state.SAVED_PREFIX) and k[6:] in state.FIELDS for k in s)
    assert state.setting(s).sparsity == 30


# --- the Explore page: pin a setting as A, compare it with the sliders (B) ---


def test_pin_as_a_compares_two_settings_side_by_side_and_the_link_carries_both() -> None:
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=300)
    at.run()
    at.switch_page("pages/explore.py").run()
    at.slider(key=state.SPARSITY).set_value(50).run()
    at.select_slider(key=state.CLUSTERS).set_value(16).run()
    at.button(key="pin").click().run()
    assert at.button(key="pin").label == "Unpin A"
    at.select_slider(key=state.BITS).set_value(2).run()
    assert not at.exception, at.exception

    (table,) = [d.value for d in at.dataframe if "A (pinned)" in d.value.columns]
    rows = table.set_index("figure")
    assert rows.loc["Sparsity", "A (pinned)"].startswith("50.0%")
    assert rows.loc["Test accuracy", "A (pinned)"] != rows.loc["Test accuracy", "B (the sliders)"]
    charts = [
        c for c in at.get("plotly_chart") if c.proto.id.endswith(("histogram", "histogram_a"))
    ]
    assert len(charts) == 2
    assert at.query_params["a.clusters"] == "16" and at.query_params["bits"] == "2"

    linked = AppTest.from_file(app, default_timeout=300)
    linked.query_params.update(dict(at.query_params))
    linked.switch_page("pages/explore.py").run()
    assert not linked.exception, linked.exception
    (again,) = [d.value for d in linked.dataframe if "A (pinned)" in d.value.columns]
    assert again.equals(table)

    at.button(key="pin").click().run()
    assert at.session_state[state.PINNED] is None
    assert "a.clusters" not in at.query_params
