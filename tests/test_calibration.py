"""Calibration (``optimizers.calibration``): the layer statistics against the layers' own
outputs (strides, padding, dilation, depthwise, nested and separable layers) and the factor
the data-aware pass uses."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import einsum_model

from optimizers import calibration, input_rows
from optimizers.calibration import Accumulator, inverse_root
from optimizers.data_aware import reconstruction_error
from optimizers.pipeline import eligible_tensors


def layer_stats(x: np.ndarray, depthwise: bool = False, bias: int | None = None):
    acc = Accumulator(depthwise, bias)
    acc.add(x)
    return acc.finish()


def test_inverse_root_handles_inputs_that_are_always_zero():
    x = np.random.default_rng(1).normal(size=(50, 3))
    x[:, 1] = 0
    root = inverse_root(layer_stats(x).hessian)
    assert np.all(np.isfinite(root)) and np.allclose(np.tril(root[0], -1), 0)


# --- statistics gathered from real layers ----------------------------------------------------


def output_power(layer, x: np.ndarray) -> float:
    """Mean over output positions of the squared layer output without bias: what
    ``tr(W H Wᵀ)`` must equal when ``H`` holds that layer's im2col inputs."""
    y = keras.ops.convert_to_numpy(layer(x)).astype(np.float64)
    return float(np.sum(y**2) / int(np.prod(y.shape[:-1])))


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False), (7, 7, 3)),
        (lambda: keras.layers.Conv2D(3, 2, dilation_rate=2, use_bias=False), (7, 7, 3)),
        (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False), (7, 7, 3)),
        (lambda: keras.layers.Conv1D(3, 3, padding="causal", use_bias=False), (9, 3)),
        (lambda: keras.layers.Conv2D(6, 3, groups=2, padding="same", use_bias=False), (7, 7, 4)),
        (lambda: keras.layers.Conv1D(4, 2, strides=2, groups=2, use_bias=False), (9, 4)),
        (
            lambda: keras.layers.Conv3D(2, 2, strides=(1, 2, 2), padding="same", use_bias=False),
            (5, 6, 6, 3),
        ),
    ],
    ids=[
        "conv-stride-same",
        "conv-dilated",
        "depthwise",
        "conv1d-causal",
        "conv-grouped",
        "conv1d-grouped",
        "conv3d",
    ],
)
def test_statistics_are_the_layer_inputs(layer, shape):
    layer = layer()
    x = np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)
    model = keras.Sequential([keras.Input(shape), layer])
    refs = eligible_tensors(model)
    stats = calibration.gather(model, refs, x)
    [(index, found)] = stats.items()
    w = model.get_weights()[index]
    power = reconstruction_error(w, np.zeros_like(w), found)
    assert power == pytest.approx(output_power(layer, x), rel=1e-4)


def test_a_subsample_of_rows_sees_every_position_alike(monkeypatch):
    # Inputs that grow across the map: a subsample from one side of it has another mean.
    rng = np.random.default_rng(0)
    ramp = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
    x = ramp + rng.normal(size=(64, 6, 6, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3)])
    refs = eligible_tensors(model)
    [full] = calibration.gather(model, refs, x).values()
    monkeypatch.setattr(input_rows, "ROWS_PER_BATCH", 256)  # of the 64 x 16 positions
    [some] = calibration.gather(model, refs, x).values()
    assert some.rows <= full.rows / 4
    assert some.mean == pytest.approx(full.mean, rel=0.02)
    _, *position = input_rows.kept(64, (4, 4))
    counts = np.bincount(np.ravel_multi_index(position, (4, 4)), minlength=16)
    assert counts.max() - counts.min() <= 1


def test_nested_and_separable_layers_get_statistics():
    inner = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.SeparableConv2D(4, 3, name="sep")], name="inner"
    )
    inputs = keras.Input((6, 6, 2))
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(inner(inputs)))
    model = keras.Model(inputs, outputs)
    refs = eligible_tensors(model)
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype(np.float32)
    stats = calibration.gather(model, refs, x)
    assert {refs[k].index for k in range(len(refs))} == set(stats)
    sep = inner.get_layer("sep")
    pointwise = next(r for r in refs if r.path.endswith("pointwise_kernel"))
    w = model.get_weights()[pointwise.index]
    power = reconstruction_error(w, np.zeros_like(w), stats[pointwise.index])
    bias = keras.ops.convert_to_numpy(sep.bias)
    y = keras.ops.convert_to_numpy(sep(x)) - bias
    assert power == pytest.approx(float(np.mean(np.sum(y.astype(np.float64) ** 2, -1))), rel=1e-4)
    assert stats[pointwise.index].bias is not None


