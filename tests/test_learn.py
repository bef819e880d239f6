"""The Learn page: its lessons' numbers against the library, and the page under AppTest."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from optimizers.pruning import target_zeros
from optimizers.quantization import code_range
from ui import learn, state

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
LEARN = "pages/learn.py"


# --- the lessons ---


def test_the_kernel_is_the_same_on_every_call_and_never_changed() -> None:
    w = learn.kernel()
    assert w.shape == learn.SHAPE and w.dtype == np.float32
    copy = w.copy()
    for lesson in (learn.pruning(w, 50), learn.clustering(w, 8), learn.quantization(w, 4)):
        assert lesson.after.shape == w.shape
    learn.zeros_kept(w), learn.grid_order(w), learn.size_sweep(w), learn.storage(w)
    np.testing.assert_array_equal(w, copy)
    np.testing.assert_array_equal(learn.kernel(), copy)


@pytest.mark.parametrize("percent", [5, 50, 95])
def test_pruning_lesson_counts_the_zeros_it_names(percent: int) -> None:
    w = learn.kernel()
    lesson = learn.pruning(w, percent)
    zeros = target_zeros(percent / 100, w.size)
    assert int((lesson.after == 0).sum()) == zeros
    cut = float(np.abs(w[lesson.after == 0]).max())
    assert np.all(np.abs(w[lesson.after != 0]) >= cut)  # the smallest went
    assert f"Pruning {percent}% set the {zeros} weights" in lesson.sentence
    assert f"|w| ≤ {cut:.3f}" in lesson.sentence
    assert f"the other {w.size - zeros} keep" in lesson.sentence


def test_pruning_nothing_says_so() -> None:
    lesson = learn.pruning(learn.kernel(), 0)
    np.testing.assert_array_equal(lesson.after, learn.kernel())
    assert lesson.sentence.startswith("At 0% nothing is pruned")


@pytest.mark.parametrize("k", learn.CLUSTER_CHOICES)
def test_clustering_lesson_has_at_most_k_values_and_names_them(k: int) -> None:
    w = learn.kernel()
    lesson = learn.clustering(w, k)
    values = np.unique(lesson.after)
    assert values.size <= k
    assert f"nearest of {values.size} shared values" in lesson.sentence
    assert f"from {values[0]:.3f} to {values[-1]:.3f}" in lesson.sentence


@pytest.mark.parametrize("bits", learn.BIT_CHOICES)
def test_quantization_lesson_moves_no_weight_more_than_half_a_step(bits: int) -> None:
    w = learn.kernel()
    lesson = learn.quantization(w, bits)
    lo, hi = code_range(bits, "symmetric")
    step = float(np.abs(w).max()) / hi
    assert np.abs(w - lesson.after).max() <= step / 2 * (1 + 1e-5)
    assert np.unique(lesson.after).size <= hi - lo + 1
    assert f"nearest of {hi - lo + 1} evenly spaced levels, {step:.4f} apart" in lesson.sentence


def test_clustering_destroys_zeros_unless_they_are_kept() -> None:
    lesson = learn.zeros_kept(learn.kernel())
    pruned = lesson.pruned == 0
    assert pruned.sum() == target_zeros(learn.ORDER_SPARSITY, pruned.size)
    assert np.all(lesson.kept[pruned] == 0)
    assert np.unique(lesson.kept).size <= learn.ORDER_CLUSTERS
    remaining = int((lesson.lost[pruned] == 0).sum())
    assert remaining < pruned.sum()  # the lesson shows a loss, or it teaches nothing
    assert f"leaves {remaining} of them at zero" in lesson.sentence
    assert f"all {int(pruned.sum())} stay zero" in lesson.sentence


def test_cluster_first_puts_every_value_on_the_grid_and_quantize_first_does_not() -> None:
    lesson = learn.grid_order(learn.kernel())
    first = np.unique(lesson.cluster_first)
    second = np.unique(lesson.quantize_first)
    assert first.size <= learn.GRID_CLUSTERS and second.size <= learn.GRID_CLUSTERS
    scale = float(np.abs(first).max()) / code_range(learn.ORDER_BITS, "symmetric")[1]
    assert learn.on_grid(first, scale) == first.size
    grid = float(np.abs(learn.kernel()).max()) / code_range(learn.ORDER_BITS, "symmetric")[1]
    assert learn.on_grid(second, grid) < second.size
    assert f"{first.size} of them exact" in lesson.sentence


def test_on_grid_counts_exact_multiples_only() -> None:
    assert learn.on_grid(np.array([0.0, 0.25, -0.5, 0.3], np.float32), 0.25) == 3


def test_gzip_shrinks_the_pruned_kernel_and_the_raw_bytes_stay() -> None:
    sweep = learn.size_sweep(learn.kernel())
    assert set(sweep.raw) == {learn.kernel().nbytes}
    assert all(a > b for a, b in zip(sweep.gzipped, sweep.gzipped[1:], strict=False))
    assert f"{sweep.gzipped[0]:,} bytes unpruned" in sweep.sentence


def test_storage_codes_times_scale_are_the_quantized_weights() -> None:
    w = learn.kernel()
    stored = learn.storage(w)
    for bits in learn.STORAGE_BITS:
        lo, hi = code_range(bits, "symmetric")
        assert stored.codes[bits].min() >= lo and stored.codes[bits].max() <= hi
        scale = float(np.abs(w).max()) / hi
        np.testing.assert_allclose(stored.values[bits], stored.codes[bits] * scale, rtol=1e-6)
    assert stored.nbytes == {"float32": 1024, "int8": 256 + 4, "int4": 128 + 4}


# --- the page ---


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(LEARN).run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> dict:
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert found, f"no chart {key!r}"
    return json.loads(found[0].proto.spec)


def array(entry: object) -> np.ndarray:
    """A figure's array as Plotly serializes it: a list, or typed ``{dtype, bdata, shape}``."""
    if isinstance(entry, dict):
        flat = np.frombuffer(base64.b64decode(entry["bdata"]), entry["dtype"])
        shape = [int(n) for n in str(entry.get("shape", flat.size)).split(",")]
        return flat.reshape(shape)
    return np.array(entry, dtype=float)


