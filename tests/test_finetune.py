"""Fine-tuning: the schedule, the projection's gradients, exact structure after training on a CNN
(BatchNorm, DepthwiseConv2D, residual Add) and an MLP, the int4 file equals the fine-tuned
preview, refusals of bad training data, determinism, stopping, and the ``finetune`` command.

Models are small and trained for one or two epochs: these check behaviour, not accuracy (the
accuracy targets are measured by ``python -m bench.finetune``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers import constraints, explore, export, finetune  # noqa: E402
from optimizers.cli import main  # noqa: E402
from optimizers.clustering import ClusteringConfig  # noqa: E402
from optimizers.keras_io import InputError  # noqa: E402
from optimizers.pipeline import (  # noqa: E402
    OptimizationConfig,
    Techniques,
    TensorRef,
    distinct_counts,
    eligible_tensors,
    optimize_weights,
)
from optimizers.pruning import PruningConfig, target_zeros  # noqa: E402
from optimizers.quantization import QuantizationConfig, fake_quantize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = finetune.FinetuneConfig(epochs=2, batch_size=64, learning_rate=3e-3)
PCQ = OptimizationConfig(
    pruning=PruningConfig(0.6), clustering=ClusteringConfig(6), quantization=QuantizationConfig(4)
)


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("step", "begin", "end", "final", "initial", "expected"),
    [
        (0, 0, 100, 0.8, 0.0, 0.0),
        (50, 0, 100, 0.8, 0.0, 0.7),  # 0.8 * (1 - 0.5**3)
        (100, 0, 100, 0.8, 0.0, 0.8),
        (250, 0, 100, 0.8, 0.0, 0.8),  # held after the end
        (5, 10, 20, 0.8, 0.0, 0.0),  # not started
        (15, 10, 20, 0.8, 0.5, 0.7625),  # 0.8 + (0.5 - 0.8) * 0.5**3
        (30, 10, 30, 0.9, 0.5, 0.9),
        (9, 10, 10, 0.9, 0.0, 0.0),  # a zero-length ramp jumps at begin
        (10, 10, 10, 0.9, 0.0, 0.9),
    ],
)
def test_polynomial_sparsity_by_hand(step, begin, end, final, initial, expected):
    got = constraints.polynomial_sparsity(step, begin, end, final, initial)
    assert got == pytest.approx(expected, abs=1e-12)


def test_masks_are_recomputed_every_frequency_steps_and_at_the_end():
    steps = [s for s in range(40) if constraints.is_update_step(s, 5, 27, 10)]
    assert steps == [5, 15, 25, 27]


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("epochs", 0, "[1, 10000]"),
        ("epochs", 2.5, "[1, 10000]"),
        ("batch_size", True, "[1, "),
        ("seed", -1, "[0, "),
        ("learning_rate", 0.0, "(0, 1]"),
        ("learning_rate", float("nan"), "(0, 1]"),
        ("validation_split", 0.6, "[0, 0.5]"),
        ("pruning_end", 1.5, "[0, 1]"),
        ("pruning_frequency", 0, "(0, 1]"),
        ("distillation", 1.5, "[0, 1]"),
        ("temperature", 0, "(0, 100]"),
    ],
)
def test_finetune_config_names_field_range_and_value(field, value, shown):
    with pytest.raises(ValueError, match=field) as e:
        finetune.FinetuneConfig(**{field: value})
    assert shown in str(e.value) and repr(value) in str(e.value)


def test_pruning_must_end_after_it_begins():
    with pytest.raises(ValueError, match="pruning_end must be at least pruning_begin"):
        finetune.FinetuneConfig(pruning_begin=0.6, pruning_end=0.4)


# ----------------------------------------------------------------------------- distillation


def test_teacher_targets_are_the_float_outputs_softened_by_the_temperature():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    np.testing.assert_allclose(finetune.teacher_targets(p, False, False, 1.0), p, rtol=1e-5)
    root = np.sqrt(p) / np.sqrt(p).sum(axis=1, keepdims=True)  # softmax(log p / 2)
    np.testing.assert_allclose(finetune.teacher_targets(p, False, False, 2.0), root, rtol=1e-5)
    binary = finetune.teacher_targets(np.array([[0.8], [0.1]], np.float32), True, False, 1.0)
    np.testing.assert_allclose(binary, [[0.2, 0.8], [0.9, 0.1]], rtol=1e-5)
    logits = np.array([[0.0, np.log(4.0)]], np.float32)  # softmax: 0.2, 0.8
    np.testing.assert_allclose(
        finetune.teacher_targets(logits, False, True, 1.0), [[0.2, 0.8]], rtol=1e-5
    )


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_loss_mixes_label_and_distillation_cross_entropy_by_hand(weight):
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    y = np.array([0, 1], np.int32)
    teacher = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], np.float32)
    settings = finetune.FinetuneConfig(distillation=weight, temperature=1.0)
    loss = finetune.make_loss(False, False, settings)
    hard = -(np.log(0.7) + np.log(0.1)) / 2
    soft = -(0.5 * np.log(0.7) + 0.5 * np.log(0.2) + np.log(0.8)) / 2
    expected = (1 - weight) * hard + weight * soft
    assert float(loss(y, teacher, p)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- gradients


def gradient(t: finetune.Trained, upstream: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = t.project()
    grad = tape.gradient(out, t.param, output_gradients=tf.constant(upstream))
    return tf.convert_to_tensor(grad).numpy()  # a gather's gradient comes as slices


def trained(w, techniques, mask=None, index=None):
    import tensorflow as tf

    shape = tuple(np.shape(w if index is None else index))
    ref = TensorRef(0, "k", "k", "Dense", shape, (-1,))
    param = keras.Variable(np.asarray(w, np.float32))
    m = None if mask is None else tf.Variable(np.asarray(mask, np.float32))
    return finetune.Trained(ref, techniques, None, param, m, index)


def test_pruned_weights_are_zero_forward_and_get_no_gradient():
    w = np.array([[0.5, -0.2], [0.1, 0.9]], np.float32)
    mask = np.array([[1, 0], [0, 1]], np.float32)
    t = trained(w, Techniques(pruning=PruningConfig(0.5)), mask=mask)
    np.testing.assert_array_equal(np.asarray(t.project()), w * mask)
    np.testing.assert_array_equal(gradient(t, np.full((2, 2), 3.0, np.float32)), 3.0 * mask)


def test_centroid_gradient_is_the_sum_over_its_members():
    centroids = np.array([-0.5, 0.25, 1.0], np.float32)
    index = np.array([[0, 2], [2, 2], [1, 0]], np.int32)
    t = trained(centroids, Techniques(clustering=ClusteringConfig(3)), index=index)
    np.testing.assert_array_equal(np.asarray(t.project()), centroids[index])
    upstream = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    np.testing.assert_array_equal(gradient(t, upstream), [1.0 + 6.0, 5.0, 2.0 + 3.0 + 4.0])


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("granularity", ["per-channel", "per-tensor"])
def test_fake_quantization_is_the_pipeline_grid_with_straight_through_gradient(mode, granularity):
    w = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    q = QuantizationConfig(3, mode, granularity)
    t = trained(w, Techniques(quantization=q))
    np.testing.assert_allclose(np.asarray(t.project()), fake_quantize(w, q), rtol=0, atol=1e-6)
    upstream = np.arange(60, dtype=np.float32).reshape(12, 5)
    np.testing.assert_array_equal(gradient(t, upstream), upstream)


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric"])
def test_clustered_tensor_is_fake_quantized_on_its_clustering_grid(mode):
    """Per-tensor clusters on a per-channel quantization config: the projection uses one scale
    for the tensor (``Techniques.grid``), as the pipeline does, so k values stay k."""
    centroids = np.array([-0.9, -0.31, 0.05, 0.4, 1.2], np.float32)
    # Channels of different ranges: all five values, the middle three, the outer two, 0.05.
    index = np.array([[0, 1, 2, 3, 4, 2], [1, 2, 3, 1, 2, 3], [0, 4, 0, 4, 4, 0], [2] * 6]).T
    index = index.astype(np.int32)
    clustering, quantization = ClusteringConfig(5), QuantizationConfig(3, mode, "per-channel")
    techniques = Techniques(clustering=clustering, quantization=quantization)
    assert techniques.grid == QuantizationConfig(3, mode, "per-tensor")
    w = centroids[index]
    assert np.unique(fake_quantize(w, quantization)).size > 5  # per-channel scales would split
    projected = np.asarray(trained(centroids, techniques, index=index).project())
    assert np.unique(projected).size <= 5
    ref = TensorRef(0, "k", "k", "Dense", w.shape, (-1,))
    config = OptimizationConfig(clustering=clustering, quantization=quantization)
    (pipeline,), _ = optimize_weights([w], [ref], config)
    np.testing.assert_allclose(projected, pipeline, rtol=0, atol=1e-6)
    np.testing.assert_allclose(projected, fake_quantize(w, techniques.grid), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- models


@cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def build_mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="predictions"),
        ],
        name="mlp",
    )


def build_cnn():
    """Conv2D → BatchNorm, DepthwiseConv2D → BatchNorm, a residual Add, 1x1 Conv2D, Dense."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs)))
    d = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(h)
    d = layers.ReLU()(layers.BatchNormalization()(d))
    h = layers.Add()([h, d])
    h = layers.Conv2D(16, 1, activation="relu")(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(h), name="cnn")


