"""Latency: every LiteRT file is timed at batch 1 with one thread and with every core, next to
the original model's float32 file. No timing thresholds: the figures exist, are positive and
are ordered as medians and percentiles must be."""

from __future__ import annotations

import os

import numpy as np
import pytest

from optimizers import explore, export, latency
from optimizers.pipeline import OptimizationConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def mlp():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )


def test_a_file_is_timed_with_one_thread_and_every_core():
    timed = latency.time_file(export.export_bytes(mlp(), "tflite-float32"), min_runs=7, seconds=0)
    assert timed.runs == 7
    assert 0 < timed.median_ms <= timed.p90_ms
    assert timed.threads_ms > 0 and timed.threads == latency.cores() >= 1
    # The largest activation of 64 -> 32 -> 10 at batch 1 is the float32 input: 64 x 4 bytes.
    assert timed.activation_bytes == 64 * 4


def test_full_integer_file_is_timed_on_int8_inputs():
    x = np.random.default_rng(0).random((32, 64), np.float32)
    data = export.export_bytes(mlp(), "tflite-int8", x)
    timed = latency.time_file(data, min_runs=3, seconds=0)
    assert timed.median_ms > 0 and timed.activation_bytes == 64  # int8 input, one byte each


def test_not_a_tflite_file_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="not a LiteRT"):
        latency.time_file(b"0123456789abcdef")
    with pytest.raises(ValueError, match="min_runs must be at least 1, got 0"):
        latency.time_file(export.export_bytes(mlp(), "tflite-float32"), min_runs=0)


def test_baseline_is_timed_once_per_model():
    model = mlp()
    first = latency.model_latency(model)
    assert latency.model_latency(model) is first
    assert first.median_ms > 0


def test_exported_files_carry_latency_and_the_baseline():
    x = np.random.default_rng(0).random((40, 64), np.float32)
    y = np.arange(40) % 10
    prepared = explore.prepare(mlp(), x, y)
    outcome = explore.run(prepared, OptimizationConfig())
    tflite = explore.exported_to_dict(explore.export_file(prepared, outcome, "tflite-int4"))
    for key in ("latency_ms", "latency_p90_ms", "latency_threads_ms", "baseline_latency_ms"):
        assert tflite[key] > 0, key
    assert tflite["latency_p90_ms"] >= tflite["latency_ms"]
    keras_file = explore.exported_to_dict(explore.export_file(prepared, outcome, "keras"))
    assert keras_file["latency_ms"] is None and keras_file["baseline_latency_ms"] is None


def test_processor_is_named():
    assert latency.processor_name().strip()
