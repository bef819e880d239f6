"""What the pipeline reports of a tensor's values: distinct values, per channel too, and entropy.

A clustered or quantized tensor is ``Coded``: small integer codes into a table of values. Its
figures are then counted (one ``bincount`` of channel-and-code pairs) instead of sorted; on a
ResNet50 that is several times faster, and the count of each value is what the histogram and
its marks need. Other tensors (float, or with tables too large to count) are sorted by channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizers.pruning import bit_patterns, sign_cleared
from optimizers.tensors import COMPILED_FROM, as_channel_columns

LEVELS_KEPT = 4096  # a report keeps its tensor's values and counts when it has at most this many


def code_type(entries: int) -> type[np.signedinteger]:
    """The integer type of codes into table rows of ``entries``: int16 when it holds them (a
    quarter of intp's memory to write and read again), else intp."""
    return np.int16 if entries <= np.iinfo(np.int16).max + 1 else np.intp


@dataclass(frozen=True)
class Coded:
    """A tensor whose values are ``table[row, code - base]``: ``table`` has one row for the
    whole tensor, or one per output channel (along ``channel_axes``). Each row is sorted and
    the entries that codes use are distinct."""

    codes: np.ndarray  # integers, the tensor's shape
    table: np.ndarray  # (1, L) or (channels, L)
    channel_axes: tuple[int, ...] = (-1,)
    base: int = 0

    @property
    def values(self) -> np.ndarray:
        """The float tensor the codes stand for."""
        return self.lookup(self.table)

    def lookup(self, table: np.ndarray) -> np.ndarray:
        """``table[row, code - base]`` for every weight, for any ``table`` laid out as
        ``self.table`` (a renumbering of the codes, say)."""
        if self.codes.size >= COMPILED_FROM:  # one compiled pass, no index the size of it
            from optimizers import binning

            if table.shape[0] == 1:  # one row for all: the codes in any order, flat
                out = np.empty(self.codes.shape, table.dtype)
                flat = np.ascontiguousarray(self.codes).reshape(-1, 1)
                binning.decode(flat, table, self.base, out.reshape(-1, 1))
                return out
            columns, restore = as_channel_columns(self.codes, self.channel_axes)
            out = np.empty(columns.shape, table.dtype)
            binning.decode(np.ascontiguousarray(columns), table, self.base, out)
            return restore(out)
        index = self.codes
        if self.base:
            index = np.subtract(index, self.base, dtype=np.intp)  # int8 codes would overflow
        if table.shape[0] == 1:
            return table[0][index]
        columns, restore = as_channel_columns(index, self.channel_axes)
        return restore(np.take_along_axis(table.T, columns, axis=0))


def merged(coded: Coded, table: np.ndarray) -> Coded:
    """``coded`` with new values ``table`` for its table's entries (same layout and order, so
    still sorted), equal neighbours in a row merged into one entry. ``coded`` is not modified.

    >>> m = merged(Coded(np.array([0, 1, 2]), np.array([[0.1, 0.2, 0.9]])), np.array([[0.0, 0.0, 1.0]]))
    >>> m.table.tolist(), m.codes.tolist()
    ([[0.0, 1.0]], [0, 0, 1])
    """
    first = np.isfinite(coded.table)  # rows are padded with inf, which no code uses
    first[:, 1:] &= table[:, 1:] != table[:, :-1]
    renumber = np.cumsum(first, axis=1) - 1
    out = np.full((table.shape[0], int(renumber.max()) + 1), np.inf, table.dtype)
    out[np.nonzero(first)[0], renumber[first]] = table[first]
    return Coded(coded.lookup(renumber.astype(code_type(out.shape[1]))), out, coded.channel_axes)


def sorted_table(coded: Coded) -> Coded:
    """``coded`` with each table row sorted and equal entries merged (the same values)."""
    order = np.argsort(coded.table, axis=1, kind="stable")
    table = np.take_along_axis(coded.table, order, 1)
    renumber = np.argsort(order, axis=1).astype(code_type(order.shape[1]))
    return merged(Coded(coded.lookup(renumber), table, coded.channel_axes), table)


@dataclass(frozen=True)
class Statistics:
    """Distinct values of a tensor, the most in any one output channel, and Shannon bits
    ``n x H`` of its values (per channel when asked); ``levels`` are its distinct values
    (sorted) with their counts, kept when there are at most ``LEVELS_KEPT``."""

    distinct: int
    max_channel: int
    bits: float
    levels: tuple[np.ndarray, np.ndarray] | None = None


def shannon_bits(counts: np.ndarray, total: float | np.ndarray) -> float:
    counts = np.asarray(counts, np.float64)
    return float(-(counts * np.log2(counts / total)).sum())


def kept(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    return (values, counts.astype(np.int64)) if values.size <= LEVELS_KEPT else None


def countable(channels: int, width: int, size: int) -> bool:
    """Whether a table of ``channels`` rows of ``width`` values is small enough to count a
    tensor of ``size`` weights with (16-bit codes, or a few weights a channel, are sorted)."""
    return channels * width <= 4 * size + 65536


def statistics(
    w: np.ndarray,
    axes: tuple[int, ...],
    per_channel: bool,
    coded: Coded | None = None,
    repeats: Repeats | None = None,
) -> Statistics:
    """The figures of ``w`` (channels along ``axes``), counted from ``coded`` when it is given
    and small enough, or from ``repeats`` (of the tensor ``w`` is a pruning of: the same values
    with some zeroed), else from sorting. ``per_channel``: entropy of each channel's values (a
    decoder that knows the channel needs no more)."""
    if w.size == 0:
        return Statistics(0, 0, 0.0)
    if coded is not None:
        columns = as_channel_columns(coded.codes, axes)[0]
        assert coded.table.shape[0] in (1, columns.shape[1]), "a table row per channel of axes"
        if countable(columns.shape[1], coded.table.shape[1], w.size):
            return counted(columns, coded, per_channel)
    if repeats is not None and not per_channel:
        found = pruned_statistics(w, repeats, axes)
        if found is not None:
            return found
    return sorted_statistics(w, axes, per_channel)


@dataclass(frozen=True)
class Repeats:
    """Where a tensor's nonzero values occur more than once, found by one sort of the tensor:
    the weights that hold such a value (flat positions in the tensor laid out one column per
    channel), which repeated value each holds, and which repeated (channel, value) pair. Any
    other nonzero value occurs once, so the statistics of the tensor with some weights zeroed
    (pruned) follow from counting, not sorting (``pruned_statistics``)."""

    positions: np.ndarray
    value: np.ndarray  # 0 .. values - 1
    pair: np.ndarray  # 0 .. len(pair_channels) - 1
    pair_channels: np.ndarray  # the channel of each pair

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.positions, self.value, self.pair, self.pair_channels))


