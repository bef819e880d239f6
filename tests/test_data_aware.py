"""Data-aware pruning and rounding (``optimizers.data_aware``): the GPTQ and OBS updates against
the textbook formulas, the layer statistics against the layers' own outputs, never worse than
plain rounding, bias correction, blockwise grids, and calibration kept apart from evaluation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import einsum_model
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizers import columns, data_aware
from optimizers.calibration import Accumulator
from optimizers.clustering import ClusteringConfig, cluster
from optimizers.columns import compress_rows
from optimizers.pipeline import (
    OptimizationConfig,
    Techniques,
    TensorRef,
    config_from_dict,
    config_to_dict,
    optimize_weights,
)
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig, code_range, quantize


def textbook(w: np.ndarray, h: np.ndarray, keep: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """OBQ/OBS one column at a time with the explicit inverse (Frantar et al. 2022, eq. 2-3):
    fix column i (zero or round it), move the others by ``-(w_i - q_i) / [H⁻¹]_ii · H⁻¹_{:,i}``,
    then drop i from ``H⁻¹`` by one step of Gaussian elimination. ``w``: (rows, columns)."""
    w = w.astype(np.float64).copy()
    hinv = np.linalg.inv(h)
    out = np.zeros_like(w)
    for i in range(w.shape[1]):
        q = np.where(keep[:, i], w[:, i], 0.0)
        if scale is not None:
            q = np.clip(np.rint(q / scale), -7, 7) * scale
        out[:, i] = q
        err = (w[:, i] - q) / hinv[i, i]
        w -= err[:, None] * hinv[i][None, :]
        hinv = hinv - np.outer(hinv[:, i], hinv[i]) / hinv[i, i]
    return out


def layer_stats(x: np.ndarray, depthwise: bool = False, bias: int | None = None):
    acc = Accumulator(depthwise, bias)
    acc.add(x)
    return acc.finish()


H4 = np.array(
    [[4.0, 2.0, 1.0, 0.5], [2.0, 5.0, 1.5, 1.0], [1.0, 1.5, 3.0, 0.5], [0.5, 1.0, 0.5, 2.0]]
)
W4 = np.array(
    [[0.9, -0.3, 0.45, 0.2], [-0.6, 0.8, 0.1, -0.7], [0.25, 0.5, -0.95, 0.4], [0.3, -0.1, 0.6, 1.0]]
)


def root_of(h: np.ndarray) -> np.ndarray:
    return np.linalg.cholesky(np.linalg.inv(h)).T[None]


def test_gptq_rounding_of_a_4x4_layer_is_the_textbook_update():
    scale = np.full(4, 1.0 / 7, np.float32)
    zp = np.zeros(4, np.int64)
    grid = columns.Grid(
        QuantizationConfig(4),
        np.broadcast_to(scale, (1, 4, 4)),
        np.broadcast_to(zp, (1, 4, 4)),
        stored=(scale, zp),
    )
    values, codes = compress_rows(W4[None], root_of(H4), grid=grid)
    expected = textbook(W4, H4, np.ones((4, 4), bool), 1.0 / 7)
    np.testing.assert_allclose(values[0], expected, atol=1e-5)
    np.testing.assert_array_equal(codes[0] * scale, values[0].astype(np.float32))
    # The first column is rounded as it is; later ones carry the earlier columns' errors.
    np.testing.assert_allclose(values[0, :, 0], np.rint(W4[:, 0] * 7) / 7, atol=1e-7)
    assert not np.allclose(values[0], np.rint(W4 * 7) / 7)


def test_obs_pruning_of_a_4x4_layer_is_the_textbook_update():
    keep = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1]], bool)
    values, codes = compress_rows(W4[None], root_of(H4), keep=keep[None])
    assert codes is None
    np.testing.assert_allclose(values[0], textbook(W4, H4, keep, None), atol=1e-6)
    assert np.all(values[0][~keep] == 0)


def test_obs_moves_a_pruned_weight_onto_its_correlated_neighbour():
    # H = [[2, 1], [1, 2]]: removing w0 = 1 is best made up by w1 += H01 / H11 = 0.5.
    h = np.array([[2.0, 1.0], [1.0, 2.0]])
    values, _ = compress_rows(np.array([[[1.0, 1.0]]]), root_of(h), zeros=1)
    np.testing.assert_allclose(values[0, 0], [0.0, 1.5])


def test_adaptive_pruning_zeros_exactly_ceil_s_n():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 200)).astype(np.float32)
    stats = layer_stats(x)
    w = rng.normal(size=(200, 7)).astype(np.float32)
    kernel, q, _ = data_aware.compress_tensor(
        w, stats, Techniques(pruning=PruningConfig(0.6)), (-1,)
    )
    assert q is None and kernel.dtype == w.dtype
    assert np.count_nonzero(kernel == 0) == int(np.ceil(0.6 * w.size))


def random_layer(seed: int, inputs: int, outputs: int, rows: int = 64):
    """Correlated inputs (as real activations are) and a random kernel."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(inputs, inputs)) * rng.uniform(0.1, 1.0)
    x = (rng.normal(size=(rows, inputs)) @ (np.eye(inputs) + mix)).astype(np.float32)
    w = rng.normal(size=(inputs, outputs)).astype(np.float32)
    return x, w


