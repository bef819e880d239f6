"""The Learn page's lessons: each technique on one 16×16 kernel a student can see whole.

The kernel is drawn with a fixed seed from a Laplace distribution, the shape trained weights
have (most near zero, a few large). Every lesson returns the tensor the library made of it (the
same ``prune``, ``cluster`` and ``quantize`` the app runs on whole models) and the sentences
that say, with the numbers, what happened. No Streamlit here: the page draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from optimizers.clustering import ClusteringConfig, cluster
from optimizers.pruning import PruningConfig, prune
from optimizers.quantization import QuantizationConfig, code_range, fake_quantize, quantize
from optimizers.size import gzip_size, index_bits

SEED = 0
SHAPE = (16, 16)
SCALE = 0.1  # of the Laplace distribution: a trained layer's typical spread
CLUSTER_CHOICES = (2, 3, 4, 6, 8, 16, 32)
BIT_CHOICES = (2, 3, 4, 5, 6, 7, 8)
# "Order matters" runs on fixed settings: with 4 clusters the zeros of a 50% pruned kernel share
# a cluster with small weights, so they move unless they are kept.
ORDER_SPARSITY, ORDER_CLUSTERS, ORDER_BITS = 0.5, 4, 4
GRID_CLUSTERS = 8
SWEEP = tuple(range(0, 100, 10))  # percent pruned in the file-size lesson
FLOAT_BYTES = 4


def kernel() -> np.ndarray:
    """The lessons' 16×16 float32 kernel (the same numbers on every run)."""
    return np.random.default_rng(SEED).laplace(0.0, SCALE, SHAPE).astype(np.float32)


def per_tensor(bits: int) -> QuantizationConfig:
    """One scale for the whole kernel: the simplest grid to explain."""
    return QuantizationConfig(bits, granularity="per-tensor")


@dataclass(frozen=True)
class Lesson:
    """What a technique made of the kernel, and what to say about it."""

    after: np.ndarray
    sentence: str


def pruning(w: np.ndarray, percent: int) -> Lesson:
    after = prune(w, PruningConfig(percent / 100))
    removed = after == 0
    n, zeros = w.size, int(removed.sum())
    if zeros == 0:
        return Lesson(after, f"At 0% nothing is pruned: all {n} weights keep their values.")
    cut = float(np.abs(w[removed]).max())
    return Lesson(
        after,
        f"Pruning {percent}% set the {zeros} weights of smallest magnitude (every one with "
        f"|w| ≤ {cut:.3f}) to exactly 0, shown grey; the other {n - zeros} keep their values, "
        f"so the largest, {float(np.abs(w).max()):.3f}, is untouched.",
    )


def clustering(w: np.ndarray, k: int) -> Lesson:
    after = cluster(w, ClusteringConfig(k))
    values = np.unique(after)
    error = float(np.abs(w - after).mean())
    return Lesson(
        after,
        f"Clustering into {k} values replaced each of the {w.size} weights by the nearest of "
        f"{values.size} shared values, from {values[0]:.3f} to {values[-1]:.3f} (the orange "
        f"marks), each the mean of the weights it replaced: a weight can now be stored as a "
        f"{index_bits(values.size)}-bit index into a table of {values.size} numbers, at an "
        f"average error of {error:.4f}.",
    )


def quantization(w: np.ndarray, bits: int) -> Lesson:
    q = quantize(w, per_tensor(bits))
    lo, hi = code_range(bits, "symmetric")
    scale = float(q.scale[0])
    worst = float(np.abs(w - q.values).max())
    return Lesson(
        q.values,
        f"{bits}-bit quantization rounds each weight to the nearest of {hi - lo + 1} evenly "
        f"spaced levels, {scale:.4f} apart (the largest |w|, {float(np.abs(w).max()):.3f}, "
        f"divided by {hi}); no weight moves more than half a step (here at most {worst:.4f}), "
        f"and the kernel is stored as {bits}-bit integers from {lo} to {hi} plus that one scale.",
    )


@dataclass(frozen=True)
class ZerosKept:
    """Pruning then clustering, with and without keeping the zeros."""

    pruned: np.ndarray
    kept: np.ndarray
    lost: np.ndarray
    sentence: str


def zeros_kept(w: np.ndarray) -> ZerosKept:
    pruned = prune(w, PruningConfig(ORDER_SPARSITY))
    kept = cluster(pruned, ClusteringConfig(ORDER_CLUSTERS, preserve_sparsity=True))
    lost = cluster(pruned, ClusteringConfig(ORDER_CLUSTERS, preserve_sparsity=False))
    zeros = int((pruned == 0).sum())
    moved = lost[pruned == 0]
    remaining = int((moved == 0).sum())
    went = ", ".join(f"{v:.4f}" for v in np.unique(moved[moved != 0]))
    sentence = (
        f"Pruning {ORDER_SPARSITY:.0%} makes {zeros} weights zero. Clustering into "
        f"{ORDER_CLUSTERS} values without keeping zeros leaves {remaining} of them at zero"
        + (
            f"; {zeros - remaining} join a cluster of small weights and become {went}"
            if went
            else ""
        )
        + f", so the file loses the sparsity it paid for. Keeping zeros makes 0 one of the "
        f"{ORDER_CLUSTERS} values: all {int((kept[pruned == 0] == 0).sum())} stay zero and the "
        f"other weights share the remaining {ORDER_CLUSTERS - 1}."
    )
    return ZerosKept(pruned, kept, lost, sentence)


