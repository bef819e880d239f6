"""Weight clustering (weight sharing): replace each weight by the nearest of ``k`` centroids.

1-D k-means (Lloyd) that is O(n) per pass over the data: the weights are first reduced to at
most ``MAX_POINTS`` weighted points (the distinct values with their counts when there are few,
otherwise the exact means of fine histogram bins), Lloyd runs on those points, and a final pass
assigns every weight to its nearest centroid and sets each centroid to the exact mean of its
members. So the result has at most ``k`` distinct values and every value is the mean of the
weights it replaced.

Initializations (``Init``):

* ``linear``: centroids evenly spaced between the smallest and largest weight (tfmot's default;
  keeps the rare large weights that matter most).
* ``density``: centroids at evenly spaced quantiles (dense regions get more centroids).
* ``kmeans++``: D²-weighted random seeding with a fixed ``seed``.

``preserve_sparsity`` keeps exact zeros at zero: the zero value counts as one of the ``k``
values, and the non-zero weights share the other ``k - 1`` centroids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from optimizers.tensors import as_channel_columns, check_finite

Init = Literal["linear", "density", "kmeans++"]
Granularity = Literal["per-tensor", "per-channel"]
INITS: tuple[Init, ...] = get_args(Init)
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)

INIT_LABELS: dict[Init, str] = {
    "linear": "Linear: evenly spaced between the smallest and largest weight",
    "density": "Density: evenly spaced quantiles, more centroids where weights are dense",
    "kmeans++": "k-means++: randomized spread-out seeding (fixed seed)",
}

MAX_POINTS = 1 << 14  # weighted points Lloyd runs on; finer than any k ≤ 256 needs
MAX_ITERATIONS = 100
MIN_CLUSTERS, MAX_CLUSTERS = 2, 65536


@dataclass(frozen=True)
class ClusteringConfig:
    """How to cluster.

    >>> ClusteringConfig(clusters=16)
    ClusteringConfig(clusters=16, init='linear', preserve_sparsity=True, granularity='per-tensor', seed=0)
    """

    clusters: int = 16
    init: Init = "linear"
    preserve_sparsity: bool = True
    granularity: Granularity = "per-tensor"
    seed: int = 0

    def __post_init__(self) -> None:
        if not MIN_CLUSTERS <= self.clusters <= MAX_CLUSTERS:
            raise ValueError(
                f"clusters must be in [{MIN_CLUSTERS}, {MAX_CLUSTERS}], got {self.clusters!r}"
            )
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )


def weighted_points(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduce 1-D ``x`` to sorted points with weights (counts), at most ``MAX_POINTS`` of them.

    Exact (distinct values) when ``x`` has few enough; otherwise the means of equal-width bins,
    computed in one pass with ``bincount``.
    """
    if x.size <= MAX_POINTS:
        return np.unique(x, return_counts=True)
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        return np.array([lo]), np.array([x.size])
    bins = np.minimum(((x - lo) * (MAX_POINTS / (hi - lo))).astype(np.intp), MAX_POINTS - 1)
    counts = np.bincount(bins, minlength=MAX_POINTS)
    sums = np.bincount(bins, weights=x, minlength=MAX_POINTS)
    used = counts > 0
    return sums[used] / counts[used], counts[used]


def initial_centroids(
    points: np.ndarray, counts: np.ndarray, k: int, init: Init, seed: int
) -> np.ndarray:
    """``k`` starting centroids for weighted, sorted ``points`` (``k < len(points)``)."""
    if init == "linear":
        return np.linspace(points[0], points[-1], k)
    if init == "density":
        cdf = np.cumsum(counts) / counts.sum()
        targets = (np.arange(k) + 0.5) / k
        return points[np.minimum(np.searchsorted(cdf, targets), points.size - 1)]
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(points.size, p=counts / counts.sum())]
    d2 = (points - points[chosen[0]]) ** 2
    for _ in range(1, k):
        weights = counts * d2
        total = weights.sum()
        if total <= 0:
            break
        chosen.append(rng.choice(points.size, p=weights / total))
        d2 = np.minimum(d2, (points - points[chosen[-1]]) ** 2)
    return np.sort(points[chosen])


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest sorted centroid for each value (ties go to the lower centroid)."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(midpoints, values, side="left")


def lloyd(points: np.ndarray, counts: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Weighted 1-D Lloyd iterations until assignments stop changing. Returns sorted centroids.

    An empty cluster is dropped rather than re-seeded: fewer values is always allowed.
    """
    labels = None
    for _ in range(MAX_ITERATIONS):
        centroids = np.unique(centroids)
        new_labels = assign(points, centroids)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        size = np.bincount(labels, weights=counts, minlength=centroids.size)
        total = np.bincount(labels, weights=counts * points, minlength=centroids.size)
        keep = size > 0
        centroids = total[keep] / size[keep]
    return np.unique(centroids)


def cluster_values(x: np.ndarray, k: int, init: Init = "linear", seed: int = 0) -> np.ndarray:
    """Cluster 1-D ``x`` into at most ``k`` values; returns the clustered copy (same dtype).

    If ``x`` has at most ``k`` distinct values it is returned unchanged.
    """
    if x.size == 0:
        return x.copy()
    points, counts = weighted_points(x.astype(np.float64, copy=False))
    if points.size <= k:
        if x.size <= MAX_POINTS:  # the points are the distinct values: nothing to merge
            return x.copy()
        centroids = points
    else:
        centroids = lloyd(points, counts, initial_centroids(points, counts, k, init, seed))
    # Final exact pass on the real weights: each centroid becomes the mean of its members.
    labels = assign(x, centroids)
    size = np.bincount(labels, minlength=centroids.size)
    total = np.bincount(labels, weights=x, minlength=centroids.size)
    exact = np.where(size > 0, total / np.maximum(size, 1), centroids)
    return exact[labels].astype(x.dtype)


def cluster_flat(x: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """Cluster a 1-D array, keeping zeros at zero when ``config.preserve_sparsity``."""
    if not config.preserve_sparsity:
        return cluster_values(x, config.clusters, config.init, config.seed)
    nonzero = x != 0
    if nonzero.all():
        return cluster_values(x, config.clusters, config.init, config.seed)
    out = np.zeros_like(x)
    if config.clusters > 1:
        out[nonzero] = cluster_values(x[nonzero], config.clusters - 1, config.init, config.seed)
    return out


def cluster(
    w: np.ndarray, config: ClusteringConfig, channel_axes: tuple[int, ...] = (-1,)
) -> np.ndarray:
    """Return a clustered copy of ``w``: at most ``k`` distinct values per tensor, or per output
    channel with ``granularity="per-channel"``. ``w`` is not modified.

    >>> cluster(np.array([0.0, 0.1, 0.11, 0.9, 1.0]), ClusteringConfig(clusters=3))
    array([0.   , 0.105, 0.105, 0.95 , 0.95 ])
    """
    check_finite(w)
    if config.granularity == "per-tensor":
        return cluster_flat(w.ravel(), config).reshape(w.shape)
    columns, restore = as_channel_columns(w, channel_axes)
    out = np.empty_like(columns)
    for c in range(columns.shape[1]):
        out[:, c] = cluster_flat(np.ascontiguousarray(columns[:, c]), config)
    return restore(out)