def layer_error(x: np.ndarray, w: np.ndarray, w_hat: np.ndarray) -> float:
    return float(np.sum((x.astype(np.float64) @ (w - w_hat)) ** 2))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    inputs=st.integers(1, 24),
    outputs=st.integers(1, 6),
    bits=st.sampled_from([2, 3, 4, 8]),
    mode=st.sampled_from(["symmetric", "asymmetric"]),
    granularity=st.sampled_from(["per-channel", "per-tensor"]),
    sparsity=st.sampled_from([None, 0.3, 0.75]),
    clusters=st.sampled_from([None, 3]),
)
def test_never_worse_than_plain_rounding(
    seed, inputs, outputs, bits, mode, granularity, sparsity, clusters
):
    x, w = random_layer(seed, inputs, outputs, rows=max(4, inputs // 2))
    ref = TensorRef(0, "dense/kernel", "dense", "Dense", w.shape, (-1,))
    config = OptimizationConfig(
        pruning=None if sparsity is None else PruningConfig(sparsity),
        clustering=None
        if clusters is None
        else ClusteringConfig(clusters, granularity=granularity),
        quantization=QuantizationConfig(bits, mode, granularity),
        data_aware=True,
    )
    before = w.copy()
    [plain], _ = optimize_weights([w], [ref], config)
    [aware], [report] = data_aware.optimize([w], [ref], config, {0: layer_stats(x)})
    np.testing.assert_array_equal(w, before)
    assert layer_error(x, w, aware) <= layer_error(x, w, plain) * (1 + 1e-6) + 1e-9
    # The pruning target reached, every value on a grid with at most 2^bits levels a channel.
    if sparsity is not None:
        assert np.count_nonzero(aware == 0) >= np.ceil(sparsity * w.size - 1e-9)
    levels = 1 if granularity == "per-tensor" else outputs
    assert report.unique_values <= levels * 2**bits
    assert report.bits == bits
    if clusters is not None:
        assert report.max_channel_values <= clusters
        assert report.unique_values <= levels * clusters


def test_data_aware_rounding_halves_the_error_on_correlated_inputs():
    x, w = random_layer(7, 64, 16, rows=512)
    ref = TensorRef(0, "dense/kernel", "dense", "Dense", w.shape, (-1,))
    config = OptimizationConfig(quantization=QuantizationConfig(3), data_aware=True)
    [plain], _ = optimize_weights([w], [ref], config)
    [aware], _ = data_aware.optimize([w], [ref], config, {0: layer_stats(x)})
    assert layer_error(x, w, aware) < 0.5 * layer_error(x, w, plain)
    # On a per-channel grid no wider than plain rounding's: codes times its scales.
    kernel, q, _ = data_aware.compress_tensor(w, layer_stats(x), config, (-1,))
    np.testing.assert_array_equal(kernel, aware)
    assert q is not None and np.all(q.scale <= quantize(w, QuantizationConfig(3)).scale)
    codes = aware / q.scale
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-4)
    assert np.abs(np.rint(codes)).max() <= code_range(3, "symmetric")[1]


def test_grid_search_clips_a_large_weight_on_a_quiet_input():
    # One weight four times the others, on an input that barely moves: its full range would
    # leave the others three levels, though clipping it costs the outputs little.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    x[:, 0] *= 0.01
    w = rng.uniform(-1, 1, size=(16, 4)).astype(np.float32)
    w[0] = 4.0
    stats = layer_stats(x)
    t = Techniques(quantization=QuantizationConfig(3))
    kernel, q, _ = data_aware.compress_tensor(w, stats, t, (-1,))
    full = columns.row_grid(data_aware.as_rows(w, stats), t.quantization, None)
    assert q is not None and np.all(q.scale < full.stored[0])
    unclipped = columns.compress_rows(
        data_aware.as_rows(w, stats)[:, :, stats.order[0]],
        stats.inverse_root,
        grid=full.permuted(stats.order),
    )[0][:, :, np.argsort(stats.order[0])]
    assert layer_error(x, w, kernel) < 0.5 * layer_error(
        x, w, data_aware.from_rows(unclipped, w.shape, stats)
    )


def test_bias_correction_keeps_each_output_mean():
    x, w = random_layer(3, 12, 5, rows=200)
    x += 1.0  # a mean to shift
    b = np.linspace(-1, 1, 5).astype(np.float32)
    refs = [TensorRef(0, "dense/kernel", "dense", "Dense", w.shape, (-1,))]
    config = OptimizationConfig(quantization=QuantizationConfig(2), data_aware=True)
    stats = {0: layer_stats(x, bias=1)}
    (aware, new_b), _ = data_aware.optimize([w, b], refs, config, stats)
    np.testing.assert_allclose((x @ aware + new_b).mean(0), (x @ w + b).mean(0), atol=1e-4)
    assert not np.allclose(new_b, b)


def test_blockwise_grid_gives_each_block_of_inputs_its_scale():
    w = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    w[:32] *= 10  # one block large, one small: per channel, the small one rounds to few levels
    q = quantize(w, QuantizationConfig(4, block_size=32))
    assert q.scale.shape == (6,)  # 2 blocks x 3 channels, block-major
    # max|block| / 7 rounded up to a float16 value, as LiteRT stores blockwise scales.
    exact = np.concatenate([np.abs(w[:32]).max(0), np.abs(w[32:]).max(0)]) / 7
    assert np.all(q.scale >= exact) and np.all(q.scale <= exact * (1 + 2**-10))
    assert np.array_equal(q.scale.astype(np.float16).astype(np.float32), q.scale)
    per_channel = quantize(w, QuantizationConfig(4))
    assert np.abs(q.values - w)[32:].max() < np.abs(per_channel.values - w)[32:].max()
    # Inputs that are not whole blocks, and convolution kernels, keep one scale per channel.
    for shape in [(48, 3), (3, 3, 32, 4)]:
        v = np.ones(shape, np.float32)
        assert quantize(v, QuantizationConfig(4, block_size=32)).scale.size == shape[-1]
    with pytest.raises(ValueError, match="block_size"):
        QuantizationConfig(4, granularity="per-tensor", block_size=32)
    with pytest.raises(ValueError, match="block_size"):
        QuantizationConfig(4, block_size=48)
    for bits, mode in [(8, "symmetric"), (4, "asymmetric")]:  # LiteRT has no such blocks
        with pytest.raises(ValueError, match="at most 4 bits"):
            QuantizationConfig(bits, mode, block_size=32)


def test_blockwise_data_aware_rounding_stays_on_its_blocks_grid():
    x, w = random_layer(5, 64, 4, rows=256)
    ref = TensorRef(0, "dense/kernel", "dense", "Dense", w.shape, (-1,))
    config = OptimizationConfig(quantization=QuantizationConfig(4, block_size=32), data_aware=True)
    [plain], _ = optimize_weights([w], [ref], config)
    [aware], [report] = data_aware.optimize([w], [ref], config, {0: layer_stats(x)})
    assert layer_error(x, w, aware) < layer_error(x, w, plain)
    # On a blockwise grid: each block's codes times its float16 scale (no wider than plain
    # rounding's), |code| <= 7.
    _, q, _ = data_aware.compress_tensor(w, layer_stats(x), config, (-1,))
    assert q is not None and np.all(q.scale <= quantize(w, config.quantization).scale)
    assert np.array_equal(q.scale.astype(np.float16).astype(np.float32), q.scale)
    codes = aware.reshape(2, 32, 4) / q.scale.reshape(2, 1, 4)
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-4)
    assert np.abs(np.rint(codes)).max() <= 7
    assert report.unique_values <= 2 * 4 * 15


