"""The histogram's binning and its marks of few distinct values."""

import numpy as np

from ui.figures import MAX_MARKS, bin_counts, few_levels


def test_bin_counts_agree_with_numpy_but_for_values_on_an_edge():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200_000).astype(np.float32)
    edges = np.linspace(values.min(), values.max(), 102)
    ours, numpys = bin_counts(values, edges), np.histogram(values, edges)[0]
    assert ours.sum() == values.size  # the maximum lands in the last bin, as numpy's does
    assert np.abs(ours - numpys).sum() <= 4
    square = values[:40_000].reshape(200, 200)  # any shape counts its values, as numpy's does
    assert bin_counts(square, edges).tolist() == bin_counts(square.ravel(), edges).tolist()


def test_few_levels_marks_every_value_or_none():
    pruned = np.repeat(np.array([-0.5, 0.0, 0.25], np.float32), 100_000)
    levels, counts = few_levels(pruned)
    assert levels.tolist() == [-0.5, 0.0, 0.25] and counts.tolist() == [100_000] * 3
    many = np.arange(MAX_MARKS + 1, dtype=np.float32).repeat(1000)
    assert few_levels(many)[0].size == 0
    # A spread sample (every 15th value here) that sees only zeros: the whole is counted too.
    hidden = np.zeros(1_000_000, np.float32)
    hidden[1 : 15 * (MAX_MARKS + 1) : 15] = np.arange(1, MAX_MARKS + 2)
    assert np.unique(hidden[:: hidden.size // 65_536]).size == 1
    assert few_levels(hidden)[0].size == 0
