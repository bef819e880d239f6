"""AppTest of the Trade-off page: the sweep chart, a click on a point, the recommended recipe
and the per-layer actions, each checked through the settings the other pages read."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

import sample_models
from optimizers import study, sweep
from optimizers.cli import main
from optimizers.pipeline import OptimizationConfig, Techniques, config_from_dict
from optimizers.recommend import LEVELS
from ui import loading, services, state, tradeoff
from ui.setting import OFF

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TRADEOFF, EXPLORE = "pages/tradeoff.py", "pages/explore.py"


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(TRADEOFF).run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> tuple[str, dict]:
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert found, f"no chart {key}"
    return found[0].proto.id, json.loads(found[0].proto.spec)


def click(at: AppTest, index: int, curve: int = tradeoff.POINTS) -> AppTest:
    """What the browser sends when a point is clicked: the chart's selection as its widget value
    (AppTest has no plotly API, so the value is added to the widget states of the next run)."""
    chart_id, _ = chart(at, tradeoff.SCATTER)
    point = {"curve_number": curve, "point_number": index, "point_index": index}
    selection = {"points": [point], "point_indices": [index], "box": [], "lasso": []}
    states = at._tree.get_widget_states()
    states.widgets.append(
        WidgetState(id=chart_id, string_value=json.dumps({"selection": selection}))
    )
    at._run(states)
    assert not at.exception, at.exception
    return at


def sweep_of(at: AppTest):
    """The stored sweep the page drew (the same study the page asked for)."""
    model = at.session_state[state.MODEL]
    return services.swept(model, tradeoff.grid_from_state(at.session_state)).sweep


def test_the_page_draws_every_point_the_frontier_and_the_float_model() -> None:
    at = start()
    result = sweep_of(at)
    _, spec = chart(at, tradeoff.SCATTER)
    names = [t.get("name") for t in spec["data"]]
    points = spec["data"][names.index("uniform setting")]
    assert len(points["x"]) == len(result.points) >= 30
    frontier = spec["data"][names.index("Pareto frontier")]
    assert sorted(frontier["x"]) == sorted(p.packed_bytes for p in result.points if p.pareto)
    assert "float model" in names and "recommended recipe" in names
    assert "current setting" in names  # the sliders start at float, one of the points
    _, heat = chart(at, "sensitivity_heatmap")
    assert len(heat["data"][0]["y"]) == len(at.session_state[state.MODEL].layers)
    assert len(heat["data"][0]["x"]) == len(LEVELS)


def test_clicking_a_point_sets_the_sliders_to_it() -> None:
    at = start()
    result = sweep_of(at)
    index = next(
        i
        for i, p in enumerate(result.points)
        if p.config.pruning and p.config.clustering and p.config.quantization
    )
    click(at, index)
    chosen = result.points[index].config
    assert state.setting(at.session_state).config == chosen
    at.switch_page(EXPLORE).run()
    assert at.slider(key=state.SPARSITY).value == round(100 * chosen.pruning.sparsity)
    assert at.select_slider(key=state.CLUSTERS).value == chosen.clustering.clusters
    assert at.select_slider(key=state.BITS).value == chosen.quantization.bits
    at.switch_page(TRADEOFF).run()
    _, spec = chart(at, tradeoff.SCATTER)
    ring = next(t for t in spec["data"] if t.get("name") == "current setting")
    assert ring["x"] == [result.points[index].packed_bytes]


def test_a_click_off_the_points_changes_nothing() -> None:
    at = start()
    before = state.setting(at.session_state).config
    click(at, 0, curve=2)  # the float model's star
    assert state.setting(at.session_state).config == before


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: f"{m.value} {m.delta}" for m in at.metric}


def test_the_recommended_recipe_applies_in_sight_and_its_link_reproduces_it() -> None:
    at = start()
    model = at.session_state[state.MODEL]
    grid = tradeoff.grid_from_state(at.session_state)
    recommended = services.recommended(model, grid, state.get(at.session_state, state.BUDGET))
    best = sweep_of(at).uniform().best_within(state.get(at.session_state, state.BUDGET))
    assert recommended.packed_bytes <= best.packed_bytes
    assert recommended.config.overrides or recommended.config.skip  # per layer indeed
    download = at.get("download_button")
    assert download, "no download button"
    at.button(key="apply_recommended").click().run()
    assert not at.exception, at.exception
    assert state.setting(at.session_state).config == recommended.config
    recipe = services.recipe_json(state.setting(at.session_state).config)
    assert config_from_dict(json.loads(recipe)) == recommended.config

    # Apply opens Explore, says so, and shows what runs above the cards.
    assert at.title[0].value == "Explore"
    assert any("Applied the recommended recipe" in t.proto.body for t in at.get("toast"))
    summary = " ".join(m.value for m in at.markdown)
    assert "Per-layer recipe:" in summary and "the sliders set" in summary
    assert "(other layers)" in at.slider(key=state.SPARSITY).label
    assert "per-layer recipe" in at.session_state[state.SETTING].words

    # The address bar carries all of it: a fresh session opened on it shows the same cards.
    shown = metrics(at)
    linked = AppTest.from_file(APP, default_timeout=300)
    linked.query_params.update(dict(at.query_params))
    linked.switch_page(EXPLORE).run()
    assert not linked.exception, linked.exception
    assert state.setting(linked.session_state).config == recommended.config
    assert metrics(linked) == shown

    at.button(key="clear_recipe").click().run()
    assert state.get(at.session_state, state.OVERRIDES) == ()
    assert state.get(at.session_state, state.SKIP) == ()
    assert not any("Per-layer recipe:" in m.value for m in at.markdown)


def test_a_layer_can_be_kept_float_or_given_its_own_setting() -> None:
    at = start()
    layer = at.selectbox(key=state.FRAGILE_LAYER).value
    at.button(key="keep_float").click().run()
    assert layer in state.get(at.session_state, state.SKIP)
    assert state.setting(at.session_state).config.for_layer(layer) == Techniques()
    at.selectbox(key=state.LAYER_SETTING).set_value(len(LEVELS) - 1).run()
    at.button(key="give_setting").click().run()
    config = state.setting(at.session_state).config
    assert layer not in config.skip and config.for_layer(layer) == LEVELS[-1]


def test_an_empty_grid_axis_is_one_sentence() -> None:
    at = start()
    at.multiselect(key=state.SWEEP_BITS).set_value([]).run()
    assert not at.exception
    assert len(at.error) == 1 and "at least one value" in at.error[0].value


# --- sweeps are stored studies ---

TWO_POINTS = {state.SWEEP_SPARSITIES: [0, 50], state.SWEEP_CLUSTERS: [OFF], state.SWEEP_BITS: [OFF]}


def small_grid(at: AppTest, values: dict) -> None:
    for key, value in values.items():
        at.multiselect(key=key).set_value(value)


def caption(at: AppTest, start: str) -> str:
    found = [c.value for c in at.caption if c.value.startswith(start)]
    assert found, [c.value for c in at.caption]
    return found[0]


def test_the_page_lists_a_study_a_command_line_worker_stored(capsys) -> None:
    sample = sample_models.get(loading.DEFAULT_SAMPLE)
    argv = ["sweep", str(sample.model_path), "--data", str(sample.data_path), "--json"]
    grid = ["--grid", "sparsity=0,0.75", "--grid", "clusters=off", "--grid", "bits=off"]
    assert main([*argv, *grid, "--study", "from-the-command-line"]) == 0
    capsys.readouterr()
    at = start()
    table = next(d for d in at.dataframe if "study" in d.value.columns).value
    row = table[table["study"] == "from-the-command-line"]
    assert list(row["done"]) == ["2 of 2"]
    assert list(row["grid"]) == ["sparsity 0,0.75 · clusters off · bits off"]


def test_points_arrive_from_another_worker_and_more_trials_run_here() -> None:
    at = start()
    model = at.session_state[state.MODEL]
    small_grid(at, TWO_POINTS)
    grid = sweep.Grid((0.0, 0.5), (None,), (None,))
    kept = services.sweeps_study(model, grid)
    held = kept.ask()  # another worker takes the first point (the float model) and measures...
    at.run()
    assert not at.exception, at.exception
    assert "1 of 2 trials done, 1 running in other workers" in caption(at, "Sweep ")
    float_model = sweep.measure(model.prepared, OptimizationConfig())
    for key, value in study.point_attrs(float_model).items():
        held.set_user_attr(key, value)
    kept.tell(held, [float_model.quality, float_model.packed_bytes])  # ...and is done
    at.run()
    assert "2 of 2 trials done." in caption(at, "Sweep ")
    _, spec = chart(at, tradeoff.SCATTER)
    assert len(spec["data"][tradeoff.POINTS]["x"]) == 2

    at.button(key="run_more").click().run()
    assert not at.exception, at.exception
    total = 2 + tradeoff.MORE_TRIALS
    assert f"{total} of {total} trials done" in caption(at, "Sweep ")
    result = sweep_of(at)
    layered = [p for p in result.points if p.per_layer]
    assert layered, "the sampler found no per-layer setting in 12 trials"
    _, spec = chart(at, tradeoff.SCATTER)
    shown = next(t for t in spec["data"] if t.get("name") == "per-layer setting")
    assert sorted(shown["x"]) == sorted(p.packed_bytes for p in layered)
    for p in layered[:2]:  # each is what explore.run measures for its recipe
        again = sweep.measure(model.prepared, p.config)
        assert (again.quality, again.packed_bytes) == (p.quality, p.packed_bytes)


def test_the_calibration_switch_makes_every_point_data_aware() -> None:
    """One setting: *Use calibration data* on the Trade-off page is the Explore page's, and a
    data-aware setting sweeps data-aware points (its own study) and the heat map with them."""
    at = start()
    small_grid(at, {**TWO_POINTS, state.SWEEP_BITS: [2]})
    at.run()
    plain = sweep_of(at)
    at.toggle(key=state.DATA_AWARE).set_value(True).run()
    assert not at.exception, at.exception
    assert caption(at, "Calibrated on ").startswith("Calibrated on 512 samples of digits_cnn_train")
    assert at.session_state[state.SETTING].config.data_aware  # the setting every page reads
    aware = sweep_of(at)
    assert all(p.config.data_aware for p in aware.points)
    assert not any(p.config.data_aware for p in plain.points)
    two_bits = [p.quality for p in (plain.points[0], aware.points[0])]
    assert two_bits[1] > two_bits[0]  # README: 57.5% -> 96.4% on the digits CNN at 2 bits
    at.switch_page(EXPLORE).run()
    assert at.toggle(key=state.DATA_AWARE).value is True