def test_refit_solves_the_normal_equations_of_the_shared_values():
    # Three shared values, codes fixed: the values minimising tr((W − Ŵ) H (W − Ŵ)ᵀ) solve
    # G t = b with G_kl = Σ_r O_rkᵀ H O_rl and b_k = Σ_r O_rkᵀ H w_r (O_rk: row r's weights on
    # value k). Conjugate gradients reach them in three steps.
    x, w = random_layer(11, 8, 5, rows=100)
    stats = layer_stats(x)
    rows = data_aware.as_rows(w, stats)
    codes = np.random.default_rng(0).integers(0, 3, size=rows.shape)
    table = np.array([[-0.5, 0.1, 0.7]], np.float32)
    fitted = data_aware.refit(rows, codes, table, stats, keep_zero=False)
    h = stats.hessian[0].astype(np.float64)
    onehot = [(codes[0] == k).astype(np.float64) for k in range(3)]
    gram = np.array([[np.sum((a @ h) * b) for b in onehot] for a in onehot])
    rhs = np.array([np.sum((rows[0] @ h) * a) for a in onehot])
    np.testing.assert_allclose(fitted[0], np.linalg.solve(gram, rhs), rtol=1e-4, atol=1e-5)
    # A zero entry kept (pruned weights) stays exactly zero; the others move.
    zero = np.array([[-0.5, 0.0, 0.7]], np.float32)
    kept = data_aware.refit(rows, codes, zero, stats, keep_zero=True)
    assert kept[0, 1] == 0 and not np.allclose(kept, zero)
    # Rows of unequal importance (a BatchNormalization after the layer): the shared values solve
    # the weighted equations, each row's terms times its weight.
    weights = np.random.default_rng(1).uniform(1, 30, size=rows.shape[:2]).astype(np.float32)
    weighted = replace(stats, importance=weights)
    fitted = data_aware.refit(rows, codes, table, weighted, keep_zero=False)
    scaled = [a * weights[0][:, None] for a in onehot]
    gram = np.array([[np.sum((a @ h) * b) for b in scaled] for a in onehot])
    rhs = np.array([np.sum((rows[0] @ h) * a) for a in scaled])
    np.testing.assert_allclose(fitted[0], np.linalg.solve(gram, rhs), rtol=1e-4, atol=1e-5)
    # Each row's own values (per channel) are its best whatever its weight: the same steps.
    own = np.repeat(table, rows.shape[1], axis=0)
    np.testing.assert_array_equal(
        data_aware.refit(rows, codes, own, weighted, keep_zero=False),
        data_aware.refit(rows, codes, own, stats, keep_zero=False),
    )