@cache
def pretrained(kind: str):
    """The model trained briefly in the ordinary way, so fine-tuning starts from a real model."""
    model = build_mlp() if kind == "mlp" else build_cnn()
    x, y = data(kind)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x[:1200], y[:1200], epochs=4, batch_size=64, verbose=0)
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    return plain


def data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = digits()
    return (x if kind == "mlp" else x.reshape(-1, 8, 8, 1)), y


def check_structure(result: finetune.FinetuneResult, config: OptimizationConfig) -> None:
    """The result's config is ``config`` as requested; every transformed tensor lies exactly in
    its structure (at most k values per tensor or per channel, as clustered, whatever the
    quantization's granularity; on the grid ``Techniques.grid`` gives it), and the pipeline at
    ``config`` leaves the weights as they are."""
    assert result.config == config
    model = result.model
    refs = eligible_tensors(model)
    weights = model.get_weights()
    transformed = 0
    pooled: list[np.ndarray] = []
    for r in refs:
        t, w = config.for_layer(r.layer), weights[r.index]
        transformed += t.active
        if t.pruning and t.pruning.scope == "global":  # one threshold: counted over all
            pooled.append(w)
        elif t.pruning:
            assert w.size - np.count_nonzero(w) >= target_zeros(t.pruning.sparsity, w.size), r.path
        if t.clustering and t.clustering.granularity == "per-channel":
            assert distinct_counts(w, r.channel_axes)[1] <= t.clustering.clusters, r.path
        elif t.clustering:  # per tensor, even on a per-channel quantization config
            assert np.unique(w).size <= t.clustering.clusters, r.path
        if t.quantization:
            np.testing.assert_array_equal(fake_quantize(w, t.grid, r.channel_axes), w)
    assert transformed
    if pooled:
        n = sum(w.size for w in pooled)
        zeros = n - sum(np.count_nonzero(w) for w in pooled)
        assert zeros >= target_zeros(config.pruning.sparsity, n)
    again, _ = optimize_weights(weights, refs, config)
    for a, b in zip(again, weights, strict=True):
        np.testing.assert_array_equal(a, b)


