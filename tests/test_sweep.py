"""Sweep, sensitivity and the recommended recipe: on small trained models and the samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sample_models
from optimizers import explore, keras_io, recommend, sweep
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, Techniques, config_from_dict
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig

SMALL = sweep.Grid(sparsities=(0.0, 0.5, 0.9), clusters=(None, 4), bits=(None, 4))


def dominated(i: int, packed: list[float], quality: list[float]) -> bool:
    """The definition, point by point: another point is no worse in both and better in one."""
    return any(
        packed[j] <= packed[i]
        and quality[j] >= quality[i]
        and (packed[j] < packed[i] or quality[j] > quality[i])
        for j in range(len(packed))
    )


def prepared_sample(name: str, split: str = "test") -> explore.Prepared:
    sample = sample_models.get(name)
    model = keras_io.load_model(sample.model_path)
    path = sample.data_path if split == "test" else sample.train_path
    return explore.prepare(model, *keras_io.load_data(path, model))


@pytest.fixture(scope="module")
def mlp(model_files) -> explore.Prepared:
    model = keras_io.load_model(model_files.mlp_keras)
    return explore.prepare(model, *keras_io.load_data(model_files.mlp_data, model))


@pytest.fixture(scope="module")
def small_sweep(mlp) -> sweep.Sweep:
    return sweep.sweep(mlp, SMALL)


# --- the Pareto frontier ---


def test_pareto_flags_by_hand() -> None:
    packed = [10, 20, 20, 5, 10, 30]
    quality = [0.9, 0.95, 0.9, 0.5, 0.9, 0.95]
    # equal points (0 and 4) are both kept; 2 is beaten by 0, 5 by 1
    assert sweep.pareto_flags(packed, quality) == [True, True, False, True, True, False]


@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from([0.5, 0.75, 0.9, 1.0])),
        min_size=1,
        max_size=30,
    )
)
def test_pareto_flags_are_exactly_the_non_dominated_points(pairs) -> None:
    packed, quality = [float(p) for p, _ in pairs], [q for _, q in pairs]
    expected = [not dominated(i, packed, quality) for i in range(len(pairs))]
    assert sweep.pareto_flags(packed, quality) == expected


# --- the grid ---


def test_default_grid_has_at_least_30_distinct_settings() -> None:
    settings = sweep.Grid().settings()
    assert len(settings) >= 30 and len(set(settings)) == len(settings)
    assert Techniques() in settings  # the float model is one of the points


@pytest.mark.parametrize(
    ("axes", "phrase"),
    [
        ({"sparsities": ()}, "sparsities must hold at least one value"),
        ({"bits": (4, 4)}, "bits must not repeat"),
        ({"sparsities": (1.5,)}, "sparsity must be a number in [0, 1), got 1.5"),
        ({"clusters": (1,)}, "got 1"),
        ({"bits": (9,)}, "bits must be one of"),
        (
            {"sparsities": tuple(i / 100 for i in range(99)), "clusters": (None, *range(2, 10))},
            "at most 2000 points, got 2673",
        ),
    ],
)
def test_bad_grid_is_refused_in_one_sentence(axes, phrase) -> None:
    with pytest.raises(ValueError) as e:
        sweep.Grid(**axes)
    assert phrase in str(e.value)


def test_grid_from_strings_reads_each_axis_and_refuses_bad_ones() -> None:
    grid = sweep.grid_from_strings(["sparsity=0,0.5", "clusters=off,8", "bits=OFF,4"])
    assert grid == sweep.Grid((0.0, 0.5), (None, 8), (None, 4))
    assert sweep.grid_from_strings([]) == sweep.Grid()
    for bad, phrase in [
        ("depth=1,2", "AXIS one of sparsity, clusters, bits"),
        ("bits=", "AXIS=V1,V2"),
        ("sparsity=half", "not a number"),
    ]:
        with pytest.raises(ValueError, match=phrase):
            sweep.grid_from_strings([bad])


# --- the sweep ---


def test_every_point_is_what_explore_run_measures(mlp, small_sweep) -> None:
    assert len(small_sweep.points) == len(SMALL.settings())
    for p, setting in zip(small_sweep.points, SMALL.settings(), strict=True):
        assert p.config == sweep.uniform(setting)
        outcome = explore.run(mlp, p.config)
        assert p.accuracy == outcome.accuracy
        assert (p.packed_bytes, p.gzip_bytes, p.entropy_bytes) == (
            outcome.sizes.packed,
            outcome.sizes.gzip,
            outcome.sizes.entropy,
        )
    base = explore.run(mlp, OptimizationConfig())
    assert small_sweep.baseline.accuracy == base.accuracy
    assert small_sweep.baseline.packed_bytes == base.sizes.packed


def test_sweep_flags_its_frontier_and_reports_progress(mlp, small_sweep) -> None:
    packed = [p.packed_bytes for p in small_sweep.points]
    quality = [p.quality for p in small_sweep.points]
    assert [p.pareto for p in small_sweep.points] == [
        not dominated(i, packed, quality) for i in range(len(packed))
    ]
    calls = []
    grid = sweep.Grid((0.0, 0.5), (None,), (None,))
    sweep.sweep(mlp, grid, lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_best_within_is_the_smallest_point_in_budget(small_sweep) -> None:
    base = small_sweep.baseline.quality
    for budget in (0.0, 1.0, 5.0, 100.0):
        best = small_sweep.best_within(budget)
        fits = [p for p in small_sweep.points if p.quality >= base - budget / 100 - 1e-9]
        assert best is not None and best.quality >= base - budget / 100 - 1e-9
        assert best.packed_bytes == min(p.packed_bytes for p in fits)
    with pytest.raises(ValueError, match="budget must be between 0 and 100 points, got -1"):
        small_sweep.best_within(-1)


def test_a_sweep_without_data_is_refused(model_files) -> None:
    prepared = explore.prepare(keras_io.load_model(model_files.mlp_keras))
    with pytest.raises(ValueError, match="needs evaluation data"):
        sweep.sweep(prepared, SMALL)
    with pytest.raises(ValueError, match="needs evaluation data"):
        recommend.recommend(prepared)


# --- sensitivity ---


def test_sensitivity_measures_each_layer_alone_most_fragile_first(mlp) -> None:
    settings = [Techniques(), *recommend.LEVELS]
    rows = recommend.sensitivity(mlp, settings)
    assert sorted(r.layer for r in rows) == ["hidden", "predictions"]
    assert [r.fragility for r in rows] == sorted((r.fragility for r in rows), reverse=True)
    base = explore.run(mlp, OptimizationConfig()).accuracy
    for row in rows:
        assert [s.setting for s in row.scores] == settings
        assert row.scores[0].quality == base and row.scores[0].snr_db is None
        harsh = row.scores[settings.index(Techniques(quantization=QuantizationConfig(2)))]
        alone = explore.run(mlp, recommend.only(row.layer, harsh.setting))
        assert harsh.quality == alone.accuracy and harsh.snr_db == alone.fidelity.snr_db
    assert rows[0].params + rows[1].params == 64 * 32 + 32 * 10


def test_assemble_reads_as_a_base_with_exceptions() -> None:
    int4 = Techniques(quantization=QuantizationConfig(4))
    pruned = Techniques(pruning=PruningConfig(0.5), clustering=ClusteringConfig(8))
    params = {"a": 10, "b": 100, "c": 5, "d": 7}
    config = recommend.assemble({"a": int4, "b": int4, "c": Techniques(), "d": pruned}, params)
    assert config.quantization == QuantizationConfig(4) and config.pruning is None
    assert config.skip == ("c",) and config.overrides == (("d", pruned),)
    assert [config.for_layer(name) for name in "abcd"] == [int4, int4, Techniques(), pruned]
    mostly_float = recommend.assemble({"a": Techniques(), "b": Techniques(), "c": int4}, params)
    assert not mostly_float.active and mostly_float.skip == ()
    assert mostly_float.overrides == (("c", int4),)


# --- the recommended recipe ---


@pytest.mark.parametrize("name", [s.name for s in sample_models.SAMPLES])
def test_recommended_recipe_respects_the_budget_on_held_out_data(name) -> None:
    """Searched on the test set; checked on the training split, which the search never saw."""
    budget = 1.0
    prepared = prepared_sample(name)
    found = recommend.recommend(prepared, budget)
    base = sweep.measure(prepared, OptimizationConfig())
    assert found.quality >= base.quality - budget / 100 - 1e-9
    uniform = sweep.sweep(prepared, sweep.Grid()).best_within(budget)
    assert uniform is not None and found.packed_bytes <= uniform.packed_bytes
    # On data the search never saw, the loss is within budget up to the sampling error of the
    # search's own estimate: two standard errors of an accuracy measured on the test set.
    held_out = prepared_sample(name, "train")
    kept = sweep.measure(held_out, found.config).quality
    n = len(prepared.x)
    noise = 2 * (found.quality * (1 - found.quality) / n) ** 0.5
    assert kept >= sweep.measure(held_out, OptimizationConfig()).quality - budget / 100 - noise


def test_zero_budget_loses_nothing(mlp) -> None:
    found = recommend.recommend(mlp, 0.0, SMALL)
    assert found.accuracy >= explore.run(mlp, OptimizationConfig()).accuracy
    assert found.packed_bytes < explore.run(mlp, OptimizationConfig()).sizes.packed


# --- the command line ---


def run_main(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    from optimizers.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def test_sweep_recipe_round_trips_through_apply(tmp_path: Path, capsys) -> None:
    sample = sample_models.get("digits_mlp")
    model, data = str(sample.model_path), str(sample.data_path)
    grid = ["--grid", "sparsity=0,0.5,0.75", "--grid", "clusters=off,16", "--grid", "bits=off,4"]
    code, out, err = run_main(["sweep", model, "--data", data, *grid, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    points = result["points"]
    assert len(points) == 12 and set(points[0]) >= {
        "sparsity",
        "clusters",
        "bits",
        "accuracy",
        "packed_bytes",
        "gzip_bytes",
        "pareto",
    }
    packed = [p["packed_bytes"] for p in points]
    quality = [p["accuracy"] for p in points]
    assert [p["pareto"] for p in points] == [
        not dominated(i, packed, quality) for i in range(len(points))
    ]
    assert [row["layer"] for row in result["sensitivity"]] != []
    assert {"accuracy", "packed_bytes", "gzip_bytes"} <= set(result["baseline"])
    rec = result["recommended"]
    assert config_from_dict(rec["recipe"])  # the recipe is a valid config
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(rec["recipe"]))
    for verb in ("apply", "export"):
        extra = ["--format", "keras", "--output", str(tmp_path / "out.keras")]
        argv = [verb, model, "--data", data, "--recipe", str(recipe), "--json"]
        code, out, err = run_main(argv + (extra if verb == "export" else []), capsys)
        assert code == 0, err
        applied = json.loads(out)
        assert applied["config"] == rec["recipe"]
        if verb == "apply":
            opt = applied["optimized"]
            assert (opt["accuracy"], opt["packed_bytes"]) == (rec["accuracy"], rec["packed_bytes"])
            # A saved .keras file carries its save time (metadata.json, the weights' zip entry),
            # so two runs in different seconds compress a byte or two apart.
            assert abs(opt["gzip_bytes"] - rec["gzip_bytes"]) <= 16
        else:
            assert applied["file_accuracy"] == rec["accuracy"]


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--budget", "-1"], "budget must be between 0 and 100 points, got -1"),
        (["--budget", "many"], "invalid float value"),
        (["--grid", "depth=2"], "AXIS one of sparsity, clusters, bits"),
        (["--grid", "bits=9"], "bits must be one of"),
        (["--grid", "clusters=1,2"], "got 1"),
    ],
)
def test_sweep_bad_input_exits_2_with_one_error_line(cli_model, capsys, args, phrase) -> None:
    argv = ["sweep", str(cli_model.model), "--data", str(cli_model.data), *args]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("error: ") and phrase in err[0], err


def test_sweep_needs_data(cli_model, capsys) -> None:
    code, out, err = run_main(["sweep", str(cli_model.model)], capsys)
    assert code == 2 and out == "" and len(err) == 1 and "--data" in err[0], err


def test_sweep_summary_marks_the_frontier(cli_model, capsys) -> None:
    argv = ["sweep", str(cli_model.model), "--data", str(cli_model.data)]
    code, out, err = run_main([*argv, "--grid", "sparsity=0,0.5", "--grid", "clusters=off"], capsys)
    assert code == 0, err
    assert "pareto" in out and "recommended" in out and "sensitivity" in out
    config_from_dict(json.loads(out.strip().splitlines()[-1]))  # it ends with the recipe


def test_a_data_aware_sweep_shows_what_is_reachable_without_training(tmp_path, capsys) -> None:
    """Every point of a data-aware sweep is pruned and rounded with the calibration data: at
    2 bits the digits MLP keeps what plain rounding loses (README: 59% -> 96%), and the
    recommended recipe is data-aware too, which ``apply`` reproduces with the same data."""
    sample = sample_models.get("digits_mlp")
    model, data, train = str(sample.model_path), str(sample.data_path), str(sample.train_path)
    grid = ["--grid", "sparsity=0,0.5", "--grid", "clusters=off", "--grid", "bits=off,2"]
    base = ["sweep", model, "--data", data, *grid, "--budget", "3", "--json"]
    code, out, err = run_main(base, capsys)
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = run_main([*base, "--data-aware", "--calibration", train], capsys)
    assert code == 0, err
    aware = json.loads(out)
    assert plain["study"]["name"] != aware["study"]["name"]  # a study of its own
    assert aware["calibration"] == f"512 samples of {Path(train).name}"
    assert all(p["data_aware"] for p in aware["points"])
    assert not any(p["data_aware"] for p in plain["points"])

    def two_bits(result: dict) -> float:
        return next(p for p in result["points"] if (p["sparsity"], p["bits"]) == (0.0, 2))

    assert two_bits(aware)["accuracy"] >= two_bits(plain)["accuracy"] + 0.2
    rec = aware["recommended"]
    assert rec["recipe"]["data_aware"] is True
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(rec["recipe"]))
    argv = ["apply", model, "--data", data, "--recipe", str(recipe), "--calibration", train]
    code, out, err = run_main([*argv, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["optimized"]["accuracy"] == rec["accuracy"]
    code, out, err = run_main([*base, "--data-aware"], capsys)  # no calibration data
    assert code == 2 and len(err) == 1 and "--data-aware needs --calibration" in err[0], err


def test_a_data_aware_grid_needs_a_calibrated_model(mlp) -> None:
    with pytest.raises(ValueError, match="needs calibration data"):
        sweep.sweep(mlp, sweep.Grid((0.0,), (None,), (None, 4), data_aware=True))
    with pytest.raises(ValueError, match="data_aware must be true or false"):
        sweep.Grid(data_aware="yes")