def test_data_aware_clustering_keeps_k_values_and_the_pruned_zeros():
    x, w = random_layer(4, 48, 8, rows=400)
    stats = layer_stats(x)
    t = Techniques(PruningConfig(0.5), ClusteringConfig(4))
    kernel, coded, _ = data_aware.cluster_tensor(w, stats, t, (-1,))
    np.testing.assert_array_equal(coded.values, kernel)
    assert np.unique(kernel).size <= 4 and 0.0 in kernel
    assert np.count_nonzero(kernel == 0) == np.ceil(0.5 * w.size)  # no more, no fewer
    # Without pruning, the layer error falls well below plain clustering's (0.55 of it).
    alone = Techniques(clustering=ClusteringConfig(4))
    clustered, _, _ = data_aware.cluster_tensor(w, stats, alone, (-1,))
    plain = cluster(w, ClusteringConfig(4))
    assert layer_error(x, w, clustered) < 0.6 * layer_error(x, w, plain)
    # Quantized after: at most 4 values, all on one int4 grid of the tensor.
    t4 = Techniques(None, ClusteringConfig(4), QuantizationConfig(4))
    values, coded, _ = data_aware.cluster_tensor(w, stats, t4, (-1,))
    levels = np.unique(values)
    assert levels.size <= 4
    step = np.abs(levels).max() / 7
    np.testing.assert_allclose(levels / step, np.rint(levels / step), atol=1e-4)


