"""Bins of a large array in compiled passes (numba, without the GIL), with no array of bin
indices kept. numpy took several passes and temporaries for each of these (nine for ``fill``
alone, a third of a ResNet50's clustering). Loaded only when a large tensor needs it
(``COMPILED_FROM`` weights): importing numba and these passes takes half a second.

* Clustering's equal-width bins: ``fill`` counts and sums each bin, ``gather`` finds the values
  in the bins asked for, ``encode`` maps every value through its bin to a code.
* Pruning's bins of magnitudes by their top 16 bits (``pruning.ranked``): ``buckets`` counts
  them, ``members`` gathers one bin, ``zero_smallest`` zeros the smallest magnitudes.
* A coded tensor's codes, one column per output channel (``levels``): ``tally`` counts each
  channel's, ``decode`` looks them up in a table. Each is compiled on its first call with a
  new pair of types (codes of 8 to 64 bits, tables of floats or of new codes), then cached.

Every pass computes a value's bin alike (``bin_of``): ``(x - lo) * scale`` in ``x``'s own
float type, at most ``top`` (the last regular bin), truncated; with ``zeros_apart`` the exact
zeros in one more bin after the regular ones. ``lo``, ``scale`` and ``top`` are given in
``x``'s float type.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TYPES = ("f4", "f8")  # the values' float type
BITS = ("u4", "u8")  # the bit patterns of those floats


def compiled(signature: str, types: tuple[str, ...] = TYPES):
    return njit([signature.format(t=t) for t in types], nogil=True, cache=True)


@njit(inline="always")
def bin_of(v, lo, scale, top, zeros_apart):  # pragma: no cover - compiled
    """The bin of ``v``; ``top``, the last regular bin, in the values' float type (a float and
    an integer compared, or Python's ``int``, made these passes four times slower)."""
    b = np.int64(min((v - lo) * scale, top))
    if zeros_apart and v == 0:
        b = np.int64(top) + 1
    return b


@compiled("void({t}[::1], {t}, {t}, {t}, b1, i8[::1], f8[::1])")
def fill(x, lo, scale, top, zeros_apart, counts, sums):  # pragma: no cover - compiled
    """Add each value to its bin's ``counts`` and ``sums`` (zeroed by the caller)."""
    for i in range(x.size):
        b = bin_of(x[i], lo, scale, top, zeros_apart)
        counts[b] += 1
        sums[b] += x[i]


@compiled("void({t}[::1], {t}, {t}, {t}, b1, b1[::1], i8[::1])")
def gather(x, lo, scale, top, zeros_apart, wanted, found):  # pragma: no cover - compiled
    """Write into ``found`` the positions of the values whose bin is ``wanted``, in order
    (``found`` holds exactly as many as those bins count)."""
    n = 0
    for i in range(x.size):
        if wanted[bin_of(x[i], lo, scale, top, zeros_apart)]:
            found[n] = i
            n += 1


@njit(
    [f"void({t}[::1], {t}, {t}, {t}, b1, i8[::1], {c}[::1])" for t in TYPES for c in ("i2", "i8")],
    nogil=True,
    cache=True,
)
def encode(x, lo, scale, top, zeros_apart, lookup, codes):  # pragma: no cover - compiled
    """``codes[i] = lookup[bin of x[i]]``, codes of ``levels.code_type``."""
    for i in range(x.size):
        codes[i] = lookup[bin_of(x[i], lo, scale, top, zeros_apart)]


# --- magnitudes by their bit patterns: a float's, its sign cleared (``& mask``), orders as its
# magnitude does; ``shift`` keeps the top 16 bits of the pattern, the sign's among them.


@compiled("void({t}[::1], {t}, i8, i8[::1])", BITS)
def buckets(bits, mask, shift, counts):  # pragma: no cover - compiled
    """Count the magnitudes by their top bits: ``counts[(bits & mask) >> shift] += 1``."""
    for i in range(bits.size):
        counts[(bits[i] & mask) >> shift] += 1


@compiled("void({t}[::1], {t}, i8, i8, {t}[::1])", BITS)
def members(bits, mask, shift, bucket, found):  # pragma: no cover - compiled
    """Write into ``found`` the magnitudes (as bit patterns) of ``bucket``, in order."""
    n = 0
    for i in range(bits.size):
        m = bits[i] & mask
        if (m >> shift) == bucket:
            found[n] = m
            n += 1


@compiled("void({t}[::1], {t}, {t}, i8, {t}[::1])", BITS)
def zero_smallest(bits, mask, threshold, count, out):  # pragma: no cover - compiled
    """``out``: ``bits`` with its ``count`` smallest magnitudes zeroed (+0.0), ``threshold``
    the largest of them: every one below it, and of those equal to it the first in order. A
    first pass zeros all that are not above it; the last equal ones beyond ``count`` (rare
    ties) are put back from the end."""
    zeroed = 0
    for i in range(bits.size):
        low = (bits[i] & mask) <= threshold
        out[i] = bits[i]
        if low:  # not ``0 if low else bits[i]``: numba types that float64, and u8 loses bits
            out[i] = 0
        zeroed += low
    i = bits.size
    while zeroed > count:
        i -= 1
        if (bits[i] & mask) == threshold:
            out[i] = bits[i]
            zeroed -= 1


@njit(nogil=True, cache=True)
def tally(codes, base, counts):  # pragma: no cover - compiled
    """``counts[channel, code - base] += 1`` for every code of ``codes`` (one column a
    channel)."""
    rows, channels = codes.shape
    for i in range(rows):
        for c in range(channels):
            counts[c, codes[i, c] - base] += 1


@njit(nogil=True, cache=True)
def decode(codes, table, base, out):  # pragma: no cover - compiled
    """``out[i, channel] = table[row, codes[i, channel] - base]``, ``row`` the channel's for a
    table of one row a channel, else 0."""
    rows, channels = codes.shape
    per_channel = table.shape[0] > 1
    for i in range(rows):
        for c in range(channels):
            out[i, c] = table[c if per_channel else 0, codes[i, c] - base]
