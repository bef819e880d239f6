"""Export: every format converts and runs in LiteRT, and the quantized files hold the preview.

"The file is the preview": a weight tensor the pipeline put on a b-bit grid must dequantize, in
the exported file, to exactly the float32 values the preview computed with, whenever the
container has at least b bits. Kernels the converter folds a BatchNormalization into are checked
to float rounding instead (the folding itself rounds).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from optimizers import export
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, optimize_model
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TFLITE = [f for f in export.FORMATS if f != "keras"]
SHAPES = {"mlp": (64,), "cnn": (8, 8, 1)}
FOLDED = 1e-6  # relative weight difference allowed where the converter folded a BatchNorm


def build(kind: str):
    """A seeded Dense MLP, or a CNN with Conv2D, DepthwiseConv2D, BatchNorm and 1x1 Conv2D."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    if kind == "mlp":
        return keras.Sequential(
            [
                keras.Input((64,)),
                layers.Dense(32, activation="relu", bias_initializer="random_normal"),
                layers.Dense(10, activation="softmax"),
            ],
            name="mlp",
        )
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(h)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.Conv2D(16, 1, activation="relu", bias_initializer="random_normal")(h)
    h = layers.GlobalAveragePooling2D()(h)
    outputs = layers.Dense(10, activation="softmax", bias_initializer="random_normal")(h)
    model = keras.Model(inputs, outputs, name="cnn")
    rng = np.random.default_rng(1)
    for layer in model.layers:  # BatchNorm statistics that fold into non-trivial factors
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n)]
                + [rng.uniform(0.5, 2.0, n)]
            )
    return model


@cache
def model(
    kind: str,
    bits: int | None = None,
    granularity: str = "per-channel",
    prune=None,
    clusters: ClusteringConfig | None = None,
    block: int | None = None,
):
    """``kind`` with its kernels put on a ``bits``-bit grid by the real pipeline (cached)."""
    base = build(kind)
    if bits is None and prune is None and clusters is None:
        return base
    q = QuantizationConfig(bits, granularity=granularity, block_size=block) if bits else None
    config = OptimizationConfig(
        pruning=PruningConfig(prune) if prune else None, clustering=clusters, quantization=q
    )
    return optimize_model(base, config)[0]


def inputs(kind: str, n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).random((n, *SHAPES[kind]), np.float32)


def keras_outputs(m, x: np.ndarray) -> np.ndarray:
    return np.asarray(m(x, training=False), np.float32)


def float_file(m) -> bytes:
    """The dense float32 flatbuffer the quantized formats are made from."""
    return export.converted(m, export.input_signature(m), ("tflite-float32",))["tflite-float32"]


def quantized(data: bytes) -> list[export.StoredTensor]:
    return [t for t in export.stored_weights(data) if t.codes is not None]


# ----------------------------------------------------------------------------- formats


def test_formats_are_documented():
    assert export.FORMATS == get_args(export.Format)
    assert set(export.FORMAT_LABELS) == set(export.FORMATS)
    assert export.FORMAT_SUFFIXES["keras"] == ".keras"
    assert all(export.FORMAT_SUFFIXES[f] == ".tflite" for f in TFLITE)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_every_format_exports_and_runs(kind):
    from optimizers import keras_io

    m = model(kind, bits=2)  # 2-bit levels fit every container: all int files are exact
    x = inputs(kind)
    reference = keras_outputs(m, x)
    files = {fmt: export.export_bytes(m, fmt, calibration_x=x) for fmt in export.FORMATS}

    reloaded = keras_io.load_model_bytes(files["keras"], "model.keras")
    np.testing.assert_array_equal(keras_outputs(reloaded, x), reference)
    for fmt in TFLITE:
        assert files[fmt][4:8] == b"TFL3", fmt
        outputs = export.run_tflite(files[fmt], x, batch_size=10)
        assert outputs.shape == reference.shape and outputs.dtype == np.float32
        # float compute (float32; int4/int2 weight-only): the preview's outputs
        # float16 weights: rounding; int8 (dynamic, full): activation rounding too
        tolerance = {"tflite-float16": 1e-3, "tflite-int8-dynamic": 0.01, "tflite-int8": 0.02}
        np.testing.assert_allclose(outputs, reference, atol=tolerance.get(fmt, 1e-5), err_msg=fmt)
    sizes = {fmt: len(files[fmt]) for fmt in TFLITE}
    assert max(sizes.values()) == sizes["tflite-float32"]
    if kind == "mlp":  # (the CNN's weights are so few that per-op overhead decides its order)
        assert sizes["tflite-int2"] < sizes["tflite-int4"] < sizes["tflite-int8-dynamic"]
        assert sizes["tflite-int8-dynamic"] < sizes["tflite-float16"] < sizes["tflite-float32"]


