"""The staged answer (``optimize`` then ``measure``) and the app's byte-bounded caches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sample_models
from optimizers import explore, keras_io
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, optimize_weights
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from optimizers.size import gzip_size

ROOT = Path(__file__).resolve().parents[1]
SETTING = OptimizationConfig(
    pruning=PruningConfig(0.6), clustering=ClusteringConfig(16), quantization=QuantizationConfig(4)
)


@pytest.fixture(scope="module")
def prepared() -> explore.Prepared:
    sample = sample_models.get("digits_cnn")
    model = keras_io.load_model(sample.model_path)
    return explore.prepare(model, *keras_io.load_data(sample.data_path, model))


def test_stage_one_has_the_exact_figures_and_stage_two_the_rest(prepared):
    first = explore.optimize(prepared, SETTING)
    assert not first.measured and first.accuracy is None and first.sizes.gzip is None
    assert first.sizes.packed > 0 and first.sizes.file == prepared.file_bytes
    full = explore.measure(prepared, first)
    assert full.measured and full.accuracy is not None and full.sizes.gzip is not None
    assert full.weights is first.weights and full.reports == first.reports
    again = explore.run(prepared, SETTING)  # the CLI's one call is the same answer
    assert explore.outcome_to_dict(again) == explore.outcome_to_dict(full)
    assert all(np.array_equal(a, b) for a, b in zip(again.weights, full.weights, strict=True))


def test_sorted_magnitudes_change_the_speed_not_the_answer(prepared):
    setting = OptimizationConfig(pruning=PruningConfig(0.55))
    searched, _ = optimize_weights(prepared.weights, prepared.refs, setting)
    for job in prepared.known.values():
        job.result()  # made in the background after ``prepare``
    assert set(prepared.ready_known()) == {r.index for r in prepared.refs}
    read = explore.optimize(prepared, setting).weights
    assert all(np.array_equal(a, b) for a, b in zip(read, searched, strict=True))


def test_measured_figures_are_those_of_the_saved_file(prepared):
    """Accuracy is the saved model's own; the file's size never changes with the settings; the
    gzip figure of a model this small is gzip -9 of the file Keras saves, to the byte: the
    saved file with the setting's tensors put in place is that file, byte for byte."""
    from optimizers.size import rewrite

    outcome = explore.run(prepared, SETTING)
    data = explore.optimized_model_bytes(prepared, outcome.weights)
    assert len(data) == outcome.sizes.file == prepared.file_bytes
    basis = prepared.gzip
    assert basis.layout is not None
    assert rewrite(basis.file, basis.layout, [outcome.weights[i] for i in basis.indices]) == data
    assert outcome.sizes.gzip == gzip_size(data)
    sample = sample_models.get("digits_cnn")
    saved = keras_io.load_model_bytes(data, "out.keras")
    x, y = keras_io.load_data(sample.data_path, saved)
    classes = np.argmax(saved.predict(x, verbose=0), axis=1)
    assert outcome.accuracy == float(np.mean(classes == y))


def test_untouched_model_measures_its_real_gzip_size(prepared):
    """The gzip figure of the untouched model is gzip -9 of its saved file, to the byte."""
    baseline = explore.run(prepared, OptimizationConfig())
    with prepared.lock:
        prepared.clone.set_weights(list(prepared.weights))
        data = keras_io.save_model_bytes(prepared.clone)
    assert baseline.sizes.gzip == gzip_size(data)  # saves are reproducible: the same file


