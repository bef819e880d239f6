"""Cluster, then quantize: the shared values go onto the grid and stay at most k.

Property checks of the pipeline's promise, on the bundled samples' real kernels and on random
tensors, for every clustering granularity, quantization granularity and mode, 2 to 8 bits and
2 to 64 clusters: at most k values per tensor (per channel, for per-channel clustering), each
the grid's own rounding of the shared value, a packed size no larger than clustering alone, and
codes that give the values and the figures counted from them.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sample_models
from optimizers import levels
from optimizers.clustering import GRANULARITIES as CLUSTER_GRANULARITIES
from optimizers.clustering import ClusteringConfig, cluster_codes
from optimizers.pipeline import OptimizationConfig, TensorRef, distinct_counts, optimize_weights
from optimizers.pruning import PruningConfig
from optimizers.quantization import GRANULARITIES, MODES, QuantizationConfig, quantize
from optimizers.size import packed_bits

Tensor = tuple[str, np.ndarray, tuple[int, ...]]  # path, weights, output-channel axes


@cache
def real_tensors() -> tuple[Tensor, ...]:
    """Every eligible kernel of the bundled samples, with its channel axes."""
    from optimizers import keras_io
    from optimizers.pipeline import eligible_tensors

    found = []
    for sample in sample_models.SAMPLES:
        model = keras_io.load_model(sample.model_path)
        weights = model.get_weights()
        found += [
            (f"{sample.name}:{r.path}", weights[r.index], r.channel_axes)
            for r in eligible_tensors(model)
        ]
    return tuple(found)


@st.composite
def random_tensors(draw: st.DrawFn) -> Tensor:
    """A Dense, Conv2D or DepthwiseConv2D kernel of normal, heavy-tailed or constant weights,
    at any magnitude. (Continuous values: two channels never share a cluster value but zero.)"""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    layout = draw(st.sampled_from(["dense", "conv", "depthwise"]))
    channels = draw(st.integers(1, 12))
    if layout == "dense":
        shape, axes = (draw(st.integers(1, 300)), channels), (-1,)
    elif layout == "conv":
        shape, axes = (3, 3, draw(st.integers(1, 8)), channels), (-1,)
    else:
        shape, axes = (3, 3, channels, draw(st.integers(1, 2))), (-2, -1)
    kind = draw(st.sampled_from(["normal", "heavy", "constant"]))
    magnitude = 10.0 ** draw(st.integers(-4, 1))
    if kind == "normal":
        w = rng.normal(size=shape)
    elif kind == "heavy":
        w = rng.standard_t(2, size=shape)
    else:
        w = np.full(shape, rng.normal())
    return f"random {layout} {kind} #{seed}", (magnitude * w).astype(np.float32), axes


# Deferred: the samples are loaded when the first example is drawn, not at import.
tensors = st.one_of(st.deferred(lambda: st.sampled_from(real_tensors())), random_tensors())
clusterings = st.builds(
    ClusteringConfig,
    clusters=st.integers(2, 64),
    preserve_sparsity=st.booleans(),
    granularity=st.sampled_from(CLUSTER_GRANULARITIES),
)
quantizations = st.builds(
    QuantizationConfig,
    bits=st.integers(2, 8),
    mode=st.sampled_from(MODES),
    granularity=st.sampled_from(GRANULARITIES),
)
prunings = st.sampled_from([None, PruningConfig(0.5)])


def test_every_sample_gives_its_kernels():
    names = {path.split(":")[0] for path, _, _ in real_tensors()}
    assert names == {s.name for s in sample_models.SAMPLES}


def run(tensor: Tensor, config: OptimizationConfig):
    """The pipeline on one tensor: its optimized copy and report."""
    path, w, axes = tensor
    ref = TensorRef(0, path, path, "Dense", w.shape, axes)
    [out], [report] = optimize_weights([w], [ref], config)
    return out, report


@settings(max_examples=150, deadline=None)
@given(tensor=tensors, pruning=prunings, clustering=clusterings, quantization=quantizations)
def test_cluster_then_quantize_keeps_k_values_on_the_grid(
    tensor, pruning, clustering, quantization
):
    path, w, axes = tensor
    before = w.copy()
    clustered_only = OptimizationConfig(pruning=pruning, clustering=clustering)
    config = OptimizationConfig(pruning=pruning, clustering=clustering, quantization=quantization)
    clustered, plain = run(tensor, clustered_only)
    out, report = run(tensor, config)
    np.testing.assert_array_equal(w, before)  # the input is never changed
    assert out.shape == w.shape and out.dtype == w.dtype

    # At most k values per tensor, or per channel; never more than clustering alone left.
    k = clustering.clusters
    distinct, per_channel = distinct_counts(out, axes)
    if clustering.granularity == "per-tensor":
        assert distinct <= min(k, plain.unique_values), path
    assert per_channel <= min(k, plain.max_channel_values), path

    # On the grid: each value is the grid's rounding of its shared value, with one scale per
    # tensor or per channel as the clustering has them (the config's own granularity aside).
    grid = config.grid
    assert grid is not None and grid.granularity == clustering.granularity
    np.testing.assert_array_equal(out, quantize(clustered, grid, axes).values, err_msg=path)
    # Zeros stay zero, and are +0.0 like the integer code 0 in a file.
    assert not np.signbit(out[out == 0]).any(), path
    assert np.all(out[clustered == 0] == 0), path

    # Quantizing what clustering left never makes the packed size larger.
    assert packed_bits(out, report) <= packed_bits(clustered, plain), path

    # The report (counted from the codes) equals the figures sorted from the values.
    found = levels.sorted_statistics(out, axes, report.per_channel)
    assert (report.unique_values, report.max_channel_values) == (found.distinct, found.max_channel)
    assert report.entropy_bits == pytest.approx(found.bits, rel=1e-9, abs=1e-6), path
    assert report.per_channel == (clustering.granularity == "per-channel")
    assert report.bits == quantization.bits


@settings(max_examples=60, deadline=None)
@given(tensor=tensors, clustering=clusterings, bits=st.integers(2, 8), mode=st.sampled_from(MODES))
def test_the_quantization_granularity_does_not_change_a_clustered_tensor(
    tensor, clustering, bits, mode
):
    outs = [
        run(tensor, OptimizationConfig(clustering=clustering, quantization=q))
        for q in (QuantizationConfig(bits, mode, g) for g in GRANULARITIES)
    ]
    (a, report_a), (b, report_b) = outs
    np.testing.assert_array_equal(a, b)
    assert report_a == report_b


@settings(max_examples=60, deadline=None)
@given(tensor=tensors, clustering=clusterings, quantization=quantizations)
def test_codes_and_table_give_the_values(tensor, clustering, quantization):
    """``quantize_table`` keeps a valid ``Coded``: sorted, distinct rows (padding aside) that
    the codes index into, each row at most k values."""
    from optimizers.quantization import quantize_table

    _, w, axes = tensor
    coded = cluster_codes(w, clustering, axes)
    table_before = coded.table.copy()
    rounded = quantize_table(coded, quantization)
    np.testing.assert_array_equal(coded.table, table_before)  # the input is never changed
    grid = OptimizationConfig(clustering=clustering, quantization=quantization).grid
    np.testing.assert_array_equal(rounded.values, quantize(coded.values, grid, axes).values)
    assert rounded.table.shape[0] == coded.table.shape[0]
    for row in rounded.table:
        used = row[np.isfinite(row)]
        assert used.size <= clustering.clusters and np.all(np.diff(used) > 0)
    assert rounded.codes.min() >= 0 and rounded.codes.max() < rounded.table.shape[1]
    assert np.isfinite(rounded.values).all()
