"""Small array helpers shared by the techniques."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

# Weights from which a tensor's passes run compiled (``optimizers.binning``): below it, numpy's
# calls cost less than loading numba, and the samples' tensors never load it.
COMPILED_FROM = 1 << 16


def is_whole_number(value: object) -> bool:
    """An ``int`` or numpy integer, but not a ``bool`` (which Python counts as an ``int``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real_number(value: object) -> bool:
    """A Python or numpy number that is not complex and not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_finite(w: np.ndarray) -> None:
    """Raise ``ValueError`` if ``w`` holds NaN or Inf: no technique can rank or cluster those."""
    finite = np.isfinite(w)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ValueError(f"tensor holds {bad} NaN or Inf value(s); fix the model's weights first")


def as_channel_columns(
    w: np.ndarray, channel_axes: tuple[int, ...]
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """View ``w`` as a 2-D array with one column per output channel, and a function that turns
    such an array back into ``w``'s shape.

    ``channel_axes`` are the axes that index an output channel: ``(-1,)`` for Dense and Conv
    kernels, ``(-2, -1)`` for a DepthwiseConv2D kernel (input channel x multiplier),
    ``(-2,)`` for Conv2DTranspose. A tensor with fewer dimensions than that is one channel.
    """
    if w.ndim < 2:
        return w.reshape(-1, 1), lambda cols: cols.reshape(w.shape)
    axes = sorted(a % w.ndim for a in channel_axes)
    rest = [a for a in range(w.ndim) if a not in axes]
    moved = np.transpose(w, rest + axes)
    moved_shape = moved.shape
    inverse = np.argsort(rest + axes)

    def restore(cols: np.ndarray) -> np.ndarray:
        return np.transpose(cols.reshape(moved_shape), inverse)

    n_channels = int(np.prod([w.shape[a] for a in axes]))
    return moved.reshape(-1, n_channels), restore
