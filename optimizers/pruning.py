"""Magnitude pruning: set the smallest-magnitude weights to exactly zero.

Three flavours, all deterministic:

* ``unstructured`` + ``per-layer``: each tensor gets exactly ``target_zeros(sparsity, n)``
  zeros: ``ceil(sparsity * n)``, the fewest that reach the target (``round`` would leave a
  864-weight kernel at 59.95% for a 60% target).
* ``unstructured`` + ``global``: one magnitude threshold across all tensors, so that exactly
  ``target_zeros(sparsity, N)`` of the ``N`` eligible weights are zero; layers with many small
  weights lose more of them.
* ``2:4`` (N:M structured): in every group of 4 consecutive weights along the input dimension,
  the 2 smallest are zeroed (50% sparsity, the pattern sparse tensor cores and TFLite's block
  sparsity can exploit). ``sparsity`` is ignored for structured pruning.
* ``channels``: whole output channels (filters, Dense units) with the smallest norm are
  removed and the model is rewritten smaller (``optimizers.channels``), so it also runs faster.
  It works on the model's graph, not on one tensor: ``prune`` refuses it.

Ties at the threshold are broken by position: among equal magnitudes, the weight with the lower
flat (C-order) index is pruned first. Existing zeros count towards the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from optimizers.tensors import COMPILED_FROM, check_finite, is_real_number

Structure = Literal["unstructured", "2:4", "channels"]
Scope = Literal["per-layer", "global"]
STRUCTURES: tuple[Structure, ...] = get_args(Structure)
SCOPES: tuple[Scope, ...] = get_args(Scope)

STRUCTURE_LABELS: dict[Structure, str] = {
    "unstructured": "Unstructured: any weight may be removed",
    "2:4": "2:4 structured: 2 of every 4 input weights are removed (50%)",
    "channels": "Channels: whole filters and units are removed; the model gets smaller and faster",
}
SCOPE_LABELS: dict[Scope, str] = {
    "per-layer": "Per layer: every tensor reaches the same sparsity",
    "global": "Global: one magnitude threshold across all layers",
}


@dataclass(frozen=True)
class PruningConfig:
    """What to prune.

    >>> PruningConfig(sparsity=0.6)
    PruningConfig(sparsity=0.6, structure='unstructured', scope='per-layer')
    """

    sparsity: float = 0.5
    structure: Structure = "unstructured"
    scope: Scope = "per-layer"

    def __post_init__(self) -> None:
        if not is_real_number(self.sparsity) or not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be a number in [0, 1), got {self.sparsity!r}")
        object.__setattr__(self, "sparsity", float(self.sparsity))  # numpy floats: not JSON-able
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.structure == "channels" and self.scope != "per-layer":
            raise ValueError(
                f"scope must be 'per-layer' for channel pruning (each channel group loses the "
                f"same share), got {self.scope!r}"
            )

    @property
    def effective_sparsity(self) -> float:
        """The fraction of weights this config removes (0.5 for 2:4)."""
        return 0.5 if self.structure == "2:4" else self.sparsity


def target_zeros(sparsity: float, n: int) -> int:
    """Zeros needed for ``sparsity`` of ``n`` weights: ``ceil``, after rounding away float noise
    (0.6 * 10 is 6.000000000000001 in binary floating point)."""
    return math.ceil(round(sparsity * n, 6))


def smallest_mask(
    magnitudes: np.ndarray, count: int, ordered: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask (flat) of exactly ``count`` smallest entries, ties to the lower index.

    O(n): ``kth_smallest`` finds the threshold (read from ``ordered``, the magnitudes sorted,
    when given), and only the entries equal to it are ranked by position.
    """
    flat = magnitudes.ravel()
    if count <= 0:
        return np.zeros(flat.size, dtype=bool)
    if count >= flat.size:
        return np.ones(flat.size, dtype=bool)
    if ordered is not None and ordered.size != flat.size:
        raise ValueError(f"sorted magnitudes of {ordered.size} weights given for {flat.size}")
    threshold = ordered[count - 1] if ordered is not None else kth_smallest(flat, count - 1)
    mask = flat < threshold
    missing = count - int(np.count_nonzero(mask))
    mask[np.flatnonzero(flat == threshold)[:missing]] = True
    return mask


