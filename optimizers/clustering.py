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

Quantization after clustering rounds the table of shared values that ``cluster_codes`` returns
(``quantization.quantize_table``), one scale per row: per tensor or per channel, as clustered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from optimizers.levels import Coded, code_type
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
    """Equal-width bins over ``[lo, lo + width * regular)`` with each bin's count and sum; with
    ``zeros_apart`` the exact zeros are counted in one more bin, after the others. A value's
    bin is found again from ``start`` and ``scale`` (``binning``), not stored."""

    start: np.floating  # the smallest value, in the values' float type
    scale: np.floating  # bins per unit of value, in the values' float type
    width: float
    counts: np.ndarray
    sums: np.ndarray
    zeros_apart: bool = False

    @property
    def lo(self) -> float:
        return float(self.start)

    @property
    def grid(self) -> tuple[np.floating, np.floating, np.floating, bool]:
        """How ``binning``'s passes find a value's bin: ``lo, scale, top, zeros_apart``."""
        return self.start, self.scale, self.start.dtype.type(self.regular - 1), self.zeros_apart

    @property
    def regular(self) -> int:
        """How many equal-width bins there are (the zeros' bin aside)."""
        return self.counts.size - self.zeros_apart

    @property
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The non-empty equal-width bins as weighted points: (exact mean of the bin, count)."""
        counts, sums = self.counts[: self.regular], self.sums[: self.regular]
        used = counts > 0
        return sums[used] / counts[used], counts[used]


def compilable(x: np.ndarray) -> np.ndarray:
    """``x`` as the compiled passes take it: contiguous, float32 or float64."""
    return np.ascontiguousarray(x if x.dtype in (np.float32, np.float64) else x.astype(np.float64))


def histogram(x: np.ndarray, n_bins: int = MAX_POINTS, zeros_apart: bool = False) -> Histogram:
    """Bin ``compilable`` ``x`` (not constant) in one compiled pass (``binning.fill``), in its
    own float type; with ``zeros_apart`` its exact zeros are counted in one more bin."""
    from optimizers import binning  # compiled: loads numba, when a large tensor needs it

    lo, hi = x.min(), x.max()
    counts = np.zeros(n_bins + zeros_apart, np.int64)
    sums = np.zeros(n_bins + zeros_apart, np.float64)
    width = (float(hi) - float(lo)) / n_bins
    h = Histogram(
        lo, x.dtype.type(n_bins / (float(hi) - float(lo))), width, counts, sums, zeros_apart
    )
    binning.fill(x, *h.grid, counts, sums)
    return h


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


Flat = tuple[np.ndarray, np.ndarray]  # codes of a 1-D array, and the sorted table they index


def means_table(size: np.ndarray, total: np.ndarray, dtype: np.dtype) -> Flat:
    """For clusters of ``size`` members summing to ``total``: the new code of each cluster and
    the table of their exact means, empty clusters dropped. Means of disjoint, increasing
    intervals increase strictly, also after rounding to ``dtype``: the table has no ties."""
    used = size > 0
    return np.cumsum(used) - 1, (total[used] / size[used]).astype(dtype)


def with_zero(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Zero joined to a sorted table in its place (or found there: a cluster mean of 0.0):
    the new table, the new code of each old one, and zero's code."""
    at = int(np.searchsorted(table, 0))
    shift = np.arange(table.size)
    if at == table.size or table[at] != 0:
        table, shift = np.insert(table, at, 0), shift + (shift >= at)
    return table, shift, at


def cluster_points(x: np.ndarray, k: int, init: Init, seed: int) -> Flat:
    """Small 1-D ``x`` clustered on its distinct values; unchanged if there are at most ``k``."""
    points, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if points.size <= k:
        return inverse, points
    wide = points.astype(np.float64)
    centroids = lloyd(wide, counts, initial_centroids(wide, counts, k, init, seed))
    labels = assign(wide, centroids)  # per distinct value, then per weight
    size = np.bincount(labels, weights=counts, minlength=centroids.size)
    total = np.bincount(labels, weights=counts * wide, minlength=centroids.size)
    renumber, table = means_table(size, total, x.dtype)
    return renumber[labels][inverse], table


