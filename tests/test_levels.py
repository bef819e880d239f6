"""Figures counted from codes, or from where an original tensor's values repeat, equal the
figures sorted from values, on a real model."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers import levels  # noqa: E402
from optimizers.clustering import ClusteringConfig  # noqa: E402
from optimizers.pipeline import (  # noqa: E402
    OptimizationConfig,
    eligible_tensors,
    optimize_weights,
    read_once,
)
from optimizers.pruning import PruningConfig  # noqa: E402
from optimizers.quantization import QuantizationConfig, coded, quantize  # noqa: E402
from optimizers.tensors import COMPILED_FROM, as_channel_columns  # noqa: E402

SETTINGS = [
    OptimizationConfig(pruning=PruningConfig(0.5), clustering=ClusteringConfig(16)),
    OptimizationConfig(
        clustering=ClusteringConfig(8, granularity="per-channel", preserve_sparsity=False)
    ),
    OptimizationConfig(pruning=PruningConfig(0.3), quantization=QuantizationConfig(8)),
    OptimizationConfig(quantization=QuantizationConfig(4, "asymmetric", "per-tensor")),
    OptimizationConfig(
        pruning=PruningConfig(0.6),
        clustering=ClusteringConfig(32),
        quantization=QuantizationConfig(4, granularity="per-tensor"),
    ),
    OptimizationConfig(quantization=QuantizationConfig(16)),  # tables too large: sorted
    # Clustered, then the shared values rounded: tables whose merged entries are counted once.
    OptimizationConfig(clustering=ClusteringConfig(16), quantization=QuantizationConfig(3)),
    OptimizationConfig(
        pruning=PruningConfig(0.5),
        clustering=ClusteringConfig(16, granularity="per-channel"),
        quantization=QuantizationConfig(3, "asymmetric"),
    ),
]


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10)


@pytest.mark.parametrize("config", SETTINGS, ids=lambda c: str(c.quantization or c.clustering))
def test_reports_counted_from_codes_equal_sorted_ones(mobilenet, config):
    refs = eligible_tensors(mobilenet)
    weights, reports = optimize_weights(mobilenet.get_weights(), refs, config)
    counted = 0
    for r, ref in zip(reports, refs, strict=True):
        w = weights[r.index]
        found = levels.sorted_statistics(w, ref.channel_axes, r.per_channel)
        assert (r.unique_values, r.max_channel_values) == (found.distinct, found.max_channel)
        assert r.entropy_bits == pytest.approx(found.bits, rel=1e-9, abs=1e-6), r.path
        assert (r.levels is None) == (found.levels is None), r.path
        if r.levels is not None:
            counted += 1
            np.testing.assert_array_equal(r.levels[0], found.levels[0])
            np.testing.assert_array_equal(r.levels[1], found.levels[1])
    assert counted or config.quantization.bits == 16


@pytest.mark.parametrize("granularity", ["per-channel", "per-tensor"])
@pytest.mark.parametrize("mode", ["symmetric", "asymmetric"])
def test_a_quantized_tensors_table_gives_its_values(granularity, mode):
    w = np.random.default_rng(0).normal(size=(3, 3, 16, 24)).astype(np.float32)
    config = QuantizationConfig(4, mode, granularity)
    q = quantize(w, config, (-1,))
    np.testing.assert_array_equal(coded(q, config, (-1,)).values, q.values)
    wide = QuantizationConfig(16, mode, granularity)  # 65,535 values a scale
    tabled = coded(quantize(w, wide, (-1,)), wide, (-1,))
    assert (tabled is None) == (granularity == "per-channel")  # 24 rows of them: too large


@pytest.mark.parametrize("axes", [(-1,), (-2, -1), (-2,)])
@pytest.mark.parametrize(
    "dtype, base, entries", [(np.int8, -128, 256), (np.int16, 0, 16), (np.intp, 0, 16)]
)
@pytest.mark.parametrize("rows", [1, "per channel"])
def test_a_large_tensors_codes_are_looked_up_and_counted_as_a_small_ones(
    axes, dtype, base, entries, rows
):
    """Large tensors take the compiled passes (``COMPILED_FROM``): the same values, and figures
    counted from codes equal to those sorted from the values, whatever the code type, base,
    table layout and channel axes."""
    rng = np.random.default_rng(0)
    shape = (3, 3, 96, 80)
    codes = rng.integers(base, base + entries, size=shape).astype(dtype)  # int8: all of them
    channels = as_channel_columns(codes, axes)[0].shape[1]
    table = np.sort(rng.normal(size=(channels if rows == "per channel" else 1, entries)), axis=1)
    coded_ = levels.Coded(codes, table.astype(np.float32), axes, base)
    assert codes.size >= COMPILED_FROM
    columns, restore = as_channel_columns(codes.astype(np.intp) - base, axes)
    expected = restore(
        np.take_along_axis(np.broadcast_to(table.T, (entries, channels)), columns, 0)
    )
    values = coded_.values
    np.testing.assert_array_equal(values, expected.astype(np.float32))
    for per_channel in (False, True):
        assert_same_statistics(
            levels.statistics(values, axes, per_channel, coded_),
            levels.sorted_statistics(values, axes, per_channel),
        )


def assert_same_statistics(found: levels.Statistics, sorted_: levels.Statistics) -> None:
    assert (found.distinct, found.max_channel) == (sorted_.distinct, sorted_.max_channel)
    assert found.bits == pytest.approx(sorted_.bits, rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("axes", [(-1,), (-2, -1), (-2,)])
def test_a_pruned_tensors_statistics_follow_from_its_repeats(seed, axes):
    """Values drawn from a small pool repeat within and across channels (some originals are
    zero already, +0.0 or -0.0); any zeroing of them is counted as sorting counts it."""
    rng = np.random.default_rng(seed)
    shape = (3, 3, 24, 32)
    w = rng.normal(size=shape).astype(np.float32)
    pool = rng.normal(size=int(rng.integers(1, 200))).astype(np.float32)
    repeated = rng.random(shape) < rng.uniform(0.0, 0.1)
    w[repeated] = rng.choice(pool, size=int(repeated.sum()))
    w[rng.random(shape) < 0.01] = 0.0
    w[rng.random(shape) < 0.01] = -0.0  # a zero too, though its bit pattern differs
    known = levels.repeats(w, axes)
    assert known is not None
    for sparsity in (0.0, 0.3, 0.9, 0.99):
        pruned = np.where(rng.random(shape) < sparsity, np.float32(0), w)
        found = levels.pruned_statistics(pruned, known, axes)
        sorted_ = levels.sorted_statistics(pruned, axes, per_channel=False)
        if found is None:  # few values left: only a sort knows them
            assert sorted_.distinct <= levels.LEVELS_KEPT
        else:
            assert sorted_.distinct > levels.LEVELS_KEPT
            assert_same_statistics(found, sorted_)


def test_a_tensor_of_few_values_is_sorted_not_repeated():
    w = np.random.default_rng(0).integers(-8, 8, size=(64, 64)).astype(np.float32)
    assert levels.repeats(w, (-1,)) is None


@pytest.mark.parametrize(
    "config",
    [
        OptimizationConfig(pruning=PruningConfig(0.3)),
        OptimizationConfig(pruning=PruningConfig(0.8, scope="global")),
        OptimizationConfig(pruning=PruningConfig(0.5, "2:4")),
        OptimizationConfig(),  # the original itself
        # Values rounded (tables too large to count): the repeats no longer apply.
        OptimizationConfig(pruning=PruningConfig(0.3), quantization=QuantizationConfig(16)),
    ],
    ids=str,
)
def test_reports_read_once_equal_sorted_ones(mobilenet, config):
    refs = eligible_tensors(mobilenet)
    weights = mobilenet.get_weights()
    known = {r.index: read_once(weights[r.index], r.channel_axes) for r in refs}
    assert any(k.repeats is not None and k.repeats.positions.size for k in known.values())
    fast, fast_reports = optimize_weights(weights, refs, config, known)
    slow, slow_reports = optimize_weights(weights, refs, config)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))
    for f, s in zip(fast_reports, slow_reports, strict=True):
        assert (f.unique_values, f.max_channel_values) == (s.unique_values, s.max_channel_values)
        assert f.entropy_bits == pytest.approx(s.entropy_bits, rel=1e-9), f.path
