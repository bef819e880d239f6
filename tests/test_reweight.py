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
from optimizers.export.reweight import float_tensors, kernel_placements, rewritten
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
