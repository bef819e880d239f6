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


def marks(figure) -> tuple[str | None, list]:
    """The legend name of a histogram's marks and the values marked (none when not drawn)."""
    named = [t for t in figure.data if t.yaxis == "y2" and t.showlegend is not False]
    if not named:
        return None, []
    return named[0].name, [x for x in named[0].x if x is not None]


def test_several_tensors_shared_values_are_named_as_such_and_capped():
    rng = np.random.default_rng(2)
    original = [rng.normal(size=400).astype(np.float32) for _ in range(3)]
    few = [np.round(w * 4) / 4 for w in original]  # about 13 values each, mostly the same ones
    name, marked = marks(weight_histogram(original, few, marks_name="shared values"))
    union = np.unique(np.concatenate(few))
    assert name == f"{union.size} shared values in 3 tensors" and marked == union.tolist()
    # Each tensor's own 40 values, 120 together: named, said to be too many, none drawn.
    own = [np.sort(w)[np.arange(400) // 10 * 10] for w in original]
    figure = weight_histogram(original, own, marks_name="shared values")
    assert marks(figure) == ("120 shared values in 3 tensors: too many to mark", [])
    assert [t.name for t in figure.data if t.type == "scatter"] == [marks(figure)[0]]  # no lines
    # One tensor of more than MAX_MARKS values: nothing to mark, nothing said.
    assert marks(weight_histogram(original[0], original[0] + 1))[0] is None


def test_the_marks_of_one_tensor_are_its_shared_values_as_the_sentence_counts_them():
    """Clustered into 16 values per tensor, then quantized: the histogram of each tensor marks
    exactly its distinct values (at most 16), and the sentence beside it counts the same."""
    import re

    import pytest

    pytest.importorskip("keras")
    import sample_models
    from optimizers import explore, keras_io
    from optimizers.clustering import ClusteringConfig
    from optimizers.pipeline import OptimizationConfig
    from optimizers.quantization import QuantizationConfig
    from ui import explain
    from ui.figures import mark_label, tensor_choice

    prepared = explore.prepare(keras_io.load_model(sample_models.get("digits_cnn").model_path))
    config = OptimizationConfig(clustering=ClusteringConfig(16), quantization=QuantizationConfig(4))
    outcome = explore.optimize(prepared, config)
    assert mark_label(config) == "shared values"
    counts = {}
    for r in outcome.eligible:
        figure = weight_histogram(
            *tensor_choice(prepared, outcome, r.path), marks_name="shared values"
        )
        name, marked = marks(figure)
        assert len(marked) == r.unique_values <= 16, r.path
        assert name == f"{r.unique_values} shared values" and len(set(marked)) == len(marked)
        counts[r.path] = len(marked)
    baseline = explore.optimize(prepared, OptimizationConfig())
    text = " ".join(explain.sentences(config, outcome, baseline))
    path, n = re.search(r"(\S+) now uses (\d+) distinct values per tensor", text).groups()
    assert counts[path] == int(n) == max(counts.values())
    assert "one scale per tensor, as the 16 shared values are per tensor" in text
    # All the tensors: their values together, named so (and capped).
    union = np.unique(np.concatenate([r.levels[0] for r in outcome.eligible])).size
    figure = weight_histogram(*tensor_choice(prepared, outcome, None), marks_name="shared values")
    expected = f"{union} shared values in {len(outcome.eligible)} tensors"
    assert marks(figure)[0] == expected + ("" if union <= MAX_MARKS else ": too many to mark")


def luminance(color: str) -> float:
    """WCAG's relative luminance of ``#rrggbb``."""
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_charts_read_on_a_projector_in_a_colour_blind_safe_palette():
    """Every chart's axis titles, tick labels and legend at 14 px or more; the original a light
    grey, the optimized a blue at least 4.5:1 darker, each bar in its colour."""
    from ui import finetune, tradeoff
    from ui.figures import OPTIMIZED_COLOR, ORIGINAL_COLOR, size_sweep, weight_grid

    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    histogram = weight_histogram(w, np.round(w * 2) / 2)
    charts = [
        histogram,
        weight_grid(w, 1.0),
        size_sweep([0, 50, 100], [256, 256, 256], [200, 120, 30]),
        tradeoff.heatmap([], 0.9, "accuracy"),
        finetune.progress_chart([(1, 0.5, 0.9), (2, 0.4, None)], 3),
    ]
    for figure in charts:
        assert figure.layout.font.size >= 14 and figure.layout.legend.font.size >= 14
        for axis in [*figure.select_xaxes(), *figure.select_yaxes()]:
            assert axis.title.font.size >= 14 and axis.tickfont.size >= 14
    bars = {t.name: t.marker.color for t in histogram.data if t.type == "bar"}
    assert bars == {"original": ORIGINAL_COLOR, "optimized": OPTIMIZED_COLOR}
    light, dark = luminance(ORIGINAL_COLOR), luminance(OPTIMIZED_COLOR)
    assert light > 0.4 and (light + 0.05) / (dark + 0.05) >= 4.5
    # The Trade-off's log axis labels 1, 2 and 5 times each power of ten, all at one size.
    assert tradeoff.log_ticks([3500, 80_000]) == [2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5]
