"""A setting's float32 file from its model's: the converter's graph, the kernels rewritten.

The pipeline changes only the values of weight tensors, never the graph, so the float32 file of
an optimized model is its original model's file with other numbers in a few buffers. Converting
ResNet50 takes 15 s; rewriting its kernels takes a copy. ``kernel_placements`` finds, once per
original model, where each of its weights went in the converter's file: the constant tensor
holding it, transposed and reshaped (Keras ``(h, w, in, out)`` convolution kernels are LiteRT
``(out, h, w, in)``, dense kernels ``(out, in)``), and scaled per output channel where the
converter folded a BatchNormalization into it (the folded scale ``gamma / sqrt(var + eps)`` does
not depend on the kernel). ``rewritten`` then writes another set of weights into those places.

Anything not found exactly (a weight the converter split, fused with another or stored twice, a
channel whose original values are all zero so its folded scale is unknown) makes ``rewritten``
return ``None`` for a setting that changes it, and the caller converts as before. The rewritten
file is checked against Keras like a converted one.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from optimizers.export.flatbuffer import TYPE_CODES, buffer_bytes, patched, read_flatbuffer

MATCH_RTOL = 1e-5  # folding rounds in float32: the file's values are the kernel's times s to ~1e-7
PROBE = 64  # values compared first, before a whole tensor


@dataclass(frozen=True)
class Placement:
    """Where weight ``index`` lies in the file: tensor ``(subgraph, tensor)``, after
    ``transpose(perm)`` and a reshape to ``shape``, times ``scale`` along ``axis`` (``None``:
    stored as it is)."""

    index: int
    tensor: tuple[int, int]
    perm: tuple[int, ...]
    shape: tuple[int, ...]
    axis: int | None
    scale: np.ndarray | None

    def values(self, w: np.ndarray) -> np.ndarray:
        """``w`` as the file stores it."""
        out = np.transpose(w, self.perm).reshape(self.shape).astype(np.float32)
        if self.axis is None:
            return out
        shape = [1] * out.ndim
        shape[self.axis] = -1
        return (out * self.scale.reshape(shape)).astype(np.float32)


def float_tensors(data: bytes) -> dict[tuple[int, int], np.ndarray]:
    """(subgraph, tensor) -> value of the file's dense float32 constants of 2+ dimensions."""
    model = read_flatbuffer(data)
    found = {}
    for g, subgraph in enumerate(model.subgraphs):
        for i, t in enumerate(subgraph.tensors):
            raw = buffer_bytes(model, t)
            if raw is None or t.type != TYPE_CODES["float32"] or t.sparsity is not None:
                continue
            shape = tuple(int(d) for d in t.shape)
            if len(shape) >= 2:
                found[(g, i)] = np.frombuffer(raw, np.float32).reshape(shape)
    return found


def fits(w: np.ndarray, stored: np.ndarray, perm: tuple[int, ...]) -> Placement | None:
    """How ``stored`` holds ``w`` through ``perm``: as it is, or scaled along one axis."""
    axes = probe_axes(w, stored, perm)
    if not axes:
        return None
    moved = np.transpose(w, perm).reshape(stored.shape)
    if np.array_equal(moved, stored):
        return Placement(-1, (0, 0), perm, stored.shape, None, None)
    bound = MATCH_RTOL * float(np.abs(stored).max()) + 1e-30
    for axis in axes:
        scale = channel_scale(moved, stored, axis)
        if scale is None:
            continue
        shape = [1] * stored.ndim
        shape[axis] = -1
        back = (moved * scale.reshape(shape)).astype(np.float32)
        if np.all(np.abs(back - stored) <= bound + MATCH_RTOL * np.abs(stored)):  # allclose
            return Placement(-1, (0, 0), perm, stored.shape, axis, scale)
    return None


def probe_axes(w: np.ndarray, stored: np.ndarray, perm: tuple[int, ...]) -> list[int]:
    """The axes of ``stored`` along which it may hold ``w`` moved through ``perm`` times one
    factor per channel, from a cheap look at three values in each of the first ``PROBE``
    channels (``probe_indices``): zero where ``w`` is zero, and the same ratio for all three."""
    found = []
    w_flat, stored_flat = w.reshape(-1), stored.reshape(-1)
    for axis, source, flat in probe_indices(w.shape, stored.shape, perm):
        a = w_flat[source].astype(np.float64).reshape(3, -1)
        b = stored_flat[flat].astype(np.float64).reshape(3, -1)
        if np.any((a == 0) != (b == 0)):
            continue
        ratio = np.divide(b, a, out=np.full_like(b, np.nan), where=a != 0)
        r = ratio[:, ~np.isnan(ratio).any(axis=0)]
        if np.all(np.abs(r - r[:1]) <= 1e-4 * np.abs(r[:1]) + 1e-30):
            found.append(axis)
    return found


