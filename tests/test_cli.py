"""``python -m optimizers apply`` and ``export``, run as a user runs them.

One fixture makes every run of the module, and each test then checks one run. A few runs go
through ``python -m optimizers`` in a subprocess from the repository root, as a user types them
(a good run with all three stages, a model whose Lambda must never run in a fresh process, and an
argument the parser refuses); the rest call ``main``, what that command runs, in this process,
so each does not pay ~6 s of CPU for its own TensorFlow import.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers.clustering import ClusteringConfig  # noqa: E402
from optimizers.pipeline import OptimizationConfig, config_to_dict  # noqa: E402
from optimizers.pruning import PruningConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Through ``python -m optimizers`` in a subprocess; the other runs call ``main`` in this process.
SUBPROCESS_RUNS = ("all stages", "lambda model", "bad bits")
# TensorFlow's C++ logging may write these to stderr at import time, whatever the outcome.
TF_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} \d\d:\d\d:\d\d)"
)
SPARSITY, CLUSTERS, BITS = 0.6, 16, 4
FLAGS_CONFIG = OptimizationConfig(
    pruning=PruningConfig(SPARSITY), clustering=ClusteringConfig(CLUSTERS)
)


@dataclass(frozen=True)
class BadCase:
    args: list[str]  # after "python -m optimizers"
    mentions: str  # what the error line must name (usually the offending file)
    phrase: str  # what it must say about it
    output: Path  # the output the run was asked to write, which must not appear


@dataclass(frozen=True)
class Work:
    """The files the runs read and write, all in one temporary folder."""

    folder: Path
    model: Path
    data: Path
    lambda_marker: Path


def build_inputs(folder: Path, model: Path, data: Path) -> Work:
    """Bad model, data and recipe files next to the good ones."""
    (folder / "empty.keras").write_bytes(b"")
    good = model.read_bytes()
    (folder / "truncated.keras").write_bytes(good[: len(good) // 2])
    (folder / "fake.keras").write_text("not a model, just text\n")

    marker = folder / "lambda_ran"
    function = eval(f"lambda x: __import__('pathlib').Path({str(marker)!r}).touch() or x")
    lambda_model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Lambda(function), keras.layers.Flatten()]
        + [keras.layers.Dense(10, activation="softmax")]
    )
    lambda_model.save(folder / "lambda.keras")
    marker.unlink(missing_ok=True)  # building the model ran the lambda; loading must not

    with np.load(data) as arrays:
        x, y = arrays["x"], arrays["y"]
    objects = np.empty(len(x), dtype=object)
    objects[:] = [{"pixels": row.tolist()} for row in x]
    np.savez(folder / "pickled.npz", x=objects, y=y)
    np.savez(folder / "flat.npz", x=x.reshape(len(x), -1), y=y)  # (n, 64) for an image model

    (folder / "broken.json").write_text('{"pruning": {"sparsity": 0.5,}')
    (folder / "unknown_key.json").write_text(json.dumps({"prune": {"sparsity": 0.5}}))
    (folder / "override_list.json").write_text(json.dumps({"overrides": {"dense": []}}))
    (folder / "recipe_folder.json").mkdir()
    (folder / "recipe.json").write_text(json.dumps(config_to_dict(FLAGS_CONFIG)))
    return Work(folder, model, data, marker)


def bad_cases(w: Work) -> dict[str, BadCase]:
    f, model, data = w.folder, str(w.model), str(w.data)

    def case(name, args, mentions, phrase, output=None, command="apply"):
        out = output or f / f"{name.replace(' ', '_')}.keras"
        return name, BadCase([command, *args, "--output", str(out)], mentions, phrase, out)

    def with_model(path):
        return [str(f / path), "--data", data, "--sparsity", "0.5"]

    def with_data(path):
        return [model, "--data", str(f / path), "--sparsity", "0.5"]

    def with_recipe(path):
        return [model, "--data", data, "--recipe", str(f / path)]

    return dict(
        [
            case("missing model", with_model("missing.keras"), "missing.keras", "no such file"),
            case("empty model", with_model("empty.keras"), "empty.keras", "empty"),
            case("truncated model", with_model("truncated.keras"), "truncated.keras", "truncated"),
            case("fake model", with_model("fake.keras"), "fake.keras", "not a Keras archive"),
            case("lambda model", with_model("lambda.keras"), "lambda.keras", "Lambda"),
            case("pickled data", with_data("pickled.npz"), "pickled.npz", "pickled"),
            case("mis-shaped data", with_data("flat.npz"), "flat.npz", "shape"),
            case("bad bits", [model, "--bits", "9"], "--bits", "invalid choice"),
            case("bits not a number", [model, "--bits", "four"], "--bits", "invalid int"),
            case("sparsity 1.5", [model, "--sparsity", "1.5"], "sparsity", "1.5"),
            case("one cluster", [model, "--clusters", "1"], "clusters", "got 1"),
            case("broken recipe", with_recipe("broken.json"), "broken.json", "not valid JSON"),
            case("unknown recipe key", with_recipe("unknown_key.json"), "prune", "unknown"),
            case("recipe is a folder", with_recipe("recipe_folder.json"), "recipe_folder", ""),
            case("override not an object", with_recipe("override_list.json"), "recipe", ""),
            case("missing recipe", with_recipe("absent.json"), "absent.json", "no such"),
            case(
                "output in a missing folder",
                [model, "--sparsity", "0.5"],
                "nowhere",
                "no such folder",
                output=f / "nowhere" / "out.keras",
            ),
            case(
                "full integer without data",
                [model, "--bits", "8", "--format", "tflite-int8"],
                "int8",
                "needs calibration data",
                output=f / "full.tflite",
                command="export",
            ),
            case(
                "export suffix not .tflite",
                [model, "--data", data, "--format", "tflite-int4"],
                "int4.keras",
                "must end in .tflite",
                output=f / "int4.keras",
                command="export",
            ),
            case(
                "output not .keras",
                [model, "--sparsity", "0.5"],
                "out.h5",
                "must end in .keras",
                output=f / "out.h5",
            ),
        ]
    )


def good_runs(w: Work) -> dict[str, list[str]]:
    common = [str(w.model), "--data", str(w.data), "--json", "--output"]
    flags = ["--sparsity", str(SPARSITY), "--clusters", str(CLUSTERS)]
    bits = ["--bits", str(BITS)]
    return {
        "all stages": ["apply", *common, str(w.folder / "all.keras"), *flags, *bits],
        "flags": ["apply", *common, str(w.folder / "flags.keras"), *flags],
        "export int4": [
            "export",
            *common,
            str(w.folder / "all_int4.tflite"),
            *flags,
            *bits,
            "--format",
            "tflite-int4",
        ],
        "export keras": [
            "export",
            *common,
            str(w.folder / "all_export.keras"),
            *flags,
            *bits,
            "--format",
            "keras",
        ],
        "export without data": [
            "export",
            str(w.model),
            "--bits",
            "8",
            "--format",
            "tflite-int8-dynamic",
            "--output",
            str(w.folder / "int8.tflite"),
            "--json",
        ],
        "recipe": [
            "apply",
            *common,
            str(w.folder / "recipe.keras"),
            "--recipe",
            str(w.folder / "recipe.json"),
        ],
    }


def run_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "optimizers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(args: list[str], process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def run_here(args: list[str]) -> subprocess.CompletedProcess:
    """``main(args)`` in this process, with what it prints, as a subprocess's run would be."""
    from optimizers.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # the argument parser exits
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class Runs:
    work: Work
    cases: dict[str, BadCase]
    results: dict[str, subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli_model) -> Runs:
    work = build_inputs(tmp_path_factory.mktemp("cli"), cli_model.model, cli_model.data)
    cases = bad_cases(work)
    jobs = {**good_runs(work), **{name: c.args for name, c in cases.items()}}
    started = {name: run_cli(jobs[name]) for name in SUBPROCESS_RUNS}
    results = {name: run_here(args) for name, args in jobs.items() if name not in started}
    results |= {name: finished(jobs[name], p) for name, p in started.items()}
    return Runs(work, cases, results)


