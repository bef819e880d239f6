"""Weight clustering (weight sharing): replace each weight by the nearest of ``k`` centroids.

1-D k-means (Lloyd) whose cost on the data is a few O(n) passes in all: the weights are
reduced to at most ``MAX_POINTS`` weighted points (the distinct values with their counts for
small tensors, otherwise the exact means of fine histogram bins), Lloyd runs on those points,
and a final assignment sends every weight to its nearest centroid and sets each centroid to the
exact mean of its members. So the result has at most ``k`` distinct values and every value is
the mean of the weights it replaced.

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

from optimizers.tensors import as_channel_columns, check_finite, is_whole_number

Init = Literal["linear", "density", "kmeans++"]
Granularity = Literal["per-tensor", "per-channel"]
INITS: tuple[Init, ...] = get_args(Init)
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)

INIT_LABELS: dict[Init, str] = {
    "linear": "Linear: evenly spaced between the smallest and largest weight",
    "density": "Density: evenly spaced quantiles, more centroids where weights are dense",
    "kmeans++": "k-means++: randomized spread-out seeding (fixed seed)",
}
GRANULARITY_LABELS: dict[Granularity, str] = {
    "per-tensor": "Per tensor: at most k values shared by the whole tensor",
    "per-channel": "Per channel: each output channel gets its own k values",
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
        if not is_whole_number(self.clusters) or not MIN_CLUSTERS <= self.clusters <= MAX_CLUSTERS:
            raise ValueError(
                f"clusters must be a whole number in [{MIN_CLUSTERS}, {MAX_CLUSTERS}], "
                f"got {self.clusters!r}"
            )
        if not is_whole_number(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative whole number, got {self.seed!r}")
        if not isinstance(self.preserve_sparsity, bool):
            raise ValueError(
                f"preserve_sparsity must be true or false, got {self.preserve_sparsity!r}"
            )
        object.__setattr__(self, "clusters", int(self.clusters))  # numpy ints are not JSON-able
        object.__setattr__(self, "seed", int(self.seed))
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )


@dataclass(frozen=True)
class Histogram:
    """Equal-width bins over ``[lo, lo + width * len(counts))`` with each bin's count and sum."""

    bins: np.ndarray  # bin index of every value
    lo: float
    width: float
    counts: np.ndarray
    sums: np.ndarray

    @property
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The non-empty bins as weighted points: (exact mean of the bin, count)."""
        used = self.counts > 0
        return self.sums[used] / self.counts[used], self.counts[used]


def histogram(x: np.ndarray, n_bins: int = MAX_POINTS) -> Histogram:
    """Bin 1-D ``x`` (not constant) in a few O(n) passes, in ``x``'s own float type."""
    lo, hi = x.min(), x.max()
    t = x - lo
    t *= x.dtype.type(n_bins / (float(hi) - float(lo)))
    np.minimum(t, n_bins - 1, out=t)  # the maximum lands in the last bin
    bins = t.astype(np.intp)  # numpy's own index type: gathers and bincount need no conversion
    counts = np.bincount(bins, minlength=n_bins)
    sums = np.bincount(bins, weights=x, minlength=n_bins)
    return Histogram(bins, float(lo), (float(hi) - float(lo)) / n_bins, counts, sums)


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

    def draw(weights: np.ndarray) -> int:  # an index, with probability proportional to weights
        cdf = np.cumsum(weights)
        return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], "right")), points.size - 1)

    chosen = [draw(counts)]
    d2 = (points - points[chosen[0]]) ** 2
    for _ in range(1, k):
        weights = counts * d2
        if not weights.any():
            break
        chosen.append(draw(weights))
        np.minimum(d2, (points - points[chosen[-1]]) ** 2, out=d2)
    return np.sort(points[chosen])


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest sorted centroid for each value (ties go to the lower centroid)."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(midpoints, values, side="left")


def lloyd(points: np.ndarray, counts: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Weighted 1-D Lloyd on sorted ``points`` until the clusters stop changing.

    In 1-D a cluster is a run of sorted points, so each iteration only finds ``k`` cut positions
    by binary search and reads the sums from prefix sums: O(k log n), not O(n). An empty cluster
    is dropped rather than re-seeded (fewer values is always allowed). Returns sorted centroids.
    """
    weight = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    moment = np.concatenate([[0.0], np.cumsum(counts * points, dtype=np.float64)])
    centroids, previous = np.unique(centroids), None
    for _ in range(MAX_ITERATIONS):
        # Cluster j holds the points in (midpoint[j-1], midpoint[j]], as ``assign`` labels them.
        inner = np.searchsorted(points, (centroids[1:] + centroids[:-1]) / 2, "right")
        if previous is not None and np.array_equal(inner, previous):
            break
        previous = inner
        cuts = np.concatenate(([0], inner, [points.size]))
        size = weight[cuts[1:]] - weight[cuts[:-1]]
        keep = size > 0
        # Means of consecutive runs of sorted points increase strictly: no sort needed.
        centroids = (moment[cuts[1:]] - moment[cuts[:-1]])[keep] / size[keep]
    return centroids


def cluster_values(x: np.ndarray, k: int, init: Init = "linear", seed: int = 0) -> np.ndarray:
    """Cluster 1-D ``x`` into at most ``k`` values; returns the clustered copy (same dtype).

    Every value goes to its nearest centroid, and every centroid is the exact mean of its
    members. If ``x`` has at most ``k`` distinct values it is returned unchanged.
    """
    if x.size <= MAX_POINTS:
        points, counts = np.unique(x, return_counts=True)
        if points.size <= k:
            return x.copy()
        points = points.astype(np.float64)
        centroids = lloyd(points, counts, initial_centroids(points, counts, k, init, seed))
        labels = assign(x, centroids)
        size = np.bincount(labels, minlength=centroids.size)
        total = np.bincount(labels, weights=x, minlength=centroids.size)
        return (total / np.maximum(size, 1))[labels].astype(x.dtype)
    if x.min() == x.max():
        return x.copy()
    return cluster_histogram(x, histogram(x), k, init, seed)


def cluster_histogram(x: np.ndarray, h: Histogram, k: int, init: Init, seed: int) -> np.ndarray:
    """Large-tensor clustering: Lloyd on the bins, then a lookup table from bin to value.

    A bin that straddles the midpoint between two centroids cannot be labelled as a whole: only
    its members (about ``k / MAX_POINTS`` of the data) are assigned one by one. Centroid means
    come from the bins' sums plus those members, so no further pass over ``x`` is needed.
    """
    points, counts = h.points
    if points.size <= k:
        centroids = points
    else:
        centroids = lloyd(points, counts, initial_centroids(points, counts, k, init, seed))
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    left = h.lo + h.width * np.arange(h.counts.size)
    # A margin of 1% of a bin absorbs the float rounding of the bin index computation.
    first = np.searchsorted(midpoints, left - 0.01 * h.width)
    last = np.searchsorted(midpoints, left + 1.01 * h.width)
    whole = first == last
    members = np.flatnonzero(np.take(~whole, h.bins))
    member_labels = np.searchsorted(midpoints, x[members])
    n = centroids.size
    size = np.bincount(first[whole], weights=h.counts[whole], minlength=n)
    size += np.bincount(member_labels, minlength=n)
    total = np.bincount(first[whole], weights=h.sums[whole], minlength=n)
    total += np.bincount(member_labels, weights=x[members], minlength=n)
    means = np.where(size > 0, total / np.maximum(size, 1), centroids).astype(x.dtype)
    out = np.take(means[first], h.bins)  # right for every member of a whole bin
    out[members] = means[member_labels]
    return out


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
