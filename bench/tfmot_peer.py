"""tfmot doing the benchmark's jobs, for comparison. Run only in a subprocess with
``TF_USE_LEGACY_KERAS=1`` (tfmot needs tf-keras and breaks on Keras 3).

    TF_USE_LEGACY_KERAS=1 python bench/tfmot_peer.py ResNet50 [repeats]

Prints one JSON object: per job the median seconds, or the error that stopped it, and how many
of the model's kernels tfmot left unclustered.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def kernels(model):
    return [v for v in model.weights if v.name.split("/")[-1].split(":")[0] in KERNEL_NAMES]


def cluster_job(model):
    clustering = tfmot.clustering.keras
    clustered = clustering.cluster_weights(
        model,
        number_of_clusters=16,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
    )
    return clustering.strip_clustering(clustered)


def prune_job(model):
    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(
        model, pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    )
    pruned.compile("sgd", "mse")
    x = np.zeros((1, *model.input_shape[1:]), np.float32)
    y = np.zeros((1, *model.output_shape[1:]), np.float32)
    # The masks are only applied by a training step with UpdatePruningStep.
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    return sparsity.strip_pruning(pruned)


def measure(job, build, repeats):
    """Median seconds of ``job`` on a fresh model each time (tfmot's wrappers cannot wrap a
    model twice), building it outside the timed part."""
    times, result = [], None
    for _ in range(repeats):
        model = build()
        start = time.perf_counter()
        result = job(model)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def main():
    arch, repeats = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3

    def build():
        keras.utils.set_random_seed(0)
        return getattr(keras.applications, arch)(weights=None)

    out = {"arch": arch}
    for name, job in (("cluster", cluster_job), ("prune", prune_job)):
        try:
            seconds, result = measure(job, build, repeats)
        except Exception as e:  # a failure is a result to record, not a reason to stop
            first = str(e).strip().splitlines()
            out[name] = {"error": f"{type(e).__name__}: {first[0] if first else ''}"[:300]}
            continue
        entry = {"seconds": seconds}
        if name == "cluster":
            left = [v.name for v in kernels(result) if np.unique(v.numpy()).size > 16]
            entry["kernels"] = len(kernels(result))
            entry["unclustered_kernels"] = len(left)
        out[name] = entry
    print(json.dumps(out))


if __name__ == "__main__":
    main()