# Beyond this share of weights that repeat a value (a quantized upload, say), a sort is as
# cheap: kept, the repeats take at most 4 bytes a weight (a random ResNet50's take 2.3).
REPEATS_KEPT = 1 / 4


def repeats(w: np.ndarray, axes: tuple[int, ...]) -> Repeats | None:
    """``Repeats`` of ``w`` (channels along ``axes``; finite floats, as pruning requires);
    ``None`` when more than ``REPEATS_KEPT`` of its weights repeat a value, where sorting each
    pruning is as cheap."""
    columns = as_channel_columns(w, axes)[0]
    ordered, at = grouped(bit_patterns(columns))
    # Finite nonzero floats are equal where their bit patterns are (both zeros count as zero).
    again = (ordered[1:] == ordered[:-1]) & ((ordered[1:] & sign_cleared(ordered)) != 0)
    continues = np.zeros(ordered.size, bool)  # the same value as the weight before
    continues[1:] = again
    held = continues.copy()
    held[:-1] |= again
    if np.count_nonzero(held) > REPEATS_KEPT * w.size:
        return None
    value = np.cumsum(~continues[held]) - 1  # each run of a value starts with a new number
    positions = at[held]
    by_position = np.argsort(positions)  # a pruning reads them in memory order
    positions, value = positions[by_position], value[by_position]
    channel = positions % columns.shape[1]
    pairs, pair = np.unique(value * columns.shape[1] + channel, return_inverse=True)
    small = np.int32 if w.size < 2**31 else np.int64
    return Repeats(*(a.astype(small) for a in (positions, value, pair, pairs % columns.shape[1])))