COMBINATIONS = {
    "prune": OptimizationConfig(pruning=PruningConfig(0.7)),
    "cluster": OptimizationConfig(clustering=ClusteringConfig(5)),
    "qat": OptimizationConfig(quantization=QuantizationConfig(3)),
    "pqat": OptimizationConfig(pruning=PruningConfig(0.7), quantization=QuantizationConfig(4)),
    "cqat": OptimizationConfig(clustering=ClusteringConfig(5), quantization=QuantizationConfig(4)),
    "pc": OptimizationConfig(
        pruning=PruningConfig(0.5, scope="global"), clustering=ClusteringConfig(4)
    ),
    "pcqat": PCQ,
    "2:4": OptimizationConfig(
        pruning=PruningConfig(structure="2:4"), quantization=QuantizationConfig(2)
    ),
}


@pytest.mark.parametrize("name", COMBINATIONS)
def test_mlp_structure_is_exact_after_training(name):
    config = COMBINATIONS[name]
    model = pretrained("mlp")
    before = [w.copy() for w in model.get_weights()]
    x, y = data("mlp")
    result = finetune.finetune(model, config, x[:1200], y[:1200], QUICK)
    check_structure(result, config)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # the input model is not changed
    post, _ = optimize_weights(before, eligible_tensors(model), config)
    assert any(
        not np.array_equal(a, b) for a, b in zip(result.model.get_weights(), post, strict=True)
    )