def test_data_aware_clustering_per_channel_on_a_depthwise_kernel():
    # A depthwise kernel's channels are (input channel, multiplier) pairs: each keeps its own k.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 9, 300)).astype(np.float32)  # (cin, taps, rows)
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    stats = layer_stats(x, depthwise=True)
    t = Techniques(clustering=ClusteringConfig(3, granularity="per-channel"))
    kernel, coded, _ = data_aware.cluster_tensor(w, stats, t, (-2, -1))
    assert coded.table.shape[0] == 6
    for c in range(2):
        for m in range(3):
            assert np.unique(kernel[:, :, c, m]).size <= 3
    plain = cluster(w, t.clustering, (-2, -1))
    assert data_aware.reconstruction_error(w, kernel, stats) < data_aware.reconstruction_error(
        w, plain, stats
    )


def test_recipes_carry_data_aware_and_block_size():
    config = OptimizationConfig(
        pruning=PruningConfig(0.5),
        quantization=QuantizationConfig(4, block_size=64),
        data_aware=True,
    )
    data = config_to_dict(config)
    assert data["data_aware"] is True and data["quantization"]["block_size"] == 64
    assert config_from_dict(data) == config
    old = {k: v for k, v in data.items() if k != "data_aware"}  # a recipe from before
    assert config_from_dict(old).data_aware is False
    with pytest.raises(ValueError, match="data_aware"):
        config_from_dict({**data, "data_aware": "yes"})


def test_recurrent_kernels_are_data_aware():
    import keras

    from optimizers.calibration import gather
    from optimizers.pipeline import eligible_tensors

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 4))
    y = keras.layers.LSTM(16, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.SimpleRNN(8)(y))
    refs = eligible_tensors(model)
    noise = np.random.default_rng(0).normal(size=(64, 12, 4))
    stats = gather(model, refs, noise.cumsum(axis=1).astype(np.float32))
    weights = model.get_weights()
    config = OptimizationConfig(quantization=QuantizationConfig(3))
    plain, _ = optimize_weights(weights, refs, config)
    aware, _ = data_aware.optimize(weights, refs, replace(config, data_aware=True), stats)
    recurrent = [r for r in refs if r.path.endswith("recurrent_kernel")]
    assert len(recurrent) == 2
    for r in recurrent:
        s, w = stats[r.index], weights[r.index]
        error = data_aware.reconstruction_error(w, aware[r.index], s)
        assert error < 0.7 * data_aware.reconstruction_error(w, plain[r.index], s), r.path


