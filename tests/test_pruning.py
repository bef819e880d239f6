import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from optimizers.pruning import (
    PruningConfig,
    global_masks,
    keep_where,
    kth_smallest,
    magnitude_mask,
    n_m_mask,
    prune,
    prune_global,
    sorted_magnitudes,
    target_zeros,
)

finite = st.floats(-10, 10, allow_nan=False, width=32)
tensors = arrays(np.float32, array_shapes(min_dims=1, max_dims=4, max_side=9), elements=finite)


@settings(max_examples=60, deadline=None)
@given(w=tensors, sparsity=st.floats(0, 0.99))
def test_exact_count_and_smallest_magnitudes_go(w, sparsity):
    before = w.copy()
    out = prune(w, PruningConfig(sparsity))
    np.testing.assert_array_equal(w, before)  # input untouched
    assert out.shape == w.shape and out.dtype == w.dtype
    pruned = ~magnitude_mask(w, sparsity)
    assert pruned.sum() == target_zeros(sparsity, w.size)
    assert np.all(out[pruned] == 0) and np.array_equal(out[~pruned], w[~pruned])
    if pruned.any() and (~pruned).any():
        assert np.abs(w[pruned]).max() <= np.abs(w[~pruned]).min()
    # A caller that keeps the sorted magnitudes gets the same answer, ties included.
    np.testing.assert_array_equal(prune(w, PruningConfig(sparsity), sorted_magnitudes(w)), out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_a_large_tensor_is_pruned_in_compiled_passes_as_a_small_one_is(dtype, seed):
    """Large tensors take the compiled passes (``COMPILED_FROM``): the same weights zeroed, bit
    for bit, ties by position (values on a coarse grid tie by the thousand), existing zeros of
    either sign, with or without the sorted magnitudes."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 3, 64, 130)).astype(dtype)
    if seed % 2:
        w = np.round(w, 1)  # thousands of weights share each magnitude
    w[rng.random(w.shape) < 0.2] = 0.0
    w[rng.random(w.shape) < 0.05] = -0.0
    for sparsity in (0.0, 0.1, 0.3, 0.6, 0.99):  # 0.1: the threshold is zero, of either sign
        small_way = keep_where(w, magnitude_mask(w, sparsity, sorted_magnitudes(w)))  # a sort
        for ordered in (None, sorted_magnitudes(w)):
            out = prune(w, PruningConfig(sparsity), ordered)
            assert out.dtype == w.dtype and out.shape == w.shape
            np.testing.assert_array_equal(
                out.view(f"u{w.itemsize}"), small_way.view(f"u{w.itemsize}")
            )
    magnitudes = np.abs(w).ravel()
    for k in (0, 1000, magnitudes.size // 2, magnitudes.size - 1):
        assert kth_smallest(magnitudes, k) == np.partition(magnitudes, k)[k]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_is_refused_in_a_large_tensor(bad):
    w = np.random.default_rng(0).normal(size=100_000).astype(np.float32)
    w[77] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        prune(w, PruningConfig(0.5))


def test_ties_prune_the_lower_index_first():
    w = np.array([0.5, 0.2, -0.2, 0.2, 0.9])
    out = prune(w, PruningConfig(0.4))  # 2 zeros among three 0.2s: indices 1 and 2
    np.testing.assert_array_equal(out, [0.5, 0, 0, 0.2, 0.9])


@pytest.mark.parametrize("sparsity, zeros", [(0.0, 0), (0.99, 99)])
def test_sparsity_extremes(sparsity, zeros):
    w = np.linspace(-1, 1, 100, dtype=np.float32) + 0.001
    assert (prune(w, PruningConfig(sparsity)) == 0).sum() == zeros


def test_constant_tensor_is_pruned_by_position():
    out = prune(np.full((2, 5), 3.0), PruningConfig(0.5))
    np.testing.assert_array_equal(out.ravel(), [0] * 5 + [3] * 5)


def test_existing_zeros_count_towards_the_target():
    w = np.array([0.0, 0.0, 1.0, 2.0])
    np.testing.assert_array_equal(prune(w, PruningConfig(0.5)), w)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_is_refused(bad):
    with pytest.raises(ValueError, match="NaN or Inf"):
        prune(np.array([1.0, bad]), PruningConfig(0.5))


@pytest.mark.parametrize("kwargs", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"structure": "1:8"}])
def test_config_validation_names_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PruningConfig(**kwargs)


@settings(max_examples=40, deadline=None)
@given(w=arrays(np.float32, array_shapes(min_dims=2, max_dims=4, max_side=10), elements=finite))
def test_two_of_four_along_the_input_axis(w):
    keep = n_m_mask(w)
    axis = 0 if w.ndim == 2 else w.ndim - 2
    moved = np.moveaxis(keep, axis, -1)
    length = moved.shape[-1]
    for start in range(0, length, 4):
        group = moved[..., start : start + 4]
        assert np.all(group.sum(axis=-1) == min(group.shape[-1], 2))
    # the kept weights are the largest of their group
    mags = np.moveaxis(np.abs(w), axis, -1)
    for start in range(0, length - length % 4, 4):
        g, k = mags[..., start : start + 4], moved[..., start : start + 4]
        kept_min = np.where(k, g, np.inf).min(axis=-1)
        dropped_max = np.where(k, -np.inf, g).max(axis=-1)
        assert np.all(dropped_max <= kept_min)


def test_two_of_four_dense_kernel_hand_checked():
    w = np.array([[1.0], [-4.0], [3.0], [2.0], [5.0], [0.5]])  # (in=6, out=1)
    out = prune(w, PruningConfig(structure="2:4"))
    np.testing.assert_array_equal(out.ravel(), [0, -4, 3, 0, 5, 0.5])


@settings(max_examples=30, deadline=None)
@given(
    ws=st.lists(tensors, min_size=1, max_size=4),
    sparsity=st.floats(0, 0.99),
)
def test_global_threshold_is_shared(ws, sparsity):
    out = prune_global(ws, sparsity)
    total = sum(w.size for w in ws)
    masks = global_masks(ws, sparsity)
    assert sum(int((~m).sum()) for m in masks) == target_zeros(sparsity, total)
    kept = np.concatenate([np.abs(w)[m] for w, m in zip(ws, masks, strict=True)])
    gone = np.concatenate([np.abs(w)[~m] for w, m in zip(ws, masks, strict=True)])
    if kept.size and gone.size:
        assert gone.max() <= kept.min()
    for o, w, m in zip(out, ws, masks, strict=True):
        assert np.all(o[~m] == 0) and np.array_equal(o[m], w[m])


def test_global_prunes_small_layers_harder():
    small, large = np.full(10, 0.01), np.full(10, 1.0)
    a, b = prune_global([small, large], 0.5)
    assert (a == 0).all() and (b != 0).all()
