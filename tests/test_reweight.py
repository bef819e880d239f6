"""Files by rewrite (``optimizers.export.reweight``): a setting's float32 file is its original
model's converted file with the changed kernels written in, BatchNorm folds included; it holds
what a fresh conversion of the setting holds, and anything it cannot place is converted again.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_export import FOLDED, build, inputs, keras_outputs

import sample_models
from optimizers import export, keras_io
from optimizers.export import conversion
from optimizers.export.reweight import float_tensors, kernel_placements, orders, rewritten
from optimizers.pipeline import OptimizationConfig, optimize_model
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig

SETTING = OptimizationConfig(
    pruning=PruningConfig(0.5), quantization=QuantizationConfig(4, granularity="per-channel")
)


def refuse_conversion(*_args, **_kwargs):
    raise AssertionError("converted again instead of rewriting the original model's file")


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_settings_file_is_the_original_file_rewritten(kind, monkeypatch):
    base = build(kind)
    optimized = optimize_model(base, SETTING)[0]
    signature = export.input_signature(base)
    fresh = float_tensors(
        export.converted(optimized, signature, ("tflite-float32",))["tflite-float32"]
    )
    export.warm(base)

    monkeypatch.setattr(conversion, "converter_source", refuse_conversion)
    dense = conversion.from_base(optimized, signature, base)
    assert dense is not None
    found = float_tensors(dense)
    assert found.keys() == fresh.keys()
    for key, value in fresh.items():  # the folds round like the converter's, to float32
        np.testing.assert_allclose(found[key], value, rtol=FOLDED, atol=FOLDED, err_msg=key)
    x = inputs(kind)
    for fmt in ("tflite-int4", "tflite-float16"):  # no conversion: made from the rewrite
        outputs = export.run_tflite(export.export_bytes(optimized, fmt, base=base), x)
        atol = 1e-5 if fmt == "tflite-int4" else 1e-3  # int4 holds the preview's 4-bit levels
        np.testing.assert_allclose(outputs, keras_outputs(optimized, x), atol=atol, err_msg=fmt)


def test_a_changed_bias_has_no_place_so_the_model_is_converted_again():
    import keras

    base = build("mlp")
    weights = base.get_weights()
    placements = kernel_placements(
        weights,
        export.converted(base, export.input_signature(base), ("tflite-float32",))["tflite-float32"],
    )
    changed = [w.copy() for w in weights]
    changed[1] += 0.5  # the first Dense layer's bias
    assert 1 not in placements
    assert rewritten(b"unused", placements, weights, changed) is None

    other = keras.models.clone_model(base)
    other.set_weights(changed)
    x = inputs("mlp")
    data = export.export_bytes(other, "tflite-float32", base=base)
    np.testing.assert_allclose(export.run_tflite(data, x), keras_outputs(other, x), atol=1e-5)


@pytest.mark.parametrize("name", [s.name for s in sample_models.SAMPLES])
def test_every_kernel_of_a_sample_has_its_place(name):
    model = keras_io.load_model(sample_models.get(name).model_path)
    weights = model.get_weights()
    data = export.converted(model, export.input_signature(model), ("tflite-float32",))
    placements = kernel_placements(weights, data["tflite-float32"])
    kernels = {i for i, w in enumerate(weights) if w.ndim >= 2}
    assert kernels and set(placements) == kernels


def layer_kinds(dims: int):
    """A model of the convolutions of ``dims`` dimensions the converter lays out its own way."""
    import keras

    keras.utils.set_random_seed(0)
    if dims == 2:
        x = keras.Input((12, 12, 3))
        y = keras.layers.Conv2D(6, 3)(x)
        y = keras.layers.BatchNormalization()(y)  # folded into the kernel: scaled per channel
        y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(y)  # (h, w, in, 2): (1, h, w, 2in)
        y = keras.layers.Conv2DTranspose(5, 3, strides=2)(y)  # (h, w, out, in): (out, h, w, in)
        y = keras.layers.GlobalAveragePooling2D()(keras.layers.SeparableConv2D(7, 3)(y))
    elif dims == 1:
        x = keras.Input((20, 6))
        y = keras.layers.Conv1D(8, 3)(x)  # converted as a 2-D convolution of height one
        y = keras.layers.SeparableConv1D(12, 3, depth_multiplier=2)(y)
        y = keras.layers.GlobalAveragePooling1D()(y)
    else:
        x = keras.Input((6, 6, 6, 2))
        y = keras.layers.Flatten()(keras.layers.Conv3D(4, 3)(x))  # kept as Keras lays it out
    return keras.Model(x, keras.layers.Dense(3)(y))


def test_a_kernel_is_looked_for_only_where_a_reshape_keeps_its_values_in_order():
    assert orders((3, 3, 16, 32), (32, 3, 3, 16)) == [(3, 0, 1, 2), (3, 1, 0, 2)]
    assert orders((1, 1, 256, 64), (64, 1, 1, 256)) == [(3, 2, 0, 1)]  # ones move no value
    assert (0, 1, 2, 3) in orders((3, 3, 8, 2), (1, 3, 3, 16))  # merged: a depthwise kernel


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_every_kernel_of_every_convolution_kind_has_its_place(dims):
    model = layer_kinds(dims)
    weights = model.get_weights()
    data = export.converted(model, export.input_signature(model), ("tflite-float32",))
    placements = kernel_placements(weights, data["tflite-float32"])
    assert set(placements) == {i for i, w in enumerate(weights) if w.ndim >= 2}
    stored = float_tensors(data["tflite-float32"])
    for i, p in placements.items():
        np.testing.assert_allclose(p.values(weights[i]), stored[p.tensor], rtol=1e-5, atol=1e-7)