def test_float32_file_holds_the_keras_weights():
    m = model("mlp", bits=4)
    stored = {t.shape: t.values for t in export.stored_weights(float_file(m))}
    for kernel in (m.layers[0].kernel, m.layers[1].kernel):
        k = np.asarray(kernel)
        np.testing.assert_array_equal(stored[k.T.shape], k.T)  # FULLY_CONNECTED is (out, in)


# ----------------------------------------------------------------------------- the preview


EXACT_CASES = [
    ("tflite-int8-dynamic", 8, "per-channel"),
    ("tflite-int8-dynamic", 5, "per-channel"),
    ("tflite-int8-dynamic", 4, "per-tensor"),
    ("tflite-int8", 8, "per-channel"),
    ("tflite-int8", 3, "per-channel"),
    ("tflite-int4", 4, "per-channel"),
    ("tflite-int4", 3, "per-channel"),
    ("tflite-int4", 2, "per-channel"),
    ("tflite-int4", 4, "per-tensor"),
    ("tflite-int2", 2, "per-channel"),
]


# Clustered, then the shared values put on a grid with one scale per tensor (per-tensor
# clustering; the config's per-channel granularity aside) or per channel: LiteRT's int4 and int8
# files are per channel, and hold a per-tensor grid as the same scale in every channel.
CLUSTERED_CASES = [
    ("tflite-int4", 4, ClusteringConfig(16)),
    ("tflite-int4", 3, ClusteringConfig(6, preserve_sparsity=False)),
    ("tflite-int2", 2, ClusteringConfig(4)),
    ("tflite-int8-dynamic", 8, ClusteringConfig(16)),
    ("tflite-int8-dynamic", 6, ClusteringConfig(32, granularity="per-channel")),
    ("tflite-int8", 8, ClusteringConfig(16)),
]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize(("fmt", "bits", "granularity"), EXACT_CASES)
def test_quantized_file_dequantizes_to_the_preview(kind, fmt, bits, granularity):
    check_file_is_the_preview(model(kind, bits, granularity), kind, fmt)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize(("fmt", "bits", "clusters"), CLUSTERED_CASES)
def test_clustered_and_quantized_file_dequantizes_to_the_preview(kind, fmt, bits, clusters):
    m = model(kind, bits, prune=0.3, clusters=clusters)
    if kind == "mlp" and clusters.granularity == "per-tensor":  # k values, per tensor
        assert all(
            np.unique(np.asarray(layer.kernel)).size <= clusters.clusters for layer in m.layers
        )
    check_file_is_the_preview(m, kind, fmt)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize(
    ("fmt", "bits", "sparsity", "clusters"),
    [("tflite-int4", 4, 0.5, None), ("tflite-int2", 2, None, None), ("tflite-int4", 4, 0.3, 8)],
)
def test_data_aware_file_dequantizes_to_the_preview(kind, fmt, bits, sparsity, clusters):
    """GPTQ's rounding (and SparseGPT's zeros, and refit shared values) are exported exactly: a
    channel whose largest code is below the container's still holds its scale's grid."""
    import keras

    from optimizers import calibration, data_aware
    from optimizers.pipeline import eligible_tensors

    base = build(kind)
    refs = eligible_tensors(base)
    inputs = np.random.default_rng(7).random((64, *SHAPES[kind]), np.float32)
    stats = calibration.gather(base, refs, inputs)
    config = OptimizationConfig(
        pruning=None if sparsity is None else PruningConfig(sparsity),
        clustering=None if clusters is None else ClusteringConfig(clusters),
        quantization=QuantizationConfig(bits),
        data_aware=True,
    )
    weights, _ = data_aware.optimize(base.get_weights(), refs, config, stats)
    plain = optimize_model(base, replace(config, data_aware=False))[0].get_weights()
    changed = [r.path for r in refs if not np.array_equal(weights[r.index], plain[r.index])]
    assert changed, "the data-aware weights are the plain ones: nothing to check"
    m = keras.models.clone_model(base)
    m.set_weights(weights)
    check_file_is_the_preview(m, kind, fmt)