def grey_cells(at: AppTest, key: str) -> int:
    """Exact zeros in a heatmap of ``figures.weight_grid``: the cells of its second trace."""
    return int(np.isfinite(array(chart(at, key)["data"][1]["z"])).sum())


def text(at: AppTest) -> str:
    return " ".join(md.value for md in at.markdown)


def test_learn_page_shows_every_lesson() -> None:
    at = start()
    assert [h.value for h in at.header] == [
        "1. Pruning: remove the smallest weights",
        "2. Clustering: share a few values",
        "3. Quantization: round to a grid",
        "4. Order matters",
        "5. What is stored",
    ]
    w = learn.kernel()
    for sentence in (
        learn.pruning(w, state.DEFAULTS[state.LEARN_SPARSITY]).sentence,
        learn.clustering(w, state.DEFAULTS[state.LEARN_CLUSTERS]).sentence,
        learn.quantization(w, state.DEFAULTS[state.LEARN_BITS]).sentence,
        learn.zeros_kept(w).sentence,
        learn.grid_order(w).sentence,
        learn.size_sweep(w).sentence,
        learn.storage(w).sentence,
    ):
        assert sentence in text(at)
    assert grey_cells(at, "learn_pruning_before") == 0
    assert grey_cells(at, "learn_pruning_after") == target_zeros(0.5, w.size)
    assert (
        grey_cells(at, "learn_lost")
        < grey_cells(at, "learn_kept")
        == grey_cells(at, "learn_pruned")
    )
    assert not at.error and not at.warning


def test_each_slider_changes_its_own_lesson() -> None:
    at = start()
    w = learn.kernel()
    at.select_slider(key=state.LEARN_SPARSITY).set_value(80).run()
    assert grey_cells(at, "learn_pruning_after") == target_zeros(0.8, w.size)
    assert learn.pruning(w, 80).sentence in text(at)
    at.select_slider(key=state.LEARN_CLUSTERS).set_value(3).run()
    marks = [
        t for t in chart(at, "learn_clustering_histogram")["data"] if "shared" in t.get("name", "")
    ]
    assert array(marks[0]["x"]).size == 3
    assert learn.clustering(w, 3).sentence in text(at)
    at.select_slider(key=state.LEARN_BITS).set_value(2).run()
    assert "nearest of 3 evenly spaced levels" in text(at)
    assert not at.exception


def test_learn_sliders_survive_a_trip_to_another_page() -> None:
    at = start()
    at.select_slider(key=state.LEARN_SPARSITY).set_value(30).run()
    at.switch_page("pages/model.py").run()
    at.switch_page(LEARN).run()
    assert at.select_slider(key=state.LEARN_SPARSITY).value == 30
    assert re.search(r"Pruning 30% set the \d+ weights", text(at))