def test_an_estimated_gzip_figure_is_marked_wherever_it_is_shown(prepared, capsys):
    """A file over 2 MB has its setting's gzip figure estimated from a sample: the answer says
    so (``gzip_exact``), and the card, the sentence, the headline, the trade-off's hover and
    the CLI mark it "≈"; the untouched model's figure and every figure of a sample are exact,
    a data-aware one too (it changes biases as well as kernels): the real file's gzip -9."""
    import keras

    import sample_models
    from optimizers import cli, sweep
    from ui import explain, tradeoff, views

    keras.utils.set_random_seed(0)
    big = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(1024), keras.layers.Dense(8)])
    rng = np.random.default_rng(0)
    large = explore.prepare(
        big, rng.normal(size=(64, 1024)).astype(np.float32), rng.integers(0, 8, 64)
    )
    assert large.file_bytes > 2 * 1024 * 1024 and large.gzip.file is None
    baseline = explore.run(large, OptimizationConfig())
    outcome = explore.run(large, SETTING)
    assert baseline.sizes.gzip_exact and not outcome.sizes.gzip_exact
    size = explain.download_size(outcome.sizes.gzip, outcome.sizes.gzip_exact)
    assert size == "≈" + explain.format_bytes(outcome.sizes.gzip)
    cards = {c.label: c.value for c in views.cards(outcome, baseline)}
    assert cards[views.DOWNLOAD] == size and cards[views.SMALLER].startswith("≈")
    assert explain.headline(outcome, baseline).startswith("≈")
    assert f"to {size};" in explain.sentences(SETTING, outcome, baseline)[-1]
    assert f"gzip {size}<br>" in tradeoff.hover(sweep.point(outcome, SETTING))
    summary = {"baseline": explore.outcome_to_dict(baseline)}
    summary |= {"optimized": explore.outcome_to_dict(outcome), "model": "big"}
    cli.print_summary(summary | {"calibration": None, "output": None})
    assert "smaller, estimated from a sample)" in capsys.readouterr().out

    untouched = explore.run(prepared, OptimizationConfig())
    sample = sample_models.get("digits_cnn")
    train, _ = keras_io.load_data(sample.train_path, prepared.model)
    calibrated = explore.calibrate(prepared, explore.Calibration(train, "the training split"))
    for config in (
        SETTING,
        OptimizationConfig(quantization=QuantizationConfig(4), data_aware=True),
    ):
        small = explore.run(calibrated, config)
        assert small.sizes.gzip_exact, config
        real = gzip_size(explore.optimized_model_bytes(calibrated, small.weights))
        assert small.sizes.gzip == real, config
        assert "≈" not in explain.headline(small, untouched)
    changed = [i for i, w in enumerate(small.weights) if w is not calibrated.weights[i]]
    assert set(changed) - {r.index for r in calibrated.refs}  # a bias moved with its kernel


