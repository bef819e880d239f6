"""Equal-width bins of a large 1-D array in compiled passes (numba, without the GIL), with no
array of bin indices kept: ``fill`` counts and sums each bin, ``gather`` finds the values in
the bins asked for, ``encode`` maps every value through its bin to a code. numpy took nine
passes and two temporaries for the first alone (a third of a ResNet50's clustering). Loaded
only when a tensor too large to cluster on its distinct values is clustered: importing numba
takes most of a second.

Every pass computes a value's bin alike (``bin_of``): ``(x - lo) * scale`` in ``x``'s own
float type, at most ``top`` (the last regular bin), truncated; with ``zeros_apart`` the exact
zeros in one more bin after the regular ones. ``lo``, ``scale`` and ``top`` are given in
``x``'s float type.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TYPES = ("f4", "f8")  # the values' float type


def compiled(signature: str):
    return njit([signature.format(t=t) for t in TYPES], nogil=True, cache=True)


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


@compiled("void({t}[::1], {t}, {t}, {t}, b1, i8[::1], i8[::1])")
def encode(x, lo, scale, top, zeros_apart, lookup, codes):  # pragma: no cover - compiled
    """``codes[i] = lookup[bin of x[i]]``."""
    for i in range(x.size):
        codes[i] = lookup[bin_of(x[i], lo, scale, top, zeros_apart)]
