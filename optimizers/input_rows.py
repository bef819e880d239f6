"""A layer's inputs as the rows its kernel reads: a convolution's patches (im2col, with its
strides, padding and dilation; per input channel for a depthwise kernel), an EinsumDense
layer's inputs with their contracted axes last (``einsum_layout``), and, from a large batch,
every k-th of its rows (``spread``), so that every position is kept as often.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

# Input rows a layer takes from one batch: a 112x112 map of 8 images has 100,352 positions,
# far more than an H of a few hundred columns needs; every k-th of them is kept (``spread``).
ROWS_PER_BATCH = 4096


class EinsumLayout(NamedTuple):
    """An EinsumDense layer as a Dense one: its input's axes with the ``contracted`` ones last
    (in the kernel's order), its kernel's axes as rows (the output axes, in the kernel's order)
    then the same contracted ones, and whether its bias holds one value per kernel row, in
    that order (else the bias is not corrected)."""

    inputs: tuple[int, ...]
    kernel: tuple[int, ...]
    contracted: int
    bias: bool


def einsum_layout(equation: str, ndim: int, bias_axes: str | None) -> EinsumLayout | None:
    """The ``EinsumLayout`` of an EinsumDense ``equation`` on inputs of ``ndim`` axes, or
    ``None`` where a kernel of rows by columns does not hold it: a kernel axis also in the
    input and the output (one matrix per index), an axis summed away or repeated, no axis
    contracted, the input's first (the samples) contracted, or the kernel's last contracted
    (the plain pipeline's channels, which the rows' per-channel scales follow).

    >>> einsum_layout("abcd,cde->abe", 4, "e")  # the attention output projection
    EinsumLayout(inputs=(0, 1, 2, 3), kernel=(2, 0, 1), contracted=2, bias=True)
    """
    inputs, output = equation.split("->")
    x, kernel = inputs.split(",")
    if "..." in x:  # the elided axes, named
        fresh = sorted(set(string.ascii_letters) - set(equation))[: ndim - len(x) + 3]
        x, output = (s.replace("...", "".join(fresh)) for s in (x, output))
    contracted = [c for c in kernel if c in x and c not in output]
    rows = [c for c in kernel if c not in x]
    if (
        len(x) != ndim
        or any(len(set(s)) != len(s) for s in (x, kernel, output))
        or len(rows) + len(contracted) != len(kernel)
        or not set(rows) <= set(output)
        or not set(x) <= set(contracted) | set(output)
        or not contracted
        or x[0] in contracted
        or kernel[-1] in contracted
    ):
        return None
    first = min((output.index(c) for c in bias_axes or ""), default=len(output))
    return EinsumLayout(
        tuple(
            [i for i, c in enumerate(x) if c not in contracted] + [x.index(c) for c in contracted]
        ),
        tuple(kernel.index(c) for c in rows + contracted),
        len(contracted),
        bias=set(bias_axes or "") == set(rows) and list(output[first:]) == rows,
    )


def layer_layout(layer: Any) -> EinsumLayout | None:
    """``einsum_layout`` of an EinsumDense ``layer`` (``None`` where its input rank is unknown)."""
    spec = layer.input_spec
    return None if spec is None else einsum_layout(layer.equation, spec.ndim, layer.bias_axes)


def spread(n: int, positions: int) -> int:
    """The step through ``n`` samples x ``positions`` rows (sample-major) that keeps at most
    ``ROWS_PER_BATCH`` of them, coprime to ``positions``: each sample then starts at another
    position, and every position is kept as often. (The same grid of positions in every
    sample kept 4 of a 6x6 map's 36, on one side of it: data-aware 60% + int4 on the digits
    CNN fell to 80.8% against plain's 91.9%.)"""
    step = max(1, math.ceil(n * positions / ROWS_PER_BATCH))
    while math.gcd(step, positions) > 1:
        step += 1
    return step


def kept(n: int, outs: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Indices (sample, *position) of the rows ``spread`` keeps of ``n`` samples' ``outs``
    positions."""
    positions = math.prod(outs)
    flat = np.arange(0, n * positions, spread(n, positions))
    return (flat // positions, *np.unravel_index(flat % positions, tuple(outs)))


def patches(layer: Any, x: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """The im2col rows of a 1-, 2- or 3-D convolution's input ``x`` (N, *spatial, cin): one row
    per output position, ``prod(kernel_size)·cin`` long in the kernel's (..., cin) order; or,
    when ``per_channel``, (cin, taps, rows) for a depthwise kernel. Padding, strides and
    dilation are the layer's (``same`` pads as TensorFlow does: the extra one after; ``causal``
    pads the past). A large batch keeps every k-th of its output positions (``spread``)."""
    size, strides, dilation = (
        tuple(getattr(layer, a)) for a in ("kernel_size", "strides", "dilation_rate")
    )
    n, padding, every = len(size), layer.padding, (slice(None),)
    taps = math.prod(size)
    if padding == "causal":  # 1-D: the past padded, nothing after
        x = np.pad(x, ((0, 0), ((size[0] - 1) * dilation[0], 0), (0, 0)))
        padding = "valid"
    if set(size) == {1} and set(strides) == {1} and not per_channel:
        return x[kept(x.shape[0], x.shape[1:-1])]
    spans = [(k - 1) * d + 1 for k, d in zip(size, dilation, strict=True)]
    if padding == "same":
        spatial = x.shape[1:-1]
        outs = [-(-m // s) for m, s in zip(spatial, strides, strict=True)]
        pads = [
            max((o - 1) * s + k - m, 0)
            for o, s, k, m in zip(outs, strides, spans, spatial, strict=True)
        ]
        x = np.pad(x, ((0, 0), *((p // 2, p - p // 2) for p in pads), (0, 0)))
    axes = tuple(range(1, n + 1))
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=axes)
    # (N, *outs, cin, *kernel) at the strides and dilation, then (*kernel, cin) per row.
    windows = windows[
        every
        + tuple(slice(None, None, s) for s in strides)
        + every
        + tuple(slice(None, None, d) for d in dilation)
    ]
    rows = windows[kept(x.shape[0], windows.shape[1 : n + 1])]  # (rows, cin, *kernel): a copy
    if per_channel:
        return rows.reshape(len(rows), x.shape[-1], taps).transpose(1, 2, 0)
    return rows.reshape(len(rows), x.shape[-1], taps).transpose(0, 2, 1).reshape(len(rows), -1)