@functools.lru_cache(maxsize=4096)
def probe_indices(
    shape: tuple[int, ...], stored: tuple[int, ...], perm: tuple[int, ...]
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per axis of a ``stored`` shape, the flat indices ``probe_axes`` reads: in a weight of
    ``shape``, and in the stored tensor: three values of each of the first ``PROBE`` channels,
    the channel's first, its last, and one at other positions along each axis (off the corners
    where the axes are longer than two; first and last alone fit many wrong orders of axes of
    one size: their corners map onto each other). They depend on shapes alone: a model's
    kernels share few shapes, and each is tried against every same-sized tensor of the file."""
    moved_shape = [shape[p] for p in perm]
    found = []
    for axis, channels in enumerate(stored):
        c = np.arange(min(PROBE, channels))
        first = [c if k == axis else np.zeros_like(c) for k in range(len(stored))]
        last = [c if k == axis else np.full_like(c, n - 1) for k, n in enumerate(stored)]
        off = [c if k == axis else (c * (k + 2) + k + 1) % n for k, n in enumerate(stored)]
        pairs = [np.concatenate(points) for points in zip(first, last, off, strict=True)]
        flat = np.ravel_multi_index(pairs, stored)
        source = [np.empty(0, np.intp)] * len(shape)
        for k, index in enumerate(np.unravel_index(flat, moved_shape)):
            source[perm[k]] = index
        found.append((axis, np.ravel_multi_index(source, shape), flat))
    return found


def channel_scale(moved: np.ndarray, stored: np.ndarray, axis: int) -> np.ndarray | None:
    """Per ``axis`` channel, the ratio ``stored / moved`` (median over the channel's nonzero
    values), or ``None`` when a channel has no nonzero value to read it from or its first values
    already disagree."""
    a = np.moveaxis(moved, axis, 0).reshape(moved.shape[axis], -1)
    b = np.moveaxis(stored, axis, 0).reshape(a.shape)
    head_a, head_b = a[:, :PROBE], b[:, :PROBE]
    nonzero = head_a != 0
    if not nonzero.any(axis=1).all():
        nonzero = a != 0
        if not nonzero.any(axis=1).all():
            return None
        head_a, head_b = a, b
    head_a, head_b = head_a.astype(np.float64), head_b.astype(np.float64)
    ratio = np.where(nonzero, head_b / np.where(nonzero, head_a, 1.0), np.nan)
    scale = np.nanmedian(ratio, axis=1)
    if not np.all(np.isfinite(scale)):
        return None
    spread = np.nanmax(np.abs(ratio - scale[:, None]), axis=1)
    if np.any(spread > 1e-4 * np.abs(scale) + 1e-30):
        return None
    return scale.astype(np.float32)


@functools.lru_cache(maxsize=1024)
def orders(shape: tuple[int, ...], stored: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The orders of axes through which a weight of ``shape`` may lie in a tensor of shape
    ``stored``: one permutation per order of its axes longer than one (where an axis of length
    one goes moves no value), and only those whose lengths a reshape merges into ``stored``'s
    or splits from them (the converter's layouts: a depthwise kernel's last two axes merge, a
    convolution's output axis moves first). ResNet50's kernels are tried at 509 places instead
    of 6,637 (every permutation of every same-sized tensor)."""
    long = [a for a, n in enumerate(shape) if n > 1]
    ones = tuple(a for a, n in enumerate(shape) if n == 1)
    target = boundaries([n for n in stored if n > 1])
    found = []
    for order in itertools.permutations(long):
        moved = boundaries([shape[a] for a in order])
        if moved <= target or target <= moved:
            found.append((*order, *ones))
    return found


def boundaries(lengths: list[int]) -> set[int]:
    """Where a flat array of axes of ``lengths`` starts a new index on one of them."""
    return set(itertools.accumulate(lengths, operator.mul))


def kernel_placements(weights: list[np.ndarray], data: bytes) -> dict[int, Placement]:
    """Where each weight of two or more dimensions lies in the float32 file ``data``: those
    found in exactly one tensor that no other weight is found in."""
    stored = float_tensors(data)
    by_size: dict[int, list[tuple[int, int]]] = {}
    for key, value in stored.items():
        by_size.setdefault(value.size, []).append(key)
    candidates: dict[int, dict[tuple[int, int], Placement]] = {}
    for index, w in enumerate(weights):
        if w.ndim < 2 or w.dtype != np.float32:
            continue
        candidates[index] = {}
        for key in by_size.get(w.size, []):
            for perm in orders(w.shape, stored[key].shape):
                p = fits(w, stored[key], perm)
                if p is not None:
                    candidates[index].setdefault(key, p)
                    break
    claims = Counter(key for found in candidates.values() for key in found)
    return {
        index: replace(p, index=index, tensor=key)
        for index, found in candidates.items()
        if len(found) == 1
        for key, p in found.items()
        if claims[key] == 1
    }


def rewritten(
    data: bytes,
    placements: dict[int, Placement],
    base: list[np.ndarray],
    weights: list[np.ndarray],
) -> bytes | None:
    """The float32 file ``data`` (of a model with weights ``base``) carrying ``weights``
    instead, or ``None`` when a weight that changed has no placement."""
    if len(base) != len(weights) or any(
        a.shape != b.shape for a, b in zip(base, weights, strict=True)
    ):
        return None
    changed = [
        i for i, (a, b) in enumerate(zip(base, weights, strict=True)) if not np.array_equal(a, b)
    ]
    if any(i not in placements for i in changed):
        return None
    buffers = {
        placements[i].tensor: np.ascontiguousarray(placements[i].values(weights[i]))
        .view(np.uint8)
        .reshape(-1)
        for i in changed
    }
    return patched(data, buffers, {}) if buffers else data
