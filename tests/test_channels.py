"""Channel pruning: the rewritten, smaller model computes what the masked model computes, tied
channels are pruned together, the output layer keeps its units, and graphs the rewrite does not
know are refused in one sentence naming the layer."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from optimizers import channels, delivery, explore, export  # noqa: E402
from optimizers.pipeline import OptimizationConfig  # noqa: E402
from optimizers.pruning import PruningConfig  # noqa: E402
from optimizers.quantization import QuantizationConfig  # noqa: E402

L = keras.layers


def with_batchnorm_statistics(model):
    rng = np.random.default_rng(1)
    for layer in model.layers:  # non-trivial BatchNorm: a removed channel's output is not 0
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n), rng.normal(0, 0.1, n)]
                + [rng.uniform(0.5, 2.0, n)]
            )
    return model


def sequential():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, padding="same", activation="relu"),
            L.MaxPooling2D(),
            L.Conv2D(6, 3, activation="relu"),
            L.Flatten(),
            L.Dense(12, activation="relu"),
            L.Dense(10, activation="softmax"),
        ]
    )


def functional():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    b = L.Conv2D(4, 1, activation="relu")(a)
    h = L.Concatenate()([a, b])
    h = L.GlobalAveragePooling2D()(L.Conv2D(8, 1)(h))
    return keras.Model(inputs, L.Dense(10)(L.Dropout(0.1)(h)))


def residual():
    """The residual digits CNN of the fine-tuning tests: BatchNorm, DepthwiseConv2D, Add."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(inputs)))
    d = L.DepthwiseConv2D(3, padding="same", name="depthwise")(h)
    d = L.ReLU()(L.BatchNormalization()(d))
    h = L.Add()([h, d])
    h = L.Conv2D(16, 1, activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(h), name="cnn")
    return with_batchnorm_statistics(model)


def two_residuals():
    """Two producers meet at an Add: their output channels must be pruned as one group."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(8, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(8, 1, name="b")(inputs)
    h = L.ReLU()(L.BatchNormalization()(L.Add()([a, b])))
    c = L.Conv2D(8, 1, name="c")(h)
    h = L.Add()([h, c])
    return with_batchnorm_statistics(keras.Model(inputs, L.Dense(3, name="out")(L.Flatten()(h))))


BUILDERS = {"sequential": sequential, "functional": functional, "residual": residual}


def images(n: int = 16, shape=(8, 8, 1)) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_rewrite_computes_what_the_masked_model_computes(kind):
    model = BUILDERS[kind]()
    plan = channels.plan(model, 0.5)
    smaller, zeroed = channels.rewrite(model, plan), channels.masked(model, plan)
    x = images()
    np.testing.assert_allclose(smaller(x), zeroed(x), atol=1e-5)
    assert smaller.count_params() < model.count_params()
    assert plan.removed > 0
    assert smaller(x).shape == model(x).shape  # the output layer keeps every unit


def test_each_group_loses_ceil_of_the_share_and_keeps_the_largest_norms():
    model = sequential()
    plan = channels.plan(model, 0.5)
    first = model.layers[0].get_weights()[0]  # Conv2D(8): 4 of 8 filters go
    norms = np.sqrt(np.square(first.reshape(-1, 8)).sum(axis=0))
    group = next(g for g, names in plan.groups.items() if names == (model.layers[0].name,))
    np.testing.assert_array_equal(plan.kept[group], np.sort(np.argsort(norms)[4:]))
    assert plan.units[model.layers[2].name] == 3  # Conv2D(6): ceil(0.5 * 6) = 3 go
    assert plan.units[model.layers[-1].name] == 10  # the output layer keeps every unit


def test_channels_tied_by_add_are_one_group():
    model = two_residuals()
    plan = channels.plan(model, 0.5)
    assert sorted(map(sorted, plan.groups.values())) == [["a", "b", "c"], ["out"]]
    group = next(g for g, names in plan.groups.items() if "a" in names)
    assert len(plan.kept[group]) == 4
    smaller = channels.rewrite(model, plan)
    assert {smaller.get_layer(n).get_weights()[0].shape[-1] for n in "abc"} == {4}
    x = images(8, (6, 6, 2))
    np.testing.assert_allclose(smaller(x), channels.masked(model, plan)(x), atol=1e-5)


def test_skip_and_zero_sparsity_keep_every_channel():
    model = residual()
    assert channels.plan(model, 0.0).removed == 0
    skipped = channels.plan(model, 0.5, skip=[model.layers[1].name])
    assert model.layers[1].name not in {n for g in skipped.kept for n in skipped.groups[g]}


def test_the_input_model_is_not_changed():
    model = residual()
    before = [w.copy() for w in model.get_weights()]
    channels.prune_channels(model, 0.5)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_unknown_layers_and_subclassed_models_are_refused_naming_them():
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, name="conv")(inputs)
    h = L.LayerNormalization(name="norm")(h)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(h)))
    with pytest.raises(ValueError, match=r"cannot rewrite layer 'norm' \(LayerNormalization\)"):
        channels.plan(model, 0.5)

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="'net' is a subclassed Net"):
        channels.plan(net, 0.5)
    deep = keras.Sequential(
        [keras.Input((5, 4)), L.Conv1D(4, 1), L.DepthwiseConv1D(1, depth_multiplier=2)]
    )
    with pytest.raises(ValueError, match="depth multiplier is 2"):
        channels.plan(deep, 0.5)


def test_channel_config_is_refused_on_one_tensor_and_with_global_scope():
    from optimizers.pruning import prune

    with pytest.raises(ValueError, match="cannot prune one tensor"):
        prune(np.ones((3, 3), np.float32), PruningConfig(0.5, "channels"))
    with pytest.raises(ValueError, match="scope must be 'per-layer' for channel pruning"):
        PruningConfig(0.5, "channels", "global")


def test_explore_answers_with_the_smaller_model_and_its_file_agrees():
    x = images(64)
    y = np.arange(64) % 10
    prepared = explore.prepare(residual(), x, y)
    config = OptimizationConfig(
        pruning=PruningConfig(0.5, "channels"), quantization=QuantizationConfig(8)
    )
    first = explore.optimize(prepared, config)
    assert not first.measured and first.source is not None
    assert explore.optimize(prepared, config).source is first.source  # rewritten once
    outcome = explore.measure(prepared, first)
    params = sum(r.params for r in outcome.reports)
    assert params == first.source.model.count_params() < prepared.model.count_params()
    assert outcome.sizes.file < explore.run(prepared, OptimizationConfig()).sizes.file
    exported = delivery.export_file(prepared, outcome, "tflite-float32")
    assert exported.file_accuracy == outcome.accuracy
    assert exported.latency is not None and exported.baseline_latency is not None
    smaller = channels.prune_channels(prepared.model, 0.5)
    assert len(exported.data) < len(export.export_bytes(prepared.model, "tflite-float32"))
    assert smaller.count_params() == first.source.model.count_params()