@dataclass(frozen=True)
class OnGrid:
    """Clustering then quantization (the pipeline's order), and the other way round."""

    cluster_first: np.ndarray
    quantize_first: np.ndarray
    sentence: str


def on_grid(values: np.ndarray, scale: float) -> int:
    """How many of ``values`` are exact multiples of ``scale``: codes an integer file holds."""
    steps = values / scale
    return int(np.isclose(steps, np.rint(steps), rtol=0, atol=1e-4).sum())


def grid_order(w: np.ndarray) -> OnGrid:
    k, q = GRID_CLUSTERS, per_tensor(ORDER_BITS)
    clustered = cluster(w, ClusteringConfig(k))
    first = fake_quantize(clustered, q)
    first_values = np.unique(first)
    first_scale = float(quantize(clustered, q).scale[0])
    second = cluster(fake_quantize(w, q), ClusteringConfig(k))
    second_values = np.unique(second)
    second_scale = float(quantize(w, q).scale[0])
    return OnGrid(
        first,
        second,
        f"Clustering into {k} values and then quantizing to {ORDER_BITS} bits moves each shared "
        f"value to its nearest grid level: {first_values.size} distinct values, "
        f"{on_grid(first_values, first_scale)} of them exact {ORDER_BITS}-bit codes, so an "
        f"int{ORDER_BITS} file stores exactly this model. The other way round, each cluster "
        f"value is a mean of grid levels and falls between them: {second_values.size} values, "
        f"only {on_grid(second_values, second_scale)} on the grid. So the pipeline clusters "
        "first and quantizes last.",
    )


@dataclass(frozen=True)
class Sweep:
    """Raw and gzipped bytes of the kernel pruned at each of ``SWEEP``'s percentages."""

    percents: tuple[int, ...]
    raw: tuple[int, ...]
    gzipped: tuple[int, ...]
    sentence: str


def size_sweep(w: np.ndarray) -> Sweep:
    pruned = [prune(w, PruningConfig(p / 100)) for p in SWEEP]
    raw = tuple(p.nbytes for p in pruned)
    gzipped = tuple(gzip_size(p.tobytes()) for p in pruned)
    return Sweep(
        SWEEP,
        raw,
        gzipped,
        f"A float32 file stores every weight in {FLOAT_BYTES} bytes, zeros included: the "
        f"kernel's {raw[0]:,} bytes stay {raw[-1]:,} at {SWEEP[-1]}% pruned. gzip writes a "
        f"repeated run of bytes as a short reference to an earlier one, so the zeros cost "
        f"almost nothing: {gzipped[0]:,} bytes unpruned (random floats barely compress), "
        f"{gzipped[-1]:,} at {SWEEP[-1]}%. (The app's float32 .tflite export goes one step "
        "further and stores a pruned tensor in LiteRT's sparse format when that is smaller.)",
    )


@dataclass(frozen=True)
class Storage:
    """The first weights of the kernel as int8 and int4 codes, and each format's bytes."""

    weights: np.ndarray
    codes: dict[int, np.ndarray]  # bits -> codes of ``weights``
    values: dict[int, np.ndarray]  # bits -> code × scale
    nbytes: dict[str, int]  # format -> bytes of the whole kernel
    sentence: str


STORAGE_BITS = (8, 4)
SHOWN_WEIGHTS = 6


def storage(w: np.ndarray) -> Storage:
    quantized = {bits: quantize(w, per_tensor(bits)) for bits in STORAGE_BITS}
    first = w.ravel()[:SHOWN_WEIGHTS]
    nbytes = {"float32": w.size * FLOAT_BYTES} | {
        f"int{bits}": math.ceil(w.size * bits / 8) + FLOAT_BYTES for bits in STORAGE_BITS
    }
    (lo8, hi8), (lo4, hi4) = (code_range(bits, "symmetric") for bits in STORAGE_BITS)
    return Storage(
        first,
        {b: q.codes.ravel()[:SHOWN_WEIGHTS] for b, q in quantized.items()},
        {b: q.values.ravel()[:SHOWN_WEIGHTS] for b, q in quantized.items()},
        nbytes,
        f"int8 stores each weight as one byte, an integer code from {lo8} to {hi8}; int4 as half "
        f"a byte, two codes from {lo4} to {hi4} packed in each byte. Beside the codes the file "
        f"keeps the "
        f"scale (one float per tensor here, one per output channel in the app's files), and a "
        f"weight is its code × the scale. So the {w.size} weights take "
        f"{nbytes['int8']:,} bytes as int8 and {nbytes['int4']:,} as int4, against "
        f"{nbytes['float32']:,} as float32.",
    )