def test_grouped_and_3d_convolutions_are_data_aware():
    import keras

    from optimizers.calibration import gather
    from optimizers.pipeline import eligible_tensors

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 8, 8, 4))
    y = keras.layers.Conv3D(8, 3, padding="same", activation="relu", name="c3")(inputs)
    y = keras.layers.Reshape((16, 16, 8))(y)
    y = keras.layers.Conv2D(8, 3, groups=4, name="grouped")(y)
    model = keras.Model(inputs, y)
    refs = eligible_tensors(model)
    # Smooth inputs (as images are): neighbouring positions and channels move together.
    noise = np.random.default_rng(0).normal(size=(32, 4, 8, 8, 4))
    x = (noise.cumsum(axis=2).cumsum(axis=3) + noise.sum(-1, keepdims=True)).astype(np.float32)
    stats = gather(model, refs, x)
    assert {r.index for r in refs} == set(stats)
    grouped = next(r.index for r in refs if r.layer == "grouped")
    assert stats[grouped].groups == 4 and stats[grouped].hessian.shape == (4, 18, 18)
    weights = model.get_weights()
    for config, gain in [
        (OptimizationConfig(quantization=QuantizationConfig(3)), 0.5),
        (OptimizationConfig(PruningConfig(0.5)), 0.8),
    ]:
        plain, _ = optimize_weights(weights, refs, config)
        aware, _ = data_aware.optimize(weights, refs, replace(config, data_aware=True), stats)
        for r in refs:
            s, w = stats[r.index], weights[r.index]
            error = data_aware.reconstruction_error(w, aware[r.index], s)
            assert error < gain * data_aware.reconstruction_error(w, plain[r.index], s), r.layer
            assert s.bias is not None and not np.array_equal(aware[s.bias], weights[s.bias])
            if config.pruning is not None:
                assert np.count_nonzero(aware[r.index] == 0) == np.ceil(0.5 * w.size)


@pytest.mark.parametrize(
    "config",
    [
        OptimizationConfig(clustering=ClusteringConfig(4)),
        OptimizationConfig(PruningConfig(0.5), ClusteringConfig(4), QuantizationConfig(4)),
    ],
    ids=["4-clusters", "50%+4-clusters+int4"],
)
def test_data_aware_clustering_gains_accuracy_on_the_digits_mlp(config):
    # Measured: 4 clusters 90.6% plain, 96.4% data-aware; 50% + 4 + int4 83.3%, 96.1%.
    import sample_models
    from optimizers import explore, keras_io

    sample = sample_models.get("digits_mlp")
    model = keras_io.load_model(sample.model_path)
    prepared = explore.prepare(model, *keras_io.load_data(sample.data_path, model))
    train, _ = keras_io.load_data(sample.train_path, model)
    prepared = explore.calibrate(prepared, explore.Calibration(train, "the training split"))
    plain, aware = (
        explore.measure(prepared, explore.optimize(prepared, replace(config, data_aware=a)))
        for a in (False, True)
    )
    assert aware.accuracy is not None and plain.accuracy is not None
    assert aware.accuracy > plain.accuracy + 0.04
    assert max(r.unique_values for r in aware.reports if r.eligible) <= 4


# --- the app: the switch is live on the samples ---


