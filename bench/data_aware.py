"""Data-aware compression benchmark: plain vs data-aware (GPTQ, SparseGPT, bias correction).

``python -m bench.data_aware`` prints, as Markdown, the rows of issue 19: for every bundled
sample (calibrated on its training split, measured on its test set) accuracy and output SNR
against float at 3 and 2 bits per channel, 50% and 70% sparsity, 4 bits per channel vs blockwise (32),
4 clusters and 50% + 4 clusters + int4, and the blockwise int4 file's accuracy and size; for
MobileNetV2 1.0 224 and ResNet50 (``weights=None``, logits out, random images: 64 to calibrate,
16 others to measure) output SNR at 4 bits per channel and 16 clusters. Seconds are wall-clock on this machine:
gathering the layer statistics once, and stage one (``explore.optimize``) of each setting.
``--quick`` leaves the real-size models out.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import sample_models  # noqa: E402
from optimizers import delivery, explore, keras_io  # noqa: E402
from optimizers.clustering import ClusteringConfig  # noqa: E402
from optimizers.pipeline import OptimizationConfig  # noqa: E402
from optimizers.pruning import PruningConfig  # noqa: E402
from optimizers.quantization import QuantizationConfig  # noqa: E402

SAMPLE_SETTINGS = {
    "3 bits per channel": OptimizationConfig(quantization=QuantizationConfig(3)),
    "2 bits per channel": OptimizationConfig(quantization=QuantizationConfig(2)),
    "50% sparsity": OptimizationConfig(pruning=PruningConfig(0.5)),
    "70% sparsity": OptimizationConfig(pruning=PruningConfig(0.7)),
    "4 bits per channel": OptimizationConfig(quantization=QuantizationConfig(4)),
    "4 bits blockwise (32)": OptimizationConfig(quantization=QuantizationConfig(4, block_size=32)),
    "4 clusters": OptimizationConfig(clustering=ClusteringConfig(4)),
    "50% + 4 clusters + int4": OptimizationConfig(
        PruningConfig(0.5), ClusteringConfig(4), QuantizationConfig(4)
    ),
}
LARGE_SETTINGS = {
    "4 bits per channel": OptimizationConfig(quantization=QuantizationConfig(4)),
    "16 clusters": OptimizationConfig(clustering=ClusteringConfig(16)),
}


def timed(f, *args):
    start = time.perf_counter()
    found = f(*args)
    return found, time.perf_counter() - start


def rows(name: str, prepared: explore.Prepared, settings: dict[str, OptimizationConfig]):
    """(model, setting, plain/aware accuracy and SNR, plain/aware seconds) per setting."""
    for label, config in settings.items():
        found = {}
        for aware in (False, True):
            c = replace(config, data_aware=aware)
            outcome, seconds = timed(explore.optimize, prepared, c)
            found[aware] = (explore.measure(prepared, outcome), seconds)
        yield name, label, found[False], found[True]


def calibrated(name, model, x, y, calibration_x, source):
    prepared = explore.prepare(model, x, y)
    calibration = explore.Calibration(calibration_x, source)
    prepared, seconds = timed(explore.calibrate, prepared, calibration)
    print(f"{name}: layer statistics from {calibration.words} in {seconds:.2f} s", flush=True)
    return prepared, seconds


def models(quick: bool):
    for s in sample_models.SAMPLES:
        model = keras_io.load_model(s.model_path)
        x, y = keras_io.load_data(s.data_path, model)
        train, _ = keras_io.load_data(s.train_path, model)
        yield s.name, *calibrated(s.name, model, x, y, train, f"the training split of {s.name}")
    if quick:
        return
    import keras

    rng = np.random.default_rng(0)
    for arch in ("MobileNetV2", "ResNet50"):
        # Logits: a random network's softmax saturates to the same one-hot output either way.
        keras.utils.set_random_seed(0)  # the same random weights on every run
        model = getattr(keras.applications, arch)(
            weights=None, input_shape=(224, 224, 3), classifier_activation=None
        )
        images = rng.random((80, 224, 224, 3), np.float32)
        yield arch, *calibrated(arch, model, images[64:], None, images[:64], "random images")


def blockwise_files(name: str, prepared: explore.Prepared):
    """Table rows: 4 bits blockwise (32), plain and data-aware, preview accuracy against the
    accuracy of its int4 file, and that file's size against the per-channel int4 file's."""
    per_channel = OptimizationConfig(quantization=QuantizationConfig(4))
    channel_file = delivery.verify(prepared, explore.run(prepared, per_channel), "tflite-int4")
    blocks = SAMPLE_SETTINGS["4 bits blockwise (32)"]
    for aware in (False, True):
        outcome = explore.run(prepared, replace(blocks, data_aware=aware))
        e = delivery.verify(prepared, outcome, "tflite-int4")
        yield (
            f"| {name} | {'data-aware' if aware else 'plain'} | {percent(e.preview_accuracy)} "
            f"| {percent(e.file_accuracy)} | {e.size_bytes / 1000:.1f} "
            f"| {channel_file.size_bytes / 1000:.1f} |"
        )


def decibels(value) -> str:
    return "exact" if value is None else f"{value:.1f}"


def percent(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the samples only")
    args = parser.parse_args()
    table = [
        "| model | setting | accuracy plain | accuracy data-aware | SNR plain dB "
        "| SNR data-aware dB | s plain | s data-aware |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gathered = []
    files = [
        "| model | 4 bits blockwise (32) | preview accuracy | int4 file accuracy "
        "| int4 file kB | per-channel int4 file kB |",
        "|---|---|---|---|---|---|",
    ]
    for name, prepared, seconds in models(args.quick):
        gathered.append(f"| {name} | {seconds:.2f} |")
        float_outcome = explore.run(prepared, OptimizationConfig())
        table.append(f"| {name} | float | {percent(float_outcome.accuracy)} | | | | | |")
        settings = SAMPLE_SETTINGS if prepared.y is not None else LARGE_SETTINGS
        for _, label, (plain, s_plain), (aware, s_aware) in rows(name, prepared, settings):
            assert plain.fidelity is not None and aware.fidelity is not None
            table.append(
                f"| {name} | {label} | {percent(plain.accuracy)} | {percent(aware.accuracy)} "
                f"| {decibels(plain.fidelity.snr_db)} | {decibels(aware.fidelity.snr_db)} "
                f"| {s_plain:.2f} | {s_aware:.2f} |"
            )
            print(table[-1], flush=True)
        if prepared.y is not None:
            files.extend(blockwise_files(name, prepared))
    print("\n| model | layer statistics s |\n|---|---|")
    print("\n".join(gathered))
    print()
    print("\n".join(table))
    print()
    print("\n".join(files))


if __name__ == "__main__":
    main()