# ------------------------------------------------------------------------------ helpers


def json_result(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith("error:")]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must be one JSON object: {run.stdout[-2000:]!r}"
    return json.loads(lines[0])


def classes(outputs: np.ndarray) -> np.ndarray:
    outputs = outputs.reshape(len(outputs), -1)
    return (outputs[:, 0] > 0.5).astype(int) if outputs.shape[1] == 1 else outputs.argmax(1)


def keras_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy measured by Keras itself on a model loaded the safe way."""
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return float(np.mean(classes(model.predict(x, verbose=0)) == y))


def weights_by_path(path: Path) -> dict[str, np.ndarray]:
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return {v.path: np.asarray(v) for v in model.weights}


def check_outcome(d: dict) -> None:
    assert 0.0 <= d["accuracy"] <= 1.0
    assert isinstance(d["size_bytes"], int) and d["size_bytes"] > 0
    assert isinstance(d["gzip_bytes"], int) and 0 < d["gzip_bytes"]
    assert d["layers"], "no eligible tensors reported"
    for layer in d["layers"]:
        assert {"name", "sparsity", "unique_values"} <= set(layer)
        assert 0.0 <= layer["sparsity"] <= 1.0 and layer["unique_values"] >= 1


def check_file_matches_report(runs: Runs, output: Path, result: dict) -> None:
    """The written model holds what the report says, and everything else is untouched."""
    assert result["output"] is not None and Path(result["output"]) == output
    written = weights_by_path(output)
    original = weights_by_path(runs.work.model)
    assert written.keys() == original.keys()
    reported = {layer["name"]: layer for layer in result["optimized"]["layers"]}
    assert reported.keys() <= written.keys()
    for name, w in written.items():
        if name not in reported:
            np.testing.assert_array_equal(w, original[name], err_msg=f"{name} was changed")
            continue
        layer = reported[name]
        assert 1 - np.count_nonzero(w) / w.size == pytest.approx(layer["sparsity"], abs=1e-12)
        assert np.unique(w).size == layer["unique_values"], name


def check_accuracies(runs: Runs, output: Path, result: dict) -> None:
    """Keras itself agrees with the reported accuracies within half a percentage point."""
    with np.load(runs.work.data) as arrays:
        x, y = arrays["x"], arrays["y"]
    assert keras_accuracy(runs.work.model, x, y) == pytest.approx(
        result["baseline"]["accuracy"], abs=0.005
    )
    assert keras_accuracy(output, x, y) == pytest.approx(result["optimized"]["accuracy"], abs=0.005)


# ------------------------------------------------------------------------------ good runs


def test_apply_with_all_three_stages(runs):
    result = json_result(runs.results["all stages"])
    base, opt = result["baseline"], result["optimized"]
    check_outcome(base)
    check_outcome(opt)
    assert [layer["name"] for layer in base["layers"]] == [layer["name"] for layer in opt["layers"]]
    for layer in opt["layers"]:
        # Quantization may round a few more small weights to zero, never fewer.
        assert layer["sparsity"] >= SPARSITY, layer
        assert layer["max_channel_values"] <= CLUSTERS, layer
        assert layer["bits"] == BITS, layer
    assert opt["gzip_bytes"] < base["gzip_bytes"]
    output = runs.work.folder / "all.keras"
    check_file_matches_report(runs, output, result)
    check_accuracies(runs, output, result)


def test_apply_pruning_and_clustering_only(runs):
    result = json_result(runs.results["flags"])
    opt = result["optimized"]
    check_outcome(opt)
    assert result["config"] == config_to_dict(FLAGS_CONFIG)
    for layer in opt["layers"]:
        n = layer["params"]
        # Exactly the fewest zeros that reach 60%: ceil(0.6 n), as optimizers/pruning.py
        # documents. (round(0.6 n) agrees unless 0.6 n has a fractional part below one half,
        # e.g. a 3x3x1x16 kernel: round(86.4) = 86 zeros is only 59.7%.) Clustering keeps zeros
        # at zero and no non-zero cluster mean is exactly zero, so this is still exact.
        zeros = math.ceil(round(SPARSITY * n, 6))
        assert layer["sparsity"] == zeros / n, (layer["name"], layer["sparsity"] * n, zeros)
        assert layer["unique_values"] <= CLUSTERS, layer
        assert layer["bits"] is None
    output = runs.work.folder / "flags.keras"
    check_file_matches_report(runs, output, result)
    check_accuracies(runs, output, result)


def test_recipe_gives_the_same_result_as_flags(runs):
    by_flags = json_result(runs.results["flags"])
    by_recipe = json_result(runs.results["recipe"])
    assert by_recipe["config"] == by_flags["config"]
    for key in ("baseline", "optimized"):
        a, b = dict(by_flags[key]), dict(by_recipe[key])
        # The .keras archives carry their save time, so their byte counts may differ slightly.
        for size in ("size_bytes", "gzip_bytes"):
            assert abs(a.pop(size) - b.pop(size)) <= 64, (key, size)
        assert a == b, key
    flags_weights = weights_by_path(runs.work.folder / "flags.keras")
    recipe_weights = weights_by_path(runs.work.folder / "recipe.keras")
    assert flags_weights.keys() == recipe_weights.keys()
    for name, w in flags_weights.items():
        np.testing.assert_array_equal(w, recipe_weights[name], err_msg=name)


def test_export_writes_the_file_the_preview_promised(runs):
    from optimizers import export

    apply = json_result(runs.results["all stages"])
    result = json_result(runs.results["export int4"])
    output = runs.work.folder / "all_int4.tflite"
    assert result["format"] == "tflite-int4" and Path(result["output"]) == output
    assert result["size_bytes"] == output.stat().st_size
    assert 0 < result["gzip_bytes"] < result["size_bytes"]
    assert result["preview_accuracy"] == apply["optimized"]["accuracy"]
    with np.load(runs.work.data) as arrays:
        x, y = arrays["x"], arrays["y"]
    file_accuracy = float(np.mean(classes(export.run_tflite(output.read_bytes(), x)) == y))
    assert result["file_accuracy"] == file_accuracy  # what LiteRT itself measures
    assert abs(file_accuracy - result["preview_accuracy"]) <= 0.005
    assert not result["departs_from_preview"]
    for key in ("latency_ms", "latency_p90_ms", "latency_threads_ms", "baseline_latency_ms"):
        assert result[key] > 0, key  # batch-1 times of the file and the original float32 file


def test_export_keras_is_the_optimized_model(runs):
    result = json_result(runs.results["export keras"])
    output = runs.work.folder / "all_export.keras"
    with np.load(runs.work.data) as arrays:
        x, y = arrays["x"], arrays["y"]
    assert keras_accuracy(output, x, y) == result["file_accuracy"] == result["preview_accuracy"]


def test_export_without_data_still_writes_a_running_file(runs):
    from optimizers import export

    result = json_result(runs.results["export without data"])
    assert result["preview_accuracy"] is None and result["file_accuracy"] is None
    output = runs.work.folder / "int8.tflite"
    with np.load(runs.work.data) as arrays:
        outputs = export.run_tflite(output.read_bytes(), arrays["x"][:8])
    assert outputs.shape[0] == 8 and np.isfinite(outputs).all()


# ------------------------------------------------------------------------------ bad input

BAD_CASES = [
    "missing model",
    "empty model",
    "truncated model",
    "fake model",
    "lambda model",
    "pickled data",
    "mis-shaped data",
    "bad bits",
    "bits not a number",
    "sparsity 1.5",
    "one cluster",
    "broken recipe",
    "unknown recipe key",
    "recipe is a folder",
    "override not an object",
    "missing recipe",
    "output in a missing folder",
    "output not .keras",
    "full integer without data",
    "export suffix not .tflite",
]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_exits_2_with_one_error_line(runs, name):
    case, run = runs.cases[name], runs.results[name]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == 2, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    messages = [line for line in lines if not TF_LOG_LINE.match(line)]
    assert len(messages) == 1, f"expected one error line, got {messages}"
    (message,) = messages
    assert message.startswith("error: "), message
    assert case.mentions in message, f"{case.mentions!r} not named in {message!r}"
    assert case.phrase.lower() in message.lower(), f"{case.phrase!r} not in {message!r}"
    assert run.stdout == ""
    assert not case.output.exists(), f"{case.output} was written"
    if name == "output in a missing folder":
        assert not case.output.parent.exists(), "the missing folder was created"


def test_bad_cases_are_all_checked(runs):
    assert sorted(BAD_CASES) == sorted(runs.cases)


def test_lambda_layer_code_never_runs(runs):
    assert runs.results["lambda model"].returncode == 2
    assert not runs.work.lambda_marker.exists(), "the CLI ran the Lambda layer's code"


# ------------------------------------------------------------------------------ in process
# Bad input that is only noticed after the model is loaded costs a whole TensorFlow import in a
# subprocess; these call ``main`` (what ``python -m optimizers`` runs) in this process instead.


def run_main(argv: list[str]) -> tuple[int, list[str]]:
    """``run_here`` for a run that must print nothing on stdout: its status and error lines."""
    run = run_here(argv)
    assert run.stdout == ""
    return run.returncode, [line for line in run.stderr.splitlines() if line.strip()]


def test_output_that_is_an_existing_folder_is_refused(tmp_path, cli_model):
    folder = tmp_path / "taken.keras"
    folder.mkdir()
    argv = ["apply", str(cli_model.model), "--sparsity", "0.5", "--output", str(folder)]
    code, lines = run_main(argv)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and "taken.keras" in lines[0]
    assert folder.is_dir() and not any(folder.iterdir())


@pytest.mark.parametrize(
    "clustering",
    [{"clusters": 2.5}, {"clusters": 4, "init": "kmeans++", "seed": "x"}],
    ids=["fractional clusters", "text seed"],
)
def test_recipe_with_mistyped_clustering_setting_is_refused(tmp_path, cli_model, clustering):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"clustering": clustering}))
    output = tmp_path / "out.keras"
    argv = ["apply", str(cli_model.model), "--recipe", str(recipe), "--output", str(output)]
    code, lines = run_main(argv)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not output.exists()


def test_skipping_a_layer_the_model_lacks_is_refused(tmp_path, cli_model):
    output = tmp_path / "out.keras"
    argv = ["apply", str(cli_model.model), "--sparsity", "0.5", "--skip", "no_such_layer"]
    code, lines = run_main([*argv, "--output", str(output)])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "no_such_layer" in lines[0] and "no eligible layer" in lines[0]
    assert not output.exists()


def test_global_scope_without_sparsity_is_refused(cli_model):
    code, lines = run_main(["apply", str(cli_model.model), "--scope", "global"])
    assert code == 2 and lines == ["error: --scope global needs --sparsity"]


def calibration_file(tmp_path: Path, cli_model) -> Path:
    """Inputs to calibrate on that are not the evaluation data: the sample's training split."""
    if cli_model.source == "sample_models":
        return cli_model.model.with_name("digits_cnn_train.npz")
    with np.load(cli_model.data) as arrays:  # the fixture's CNN: its inputs, brightened
        x = np.clip(arrays["x"] * 1.1, 0, 1)
    np.savez(tmp_path / "calibration.npz", x=x)
    return tmp_path / "calibration.npz"