def test_the_calibration_switch_is_live_on_a_sample() -> None:
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from ui import state

    root = Path(__file__).resolve().parents[1]
    at = AppTest.from_file(str(root / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/explore.py").run()
    at.select_slider(key=state.BITS).set_value(2).run()
    assert not at.exception, at.exception

    def accuracy() -> float:
        [card] = [m for m in at.metric if m.label == "Test accuracy"]
        return float(card.value.rstrip("%"))

    plain = accuracy()
    at.toggle(key=state.DATA_AWARE).set_value(True).run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "Calibrated on" in captions and "digits_cnn_train.npz" in captions
    assert "digits_cnn_test.npz" in captions
    assert accuracy() > plain + 10  # 2 bits: plain rounding loses ~40 points, data-aware ~2
    assert state.setting(at.session_state).config.data_aware
    said = " ".join(md.value for md in at.markdown)
    assert "passing each weight's rounding error on to the weights not yet rounded" in said
    # What "What just happened" says pruning did follows the switch too.
    at.slider(key=state.SPARSITY).set_value(50).run()
    said = " ".join(md.value for md in at.markdown)
    assert "weights its layer's outputs on the calibration data depend on least" in said
    assert "smallest-magnitude" not in said
    at.toggle(key=state.DATA_AWARE).set_value(False).run()
    said = " ".join(md.value for md in at.markdown)
    assert "50% smallest-magnitude weights of each tensor" in said
    assert "calibration data" not in said


# --- EinsumDense: the attention projections --------------------------------------------------


def correlated_tokens(seed: int, n: int) -> np.ndarray:
    """Token features that move together (as embeddings do): mixed noise with a mean."""
    mix = np.random.default_rng(99).normal(size=(32, 32)) * 0.5 + np.eye(32)
    noise = np.random.default_rng(seed).normal(size=(n, 12, 32))
    return (noise @ mix + 0.5).astype(np.float32)


@pytest.mark.parametrize("attention", [False, True], ids=["einsum-layers", "multi-head"])
def test_einsum_kernels_round_data_aware_on_the_plain_grid(attention):
    from optimizers.calibration import gather
    from optimizers.pipeline import eligible_tensors

    model = einsum_model(attention)
    refs = eligible_tensors(model)
    stats = gather(model, refs, correlated_tokens(0, 256))
    assert {r.index for r in refs} == set(stats)
    weights = model.get_weights()
    config = OptimizationConfig(quantization=QuantizationConfig(4))
    plain, _ = optimize_weights(weights, refs, config)
    aware, _ = data_aware.optimize(weights, refs, replace(config, data_aware=True), stats)
    for r in refs:
        s, w = stats[r.index], weights[r.index]
        error = data_aware.reconstruction_error(w, aware[r.index], s)
        assert error < 0.8 * data_aware.reconstruction_error(w, plain[r.index], s), r.layer
        assert not np.array_equal(aware[s.bias], weights[s.bias])  # corrected
        # One scale per channel of the last axis over all the others, as the plain pipeline
        # and the export have it: the full-range grid is plain rounding's, bit for bit, and
        # the kernel is its codes times those (or the clipped) scales.
        reference = quantize(w, config.quantization, r.channel_axes)
        rows = data_aware.as_rows(w, s)
        full = columns.row_grid(rows, config.quantization, None, channels=w.shape[-1])
        np.testing.assert_array_equal(full.stored[0], reference.scale)
        kernel, q, _ = data_aware.compress_tensor(w, s, config, r.channel_axes)
        np.testing.assert_array_equal(kernel, aware[r.index])
        assert q is not None and q.scale.shape == reference.scale.shape
        assert np.all(q.scale <= reference.scale)
        np.testing.assert_array_equal(q.codes * q.scale, kernel)
        assert np.abs(q.codes).max() <= 7


def test_einsum_kernels_cluster_per_channel_of_their_last_axis():
    from optimizers.calibration import gather
    from optimizers.pipeline import eligible_tensors

    model = einsum_model()
    refs = eligible_tensors(model)
    stats = gather(model, refs, correlated_tokens(0, 256))
    query = next(r for r in refs if r.layer == "query")  # (c, heads, dim): dim channels
    w, s = model.get_weights()[query.index], stats[query.index]
    t = Techniques(clustering=ClusteringConfig(3, granularity="per-channel"))
    kernel, coded, _ = data_aware.cluster_tensor(w, s, t, query.channel_axes)
    assert coded.table.shape[0] == w.shape[-1]
    assert max(np.unique(kernel[..., d]).size for d in range(w.shape[-1])) <= 3
    plain = cluster(w, t.clustering, query.channel_axes)
    error = data_aware.reconstruction_error(w, kernel, s)
    assert error < 0.8 * data_aware.reconstruction_error(w, plain, s)


def output_snr(model, weights, x: np.ndarray, reference: np.ndarray) -> float:
    model.set_weights(weights)
    y = model.predict(x, verbose=0).astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - y) ** 2)))