def kth_smallest(magnitudes: np.ndarray, k: int) -> np.generic:
    """``np.partition(magnitudes, k)[k]`` of 1-D magnitudes (floats >= +0.0), found by
    ``ranked`` in a large float32 or float64 array."""
    if not compiled_floats(magnitudes):
        return np.partition(magnitudes, k)[k]
    return ranked(bit_patterns(magnitudes), k).view(magnitudes.dtype)


def compiled_floats(w: np.ndarray) -> bool:
    """Whether ``w`` takes the compiled passes: float32 or float64, ``COMPILED_FROM`` or more."""
    return w.size >= COMPILED_FROM and w.dtype in (np.float32, np.float64)


def bit_patterns(w: np.ndarray) -> np.ndarray:
    """The bit patterns of float32 or float64 ``w``, flat (a view when it can be)."""
    return np.ascontiguousarray(w).reshape(-1).view(f"u{w.itemsize}")


def sign_cleared(bits: np.ndarray) -> np.unsignedinteger:
    """The mask that clears the sign of bit patterns of ``bits``' type."""
    return bits.dtype.type(np.iinfo(bits.dtype).max >> 1)


def ranked(bits: np.ndarray, k: int) -> np.unsignedinteger:
    """The ``k``-th smallest magnitude (from 0) of the floats whose bit patterns are ``bits``,
    as a bit pattern. Those patterns, their sign cleared, are in the order of the magnitudes,
    so a count of their top 16 bits (``binning.buckets``) finds the bin that holds it, and only
    that bin (a small share of the weights) is gathered and partitioned: two compiled passes
    and no temporary the size of the tensor. Raises ``ValueError`` on NaN or Inf."""
    from optimizers import binning  # compiled: loads numba, when a large tensor needs it

    mask, shift = sign_cleared(bits), 8 * bits.itemsize - 16
    counts = np.zeros(1 << 15, np.int64)
    binning.buckets(bits, mask, shift, counts)
    infinite = int(np.array(np.inf, f"f{bits.itemsize}").view(bits.dtype))
    if counts[infinite >> shift :].any():  # NaN and Inf: the largest patterns
        check_finite(bits.view(f"f{bits.itemsize}"))
    below = np.cumsum(counts)
    bucket = int(np.searchsorted(below, k, "right"))
    k -= int(below[bucket - 1]) if bucket else 0
    found = np.empty(int(counts[bucket]), bits.dtype)
    binning.members(bits, mask, shift, bucket, found)
    return np.partition(found, k)[k]


def zero_smallest(w: np.ndarray, count: int, ordered: np.ndarray | None = None) -> np.ndarray:
    """``keep_where(w, ~smallest_mask(|w|, count, ordered))`` of a large float32 or float64
    ``w``, in compiled passes: the threshold (``ranked``, or read from ``ordered``), then one
    pass that writes the pruned copy (about ten numpy passes and temporaries before: pruning
    a ResNet50 took 3.8-4.4 times as long as copying its weights, now 1.9, in
    ``bench.bench.scaling_row``)."""
    from optimizers import binning

    bits = bit_patterns(w)
    if count <= 0:
        return w.copy()
    if ordered is not None:
        if ordered.size != w.size:
            raise ValueError(f"sorted magnitudes of {ordered.size} weights given for {w.size}")
        check_finite(ordered[-1:])  # NaN and Inf sort last
        threshold = bit_patterns(ordered[count - 1 : count].astype(w.dtype))[0]
    else:
        threshold = ranked(bits, count - 1)
    out = np.empty_like(bits)
    binning.zero_smallest(bits, sign_cleared(bits), threshold, count, out)
    return out.view(w.dtype).reshape(w.shape)