def test_data_aware_apply_reports_its_calibration_and_beats_plain(tmp_path, cli_model):
    calibration = calibration_file(tmp_path, cli_model)
    argv = ["apply", str(cli_model.model), "--data", str(cli_model.data), "--bits", "2"]
    plain, aware = (
        apply_json([*argv, *extra])[0]
        for extra in ([], ["--data-aware", "--calibration", str(calibration)])
    )
    assert plain["calibration"] is None and not plain["config"]["data_aware"]
    assert aware["config"]["data_aware"] is True
    assert calibration.name in aware["calibration"]
    assert aware["optimized"]["accuracy"] > plain["optimized"]["accuracy"]


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (["--data-aware"], "--data-aware needs --calibration"),
        (["--data-aware", "--calibration", "DATA"], "is the evaluation data"),
        (["--calibration", "DATA"], "add --data-aware"),
        (["--block-size", "32"], "--block-size needs --bits"),
    ],
)
def test_data_aware_misuse_is_refused(cli_model, extra, phrase):
    extra = [str(cli_model.data) if e == "DATA" else e for e in extra]
    argv = ["apply", str(cli_model.model), "--data", str(cli_model.data), *extra]
    code, lines = run_main(argv)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert phrase in lines[0]


def apply_json(argv: list[str]) -> tuple[dict, str]:
    run = run_here([*argv, "--json"])
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout), run.stderr