def test_inverse_root_is_the_upper_cholesky_factor_of_the_inverse():
    x = np.random.default_rng(2).normal(size=(1500, 600))  # larger than one block of halves
    h = x.T @ x / len(x)
    root = inverse_root(h[None].astype(np.float32))[0].astype(np.float64)
    damped = h + np.eye(600) * calibration.DAMPING * np.mean(np.diag(h))
    np.testing.assert_allclose(root.T @ root, np.linalg.inv(damped), atol=1e-4)
    assert np.allclose(np.tril(root, -1), 0) and np.all(np.diag(root) > 0)


def test_recurrent_kernels_see_the_states_before_each_step():
    # The LSTM returns its sequence, so its states are read here from the model itself.
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 3))
    lstm = keras.layers.LSTM(5, return_sequences=True, name="lstm")
    gru = keras.layers.GRU(4, name="gru")
    model = keras.Model(inputs, gru(lstm(inputs)))
    refs = eligible_tensors(model)
    x = np.random.default_rng(0).normal(size=(16, 6, 3)).astype(np.float32)
    stats = calibration.gather(model, refs, x)
    recurrent = {r.path.split("/")[0]: r.index for r in refs if r.path.endswith("recurrent_kernel")}
    assert set(recurrent) == {"lstm", "gru"} and set(recurrent.values()) <= set(stats)
    h = keras.ops.convert_to_numpy(keras.Model(inputs, lstm.output)(x)).astype(np.float64)
    before = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1).reshape(-1, 5)
    u = model.get_weights()[recurrent["lstm"]]
    power = float(np.mean(np.sum((before @ u) ** 2, axis=1)))
    found = stats[recurrent["lstm"]]
    assert reconstruction_error(u, np.zeros_like(u), found) == pytest.approx(power, rel=1e-4)
    assert found.bias is None  # the layer's bias also serves the input kernel


# --- EinsumDense ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("equation", "ndim", "bias_axes", "layout"),
    [
        ("abc,cd->abd", 3, "d", ((0, 1, 2), (1, 0), 1, True)),
        ("abc,cde->abde", 3, "de", ((0, 1, 2), (1, 2, 0), 1, True)),  # query/key/value
        ("abcd,cde->abe", 4, "e", ((0, 1, 2, 3), (2, 0, 1), 2, True)),  # attention output
        ("abc,cde->abde", 3, "e", ((0, 1, 2), (1, 2, 0), 1, False)),  # bias on one output axis
        ("abc,cde->abed", 3, "de", ((0, 1, 2), (1, 2, 0), 1, False)),  # bias in another order
        ("acb,cd->abd", 3, None, ((0, 2, 1), (1, 0), 1, False)),  # contracted in the middle
        ("...b,bc->...c", 4, "c", ((0, 1, 2, 3), (1, 0), 1, True)),
        ("abc,bcd->abd", 3, "d", None),  # a kernel axis in input and output: batch-like
        ("abc,dc->abd", 3, "d", None),  # the kernel's last axis (its channels) contracted
        ("abc,cd->ad", 3, "d", None),  # an input axis summed away
        ("ab,bc->ac", 3, "c", None),  # not the input's axes
    ],
)
def test_einsum_layouts(equation, ndim, bias_axes, layout):
    found = input_rows.einsum_layout(equation, ndim, bias_axes)
    assert found == (None if layout is None else input_rows.EinsumLayout(*layout))


def test_einsum_statistics_are_the_layer_inputs():
    model = einsum_model()
    refs = eligible_tensors(model)
    x = np.random.default_rng(0).normal(size=(40, 12, 32)).astype(np.float32)
    stats = calibration.gather(model, refs, x)
    assert {r.index for r in refs} == set(stats)
    weights = model.get_weights()
    for r in refs:
        layer = model.get_layer(r.layer)
        inputs = keras.ops.convert_to_numpy(keras.Model(model.input, layer.input)(x))
        # The layer's output without its bias and activation, from its own equation.
        y = np.einsum(layer.equation, inputs.astype(np.float64), weights[r.index])
        found = stats[r.index]
        power = reconstruction_error(weights[r.index], np.zeros_like(weights[r.index]), found)
        assert power == pytest.approx(float(np.sum(y**2)) / found.rows, rel=1e-4), r.layer
        assert found.bias == r.index + 1  # each bias holds one value per kernel row
    # H of the output projection by hand: its (heads, dim) inputs at each of the 40 x 12 positions.
    output = next(r for r in refs if r.layer == "attention_output")
    inputs = keras.Model(model.input, model.get_layer("attention_output").input)(x)
    rows = keras.ops.convert_to_numpy(inputs).reshape(480, 64).astype(np.float64)
    np.testing.assert_allclose(stats[output.index].hessian[0], rows.T @ rows / 480, atol=1e-5)
    np.testing.assert_allclose(stats[output.index].mean[0], rows.mean(0), atol=1e-6)