@pytest.mark.parametrize(("bits", "block", "prune"), [(4, 32, None), (3, 64, 0.5), (2, 32, None)])
def test_blockwise_file_dequantizes_to_the_preview(bits, block, prune):
    """Blockwise int4 holds the preview's blocks and float16 scales bit for bit (the MLP's
    64-input kernel in blocks; its 32-input one too when the block is 32, else per channel);
    its blockwise layers round activations at run time, so the outputs agree to that."""
    m = model("mlp", bits, prune=prune, block=block)
    blockwise = check_file_is_the_preview(m, "mlp", "tflite-int4")
    assert blockwise == (2 if block == 32 else 1)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_data_aware_blockwise_file_dequantizes_to_the_preview(kind):
    """GPTQ on blocks: a block whose largest code ended below 7 is found on its grid too."""
    import keras

    from optimizers import calibration, data_aware
    from optimizers.pipeline import eligible_tensors

    base = build(kind)
    refs = eligible_tensors(base)
    inputs = np.random.default_rng(7).random((64, *SHAPES[kind]), np.float32)
    config = OptimizationConfig(quantization=QuantizationConfig(4, block_size=32), data_aware=True)
    stats = calibration.gather(base, refs, inputs)
    weights, _ = data_aware.optimize(base.get_weights(), refs, config, stats)
    m = keras.models.clone_model(base)
    m.set_weights(weights)
    assert check_file_is_the_preview(m, kind, "tflite-int4") == (2 if kind == "mlp" else 0)


def test_block_grid_finds_the_blocks_and_nothing_else():
    rng = np.random.default_rng(3)
    codes = rng.integers(-7, 8, (6, 128)).astype(np.int8)
    codes[:, :32] = np.clip(codes[:, :32], -5, 5)  # blocks whose largest code is below 7
    codes[0, 32:64] = 0  # an all-zero block
    scales = rng.uniform(0.01, 0.1, (6, 4)).astype(np.float16)
    w = (codes * np.repeat(scales.astype(np.float32), 32, axis=1)).astype(np.float32)
    found_codes, found_scales = export.block_grid(w, 4)
    np.testing.assert_array_equal(
        found_codes * np.repeat(found_scales.astype(np.float32), 32, axis=1), w
    )
    assert found_scales.shape == (6, 4) and np.abs(found_codes).max() <= 7
    assert export.block_grid(rng.normal(size=(6, 128)).astype(np.float32), 4) is None
    per_channel = QuantizationConfig(4)  # float32 scales per channel: not float16 blocks
    q = optimize_model(build("mlp"), OptimizationConfig(quantization=per_channel))[0]
    assert export.block_grid(np.asarray(q.layers[0].kernel).T, 4) is None
    assert export.block_grid(np.zeros((4, 64), np.float32), 4) is None


def check_file_is_the_preview(m, kind: str, fmt: str) -> int:
    """Every kernel of ``m``'s ``fmt`` file is stored quantized and dequantizes to the preview
    (bit for bit, or to folding's rounding where a BatchNorm was folded in); returns how many
    are stored blockwise."""
    x = inputs(kind)
    data = export.export_bytes(m, fmt, calibration_x=x)
    floats = {t.name: t.values for t in export.stored_weights(float_file(m))}
    stored = quantized(data)
    assert len(stored) == (2 if kind == "mlp" else 4)  # every kernel is stored quantized
    container = int(fmt.removeprefix("tflite-int").removesuffix("-dynamic"))
    for t in stored:
        assert t.dtype == f"int{container}"
        preview = floats[t.name]
        if kind == "mlp":  # nothing folded: bit for bit
            np.testing.assert_array_equal(t.values, preview, err_msg=t.name)
        else:
            worst = np.abs(t.values - preview).max() / np.abs(preview).max()
            assert worst <= FOLDED, (t.name, worst)
        assert np.abs(t.codes).max() <= 2 ** (container - 1) - 1
    blockwise = sum(t.scale.ndim == 2 for t in stored)
    outputs, expected = export.run_tflite(data, x), keras_outputs(m, x)
    if blockwise:  # activations rounded to int8 at run time in those layers
        assert np.mean(outputs.argmax(1) == expected.argmax(1)) >= 0.9
        np.testing.assert_allclose(outputs, expected, atol=0.05)
    elif fmt in ("tflite-int4", "tflite-int2"):  # weight-only: float compute, the preview's
        np.testing.assert_allclose(outputs, expected, atol=1e-5)
    return blockwise


