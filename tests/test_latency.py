"""Latency: every LiteRT file is timed at batch 1 with one thread and with every core, taking
turns with the original model's float32 file in the same run. No timing thresholds: the figures
exist, are positive and are ordered as quartiles, medians and percentiles must be."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from optimizers import delivery, explore, export, latency
from optimizers.pipeline import OptimizationConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def mlp():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )


def test_a_file_is_timed_with_one_thread_and_every_core():
    data = export.export_bytes(mlp(), "tflite-float32")
    [timed] = latency.time_files([data], min_runs=7, seconds=0)
    assert timed.runs == 7
    assert 0 < timed.median_ms <= timed.p90_ms
    assert timed.threads_ms > 0 and timed.threads == latency.cores() >= 1
    # The largest activation of 64 -> 32 -> 10 at batch 1 is the float32 input: 64 x 4 bytes.
    assert timed.activation_bytes == 64 * 4


def test_every_core_times_half_as_many_runs(monkeypatch):
    # Only its median is shown: ResNet50's two-thread set took 11 s of the timing's 28 s.
    monkeypatch.setattr(latency, "cores", lambda: 2)
    sets = []
    invocation_times = latency.invocation_times

    def recorded(files, threads, min_runs, seconds):
        times = invocation_times(files, threads, min_runs, seconds)
        sets.append((threads, [len(t) for t in times]))
        return times

    monkeypatch.setattr(latency, "invocation_times", recorded)
    data = export.export_bytes(mlp(), "tflite-float32")
    timed, _ = latency.time_files([data, data], min_runs=8, seconds=0)
    assert sets == [(1, [8, 8]), (2, [4, 4])]
    assert timed.runs == 8 and timed.threads == 2 and timed.threads_ms > 0


def test_full_integer_file_is_timed_on_int8_inputs():
    x = np.random.default_rng(0).random((32, 64), np.float32)
    data = export.export_bytes(mlp(), "tflite-int8", x)
    [timed] = latency.time_files([data], min_runs=3, seconds=0)
    assert timed.median_ms > 0 and timed.activation_bytes == 64  # int8 input, one byte each


def test_not_a_tflite_file_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="not a LiteRT"):
        latency.time_files([b"0123456789abcdef"])
    with pytest.raises(ValueError, match="min_runs must be at least 1, got 0"):
        latency.time_files([export.export_bytes(mlp(), "tflite-float32")], min_runs=0)


def test_a_file_and_its_baseline_are_timed_together_taking_turns():
    float32 = export.export_bytes(mlp(), "tflite-float32")
    x = np.random.default_rng(0).random((32, 64), np.float32)
    int8 = export.export_bytes(mlp(), "tflite-int8", x)
    timed, baseline = latency.time_files([int8, float32], min_runs=9, seconds=0)
    assert timed.runs == baseline.runs == 9  # one invocation each, in turn
    assert timed.activation_bytes == 64 and baseline.activation_bytes == 64 * 4
    for t in (timed, baseline):
        assert 0 < t.q1_ms <= t.median_ms <= t.q3_ms <= t.p90_ms
    assert latency.speedup(timed, baseline) == baseline.median_ms / timed.median_ms
    # The same file against itself: any difference is noise.
    same = latency.time_files([float32, float32], min_runs=50, seconds=0)
    assert latency.speed_verdict(*same) == "same speed"


def test_exported_files_carry_latency_and_the_baseline():
    x = np.random.default_rng(0).random((40, 64), np.float32)
    y = np.arange(40) % 10
    prepared = explore.prepare(mlp(), x, y)
    outcome = explore.run(prepared, OptimizationConfig())
    exported = delivery.export_file(prepared, outcome, "tflite-int4")
    assert exported.latency is not None and exported.baseline_latency is not None
    assert exported.latency.runs == exported.baseline_latency.runs  # timed in the same run
    tflite = delivery.exported_to_dict(exported)
    for key in (
        "latency_ms",
        "latency_q1_ms",
        "latency_q3_ms",
        "latency_p90_ms",
        "latency_threads_ms",
        "baseline_latency_ms",
        "baseline_latency_q1_ms",
        "baseline_latency_q3_ms",
        "baseline_latency_threads_ms",
        "speedup",
    ):
        assert tflite[key] > 0, key
    assert tflite["latency_q1_ms"] <= tflite["latency_ms"] <= tflite["latency_q3_ms"]
    assert tflite["latency_p90_ms"] >= tflite["latency_ms"]
    assert tflite["speedup"] == tflite["baseline_latency_ms"] / tflite["latency_ms"]
    assert tflite["speed_verdict"] in ("faster", "slower", "same speed")
    assert tflite["latency_runs"] >= latency.MIN_RUNS
    json.dumps(tflite)  # numbers and words only
    keras_file = delivery.exported_to_dict(delivery.export_file(prepared, outcome, "keras"))
    for key in ("latency_ms", "baseline_latency_ms", "speedup", "speed_verdict"):
        assert keras_file[key] is None, key


def test_gzip_sizes_measured_meanwhile_are_taken_and_the_others_measured(monkeypatch):
    import threading
    from concurrent.futures import Future

    from optimizers.size import gzip_size

    x = np.random.default_rng(0).random((40, 64), np.float32)
    prepared = explore.prepare(mlp(), x, np.arange(40) % 10)
    outcome = explore.run(prepared, OptimizationConfig())
    formats = ("tflite-int4", "tflite-int8-dynamic", "tflite-float32", "tflite-float16", "keras")
    files = {f: delivery.verify(prepared, outcome, f, gzip=False) for f in formats}
    assert all(e.gzip_bytes is None for e in files.values())
    real = delivery.gzip_meanwhile(files["tflite-int4"])
    assert real.future.result(timeout=60) == gzip_size(files["tflite-int4"].data)

    def gzipping(data: bytes, size: int | None = None, after: float | None = None):
        """Measured as ``size``; or running, done ``after`` seconds (never: ``None``)."""
        future: Future[int] = Future()
        if size is not None and after is None:
            future.set_result(size)
        elif after is not None:
            future.set_running_or_notify_cancel()
            timer = threading.Timer(after, future.set_result, [size])
            timer.daemon = True
            timer.start()
        return delivery.Gzipping(data, future)

    monkeypatch.setattr(delivery, "MEANWHILE_WAIT", 1.0)
    # Sizes that are not the real ones show which are taken and which are measured again.
    measured = gzipping(files["tflite-int4"].data, 12_345)
    finishing = gzipping(files["tflite-int8-dynamic"].data, 23_456, after=0.1)  # waited for
    waiting = delivery.Gzipping(files["tflite-float32"].data, Future())  # not started: dropped
    starved = gzipping(files["tflite-float16"].data, 34_567, after=5)  # past the wait
    stale = gzipping(bytes(bytearray(files["keras"].data)), 6_789)  # another copy's
    meanwhile = {"tflite-int4": measured, "tflite-int8-dynamic": finishing, "keras": stale}
    meanwhile |= {"tflite-float32": waiting, "tflite-float16": starved}
    # Until the timing, a size measured for the very bytes is shown; nothing else is.
    int4 = files["tflite-int4"]
    assert delivery.gzip_so_far(int4, measured).gzip_bytes == 12_345
    assert delivery.gzip_so_far(int4, None) is int4
    cancelled: Future[int] = Future()
    cancelled.cancel()
    failed: Future[int] = Future()
    failed.set_exception(MemoryError())
    unfinished = (gzipping(int4.data, 1, after=5), delivery.Gzipping(int4.data, Future()))
    for future in (cancelled, failed):
        unfinished += (delivery.Gzipping(int4.data, future),)
    for gz in unfinished:
        assert delivery.gzip_so_far(int4, gz) is int4
    sized = replace(int4, gzip_bytes=99)  # a size already known stays
    assert delivery.gzip_so_far(sized, delivery.Gzipping(int4.data, real.future)) is sized
    copy = delivery.Gzipping(bytes(bytearray(int4.data)), real.future)  # another copy's size
    assert delivery.gzip_so_far(int4, copy) is int4
    timed = delivery.time_exports(prepared, files, meanwhile)
    assert timed["tflite-int4"].gzip_bytes == 12_345
    assert timed["tflite-int8-dynamic"].gzip_bytes == 23_456
    assert waiting.future.cancelled()
    for f in ("tflite-float32", "tflite-float16", "keras"):
        assert timed[f].gzip_bytes == gzip_size(files[f].data), f
    assert timed["tflite-int4"].latency is not None


def test_processor_is_named():
    assert latency.processor_name().strip()