@pytest.mark.parametrize("attention", [False, True], ids=["einsum-layers", "multi-head"])
def test_einsum_model_output_is_closer_to_float_data_aware(attention):
    # Measured at 3 bits: 11.9 -> 17.7 dB (EinsumDense layers), 7.3 -> 10.7 dB (multi-head).
    from optimizers.calibration import gather
    from optimizers.pipeline import eligible_tensors

    model = einsum_model(attention)
    refs = eligible_tensors(model)
    weights = model.get_weights()
    stats = gather(model, refs, correlated_tokens(0, 256))
    x = correlated_tokens(1, 256)  # evaluation data, apart from the calibration data
    reference = model.predict(x, verbose=0).astype(np.float64)
    config = OptimizationConfig(quantization=QuantizationConfig(3))
    plain, _ = optimize_weights(weights, refs, config)
    aware, _ = data_aware.optimize(weights, refs, replace(config, data_aware=True), stats)
    plain_snr = output_snr(model, plain, x, reference)
    aware_snr = output_snr(model, aware, x, reference)
    assert aware_snr > plain_snr + 3, (plain_snr, aware_snr)


def test_two_of_four_data_aware_runs_along_an_einsum_kernels_inputs():
    # The query kernel (c, heads, dim) takes its inputs along its first axis, not its heads.
    from optimizers.calibration import gather
    from optimizers.pipeline import eligible_tensors

    model = einsum_model()
    refs = eligible_tensors(model)
    stats = gather(model, refs, correlated_tokens(0, 64))
    config = OptimizationConfig(pruning=PruningConfig(structure="2:4"), data_aware=True)
    weights, _ = data_aware.optimize(model.get_weights(), refs, config, stats)
    query = next(r for r in refs if r.layer == "query")
    kept = np.moveaxis(weights[query.index] != 0, 0, -1)
    assert np.all(kept.reshape(*kept.shape[:-1], -1, 4).sum(axis=-1) == 2)


def test_rows_a_batch_normalization_amplifies_are_pruned_by_what_the_next_layer_reads():
    import keras

    from optimizers.calibration import gather
    from optimizers.pipeline import eligible_tensors

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    model = keras.Model(
        inputs, keras.layers.BatchNormalization()(keras.layers.Dense(4, name="d")(inputs))
    )
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(16, 4)).astype(np.float32)
    kernel[:, 0] *= 0.05  # a quiet channel the normalization multiplies by 20
    var = np.array([1 / 400, 1, 1, 1], np.float32) - 1e-3
    model.set_weights([kernel, np.zeros(4), np.ones(4), np.zeros(4), np.zeros(4), var])
    refs = eligible_tensors(model)
    x = rng.normal(size=(256, 16)).astype(np.float32)
    stats = gather(model, refs, x)
    assert stats[0].importance is not None
    floats = keras.ops.convert_to_numpy(model(x))
    config = OptimizationConfig(PruningConfig(0.5), data_aware=True)

    def error(statistics) -> float:
        weights, _ = data_aware.optimize(model.get_weights(), refs, config, statistics)
        model.set_weights(weights)
        found = float(np.mean((keras.ops.convert_to_numpy(model(x)) - floats) ** 2))
        model.set_weights([kernel, np.zeros(4), np.ones(4), np.zeros(4), np.zeros(4), var])
        return found

    ignored = {0: replace(stats[0], importance=None)}
    assert error(stats) < 0.5 * error(ignored)