def cluster_histogram(x: np.ndarray, h: Histogram, k: int, init: Init, seed: int) -> Flat:
    """Large-tensor clustering: Lloyd on the bins, then a lookup table from bin to code.

    A bin that straddles the midpoint between two centroids cannot be labelled as a whole: only
    its members (about ``k / MAX_POINTS`` of the data) are assigned one by one. Centroid means
    come from the bins' sums plus those members, so no further pass over ``x`` is needed.
    Zeros counted apart stay zero, one of the ``k`` values.
    """
    from optimizers import binning

    zeros = h.zeros_apart and h.counts[-1] > 0
    k -= zeros
    points, counts = h.points
    if points.size <= k:
        centroids = points
    else:
        centroids = lloyd(points, counts, initial_centroids(points, counts, k, init, seed))
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    left = h.lo + h.width * np.arange(h.regular)
    # A margin of 1% of a bin absorbs the float rounding of the bin index computation.
    first = np.searchsorted(midpoints, left - 0.01 * h.width)
    last = np.searchsorted(midpoints, left + 1.01 * h.width)
    whole = first == last
    regular = whole  # the whole bins that belong to a cluster: not the zeros' own
    if h.zeros_apart:
        first, whole = np.append(first, 0), np.append(whole, True)
    members = np.empty(int(h.counts[~whole].sum()), np.intp)
    binning.gather(x, *h.grid, ~whole, members)
    member_labels = np.searchsorted(midpoints, x[members])
    n = centroids.size
    size = np.bincount(
        first[: h.regular][regular], weights=h.counts[: h.regular][regular], minlength=n
    )
    size += np.bincount(member_labels, minlength=n)
    total = np.bincount(
        first[: h.regular][regular], weights=h.sums[: h.regular][regular], minlength=n
    )
    total += np.bincount(member_labels, weights=x[members], minlength=n)
    renumber, table = means_table(size, total, x.dtype)
    lookup, member_codes = renumber[first], renumber[member_labels]
    if zeros:
        table, shift, lookup[-1] = with_zero(table)
        lookup[:-1], member_codes = shift[lookup[:-1]], shift[member_codes]
    codes = np.empty(x.size, code_type(table.size))
    binning.encode(x, *h.grid, lookup, codes)  # right for every member of a whole bin
    codes[members] = member_codes
    return codes, table


def cluster_flat(x: np.ndarray, config: ClusteringConfig) -> Flat:
    """Cluster a 1-D array into at most ``config.clusters`` values, as codes into a sorted
    table. Every value goes to its nearest centroid, and every centroid is the exact mean of
    its members. With ``config.preserve_sparsity`` exact zeros stay zero, one of the values."""
    k, init, seed = config.clusters, config.init, config.seed
    if x.size > MAX_POINTS:
        if x.min() == x.max():
            return np.zeros(x.size, np.intp), x[:1].copy()
        wide = compilable(x)
        h = histogram(wide, zeros_apart=config.preserve_sparsity)  # the zeros kept apart
        if h.counts[: h.regular].sum() > MAX_POINTS:
            codes, table = cluster_histogram(wide, h, k, init, seed)
            return codes, table.astype(x.dtype)
    zeros = x == 0 if config.preserve_sparsity else None
    clustered = x.size if zeros is None else x.size - int(np.count_nonzero(zeros))
    if zeros is None or clustered == x.size:
        return cluster_points(x, k, init, seed)
    if clustered == 0:
        return np.zeros(x.size, np.intp), np.zeros(1, x.dtype)
    nonzero = ~zeros
    inner, table = cluster_points(x[nonzero], k - 1, init, seed)
    table, shift, at = with_zero(table)
    codes = np.full(x.size, at, np.intp)
    codes[nonzero] = shift[inner]
    return codes, table


def cluster_values(x: np.ndarray, k: int, init: Init = "linear", seed: int = 0) -> np.ndarray:
    """Cluster 1-D ``x`` into at most ``k`` values; returns the clustered copy (same dtype)."""
    codes, table = cluster_flat(x, ClusteringConfig(k, init, preserve_sparsity=False, seed=seed))
    return table[codes]


def cluster_codes(
    w: np.ndarray, config: ClusteringConfig, channel_axes: tuple[int, ...] = (-1,)
) -> Coded:
    """``w`` clustered, as codes of ``w``'s shape into a table of at most ``k`` values: one row
    for the tensor, or one per output channel with ``granularity="per-channel"`` (rows padded
    with ``inf``, which no code points to). ``w`` is not modified."""
    check_finite(w)
    if config.granularity == "per-tensor":
        codes, table = cluster_flat(w.ravel(), config)
        return Coded(codes.reshape(w.shape), table[None, :])
    columns, restore = as_channel_columns(w, channel_axes)
    codes = np.empty(columns.shape, np.intp)
    tables = []
    for c in range(columns.shape[1]):
        codes[:, c], table = cluster_flat(np.ascontiguousarray(columns[:, c]), config)
        tables.append(table)
    table = np.full((len(tables), max((t.size for t in tables), default=1)), np.inf, w.dtype)
    for c, t in enumerate(tables):
        table[c, : t.size] = t
    return Coded(restore(codes), table, channel_axes=channel_axes)


def cluster(
    w: np.ndarray, config: ClusteringConfig, channel_axes: tuple[int, ...] = (-1,)
) -> np.ndarray:
    """Return a clustered copy of ``w``: at most ``k`` distinct values per tensor, or per output
    channel with ``granularity="per-channel"``. ``w`` is not modified.

    >>> cluster(np.array([0.0, 0.1, 0.11, 0.9, 1.0]), ClusteringConfig(clusters=3))
    array([0.   , 0.105, 0.105, 0.95 , 0.95 ])
    """
    return cluster_codes(w, config, channel_axes).values
