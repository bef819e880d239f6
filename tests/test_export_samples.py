"""Verified exports of real models: the bundled samples and a ``keras.applications`` network.

What the Download page and ``python -m optimizers export`` promise: every format loads and runs
in LiteRT; the int8 and int4 files are as accurate as the preview of the same bit width; the
full-integer file stays within a point of float; and each integer file is smaller than the
float32 one by what its bit width promises, less a fixed overhead measured on these models:

* weight-only and dynamic-range files store, per output channel of each quantized tensor, a
  float32 scale and an int64 zero point (12 bytes), plus at most ``TENSOR_OVERHEAD`` bytes of
  tensor and DEQUANTIZE-op records;
* full-integer files store that again for the int32 biases and the activations.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

import sample_models
from optimizers import delivery, explore, export, keras_io
from optimizers.pipeline import OptimizationConfig
from optimizers.quantization import QuantizationConfig

SAMPLES = [s.name for s in sample_models.SAMPLES]
SCALE_BYTES = 12  # float32 scale + int64 zero point per output channel
TENSOR_OVERHEAD = 200  # bytes per quantized tensor (measured: 50-110 beyond the scales)
MAX_DEPARTURE = 0.005  # preview vs file accuracy, int8 and int4
FULL_INT8_LOSS = 0.01  # full integer vs float accuracy


@cache
def prepared(name: str) -> explore.Prepared:
    sample = sample_models.get(name)
    model = keras_io.load_model(sample.model_path)
    return explore.prepare(model, *keras_io.load_data(sample.data_path, model))


@cache
def exported(
    name: str, fmt: str, bits: int | None = None, block: int | None = None
) -> delivery.Exported:
    p = prepared(name)
    q = QuantizationConfig(bits, block_size=block) if bits else None
    config = OptimizationConfig(quantization=q)
    return delivery.export_file(p, explore.run(p, config), fmt)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("fmt", export.FORMATS)
def test_every_format_of_every_sample_runs(name: str, fmt: str) -> None:
    e = exported(name, fmt)
    assert e.fmt == fmt and e.size_bytes == len(e.data) > 0
    assert e.gzip_bytes < e.size_bytes
    assert e.file_accuracy is not None and e.preview_accuracy is not None
    if fmt != "tflite-int2":  # 2 bits are too few for unquantized weights: reported, not hidden
        assert e.file_accuracy > 0.9, (name, fmt, e.file_accuracy)
    assert e.departs == (abs(e.file_accuracy - e.preview_accuracy) > MAX_DEPARTURE)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize(
    ("fmt", "bits", "block"),
    [("tflite-int8-dynamic", 8, None), ("tflite-int4", 4, None), ("tflite-int4", 4, 32)],
)
def test_file_is_as_accurate_as_its_preview(name: str, fmt: str, bits: int, block) -> None:
    e = exported(name, fmt, bits, block)
    assert export.natural_format(QuantizationConfig(bits, block_size=block)) == fmt
    assert abs(e.file_accuracy - e.preview_accuracy) <= MAX_DEPARTURE, e
    assert not e.departs
    # Every sample has a Dense kernel with whole blocks of 32 inputs: stored blockwise.
    blockwise = [
        t for t in export.stored_weights(e.data) if t.scale is not None and t.scale.ndim == 2
    ]
    assert bool(blockwise) == (block is not None)


@pytest.mark.parametrize("name", SAMPLES)
def test_full_integer_stays_within_a_point_of_float(name: str) -> None:
    full, float32 = exported(name, "tflite-int8"), exported(name, "tflite-float32")
    assert float32.file_accuracy == float32.preview_accuracy
    assert full.file_accuracy >= float32.file_accuracy - FULL_INT8_LOSS, (full, float32)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize(
    "fmt", ["tflite-float16", "tflite-int8-dynamic", "tflite-int8", "tflite-int4", "tflite-int2"]
)
def test_file_is_smaller_by_what_its_bit_width_promises(name: str, fmt: str) -> None:
    reports = explore.run(prepared(name), OptimizationConfig()).eligible
    weights = sum(r.params for r in reports)
    channels = sum(int(np.prod([r.shape[a] for a in r.channel_axes])) for r in reports)
    bits = export.CONTAINER_BITS[fmt]
    overhead = len(reports) * TENSOR_OVERHEAD
    if bits < 16:
        overhead += SCALE_BYTES * channels
    if fmt == "tflite-int8":
        overhead *= 2
    float32 = exported(name, "tflite-float32").size_bytes
    promised = float32 - weights * (32 - bits) / 8
    assert exported(name, fmt).size_bytes <= promised + overhead


def test_keras_applications_network_exports_in_every_format() -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10
    )
    x = np.random.default_rng(0).random((8, 64, 64, 3), np.float32)
    p = explore.prepare(model, x)
    outcome = explore.run(p, OptimizationConfig(quantization=QuantizationConfig(4)))
    sizes = {}
    for fmt in export.FORMATS:
        e = delivery.export_file(p, outcome, fmt)
        assert e.agreement is not None and e.file_accuracy is None  # no labels: agreement
        sizes[fmt] = e.size_bytes
        if fmt in ("keras", "tflite-float32", "tflite-int4"):  # the 4-bit weights, exactly
            assert e.agreement == 1.0, fmt
    assert sizes["tflite-int4"] < sizes["tflite-int8-dynamic"] < sizes["tflite-float16"]
    assert sizes["tflite-float16"] < sizes["tflite-float32"]
