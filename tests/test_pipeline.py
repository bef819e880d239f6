import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers.clustering import ClusteringConfig  # noqa: E402
from optimizers.pipeline import (  # noqa: E402
    OptimizationConfig,
    Techniques,
    TensorRef,
    config_from_dict,
    config_to_dict,
    distinct_counts,
    eligible_tensors,
    optimize_model,
    optimize_weights,
)
from optimizers.pruning import PruningConfig, target_zeros  # noqa: E402
from optimizers.quantization import QuantizationConfig  # noqa: E402

FULL = OptimizationConfig(
    pruning=PruningConfig(0.6), clustering=ClusteringConfig(16), quantization=QuantizationConfig(4)
)


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10)


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)


def by_index(model):
    return dict(enumerate(model.get_weights()))


@pytest.mark.parametrize("arch", ["mobilenet", "resnet"])
def test_every_eligible_tensor_hits_its_targets(arch, request):
    model = request.getfixturevalue(arch)
    refs = eligible_tensors(model)
    kinds = {r.layer_type for r in refs}
    assert "Conv2D" in kinds and "Dense" in kinds
    if arch == "mobilenet":
        assert "DepthwiseConv2D" in kinds
    before = [w.copy() for w in model.get_weights()]
    new_model, reports = optimize_model(model, FULL)
    # the input model is untouched
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    weights = by_index(new_model)
    eligible = {r.index for r in refs}
    for r in refs:
        w = weights[r.index]
        assert (w == 0).mean() >= 0.6 - 1e-9, r.path
        assert distinct_counts(w, r.channel_axes)[0] <= 16, r.path  # per tensor, as clustered
    # biases and normalization stay float and are reported as such
    for i, w in weights.items():
        if i not in eligible:
            np.testing.assert_array_equal(w, before[i])
    float_reports = [rep for rep in reports if not rep.eligible]
    assert len(float_reports) == len(before) - len(refs)
    assert all(rep.techniques.startswith("float32") for rep in float_reports)


def test_pruning_and_clustering_without_bits_is_exact(mobilenet):
    refs = eligible_tensors(mobilenet)
    cfg = OptimizationConfig(pruning=PruningConfig(0.6), clustering=ClusteringConfig(16))
    weights, reports = optimize_weights(mobilenet.get_weights(), refs, cfg)
    for r, rep in zip(refs, reports, strict=True):
        w = weights[r.index]
        assert (w == 0).sum() == target_zeros(0.6, w.size), r.path
        assert np.unique(w).size <= 16 and rep.unique_values == np.unique(w).size