def test_multi_head_attention_projections_are_replayed():
    # Causal self-attention: the output projection's inputs are only right if the layer is
    # run again with its call's arguments (the mask flag included).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 16))
    mha = keras.layers.MultiHeadAttention(2, 8, name="mha")
    model = keras.Model(inputs, mha(inputs, inputs, use_causal_mask=True))
    refs = eligible_tensors(model)
    x = np.random.default_rng(0).normal(size=(40, 6, 16)).astype(np.float32)
    stats = calibration.gather(model, refs, x)
    assert len(refs) == 4 and {r.index for r in refs} == set(stats)
    weights = dict(zip([v.path for v in model.weights], model.get_weights(), strict=True))
    found = {r.path.split("/")[1]: (weights[r.path], stats[r.index]) for r in refs}
    query, query_stats = found["query"]
    y = np.einsum("abc,cde->abde", x.astype(np.float64), query)
    power = reconstruction_error(query, np.zeros_like(query), query_stats)
    assert power == pytest.approx(float(np.sum(y**2)) / 240, rel=1e-4)
    # The layer's output less its bias is the output projection of its attention.
    out, out_stats = found["attention_output"]
    y = keras.ops.convert_to_numpy(model(x)) - weights["mha/attention_output/bias"]
    power = reconstruction_error(out, np.zeros_like(out), out_stats)
    assert power == pytest.approx(float(np.sum(y.astype(np.float64) ** 2)) / 240, rel=1e-4)
    assert {s.bias for _, s in found.values()} == {r.index + 1 for r in refs}
    # The sublayers' own ``call`` is back: none is left recording.
    assert not any("call" in sub.__dict__ for sub in mha._flatten_layers(include_self=False))


def test_attention_over_masked_inputs_is_not_replayed():
    # An Embedding's mask reaches the attention in the model, not in a replay of it, which
    # would attend to the padding: its projections stay data-free, the rest is calibrated.
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    embedded = keras.layers.Embedding(20, 16, mask_zero=True)(tokens)
    attended = keras.layers.MultiHeadAttention(2, 8)(embedded, embedded)
    model = keras.Model(tokens, keras.layers.Dense(3, name="head")(attended))
    refs = eligible_tensors(model)
    x = np.random.default_rng(0).integers(0, 20, size=(40, 6)).astype(np.int32)
    stats = calibration.gather(model, refs, x)
    assert {r.layer for r in refs if r.index in stats} == {"head"}


def test_a_batch_normalization_that_alone_reads_a_layer_weighs_its_rows():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    normed = keras.layers.BatchNormalization(name="bn")(conv)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(normed)
    depthwise = keras.layers.BatchNormalization(name="bn_dw")(depthwise)
    sep = keras.layers.SeparableConv2D(3, 1, name="sep")(depthwise)
    sep = keras.layers.BatchNormalization(name="bn_sep")(sep)
    flat = keras.layers.Flatten()(sep)
    shared = keras.layers.Dense(5, name="shared")(flat)  # read by a normalization and a layer
    relu = keras.layers.Dense(5, activation="relu", name="relu")(flat)  # normalized after ReLU
    returned = keras.layers.Dense(5, name="returned")(flat)  # its output is the model's too
    outputs = [
        keras.layers.BatchNormalization()(shared),
        keras.layers.Dense(2)(shared),
        keras.layers.BatchNormalization()(keras.layers.ReLU()(relu)),
        keras.layers.BatchNormalization()(returned),
        returned,
    ]
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for name in ("bn", "bn_dw", "bn_sep"):
        bn = model.get_layer(name)
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights(
            [rng.uniform(0.5, 2, gamma.shape), beta, mean, rng.uniform(0.1, 4, var.shape)]
        )
    refs = eligible_tensors(model)
    stats = calibration.gather(model, refs, rng.normal(size=(8, 6, 6, 3)).astype(np.float32))
    by_path = {r.path: stats[r.index] for r in refs}

    def factor(name: str) -> np.ndarray:
        gamma, _, _, var = model.get_layer(name).get_weights()
        return gamma / np.sqrt(var + model.get_layer(name).epsilon)

    np.testing.assert_allclose(by_path["conv/kernel"].importance, factor("bn")[None] ** 2, 1e-5)
    # Output channel c·2 + m of the depthwise layer is its group c's row m.
    np.testing.assert_allclose(
        by_path["dw/kernel"].importance, factor("bn_dw").reshape(4, 2) ** 2, 1e-5
    )
    np.testing.assert_allclose(
        by_path["sep/pointwise_kernel"].importance, factor("bn_sep")[None] ** 2, 1e-5
    )
    assert by_path["sep/depthwise_kernel"].importance is None  # the pointwise half reads it
    for name in ("shared", "relu", "returned"):
        assert by_path[f"{name}/kernel"].importance is None, name
