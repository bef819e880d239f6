import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from optimizers.clustering import (
    INITS,
    MAX_POINTS,
    ClusteringConfig,
    cluster,
    cluster_codes,
    cluster_values,
    compilable,
    histogram,
)

finite = st.floats(-10, 10, allow_nan=False, width=32)
tensors = arrays(np.float32, array_shapes(min_dims=1, max_dims=3, max_side=12), elements=finite)


def distinct(a):
    return np.unique(a).size


@pytest.mark.parametrize("init", INITS)
@settings(max_examples=40, deadline=None)
@given(w=tensors, k=st.integers(2, 20))
def test_at_most_k_values_each_the_mean_of_its_members(init, w, k):
    before = w.copy()
    out = cluster(w, ClusteringConfig(k, init=init, preserve_sparsity=False))
    np.testing.assert_array_equal(w, before)
    assert out.shape == w.shape and out.dtype == w.dtype
    assert distinct(out) <= k
    for v in np.unique(out):
        members = w[out == v]
        assert np.isclose(v, members.astype(np.float64).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init", INITS)
def test_sparsity_is_preserved_and_zero_is_one_of_k(init):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(40, 30)).astype(np.float32)
    w[rng.random(w.shape) < 0.6] = 0
    out = cluster(w, ClusteringConfig(8, init=init))
    np.testing.assert_array_equal(out == 0, w == 0)
    assert distinct(out) <= 8 and 0 in out


def test_k_above_distinct_values_leaves_the_tensor_unchanged():
    w = np.array([1.0, 2.0, 2.0, 3.0], np.float32)
    np.testing.assert_array_equal(cluster(w, ClusteringConfig(16)), w)


def test_constant_and_1d_tensors():
    np.testing.assert_array_equal(cluster(np.full(7, 0.3), ClusteringConfig(4)), np.full(7, 0.3))
    assert distinct(cluster(np.arange(10.0), ClusteringConfig(3))) == 3


def test_hand_computed_two_clusters():
    out = cluster(
        np.array([0.0, 0.1, 0.2, 10.0, 10.2]), ClusteringConfig(2, preserve_sparsity=False)
    )
    np.testing.assert_allclose(out, [0.1, 0.1, 0.1, 10.1, 10.1])


def test_lloyd_beats_its_linear_start():
    w = np.random.default_rng(0).standard_t(3, size=5000)
    k = 8
    out = cluster(w, ClusteringConfig(k, preserve_sparsity=False))
    grid = np.linspace(w.min(), w.max(), k)
    naive = grid[np.abs(w[:, None] - grid).argmin(axis=1)]
    assert ((w - out) ** 2).sum() < ((w - naive) ** 2).sum()


def test_large_tensors_use_the_histogram_path_and_keep_the_guarantees():
    w = np.random.default_rng(0).normal(size=MAX_POINTS * 8).astype(np.float32)
    out = cluster_values(w, 16)
    assert distinct(out) <= 16
    # close to exact Lloyd: within 1% of the SSE of the sorted small-data path on a subsample
    sse = ((w.astype(np.float64) - out) ** 2).mean()
    assert sse < 0.01  # Gaussian, 16 levels: optimal MSE ≈ 0.0095 x var (Max-Lloyd table)


def test_per_channel_keeps_k_per_channel():
    w = np.random.default_rng(0).normal(size=(3, 3, 8, 5)) * np.arange(1, 6)
    out = cluster(w, ClusteringConfig(4, granularity="per-channel", preserve_sparsity=False))
    assert all(distinct(out[..., c]) <= 4 for c in range(5))
    assert distinct(out) > 4


def test_seeded_kmeanspp_is_deterministic():
    w = np.random.default_rng(0).normal(size=1000)
    cfg = ClusteringConfig(8, init="kmeans++", seed=3, preserve_sparsity=False)
    np.testing.assert_array_equal(cluster(w, cfg), cluster(w, cfg))


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_is_refused(bad):
    with pytest.raises(ValueError, match="NaN or Inf"):
        cluster(np.array([1.0, bad, 2.0]), ClusteringConfig(2))


@pytest.mark.parametrize("kwargs", [{"clusters": 1}, {"init": "random"}, {"granularity": "x"}])
def test_config_validation_names_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ClusteringConfig(**kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("zeros_apart", [False, True])
def test_the_compiled_bins_are_numpys(dtype, zeros_apart):
    """Bins computed in the values' own float type (float16 as float64), the maximum in the
    last bin, exact zeros in one more bin when kept apart; counts and sums as ``np.bincount``
    makes them; ``gather`` finds the members of the bins asked for and ``encode`` maps each
    value through its bin."""
    from optimizers import binning

    rng = np.random.default_rng(3)
    x = rng.normal(size=50_000).astype(dtype)
    x[rng.random(x.size) < 0.2] = 0
    wide = compilable(x)
    h = histogram(wide, 1000, zeros_apart)
    lo, hi = wide.min(), wide.max()
    t = np.minimum((wide - lo) * wide.dtype.type(1000 / (float(hi) - float(lo))), 999)
    bins = t.astype(np.intp)
    if zeros_apart:
        bins[x == 0] = 1000
    n = 1000 + zeros_apart
    np.testing.assert_array_equal(h.counts, np.bincount(bins, minlength=n))
    np.testing.assert_array_equal(h.sums, np.bincount(bins, weights=wide, minlength=n))
    assert h.regular == 1000 and h.zeros_apart == zeros_apart
    encoded = np.empty(x.size, np.intp)
    binning.encode(wide, *h.grid, np.arange(n), encoded)
    np.testing.assert_array_equal(encoded, bins)
    wanted = rng.random(n) < 0.3
    found = np.empty(int(h.counts[wanted].sum()), np.intp)
    binning.gather(wide, *h.grid, wanted, found)
    np.testing.assert_array_equal(found, np.flatnonzero(wanted[bins]))


@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
@pytest.mark.parametrize("shift", [0.0, 0.5])  # mixed signs, or all weights positive
def test_large_pruned_tensors_keep_zeros_apart_and_the_guarantees(granularity, shift):
    rng = np.random.default_rng(2)
    w = (rng.normal(size=(MAX_POINTS // 4, 12)) + shift).astype(np.float32)
    w[rng.random(w.shape) < 0.4] = 0
    coded = cluster_codes(w, ClusteringConfig(8, granularity=granularity))
    out = coded.values
    np.testing.assert_array_equal(out == 0, w == 0)
    channels = [out] if granularity == "per-tensor" else [out[:, c] for c in range(12)]
    originals = [w] if granularity == "per-tensor" else [w[:, c] for c in range(12)]
    for o, x in zip(channels, originals, strict=True):
        assert distinct(o) <= 8 and 0 in o
        for v in np.unique(o[o != 0]):
            assert np.isclose(v, x[o == v].astype(np.float64).mean(), rtol=1e-5)
    for row in coded.table:  # sorted, and the entries codes use are distinct
        used = row[np.isfinite(row)]
        assert np.all(np.diff(used) > 0)
