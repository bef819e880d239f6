"""Cross-check against the TensorFlow Model Optimization Toolkit (tfmot), the reference.

tfmot needs tf-keras (Keras 2) and breaks on Keras 3, so it runs in a subprocess with
``TF_USE_LEGACY_KERAS=1``; this process only compares arrays and never imports Keras.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from optimizers.clustering import ClusteringConfig, cluster
from optimizers.pruning import PruningConfig, prune

ROOT = Path(__file__).resolve().parents[1]
SPARSITY = 0.5
CLUSTERS = 8

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None
    or importlib.util.find_spec("tf_keras") is None,
    reason="tensorflow-model-optimization and tf-keras are test extras",
)

REFERENCE = textwrap.dedent(
    """
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    SPARSITY, CLUSTERS = float(sys.argv[2]), int(sys.argv[3])


    def build():
        return keras.Sequential(
            [
                keras.layers.InputLayer(input_shape=(6, 6, 2)),
                keras.layers.Conv2D(3, 3, name="conv"),  # 3x3x2x3 = 54 weights
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(5, name="dense"),  # 48x5 = 240 weights
                keras.layers.Dense(7, name="head"),  # 5x7 = 35 weights: odd
            ]
        )


    # Fixed random kernels whose magnitudes are all distinct, so that no threshold has ties.
    rng = np.random.default_rng(0)
    kernels = {}
    for layer in build().layers:
        if layer.weights:
            shape = layer.get_weights()[0].shape
            n = int(np.prod(shape))
            magnitudes = rng.permutation(np.linspace(0.01, 1.0, n))
            signs = rng.choice([-1.0, 1.0], n)
            kernels[layer.name] = (magnitudes * signs).reshape(shape).astype(np.float32)


    def fresh():  # a new model holding our kernels: tfmot's wrappers change what they wrap
        model = build()
        for name, kernel in kernels.items():
            layer = model.get_layer(name)
            layer.set_weights([kernel, layer.get_weights()[1]])
        return model


    def check_wrapped(model):
        for wrapper in model.layers:
            if wrapper.layer.name in kernels:
                got = wrapper.layer.get_weights()[0]
                assert np.array_equal(got, kernels[wrapper.layer.name]), wrapper.name


    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(
        fresh(), pruning_schedule=sparsity.ConstantSparsity(SPARSITY, begin_step=0, frequency=1)
    )
    check_wrapped(pruned)
    # The masks are computed and applied by a training step with UpdatePruningStep; a learning
    # rate of 0 keeps the surviving weights as they were.
    pruned.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
    x, y = np.zeros((1, 6, 6, 2), np.float32), np.zeros((1, 7), np.float32)
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(pruned)

    # Clustering without training: the centroids come from the kernels when wrapping.
    clustering = tfmot.clustering.keras
    clustered = clustering.cluster_weights(
        fresh(),
        number_of_clusters=CLUSTERS,
        cluster_centroids_init=clustering.CentroidInitialization.LINEAR,
    )
    unclustered = clustering.strip_clustering(clustered)

    out = {}
    for name, kernel in kernels.items():
        out["original/" + name] = kernel
        out["pruned/" + name] = stripped.get_layer(name).get_weights()[0]
        out["clustered/" + name] = unclustered.get_layer(name).get_weights()[0]
    np.savez(sys.argv[1], **out)
    print("ok")
    """
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """tfmot's results: ``{"original"|"pruned"|"clustered": {layer name: kernel}}``."""
    folder = tmp_path_factory.mktemp("tfmot")
    script = folder / "tfmot_reference.py"
    script.write_text(REFERENCE)
    out = folder / "kernels.npz"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(out), str(SPARSITY), str(CLUSTERS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and out.exists(), f"tfmot failed:\n{result.stderr[-4000:]}"
    found: dict[str, dict[str, np.ndarray]] = {"original": {}, "pruned": {}, "clustered": {}}
    with np.load(out) as arrays:
        for key in arrays.files:
            kind, name = key.split("/")
            found[kind][name] = arrays[key]
    assert sorted(found["original"]) == ["conv", "dense", "head"]
    return found


def test_kernels_have_distinct_magnitudes(reference):
    for name, w in reference["original"].items():
        assert np.unique(np.abs(w)).size == w.size, name


def test_pruning_masks_match_tfmot(reference):
    for name, w in reference["original"].items():
        theirs = reference["pruned"][name]
        ours = prune(w, PruningConfig(SPARSITY))
        # tfmot only zeroes weights: the survivors keep their values.
        np.testing.assert_array_equal(theirs[theirs != 0], w[theirs != 0], err_msg=name)
        n = w.size
        their_zeros, our_zeros = theirs == 0, ours == 0
        if n % 2 == 0:
            np.testing.assert_array_equal(our_zeros, their_zeros, err_msg=name)
            assert our_zeros.sum() == n // 2
            continue
        # Odd n: tfmot keeps round(n * (1 - s)) weights with tf.round (half to even), i.e.
        # 18 of 35, so it prunes 17 (48.6%); we prune ceil(s * n) = 18, the fewest that reach
        # 50%. Every weight tfmot prunes, we prune too, plus exactly one: the smallest
        # magnitude tfmot kept.
        assert their_zeros.sum() == n - int(np.round(n * (1 - SPARSITY))) == n // 2
        assert our_zeros.sum() == n // 2 + 1
        assert np.all(our_zeros[their_zeros])
        extra = np.flatnonzero(our_zeros & ~their_zeros)
        assert extra.size == 1
        kept_by_them = np.abs(w[~their_zeros])
        assert np.abs(w.ravel()[extra[0]]) == kept_by_them.min(), name


def sse(original: np.ndarray, clustered: np.ndarray) -> float:
    return float(np.sum((original.astype(np.float64) - clustered.astype(np.float64)) ** 2))


def test_clustering_is_at_least_as_good_as_tfmot(reference):
    for name, w in reference["original"].items():
        theirs = reference["clustered"][name]
        ours = cluster(w, ClusteringConfig(CLUSTERS, init="linear"))
        assert np.unique(theirs).size <= CLUSTERS, name
        assert np.unique(ours).size <= CLUSTERS, name
        # tfmot without training is its initialization: every weight moved to the nearest of
        # CLUSTERS centroids evenly spaced between min and max. Ours starts there and runs
        # Lloyd to convergence, which can only lower the squared error.
        centroids = np.linspace(w.min(), w.max(), CLUSTERS, dtype=np.float32)
        nearest = centroids[np.argmin(np.abs(w[..., None] - centroids), axis=-1)]
        np.testing.assert_allclose(theirs, nearest, rtol=0, atol=1e-6, err_msg=name)
        assert sse(w, ours) <= sse(w, theirs) * 1.01, (name, sse(w, ours), sse(w, theirs))