def keep_where(w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``w`` with the weights outside ``mask`` set to +0.0 (the others bit for bit):
    the bit patterns times the mask, several times faster than ``np.where`` on a random mask."""
    bits = w.view(f"u{w.itemsize}")
    return np.multiply(bits, mask, dtype=bits.dtype).view(w.dtype)


def sorted_magnitudes(w: np.ndarray) -> np.ndarray:
    """``|w|`` flat and sorted: kept by a caller that prunes ``w`` often, every threshold is
    then read instead of searched."""
    return np.sort(np.abs(w), axis=None)


def magnitude_mask(w: np.ndarray, sparsity: float, ordered: np.ndarray | None = None) -> np.ndarray:
    """Keep-mask (True = kept) with exactly ``target_zeros(sparsity, w.size)`` False entries;
    ``ordered`` is ``sorted_magnitudes(w)`` when the caller keeps it."""
    check_finite(w)
    count = target_zeros(sparsity, w.size)
    return ~smallest_mask(np.abs(w), count, ordered).reshape(w.shape)


def input_axis(ndim: int) -> int:
    """The input-dimension axis of a Keras kernel: 0 for Dense/1-D, -2 for convolutions."""
    return 0 if ndim <= 2 else ndim - 2


def n_m_mask(w: np.ndarray, n: int = 2, m: int = 4, axis: int | None = None) -> np.ndarray:
    """Keep-mask that keeps the ``n`` largest of every ``m`` consecutive input weights, along
    ``axis`` (``input_axis`` when not given).

    A trailing group shorter than ``m`` keeps ``min(len, n)`` weights. Ties keep the lower index.
    """
    check_finite(w)
    axis = input_axis(w.ndim) if axis is None else axis
    moved = np.moveaxis(np.abs(w), axis, -1)
    length = moved.shape[-1]
    padded_len = -(-length // m) * m
    # Pad with -1, below every magnitude: padding is pruned first, so a short trailing group of
    # t weights keeps exactly min(t, n) of them.
    padded = np.full(moved.shape[:-1] + (padded_len,), -1.0, dtype=np.float64)
    padded[..., :length] = moved
    groups = padded.reshape(moved.shape[:-1] + (padded_len // m, m))
    # Rank within each group; the stable sort puts the lower index first among equals, so it is
    # the one pruned.
    ranks = np.argsort(np.argsort(groups, axis=-1, kind="stable"), axis=-1, kind="stable")
    keep = (ranks >= m - n).reshape(padded.shape)[..., :length]
    return np.moveaxis(keep, -1, axis)


def prune(
    w: np.ndarray,
    config: PruningConfig,
    ordered: np.ndarray | None = None,
    axis: int | None = None,
) -> np.ndarray:
    """Return a pruned copy of ``w`` (same shape and dtype); ``w`` is not modified.
    ``ordered``: ``sorted_magnitudes(w)``, when the caller keeps it; ``axis``: the one 2:4
    groups inputs along (``n_m_mask``).

    >>> prune(np.array([0.1, -0.4, 0.3, 0.2]), PruningConfig(sparsity=0.5))
    array([ 0. , -0.4,  0.3,  0. ])
    """
    if config.structure == "channels":
        raise ValueError("channel pruning rewrites the whole model; it cannot prune one tensor")
    if config.structure == "2:4":
        return keep_where(w, n_m_mask(w, axis=axis))
    if compiled_floats(w):
        return zero_smallest(w, target_zeros(config.sparsity, w.size), ordered)
    return keep_where(w, magnitude_mask(w, config.sparsity, ordered))


def global_masks(tensors: Sequence[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """Keep-masks for one magnitude threshold across ``tensors``.

    Exactly ``target_zeros(sparsity, total)`` weights are pruned; ties break by tensor order,
    then by position.
    """
    for w in tensors:
        check_finite(w)
    sizes = [w.size for w in tensors]
    if not sizes:
        return []
    magnitudes = np.concatenate([np.abs(w).ravel() for w in tensors])
    pruned = smallest_mask(magnitudes, target_zeros(sparsity, magnitudes.size))
    bounds = np.cumsum(sizes)[:-1]
    return [~p.reshape(w.shape) for p, w in zip(np.split(pruned, bounds), tensors, strict=True)]


def prune_global(tensors: Sequence[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """Prune ``tensors`` jointly with one global magnitude threshold (see ``global_masks``)."""
    masks = global_masks(tensors, sparsity)
    return [keep_where(w, m) for m, w in zip(masks, tensors, strict=True)]