def test_cnn_with_batchnorm_depthwise_and_residual_structure_is_exact():
    config = OptimizationConfig(
        pruning=PruningConfig(0.5),
        clustering=ClusteringConfig(4, granularity="per-channel"),
        quantization=QuantizationConfig(4),
        overrides=(("depthwise", Techniques(quantization=QuantizationConfig(3))),),
    )
    x, y = data("cnn")
    result = finetune.finetune(pretrained("cnn"), config, x[:800], y[:800], QUICK)
    check_structure(result, config)
    assert [r.epoch for r in result.history] == [1, 2] and result.epochs_run == 2


def test_fine_tuning_recovers_what_post_training_loses():
    config = OptimizationConfig(quantization=QuantizationConfig(2))
    model = pretrained("mlp")
    x, y = data("mlp")
    prepared = explore.prepare(model, x[1200:], y[1200:])
    post = explore.run(prepared, config).accuracy
    settings = finetune.FinetuneConfig(epochs=4, batch_size=64, learning_rate=3e-3)
    result = finetune.finetune(model, config, x[:1200], y[:1200], settings)
    tuned = explore.run(explore.prepare(result.model, x[1200:], y[1200:]), result.config)
    assert tuned.accuracy > post + 0.1, (post, tuned.accuracy)


def test_batchnorm_statistics_are_re_estimated_for_the_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(256, 3)).astype(np.float32)
    finetune.refresh_batchnorm(model, x)
    mean, var = (np.asarray(v) for v in model.layers[0].weights[2:])
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(var, x.var(axis=0), rtol=1e-4)
    assert model.layers[0].momentum == 0.99  # restored


# ----------------------------------------------------------------------------- file = preview


def test_int4_file_of_a_fine_tuned_model_dequantizes_to_its_preview():
    config = OptimizationConfig(pruning=PruningConfig(0.5), quantization=QuantizationConfig(4))
    x, y = data("mlp")
    result = finetune.finetune(pretrained("mlp"), config, x[:1200], y[:1200], QUICK)
    preview = explore.run(explore.prepare(result.model, x[1200:], y[1200:]), result.config)
    for a, b in zip(preview.weights, result.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the preview is the model itself
    data_bytes = export.export_bytes(result.model, "tflite-int4")
    float_bytes = export.converted(
        result.model, export.input_signature(result.model), ("tflite-float32",)
    )["tflite-float32"]
    floats = {t.name: t.values for t in export.stored_weights(float_bytes)}
    stored = [t for t in export.stored_weights(data_bytes) if t.codes is not None]
    assert len(stored) == 2
    for t in stored:
        assert t.dtype == "int4"
        np.testing.assert_array_equal(t.values, floats[t.name], err_msg=t.name)
    outputs = export.run_tflite(data_bytes, x[1200:])
    np.testing.assert_allclose(outputs, np.asarray(result.model(x[1200:])), atol=1e-5)


# ----------------------------------------------------------------------------- determinism, stop


def test_same_seed_same_weights_other_seed_other_weights():
    x, y = data("mlp")
    model = pretrained("mlp")
    runs = [finetune.finetune(model, PCQ, x[:600], y[:600], QUICK) for _ in range(2)]
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs[0].history == runs[1].history
    other = finetune.finetune(model, PCQ, x[:600], y[:600], finetune.FinetuneConfig(2, seed=1))
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(runs[0].model.get_weights(), other.model.get_weights(), strict=True)
    )


def test_on_epoch_reports_and_should_stop_keeps_the_best_so_far():
    x, y = data("mlp")
    seen: list[tuple] = []
    settings = finetune.FinetuneConfig(epochs=3, batch_size=64)
    calls = iter(range(10**6))
    steps_per_epoch = math.ceil((600 - 60) / 64)

    def stop() -> bool:  # during the second epoch
        return next(calls) >= steps_per_epoch + 2

    result = finetune.finetune(
        pretrained("mlp"), PCQ, x[:600], y[:600], settings, lambda *a: seen.append(a), stop
    )
    assert result.stopped and result.epochs_run == 1
    assert len(seen) == 1 and seen[0][0] == 1
    assert seen[0][1] > 0 and 0.0 <= seen[0][2] <= 1.0
    assert result.best_epoch in (1, 2)
    check_structure(result, PCQ)


