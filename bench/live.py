"""Live answers on real-size uploads: what one slider move costs, in stages, and what the app
holds in memory. Part of ``make bench`` (``bench.bench`` calls ``live_rows``); the rows are:

* ``prepare``: upload to first answer, library part (``explore.prepare``);
* ``first``: stage one of a slider move: optimized weights, report, exact sizes, and the
  histogram data the page draws (``explore.optimize`` + the histogram);
* ``full``: stage one and stage two (accuracy and the gzip figure, ``explore.measure``);
* ``before``: the same slider move as the app answered it before stages existed (eager
  evaluation, the ``.keras`` file saved and compressed whole with gzip -9): the baseline that
  the ``full`` figure is a ratio of, measured in the same run;
* ``gzip error``: the gzip figure against gzip -9 of the saved file, worst over the settings.

``memory_row`` runs in a subprocess of its own (``python -m bench.live memory ARCH N K``) so its
resident-memory figures are those of one app process: the app's services with the model loaded,
after K distinct slider settings, each answered in full as the page does.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from optimizers import explore, keras_io
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from optimizers.size import gzip_size

ROOT = Path(__file__).resolve().parents[1]


def settings(count: int) -> list[OptimizationConfig]:
    """``count`` distinct slider settings, as a user sweeping all three sliders makes them."""
    sparsities = (0.3, 0.5, 0.6, 0.8)
    clusters = (None, 16, 32)
    bits = (None, 8, 4)
    grid = [
        OptimizationConfig(
            pruning=PruningConfig(s),
            clustering=None if k is None else ClusteringConfig(k),
            quantization=None if b is None else QuantizationConfig(b),
        )
        for s in sparsities
        for k in clusters
        for b in bits
    ]
    extra = [OptimizationConfig(pruning=PruningConfig(round(0.05 * i, 2))) for i in range(1, 20)]
    return (grid + extra)[:count]


def real_model(arch: str, images: int):
    """A ``keras.applications`` model with random weights and ``images`` random inputs."""
    import keras

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(224, 224, 3))
    x = np.random.default_rng(0).random((images, *model.input_shape[1:]), np.float32)
    return model, x


def histogram(prepared: explore.Prepared, outcome: explore.Outcome) -> None:
    """The figure the Explore page draws of all eligible weights."""
    from ui.figures import tensor_choice, weight_histogram

    weight_histogram(*tensor_choice(prepared, outcome, None))


def before(prepared: explore.Prepared, outcome: explore.Outcome) -> None:
    """The pre-stage answer: eager evaluation, and the saved file compressed whole."""
    prepared.clone.set_weights(outcome.weights)
    for start in range(0, len(prepared.x), 1024):
        prepared.clone(prepared.x[start : start + 1024], training=False)
    gzip_size(keras_io.save_model_bytes(prepared.clone))


def staged_row(arch: str, images: int, moves: int, with_before: bool) -> dict:
    model, x = real_model(arch, images)
    start = time.perf_counter()
    prepared = explore.prepare(model, x)
    row: dict = {"model": arch, "images": images, "prepare_s": time.perf_counter() - start}
    histogram(prepared, explore.optimize(prepared, settings(1)[0]))  # imports, first figure
    first, full, errors = [], [], []
    for config in settings(moves):
        start = time.perf_counter()
        outcome = explore.optimize(prepared, config)
        histogram(prepared, outcome)
        first.append(time.perf_counter() - start)
        outcome = explore.measure(prepared, outcome)
        full.append(time.perf_counter() - start)
        if len(errors) < 3:  # the real gzip -9 of a MobileNet's file takes seconds
            with prepared.lock:
                prepared.clone.set_weights(outcome.weights)
                real = gzip_size(keras_io.save_model_bytes(prepared.clone))
            errors.append((outcome.sizes.gzip - real) / real)
    row |= {
        "first_ms": 1000 * statistics.median(first),
        "first_slowest_ms": 1000 * max(first),
        "full_ms": 1000 * statistics.median(full),
        "gzip_error_pct": 100 * max(errors, key=abs),
    }
    if with_before:
        outcome = explore.optimize(prepared, settings(1)[0])
        start = time.perf_counter()
        before(prepared, outcome)
        row["before_ms"] = 1000 * (time.perf_counter() - start) + row["first_ms"]
    return row


def sample_gzip_errors() -> list[dict]:
    """The gzip figure against the real gzip -9 of the saved file, on every sample."""
    import sample_models

    rows = []
    for sample in sample_models.SAMPLES:
        model = keras_io.load_model(sample.model_path)
        prepared = explore.prepare(model, *keras_io.load_data(sample.data_path, model))
        errors = []
        for config in settings(12):
            outcome = explore.run(prepared, config)
            prepared.clone.set_weights(outcome.weights)
            real = gzip_size(keras_io.save_model_bytes(prepared.clone))
            errors.append((outcome.sizes.gzip - real) / real)
        rows.append({"model": sample.name, "gzip_error_pct": 100 * max(errors, key=abs)})
    return rows


def memory_row(arch: str, images: int, moves: int) -> dict:
    """Resident memory of the app's services with ``arch`` loaded through the upload path
    (its ``.keras`` bytes and an ``.npz``), after ``moves`` distinct settings answered in full."""
    import io

    from ui import services

    model, x = real_model(arch, images)
    data = io.BytesIO()
    np.savez(data, x=x)
    model_bytes = keras_io.save_model_bytes(model)
    del model
    loaded = services.open_keras(f"{arch}.keras", model_bytes, ("data.npz", data.getvalue()))
    services.baseline(loaded)
    after_load = rss_mb()
    for config in settings(moves):
        histogram(loaded.prepared, services.measured(loaded, config))
    return {
        "model": arch,
        "images": images,
        "moves": moves,
        "after_load_mb": after_load,
        "resident_mb": rss_mb(),
        "peak_mb": rss_mb("VmHWM"),
        "cache_mb": services.OUTCOMES.held / 2**20,
    }


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(arch: str, images: int, moves: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.live", "memory", arch, str(images), str(moves)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=3600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"model": arch, "error": done.stderr[-300:]}


def sessions_row(count: int, sample: str = "digits_cnn") -> dict:
    """``count`` app sessions (Streamlit AppTest, one thread each, one process) on the Explore
    page move a slider at the same moment, each to a setting no other session has asked for:
    seconds from the move to the answer, full rerun and measurement included."""
    import threading

    from streamlit.testing.v1 import AppTest

    from ui import state

    sessions = []
    for _ in range(count):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.selectbox(key=state.SAMPLE).set_value(sample).run()
        at.switch_page("pages/explore.py").run()
        sessions.append(at)
    seconds = [0.0] * count
    start_line = threading.Barrier(count)

    def move(i: int, at) -> None:
        start_line.wait()
        start = time.perf_counter()
        at.slider(key=state.SPARSITY).set_value(5 * (i % 19 + 1))
        at.select_slider(key=state.BITS).set_value(8 if i < 19 else 4).run()
        seconds[i] = time.perf_counter() - start

    threads = [threading.Thread(target=move, args=(i, at)) for i, at in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [str(at.exception) for at in sessions if at.exception]
    seconds.sort()
    return {
        "sessions": count,
        "model": sample,
        "p50_s": statistics.median(seconds),
        "p95_s": seconds[min(count - 1, round(0.95 * (count - 1)))],
        "max_s": seconds[-1],
        "failed": failed,
    }


def live_rows(smoke: bool) -> dict:
    """Every row of this module; ``smoke`` keeps one small model and few moves."""
    if smoke:
        return {
            "staged": [staged_row("MobileNetV3Small", 4, 2, with_before=False)],
            "samples_gzip": [],
            "memory": [],
            "sessions": [sessions_row(2)],
            "browser": [],
        }
    from bench.browser import browser_row

    return {
        "staged": [
            staged_row("MobileNetV2", 64, 8, with_before=True),
            staged_row("ResNet50", 32, 6, with_before=False),
        ],
        "samples_gzip": sample_gzip_errors(),
        "memory": [memory("ResNet50", 16, 40)],
        "sessions": [sessions_row(20)],
        "browser": [browser_row()],
    }


def markdown(live: dict) -> list[str]:
    out = [
        "",
        "| real-size upload | images | prepare s | first answer ms (slowest) | full answer ms "
        "| before stages ms | × faster | gzip figure vs gzip -9 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in live["staged"]:
        before_ms = r.get("before_ms")
        faster = f"{before_ms / r['full_ms']:.1f}×" if before_ms else "-"
        out.append(
            f"| {r['model']} | {r['images']} | {r['prepare_s']:.2f} "
            f"| {r['first_ms']:.0f} ({r['first_slowest_ms']:.0f}) "
            f"| {r['full_ms']:.0f} | {'-' if before_ms is None else f'{before_ms:.0f}'} "
            f"| {faster} | {r['gzip_error_pct']:+.2f}% |"
        )
    for r in live["samples_gzip"]:
        out.append(f"| {r['model']} | - | - | - | - | - | - | {r['gzip_error_pct']:+.2f}% |")
    for r in live["sessions"]:
        out += [
            "",
            f"{r['sessions']} app sessions on {r['model']} moving a slider at the same moment, "
            f"each to a new setting: p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, slowest "
            f"{r['max_s']:.2f} s" + (f"; failures: {r['failed']}" if r["failed"] else "."),
        ]
    for r in live["browser"]:
        out += [
            "",
            f"{r['model']} with {r['images']} images uploaded in chromium (loaded in "
            f"{r['load_s']:.1f} s): a slider move draws its first answer in {r['first_s']:.2f} s "
            f"and the whole answer in {r['full_s']:.2f} s (median; slowest {r['slowest_s']:.2f} s).",
        ]
    for r in live["memory"]:
        if "error" in r:
            out.append(f"\nMemory run failed: {r['error']}")
            continue
        out += [
            "",
            f"Memory of one app process with {r['model']} uploaded ({r['images']} images): "
            f"{r['after_load_mb']:.0f} MB resident after loading, {r['resident_mb']:.0f} MB "
            f"after {r['moves']} distinct settings (peak {r['peak_mb']:.0f} MB; answers cache "
            f"{r['cache_mb']:.0f} MB).",
        ]
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory"]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        arch, images, moves = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(memory_row(arch, images, moves)))