def container_rounding(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """LiteRT's own per-channel (axis 0) symmetric rounding of ``w`` to ``bits`` bits."""
    qmax = 2 ** (bits - 1) - 1
    scale = (np.abs(w).max(axis=1) / np.float32(qmax)).astype(np.float32)
    codes = np.clip(np.rint(w / scale[:, None]), -qmax, qmax).astype(np.int8)
    return codes, scale


@pytest.mark.parametrize(
    ("bits", "granularity", "container"),
    [(b, "per-channel", c) for c in (8, 4, 2) for b in (2, 3, 4, 5, 8) if b <= c]
    + [(4, "per-tensor", 4), (6, "per-tensor", 8), (4, "asymmetric", 8)],
)
def test_fit_grid_recovers_every_grid_the_container_can_hold(bits, granularity, container):
    from optimizers.quantization import quantize

    w = np.random.default_rng(bits).standard_normal((40, 24)).astype(np.float32)
    config = (
        QuantizationConfig(bits, mode="asymmetric")
        if granularity == "asymmetric"
        else QuantizationConfig(bits, granularity=granularity)
    )
    preview = np.ascontiguousarray(quantize(w, config).values.T)  # LiteRT layout (out, in)
    codes, scale = export.fit_grid(preview, *container_rounding(preview, container), 0, container)
    assert np.abs(codes).max() <= 2 ** (container - 1) - 1
    np.testing.assert_array_equal(export.dequantize(codes, scale, np.zeros(1), 0), preview)


def test_fit_grid_keeps_the_container_for_a_different_tensor():
    rng = np.random.default_rng(0)
    held = rng.standard_normal((8, 16)).astype(np.float32)
    codes, scale = container_rounding(held, 4)
    impostor = np.round(rng.standard_normal((8, 16)) * 3).astype(np.float32)  # on a grid, but other
    new_codes, new_scale = export.fit_grid(impostor, codes, scale, 0, 4)
    np.testing.assert_array_equal(new_codes, codes)
    np.testing.assert_array_equal(new_scale, scale)


def test_levels_that_do_not_fit_the_container_are_rounded():
    m = model("mlp", bits=8)  # 8-bit levels in a 4-bit container: LiteRT's own rounding
    floats = {t.name: t.values for t in export.stored_weights(float_file(m))}
    for t in quantized(export.export_bytes(m, "tflite-int4")):
        preview = floats[t.name]
        error = np.abs(t.values - preview).max() / np.abs(preview).max()
        assert 1e-3 < error <= 0.5 / 7 + 1e-6  # at most half a step of the int4 grid
        assert np.abs(t.codes).max() <= 7


def test_clustered_levels_on_the_grid_stay_exact():
    base = build("mlp")
    config = OptimizationConfig(
        pruning=PruningConfig(0.6),
        clustering=ClusteringConfig(8),
        quantization=QuantizationConfig(4),
    )
    m = optimize_model(base, config)[0]
    floats = {t.name: t.values for t in export.stored_weights(float_file(m))}
    for t in quantized(export.export_bytes(m, "tflite-int4")):
        np.testing.assert_array_equal(t.values, floats[t.name])


def test_full_integer_file_has_int8_io_and_consistent_bias_scales():
    m = model("cnn", bits=3)
    x = inputs("cnn")
    data = export.export_bytes(m, "tflite-int8", calibration_x=x)
    fb = export.read_flatbuffer(data)
    graph = fb.subgraphs[0]
    for index in list(graph.inputs) + list(graph.outputs):
        assert graph.tensors[index].type == export.TYPE_CODES["int8"]
    checked = 0
    for op in graph.operators:
        inputs_ = list(op.inputs)
        if len(inputs_) < 3 or inputs_[2] < 0:
            continue
        weights, bias = graph.tensors[inputs_[1]], graph.tensors[inputs_[2]]
        if bias.type != export.TYPE_CODES["int32"] or weights.quantization is None:
            continue
        input_scale = np.asarray(graph.tensors[inputs_[0]].quantization.scale)[0]
        expected = input_scale * np.asarray(weights.quantization.scale, np.float64)
        np.testing.assert_allclose(bias.quantization.scale, expected, rtol=1e-6)
        checked += 1
    assert checked == 4  # two convolutions, the depthwise one, the classifier
    outputs = export.run_tflite(data, x)
    np.testing.assert_allclose(outputs, keras_outputs(m, x), atol=0.02)


def test_full_integer_needs_calibration_data():
    with pytest.raises(ValueError) as raised:
        export.export_bytes(model("mlp"), "tflite-int8")
    assert str(raised.value) == "full-integer int8 export needs calibration data (an .npz with x)"


def test_full_integer_refuses_mismatched_calibration_data():
    with pytest.raises(ValueError, match=r"calibration x has shape \(5, 63\)"):
        export.export_bytes(model("mlp"), "tflite-int8", np.zeros((5, 63), np.float32))


def test_full_integer_refuses_token_ids():
    import keras

    m = keras.Sequential([keras.Input((6,)), keras.layers.Embedding(20, 4), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="Embedding"):
        export.export_bytes(m, "tflite-int8", np.zeros((3, 6), np.float32))


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export.export_bytes(model("mlp"), "onnx")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- sparsity


def test_pruned_float32_is_stored_sparse_when_smaller():
    import keras

    keras.utils.set_random_seed(0)
    wide = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    )
    pruned = optimize_model(wide, OptimizationConfig(pruning=PruningConfig(0.8)))[0]
    x = inputs("mlp")
    data = export.export_bytes(pruned, "tflite-float32")
    kinds = {t.dtype for t in export.stored_weights(data)}
    assert kinds == {"sparse float32"}
    assert len(data) < 0.5 * len(float_file(pruned))
    np.testing.assert_allclose(export.run_tflite(data, x), keras_outputs(pruned, x), atol=1e-5)
    # an unpruned model stays dense
    assert {
        t.dtype for t in export.stored_weights(export.export_bytes(wide, "tflite-float32"))
    } == {"float32"}


# ----------------------------------------------------------------------------- running


def test_run_tflite_batches_and_checks_shapes():
    m = model("cnn", bits=4)
    data = export.export_bytes(m, "tflite-int4")
    x = inputs("cnn", 13)
    whole = export.run_tflite(data, x)
    for batch_size in (1, 5, 13):
        np.testing.assert_allclose(export.run_tflite(data, x, batch_size), whole, atol=1e-6)
    assert export.run_tflite(data, x[:0]).shape == (0, 10)
    with pytest.raises(ValueError, match=r"x has shape \(2, 8, 8\)"):
        export.run_tflite(data, x[:2, :, :, 0])
    with pytest.raises(ValueError, match="not a LiteRT"):
        export.run_tflite(export.export_bytes(m, "keras"), x)


def test_recurrent_model_exports_with_batch_one_and_refuses_full_integer():
    import keras

    keras.utils.set_random_seed(0)
    lstm = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(8), keras.layers.Dense(2)])
    m = optimize_model(lstm, OptimizationConfig(quantization=QuantizationConfig(4)))[0]
    x = np.random.default_rng(0).standard_normal((3, 5, 3)).astype(np.float32)
    for fmt in ("tflite-float32", "tflite-int4"):
        outputs = export.run_tflite(export.export_bytes(m, fmt), x)
        np.testing.assert_allclose(outputs, keras_outputs(m, x), atol=1e-5)
    with pytest.raises(ValueError, match="recurrent"):
        export.export_bytes(m, "tflite-int8", x)  # TF's calibrator would crash the process


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_packing_matches_litert(bits):
    codes = np.random.default_rng(bits).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), 37)
    packed = export.pack(codes.astype(np.int8), bits)
    assert packed.size == -(-37 * bits // 8)
    np.testing.assert_array_equal(export.unpack(packed.tobytes(), bits, 37), codes)


@pytest.mark.parametrize("fmt", ["tflite-int4", "tflite-int2"])
def test_stored_codes_are_what_the_interpreter_reads(fmt):
    from ai_edge_litert.interpreter import Interpreter

    data = export.export_bytes(model("mlp", bits=2), fmt)
    interpreter = Interpreter(model_content=data)
    by_name = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
    for t in quantized(data):
        np.testing.assert_array_equal(interpreter.get_tensor(by_name[t.name]), t.codes)


# ----------------------------------------------------------------------------- sample model


def test_sample_cnn_file_is_as_accurate_as_its_preview():
    from optimizers import evaluate, keras_io

    root = os.path.join(os.path.dirname(__file__), "..", "sample_models")
    path, data_path = (os.path.join(root, f) for f in ("digits_cnn.keras", "digits_cnn_test.npz"))
    if not (os.path.exists(path) and os.path.exists(data_path)):
        pytest.skip("sample_models/digits_cnn is not built")
    base = keras_io.load_model(path)
    x, y = keras_io.load_data(data_path, base)
    config = OptimizationConfig(pruning=PruningConfig(0.6), quantization=QuantizationConfig(4))
    m = optimize_model(base, config)[0]
    preview = evaluate.predict(m, x)
    data = export.export_bytes(m, "tflite-int4")
    outputs = export.run_tflite(data, x)
    np.testing.assert_allclose(outputs, preview, atol=1e-5)
    assert evaluate.accuracy(outputs, y) == evaluate.accuracy(preview, y)
    assert len(data) < 0.2 * os.path.getsize(path)


def test_unconvertible_layer_is_named_with_the_reason():
    import keras

    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.UpSampling2D(2, interpolation="bicubic", name="smooth_upsample")(h)
    m = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    with pytest.raises(ValueError) as error:
        export.export_bytes(m, "tflite-int8-dynamic")
    message = str(error.value)
    assert "ResizeBicubic" in message  # the reason, in the converter's words
    assert "'smooth_upsample' (UpSampling2D)" in message  # and the layer it comes from
    assert "\n" not in message


def test_the_converter_runs_apart_and_survives_its_crash(monkeypatch):
    """The converter's long call (it holds the GIL for seconds on a real-size model) runs in a
    helper process that lives for one model's conversions: the converter's refusal comes back
    in its words; a helper that dies mid-call fails that call and the next call starts
    another; the helper ends with the conversions, giving its memory back."""
    import subprocess
    import sys

    from tensorflow.compiler.mlir.lite.python import wrap_converter

    from optimizers.export import apart, conversion

    apart.install()
    monkeypatch.setattr(apart, "APART_FROM_PARAMETERS", 0)  # this small model goes apart too
    with apart.ready(1):
        first = apart._helper  # started ahead
        assert first is not None and first.args[-1] == "optimizers.export.apart"
        with pytest.raises(RuntimeError) as refused:  # given no model
            apart.wrapped_convert(b"", b"", b"not a graph", None)
        assert "process ended" not in str(refused.value)
        assert apart._helper is first and first.poll() is None  # it refused, it did not die
        with apart._LOCK:  # a stand-in helper that reads a little of the request, then dies
            apart._stop()
            apart._helper = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.stdin.buffer.read(8)"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        with pytest.raises(RuntimeError, match="process ended without an answer"):
            apart.wrapped_convert(b"flags", b"flags", b"graph", None)
        with pytest.raises(RuntimeError) as again:  # another helper answers
            apart.wrapped_convert(b"", b"", b"not a graph", None)
        assert "process ended" not in str(again.value)
        last = apart._helper
        assert last is not None and last.poll() is None and last is not first
    assert apart._helper is None and last.wait(timeout=60) == 0  # it exits after the block

    def not_here(*args):
        raise AssertionError("converted in the app's process")

    monkeypatch.setattr(apart, "_in_process", not_here)
    model = build("mlp")
    conversion._CACHE.clear()
    data = export.export_bytes(model, "tflite-float32")  # checked against Keras inside
    assert wrap_converter.wrapped_convert is apart.wrapped_convert and apart._helper is None
    x = np.random.default_rng(0).random((4, 64), np.float32)
    np.testing.assert_allclose(
        export.run_tflite(data, x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_work_alongside_a_conversion_waits_for_the_helper_to_have_the_graph(monkeypatch):
    """``alongside`` runs its work once a graph goes to the helper (the tracing and freezing
    before that hold the GIL), when the block ends if none goes, and at once for a model that
    converts in process; its error comes back from ``result()``."""
    import threading

    from optimizers.export import apart

    apart.install()
    monkeypatch.setattr(apart, "APART_FROM_PARAMETERS", 10)
    with apart.alongside(1, lambda: threading.current_thread().name) as small:
        assert small.result(timeout=60) == "alongside"  # converted in process: at once
    with apart.alongside(10, lambda: "done") as waiting:
        time.sleep(0.2)
        assert not waiting.done()  # no graph went to the helper yet
    assert waiting.result(timeout=60) == "done"  # the block ended

    def answer_after_the_work(stream):  # the helper's answer, read once the work has run
        assert handed.result(timeout=10) is not None
        return read(stream)

    read = apart.read
    with apart.ready(10), apart.alongside(10, lambda: apart._helper) as handed:
        monkeypatch.setattr(apart, "read", answer_after_the_work)
        with pytest.raises(RuntimeError):  # a graph the converter refuses, sent all the same
            apart.wrapped_convert(b"", b"", b"not a graph", None)
    monkeypatch.setattr(apart, "read", read)

    def fails():
        raise ValueError("no copy")

    with apart.alongside(1, fails) as failing:
        pass
    with pytest.raises(ValueError, match="no copy"):
        failing.result(timeout=60)


def test_a_file_that_computes_another_model_is_refused():
    """The check of a float32 file against Keras (one random input) sees one weight of the
    first convolution changed by 0.5."""
    import keras

    from optimizers.export import conversion

    model = build("cnn")
    signature = export.input_signature(model)
    data = conversion.converted(model, signature, ("tflite-float32",))["tflite-float32"]
    conversion.check_float_file(model, data, signature)  # its own file passes
    weights = model.get_weights()
    weights[0][1, 1, 0, 0] += 0.5
    other = keras.models.clone_model(model)
    other.set_weights(weights)
    with pytest.raises(ValueError, match="does not compute what the Keras model computes"):
        conversion.check_float_file(other, data, signature)


def test_the_helper_loads_the_converter_without_tensorflow():
    """The helper loads the converter's native modules alone (0.4 s, where importing the
    ``tensorflow`` package first took 3–4.5 s that a large model's conversion waited for)."""
    import subprocess
    import sys

    check = (
        "import sys; from optimizers.export import apart; apart.converter_calls(); "
        "print('tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    assert done.stdout.split() == ["False"]


@pytest.mark.parametrize("kind", ["cnn", "recurrent"])
def test_the_converter_freezes_the_traced_function_once(kind, monkeypatch):
    """The converter imports the graph it froze back as a new function, only to read that
    function's inputs and outputs (ResNet50: 2.6 s of a 10 s conversion, and another copy of
    its weights); ``frozen_once`` gives it the traced function's: the same file, byte for byte,
    without that import."""
    import keras
    from tensorflow.python.eager import wrap_function

    from optimizers.export import conversion

    if kind == "cnn":
        model = build("cnn")
    else:
        inputs = keras.Input((6, 3))
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.LSTM(4)(inputs)))
    signature = export.input_signature(model)
    conversion._CACHE.clear()
    monkeypatch.setattr(conversion, "frozen_once", lambda converter: converter)
    theirs = conversion.converted(model, signature, ("tflite-float32",))["tflite-float32"]
    monkeypatch.undo()

    def imported_again(*args, **kwargs):
        raise AssertionError("the frozen graph was imported as a function again")

    monkeypatch.setattr(wrap_function, "function_from_graph_def", imported_again)
    conversion._CACHE.clear()
    ours = conversion.converted(model, signature, ("tflite-float32",))["tflite-float32"]
    assert ours == theirs


def test_the_saved_model_path_converts_in_process_beside_the_helper(monkeypatch):
    """The SavedModel fallback hands the converter a folder, not a graph's bytes: it converts
    in this process even for a model whose conversions go to the helper."""
    from optimizers.export import apart, conversion

    monkeypatch.setattr(apart, "APART_FROM_PARAMETERS", 0)
    monkeypatch.setattr(conversion, "conversion_attempts", lambda signature: [(True, signature)])
    model = build("mlp")
    conversion._CACHE.clear()
    data = export.export_bytes(model, "tflite-float32")  # checked against Keras inside
    x = np.random.default_rng(0).random((4, 64), np.float32)
    np.testing.assert_allclose(
        export.run_tflite(data, x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
