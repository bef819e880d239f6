"""Figures counted from codes equal the figures sorted from values, on a real model."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers import levels  # noqa: E402
from optimizers.clustering import ClusteringConfig  # noqa: E402
from optimizers.pipeline import OptimizationConfig, eligible_tensors, optimize_weights  # noqa: E402
from optimizers.pruning import PruningConfig  # noqa: E402
from optimizers.quantization import QuantizationConfig, coded, quantize  # noqa: E402

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