def test_image_folders_and_a_csv_give_the_accuracy_of_their_npz(user_files):
    samples = ROOT / "sample_models"
    cases = [
        ("digits_cnn", user_files.digits_zip, "pixels 0-1 (the default for this model)"),
        ("breast_cancer_mlp", user_files.cancer_csv, "labels from column target"),
    ]
    accuracies = {}
    for sample, data, note in cases:
        model = str(samples / f"{sample}.keras")
        base, _ = apply_json(["apply", model, "--data", str(samples / f"{sample}_test.npz")])
        read, err = apply_json(["apply", model, "--data", str(data)])
        assert abs(read["baseline"]["accuracy"] - base["baseline"]["accuracy"]) <= 0.005
        assert f"data: {data.name}: " in err and note in err  # how it was read, on stderr
        accuracies[sample] = read["baseline"]["accuracy"]
    dark, err = apply_json(
        ["apply", str(samples / "digits_cnn.keras"), "--data", str(user_files.digits_zip)]
        + ["--pixel-range", "0-255"]
    )
    assert "pixels 0-255" in err  # the override is said, and it is what ran:
    assert dark["baseline"]["accuracy"] < accuracies["digits_cnn"] - 0.03


def test_data_flags_refuse_what_does_not_fit_in_one_line(user_files, tmp_path):
    samples = ROOT / "sample_models"
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(user_files.digits_zip) as z, zipfile.ZipFile(flat, "w") as out:
        for info in z.infolist()[:4]:  # images without class folders: no labels
            out.writestr(Path(info.filename).name, z.read(info))
    cnn, cancer = str(samples / "digits_cnn.keras"), str(samples / "breast_cancer_mlp.keras")
    test_npz = str(samples / "digits_cnn_test.npz")
    cases = [
        (["finetune", cnn, "--data", test_npz, "--train", str(flat)], "flat.zip has no class"),
        (
            ["apply", cancer, "--data", str(user_files.cancer_csv), "--label-column", "kind"],
            "no column named kind",
        ),
        (["apply", cnn, "--data", str(flat), "--pixel-range", "0-2"], "--pixel-range"),
    ]
    for argv, phrase in cases:
        code, lines = run_main(argv)
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert phrase in lines[0], lines