@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
def test_after_clustering_the_grid_follows_the_clusterings_granularity(granularity):
    """The quantization config asks for per-channel scales; clustered per tensor, the shared
    values get one scale per tensor instead (a per-channel grid would split them), and the
    report says so: one scale, counted per tensor."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 6)).astype(np.float32) * np.array([1, 2, 3, 5, 8, 13], np.float32)
    t = Techniques(
        clustering=ClusteringConfig(8, granularity=granularity),
        quantization=QuantizationConfig(4, granularity="per-channel"),
    )
    assert t.grid == QuantizationConfig(4, granularity=granularity)
    assert Techniques(quantization=QuantizationConfig(4)).grid == QuantizationConfig(4)
    ref = TensorRef(0, "d/kernel", "d", "Dense", w.shape, (-1,))
    [out], [report] = optimize_weights([w], [ref], OptimizationConfig(**vars(t)))
    distinct, per_channel = distinct_counts(out, (-1,))
    if granularity == "per-tensor":
        assert distinct <= 8 and report.scales == 1 and not report.per_channel
    else:
        assert per_channel <= 8 and report.scales == 6 and report.per_channel
    assert (report.unique_values, report.max_channel_values) == (distinct, per_channel)


def test_skip_and_overrides():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(30, name="a"), keras.layers.Dense(5, name="b")]
    )
    cfg = OptimizationConfig(
        pruning=PruningConfig(0.5),
        skip=("b",),
        overrides=(("a", Techniques(quantization=QuantizationConfig(2))),),
    )
    weights, reports = optimize_weights(model.get_weights(), eligible_tensors(model), cfg)
    a, b = weights[0], weights[2]
    assert np.unique(a[:, 0]).size <= 3 and (a == 0).mean() < 0.5  # int2 only, not pruned
    np.testing.assert_array_equal(b, model.get_weights()[2])
    assert [r.techniques for r in reports] == ["int2", "none"]


def test_global_scope_shares_one_threshold():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(30, name="a"), keras.layers.Dense(5, name="b")]
    )
    w = model.get_weights()
    w[2] = np.sign(w[2]) * (np.abs(w[2]) + 1)  # every weight of b outweighs all of a
    cfg = OptimizationConfig(pruning=PruningConfig(0.5, scope="global"))
    out, _ = optimize_weights(w, eligible_tensors(model), cfg)
    total = out[0].size + out[2].size
    assert (out[0] == 0).sum() + (out[2] == 0).sum() == target_zeros(0.5, total)
    assert (out[2] == 0).sum() == 0


def test_nested_models_and_other_layer_types_are_found():
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.SeparableConv2D(4, 3, name="sep")], name="inner"
    )
    inputs = keras.Input((8, 8, 3))
    x = inner(inputs)
    x = keras.layers.Conv2DTranspose(2, 3, name="up")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    refs = eligible_tensors(model)
    axes = {(r.layer, r.path.rsplit("/", 1)[-1]): r.channel_axes for r in refs}
    assert axes == {
        ("sep", "depthwise_kernel"): (-2, -1),
        ("sep", "pointwise_kernel"): (-1,),
        ("up", "kernel"): (-2,),
        ("head", "kernel"): (-1,),
    }


def test_embedding_tables_are_eligible():
    model = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(50, 8)])
    [ref] = eligible_tensors(model)
    assert ref.shape == (50, 8) and ref.layer_type == "Embedding"


def test_non_finite_weights_are_reported_with_the_tensor_name():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    w = model.get_weights()
    w[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="d/kernel"):
        optimize_weights(w, eligible_tensors(model), FULL)


def test_recipe_round_trip_and_refusals():
    cfg = OptimizationConfig(
        pruning=PruningConfig(0.3, "2:4"),
        quantization=QuantizationConfig(8, "asymmetric"),
        skip=("x",),
        overrides=(("y", Techniques(clustering=ClusteringConfig(4))),),
    )
    assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown"):
        config_from_dict({"pruning": {"sparsity": 0.5, "bogus": 1}})
    with pytest.raises(ValueError, match="bits"):
        config_from_dict({"quantization": {"bits": 1}})
    with pytest.raises(ValueError, match="unknown recipe keys"):
        config_from_dict({"prunning": {}})


@pytest.mark.parametrize(
    "config",
    [
        OptimizationConfig(),
        OptimizationConfig(pruning=PruningConfig(0.5)),
        OptimizationConfig(clustering=ClusteringConfig(4)),
        OptimizationConfig(quantization=QuantizationConfig(4, granularity="per-tensor")),
        FULL,
    ],
)
def test_the_weights_given_are_never_changed(config):
    """Every tensor shape that views as one channel row too: a (16, 1) classifier kernel is its
    own transpose in memory, and sorting it in place would sort the model's weights."""
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.DepthwiseConv2D(3, name="depthwise"),
            keras.layers.Conv2D(1, 1, name="one_filter"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, name="hidden"),
            keras.layers.Dense(1, name="classifier"),
        ]
    )
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()]
    before = [w.copy() for w in weights]
    optimize_weights(weights, eligible_tensors(model), config)
    assert all(np.array_equal(a, b) for a, b in zip(weights, before, strict=True))


def test_two_of_four_runs_along_each_kernels_inputs():
    """2:4 keeps 2 of every 4 consecutive inputs: along an attention query kernel's first axis
    (c, heads, dim), a transposed convolution's last (Keras stores it as (..., out, in)), a
    Dense kernel's first."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 16))
    query = keras.layers.EinsumDense("abc,cde->abde", (None, 4, 8), name="query")(inputs)
    up = keras.layers.Conv2DTranspose(6, 3, name="up")(query)  # kernel (3, 3, 6, 8)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(up))
    refs = eligible_tensors(model)
    assert {r.layer: r.input_axis for r in refs} == {"query": 0, "up": -1, "head": None}
    config = OptimizationConfig(pruning=PruningConfig(structure="2:4"))
    weights, _ = optimize_weights(model.get_weights(), refs, config)
    for r in refs:
        axis = 0 if r.input_axis is None else r.input_axis  # the Dense kernel's: (in, out)
        kept = np.moveaxis(weights[r.index] != 0, axis, -1)
        groups = kept[..., : kept.shape[-1] // 4 * 4].reshape(*kept.shape[:-1], -1, 4)
        assert groups.size and np.all(groups.sum(axis=-1) == 2), r.layer
