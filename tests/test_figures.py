"""The histogram's binning and its marks of few distinct values."""

import numpy as np

from ui.figures import MAX_MARKS, bin_counts, few_levels, weight_histogram


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


def test_parts_counted_or_not_give_the_histogram_of_the_whole():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 40)).astype(np.float32)
    b = np.repeat(np.array([-0.75, 0.0, 0.5], np.float32), [700, 500, 300])
    counted = (np.array([-0.75, 0.0, 0.5], np.float32), np.array([700, 500, 300]))
    whole = np.concatenate([a.ravel(), b])
    edges = np.linspace(-4, 4, 102)
    expected = bin_counts(whole, edges).tolist()
    assert bin_counts([a, b], edges).tolist() == expected
    assert bin_counts([a, counted], edges).tolist() == expected
    assert bin_counts([a, b], edges).tolist() == expected  # the remembered counts of ``a``
    levels, counts = few_levels([b[:10], counted])
    assert levels.tolist() == [-0.75, 0.0, 0.5] and counts.tolist() == [710, 500, 300]
    assert few_levels([a, counted])[0].size == 0  # ``a`` holds many distinct values
    drawn = weight_histogram([a, b], [a, counted])
    by_name = {t.name: t for t in drawn.data}
    assert (
        list(by_name["optimized"].y) == list(by_name["original"].y) == expected_bars(whole, drawn)
    )


def expected_bars(values, figure):
    bar = next(t for t in figure.data if t.name == "original")
    edges = np.append(bar.customdata[:, 0], bar.customdata[-1, 1])
    return bin_counts(values, edges).tolist()


def test_remembered_counts_follow_the_array_not_its_address():
    edges = np.linspace(-1, 1, 11)
    for value in (-0.9, 0.9, -0.9):  # a freed array's address is often reused at once
        array = np.full(100, value)
        counts = bin_counts(array, edges)
        assert counts[0 if value < 0 else -1] == 100
        del array