def test_an_abandoned_measurement_leaves_nothing_behind(prepared):
    """A newer slider move stops an older measurement by raising from its progress callback:
    the exception comes out, the evaluation clone is free again and the next answer is right."""

    class Superseded(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise Superseded

    first = explore.optimize(prepared, SETTING)
    with pytest.raises(Superseded):
        explore.measure(prepared, first, stop)
    assert not prepared.lock.locked()
    again = explore.measure(prepared, first)
    assert explore.outcome_to_dict(again) == explore.outcome_to_dict(explore.run(prepared, SETTING))


def test_progress_follows_every_batch(prepared, monkeypatch):
    from optimizers import evaluate

    monkeypatch.setattr(evaluate, "BATCH_ELEMENTS", 64 * 100)  # 100 digits a batch
    seen: list[tuple[int, int]] = []
    explore.measure(prepared, explore.optimize(prepared, SETTING), lambda d, t: seen.append((d, t)))
    n = len(prepared.x)
    assert seen == [(min(d, n), n) for d in range(100, n + 100, 100)]


def test_cli_apply_reports_what_the_app_shows(prepared, tmp_path):
    """The app's services and ``apply --json`` compute the same figures the same way."""
    from ui import services

    sample = sample_models.get("digits_cnn")
    model = services.open_sample("digits_cnn")
    app = explore.outcome_to_dict(services.measured(model, SETTING))
    done = subprocess.run(
        [sys.executable, "-m", "optimizers", "apply", str(sample.model_path)]
        + ["--data", str(sample.data_path), "--sparsity", "0.6", "--clusters", "16"]
        + ["--bits", "4", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert json.loads(done.stdout)["optimized"] == app


def test_byte_cache_keeps_the_newest_within_its_budget():
    from ui.services import ByteCache

    cache = ByteCache[bytes](10, len)
    for key in "abcd":
        cache.put(key, b"xxxx")
    assert [cache.get(k) for k in "abcd"] == [None, None, b"xxxx", b"xxxx"]
    assert cache.held == 8
    cache.get("c")  # used: now the newest
    cache.put("e", b"xxxx")
    assert cache.get("d") is None and cache.get("c") == b"xxxx"
    cache.put("big", b"y" * 50)  # alone over the budget: kept, everything else goes
    assert cache.get("big") and cache.held == 50 and cache.get("e") is None
    made = []
    assert cache.get_or_make("k", lambda: made.append(1) or b"z") == b"z"
    assert cache.get_or_make("k", lambda: made.append(1) or b"w") == b"z" and made == [1]


def test_byte_cache_makes_a_key_once_for_callers_at_the_same_time():
    """A second caller of a key being made waits for that result (a rerun that starts while
    the previous run still loads an upload does not load it twice); if the first maker fails,
    the waiter makes it itself."""
    import threading

    from ui.services import ByteCache

    cache = ByteCache[str](100, len)
    started, release, calls = threading.Event(), threading.Event(), []

    def slow() -> str:
        calls.append("slow")
        started.set()
        release.wait(10)
        return "made"

    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_make("k", slow)))
    first.start()
    started.wait(10)
    second = threading.Thread(target=lambda: results.append(cache.get_or_make("k", slow)))
    second.start()
    release.set()
    first.join(10), second.join(10)
    assert results == ["made", "made"] and calls == ["slow"]

    def fail() -> str:
        raise RuntimeError("abandoned")

    with pytest.raises(RuntimeError):
        cache.get_or_make("other", fail)
    assert cache.get_or_make("other", lambda: "second try") == "second try"


def test_a_model_measured_in_milliseconds_is_answered_in_one_stage(monkeypatch):
    from ui import services

    fresh = services.ByteCache[explore.Outcome](services.OUTCOMES.budget, lambda o: o.nbytes)
    monkeypatch.setattr(services, "OUTCOMES", fresh)  # nothing measured by another test
    monkeypatch.setattr(services, "MEASURE_SECONDS", services.ByteCache[float](64, lambda _: 1))
    model = services.open_sample("digits_cnn")
    first = services.optimized(model, OptimizationConfig(pruning=PruningConfig(0.55)))
    assert not services.measures_quickly(model, first)  # never measured: two stages
    services.measured(model, OptimizationConfig(pruning=PruningConfig(0.55)))
    second = services.optimized(model, OptimizationConfig(pruning=PruningConfig(0.6)))
    assert not second.measured and services.measures_quickly(model, second)  # milliseconds
    assert services.first_answer(model, OptimizationConfig(pruning=PruningConfig(0.6))).measured
    mlp = services.open_sample("digits_mlp")
    services.measured(mlp, OptimizationConfig(pruning=PruningConfig(0.55)))
    smaller = services.optimized(mlp, OptimizationConfig(pruning=PruningConfig(0.5, "channels")))
    assert smaller.source is not None  # a channel-pruned copy, never measured: two stages
    assert not services.measures_quickly(mlp, smaller)
    monkeypatch.setattr(services, "QUICK_MEASURE_S", 0.0)
    assert not services.measures_quickly(model, second)


def test_answers_are_cached_once_measured_and_bounded_by_bytes(monkeypatch):
    from ui import services

    model = services.open_sample("digits_cnn")
    first = services.optimized(model, SETTING)
    assert services.optimized(model, SETTING) is first  # stage one is kept
    full = services.measured(model, SETTING)
    assert full.measured and services.optimized(model, SETTING) is full  # replaced, not added
    assert full.weights is first.weights  # one copy of the weights
    budget = services.OUTCOMES.budget
    assert services.OUTCOMES.held <= max(budget, full.nbytes)