# ----------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("train")
    x, y = data("mlp")
    files = {
        name: folder / f"{name}.npz" for name in ("good", "no_y", "flat", "nan", "label", "one")
    }
    np.savez(files["good"], x=x[:300], y=y[:300])
    np.savez(files["no_y"], x=x[:300])
    np.savez(files["flat"], x=x[:300].reshape(300, 8, 8), y=y[:300])
    bad = x[:300].copy()
    bad[3, 3] = np.nan
    np.savez(files["nan"], x=bad, y=y[:300])
    np.savez(files["label"], x=x[:300], y=y[:300] + 5)
    np.savez(files["one"], x=x[:1], y=y[:1])
    objects = np.empty(3, dtype=object)
    objects[:] = [{"a": 1}, {"b": 2}, None]
    files["pickled"] = folder / "pickled.npz"
    np.savez(files["pickled"], x=objects, y=np.zeros(3))
    return files


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("no_y", "no array named y"),
        ("flat", "shape"),
        ("nan", "NaN"),
        ("label", "holds class"),
        ("one", "at least 2"),
        ("pickled", "pickled"),
    ],
)
def test_bad_training_data_is_refused_in_one_sentence(bad_files, name, phrase):
    with pytest.raises(InputError) as e:
        finetune.load_training_data(bad_files[name], pretrained("mlp"))
    message = str(e.value)
    assert phrase in message and f"{name}.npz" in message
    assert "\n" not in message and message.count(". ") == 0


def test_refuses_configs_it_cannot_train_toward():
    x, y = data("mlp")
    with pytest.raises(ValueError, match="nothing to train"):
        finetune.finetune(pretrained("mlp"), OptimizationConfig(), x[:100], y[:100], QUICK)
    no_zeros = OptimizationConfig(
        pruning=PruningConfig(0.5), clustering=ClusteringConfig(4, preserve_sparsity=False)
    )
    with pytest.raises(ValueError, match="must preserve sparsity"):
        finetune.finetune(pretrained("mlp"), no_zeros, x[:100], y[:100], QUICK)


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory, bad_files) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    model = folder / "mlp.keras"
    pretrained("mlp").save(model)
    x, y = data("mlp")
    test = folder / "test.npz"
    np.savez(test, x=x[1200:], y=y[1200:])
    return {"model": model, "test": test, "train": bad_files["good"], "folder": folder}


def test_finetune_command_prints_the_three_models_and_writes_the_file(mlp_file):
    out = mlp_file["folder"] / "tuned.keras"
    run = subprocess.run(
        [sys.executable, "-m", "optimizers", "finetune", str(mlp_file["model"])]
        + ["--train", str(mlp_file["train"]), "--data", str(mlp_file["test"])]
        + ["--sparsity", "0.6", "--clusters", "6", "--bits", "4", "--epochs", "2"]
        + ["--output", str(out), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["epochs_run"] == 2 and result["seconds"] > 0
    for key in ("baseline", "post_training", "finetuned"):
        d = result[key]
        assert {"accuracy", "size_bytes", "gzip_bytes", "packed_bytes", "layers"} <= set(d)
        assert 0 <= d["accuracy"] <= 1 and d["layers"]
    for layer in result["finetuned"]["layers"]:
        assert layer["sparsity"] >= 0.6 and layer["max_channel_values"] <= 6
        assert layer["bits"] == 4
    written = keras.saving.load_model(out, compile=False, safe_mode=True)
    x, y = data("mlp")
    accuracy = float(np.mean(np.argmax(written.predict(x[1200:], verbose=0), 1) == y[1200:]))
    assert accuracy == result["finetuned"]["accuracy"]


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--train", "{folder}/missing.npz"], "missing.npz: no such file"),
        (["--train", "{no_y}"], "no array named y"),
        (["--train", "{train}", "--epochs", "0"], "epochs must be a whole number"),
        (["--train", "{train}", "--learning-rate", "-1"], "learning_rate"),
        ([], "--train"),
    ],
)
def test_finetune_command_refuses_bad_input_with_one_error_line(
    mlp_file, bad_files, capsys, args, phrase
):
    out = mlp_file["folder"] / "refused.keras"
    names = {"folder": mlp_file["folder"], "no_y": bad_files["no_y"], "train": mlp_file["train"]}
    argv = ["finetune", str(mlp_file["model"]), "--data", str(mlp_file["test"]), "--bits", "4"]
    argv += [a.format(**names) for a in args] + ["--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and phrase in err[0], err
    assert not out.exists()