def grouped(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D bit patterns ``bits`` sorted, and where each stood: equal patterns side by side. One
    sort of 64-bit keys (pattern, position) where they fit, a stable argsort otherwise."""
    if bits.itemsize <= 4 and bits.size < 2**32:
        keys = bits.astype(np.uint64)
        keys <<= np.uint64(32)
        keys |= np.arange(bits.size, dtype=np.uint64)
        keys.sort()
        at = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
        keys >>= np.uint64(32)
        return keys.astype(bits.dtype), at
    at = np.argsort(bits, kind="stable")
    return bits[at], at


def pruned_statistics(w: np.ndarray, repeats: Repeats, axes: tuple[int, ...]) -> Statistics | None:
    """``statistics`` (not per channel) of ``w``, a tensor with ``repeats`` with some of its
    weights zeroed, in O(n) passes; ``None`` when ``w`` holds at most ``LEVELS_KEPT`` values,
    whose levels only a sort finds. A value counts once per weight that keeps it; each repeated
    value (and (channel, value) pair) adds its kept weights but one, the zeros one value."""
    columns = as_channel_columns(w, axes)[0]
    n_rows, n_channels = columns.shape
    kept_in = np.count_nonzero(columns, axis=0)
    kept = int(kept_in.sum())
    zeros = w.size - kept
    alive = columns.ravel()[repeats.positions] != 0
    per_value = np.bincount(repeats.value, weights=alive).astype(np.int64)
    distinct = kept - int(per_value.sum()) + int(np.count_nonzero(per_value)) + (zeros > 0)
    if distinct <= LEVELS_KEPT:
        return None
    per_pair = np.bincount(repeats.pair, weights=alive)
    extra = np.bincount(
        repeats.pair_channels, weights=per_pair - (per_pair > 0), minlength=n_channels
    )
    in_channel = kept_in - extra + (kept_in < n_rows)
    ones = kept - int(per_value.sum())  # values kept by one weight each
    counts = np.concatenate([per_value[per_value > 0], [zeros] if zeros else []])
    bits = ones * float(np.log2(w.size)) + shannon_bits(counts, w.size)
    return Statistics(distinct, int(in_channel.max()), bits)


def counted(columns: np.ndarray, coded: Coded, per_channel: bool) -> Statistics:
    """``statistics`` from codes laid out one column per output channel."""
    rows, channels = columns.shape
    width = coded.table.shape[1]
    if columns.size >= COMPILED_FROM:  # one compiled pass, no keys the size of the tensor
        from optimizers import binning

        counts = np.zeros((channels, width), np.int64)
        binning.tally(np.ascontiguousarray(columns), coded.base, counts)
    else:
        offsets = np.arange(channels, dtype=np.intp) * width - coded.base
        keys = np.add(columns, offsets, dtype=np.intp)
        counts = np.bincount(keys.ravel(), minlength=channels * width).reshape(channels, width)
    present = counts > 0
    used, uses = np.broadcast_to(coded.table, counts.shape)[present], counts[present]
    values = np.unique(used)
    totals = None
    if values.size <= LEVELS_KEPT or not per_channel:
        totals = np.bincount(np.searchsorted(values, used), weights=uses)
    bits = shannon_bits(uses, rows) if per_channel else shannon_bits(totals, columns.size)
    levels = None if totals is None else kept(values, totals)
    return Statistics(values.size, int(present.sum(axis=1).max()), bits, levels)


def sorted_channels(w: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each output channel's values sorted (one row per channel), and a mask of where each run
    of equal values starts in those rows."""
    columns, _ = as_channel_columns(w, axes)
    # A C-ordered copy (never a view of ``w``, which is sorted in place next): rows lie in
    # memory, which sorts faster and lets callers flatten them without another copy.
    ordered = np.array(columns.T, order="C")
    ordered.sort(axis=1)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return ordered, starts


def sorted_statistics(w: np.ndarray, axes: tuple[int, ...], per_channel: bool) -> Statistics:
    """``statistics`` from one sort of the channels; the tensor's distinct values are those of
    the channels' distinct ones."""
    ordered, starts = sorted_channels(w, axes)
    flat = np.flatnonzero(starts.ravel())
    counts = np.diff(np.append(flat, ordered.size))
    channels = flat // ordered.shape[1]
    values = ordered.ravel()[flat]
    max_channel = int(starts.sum(axis=1).max())
    if values.size > w.size // 8:  # mostly distinct values: a flat sort beats an argsort
        everything = np.sort(w, axis=None)
        edges = np.flatnonzero(np.r_[True, everything[1:] != everything[:-1]])
        unique, totals = everything[edges], np.diff(np.append(edges, w.size))
    else:
        unique, which = np.unique(values, return_inverse=True)
        totals = np.bincount(which, weights=counts)
    if per_channel:
        bits = shannon_bits(counts, np.bincount(channels, weights=counts)[channels])
    else:
        bits = shannon_bits(totals, w.size)
    return Statistics(unique.size, max_channel, bits, kept(unique, totals))
