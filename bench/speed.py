"""Speed benchmark: batch-1 latency of every LiteRT file, and what channel pruning buys.

``python -m bench.speed`` prints the target rows of issue 11 and a speed table (format, times,
speed next to the original model's float32 file) for MobileNetV2 1.0 224x224 (``weights=None``)
and the bundled samples, as Markdown; ``--quick`` leaves MobileNetV2 out. Latency is
``optimizers.latency`` (LiteRT interpreter, XNNPack, batch 1, one thread, median after warm-up),
each file taking turns with the original float32 file in the same run: other load on the
machine inflates the milliseconds, so the ratios are the figures to compare.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import sample_models  # noqa: E402
from optimizers import delivery, explore, keras_io, latency  # noqa: E402
from optimizers.export.quiet import quiet  # noqa: E402
from optimizers.export.running import to_input  # noqa: E402
from optimizers.pipeline import OptimizationConfig  # noqa: E402
from optimizers.pruning import PruningConfig  # noqa: E402
from optimizers.quantization import QuantizationConfig  # noqa: E402

CHANNELS = PruningConfig(0.5, "channels")
SETTINGS = {
    "original": OptimizationConfig(),
    "channels 50%": OptimizationConfig(pruning=CHANNELS),
    "channels 50% + int8": OptimizationConfig(pruning=CHANNELS, quantization=QuantizationConfig(8)),
}
FORMATS = {
    "original": ("tflite-float32", "tflite-float16", "tflite-int8-dynamic", "tflite-int8"),
    "channels 50%": ("tflite-float32",),
    "channels 50% + int8": ("tflite-int8",),
}


def independent_ms(data: bytes, runs: int = 50) -> float:
    """Median ms of ``runs`` batch-1 invocations, timed here with LiteRT directly (1 thread)."""
    import time

    from ai_edge_litert.interpreter import Interpreter

    with quiet():
        interpreter = Interpreter(model_content=data, num_threads=1)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
        interpreter.allocate_tensors()
    x = np.random.default_rng(1).random([1, *detail["shape"][1:]], np.float32)
    interpreter.set_tensor(detail["index"], to_input(x, detail))
    for _ in range(5):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def residual_digits():
    """The residual digits CNN of the tests (BatchNorm, DepthwiseConv2D, Add), trained briefly."""
    import keras
    from sklearn.datasets import load_digits

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(32, 3, padding="same")(inputs)))
    d = layers.DepthwiseConv2D(3, padding="same")(h)
    h = layers.Add()([h, layers.ReLU()(layers.BatchNormalization()(d))])
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(64, 1, activation="relu")(h))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(h), name="residual_digits")
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32).reshape(-1, 8, 8, 1)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=15, batch_size=64, verbose=0)
    return model, x[1400:], y[1400:]


def models(quick: bool):
    import keras

    if not quick:
        mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        x = np.random.default_rng(0).random((8, 224, 224, 3), np.float32)
        yield "MobileNetV2", explore.prepare(mobilenet, x)
    for s in sample_models.SAMPLES:
        model = keras_io.load_model(s.model_path)
        yield s.name, explore.prepare(model, *keras_io.load_data(s.data_path, model))
    model, x, y = residual_digits()
    yield "residual digits", explore.prepare(model, x, y)


def speedup(e: delivery.Exported) -> float:
    """How many times faster ``e`` ran than the original float32 file, timed in the same run."""
    assert e.latency is not None and e.baseline_latency is not None
    return latency.speedup(e.latency, e.baseline_latency)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the bundled samples only")
    quick = parser.parse_args().quick
    print(f"processor: {latency.processor_name()}, {latency.cores()} cores (shared)\n")
    print(
        "| model | setting | format | bytes | time (1 thread) | p90 | all cores |"
        " vs original float32 (same run) | file accuracy | preview accuracy |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    targets = []
    for name, prepared in models(quick):
        found = {}
        for setting, config in SETTINGS.items():
            try:
                outcome = explore.run(prepared, config)
            except ValueError as error:  # a graph channel pruning cannot rewrite: say so
                print(f"| {name} | {setting} | refused: {error} | | | | | | | |")
                continue
            for fmt in FORMATS[setting]:
                e = delivery.export_file(prepared, outcome, fmt)
                t, b = e.latency, e.baseline_latency
                found[(setting, fmt)] = e

                def pct(v):
                    return "n/a" if v is None else f"{v:.2%}"

                print(
                    f"| {name} | {setting} | {fmt} | {e.size_bytes:,} | {latency.format_time(t.median_ms)} |"
                    f" {latency.format_time(t.p90_ms)} | {latency.format_time(t.threads_ms)} |"
                    f" {latency.speed_words(t, b)} |"
                    f" {pct(e.file_accuracy)} | {pct(e.preview_accuracy)} |"
                )
        base = found[("original", "tflite-float32")]
        small = found.get(("channels 50%", "tflite-float32"))
        both = found.get(("channels 50% + int8", "tflite-int8"))
        if small is None or both is None:
            continue
        if name == "MobileNetV2":
            here = independent_ms(base.data)
            reported = base.latency.median_ms
            targets.append(
                (
                    "reported vs independent LiteRT timing (float32, 1 thread)",
                    f"{reported:.2f} ms vs {here:.2f} ms ({reported / here - 1:+.0%})",
                    "within 20%",
                    abs(reported / here - 1) <= 0.2,
                )
            )
            speed = speedup(small)
            size = small.size_bytes / base.size_bytes
            targets.append(
                (
                    "channels 50% float32 vs unpruned float32",
                    f"{speed:.2f}× faster, {size:.2f}× the bytes",
                    "≥ 1.6× faster, ≤ 0.6× bytes",
                    speed >= 1.6 and size <= 0.6,
                )
            )
            targets.append(
                (
                    "channels 50% + full int8 vs float32 baseline",
                    f"{speedup(both):.2f}× faster, "
                    f"{both.size_bytes / base.size_bytes:.2f}× the bytes",
                    "report",
                    True,
                )
            )
        if name == "residual digits":
            outcome = explore.run(prepared, SETTINGS["channels 50%"])
            targets.append(
                (
                    "residual digits, channels 50%: file accuracy = reported",
                    f"{small.file_accuracy:.2%} vs {outcome.accuracy:.2%}",
                    "equal",
                    small.file_accuracy == outcome.accuracy,
                )
            )
    print("\n| target | measured | goal | met |\n|---|---|---|---|")
    for target, measured, goal, met in targets:
        print(f"| {target} | {measured} | {goal} | {'yes' if met else 'NO'} |")


if __name__ == "__main__":
    main()
