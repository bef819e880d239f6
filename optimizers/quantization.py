"""Uniform b-bit weight quantization, on the same grid LiteRT's quantizer writes to a file.

| mode       | scale                                  | codes                        | zero point          |
|------------|----------------------------------------|------------------------------|---------------------|
| symmetric  | max|w| / (2^(b-1) - 1)                 | [-(2^(b-1) - 1), 2^(b-1) - 1] | 0 (zero stays zero) |
| asymmetric | (max(w, 0) - min(w, 0)) / (2^b - 1)     | [-2^(b-1), 2^(b-1) - 1]       | rint(qmin - lo/scale) |

``w ≈ (codes - zero_point) * scale``. Codes are rounded half-to-even (``np.rint``) and the
arithmetic is done in the weights' own float type, exactly as ``ai_edge_quantizer`` does, so a
preview on this grid equals the exported file. The range always includes zero, so zero maps
exactly to zero in both modes. Per-channel granularity gives each output channel its own scale
(LiteRT's default for weights); per-tensor uses one. A ``block_size`` splits each output channel
of a 2-D kernel (Dense: inputs x outputs) into blocks of that many consecutive inputs, each with
its own scale (LiteRT's blockwise weights, which it stores for fully connected layers only, as
int4 codes with float16 scales and no zero point: so blocks need the symmetric grid and at most 4
bits, and their scales are rounded up to float16 values, ``half_up``, to be the file's); a tensor
of another shape, or whose inputs are not a multiple of the block, keeps one scale per channel.

A clustered tensor is quantized by rounding its table of shared values (``quantize_table``),
with one scale per table row: the scales follow the clustering's granularity, not
``QuantizationConfig.granularity``, so k shared values per tensor (or per channel) stay at most
k. The values equal ``quantize`` of the clustered tensor on that granularity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from optimizers.levels import Coded, countable, merged
from optimizers.tensors import as_channel_columns, check_finite, is_whole_number

Mode = Literal["symmetric", "asymmetric"]
Granularity = Literal["per-channel", "per-tensor"]
MODES: tuple[Mode, ...] = get_args(Mode)
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)
BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 16)
BLOCK_SIZES: tuple[int, ...] = (32, 64, 128, 256)  # ai_edge_quantizer's blockwise schemes
BLOCK_BITS = 4  # the widest blockwise weights LiteRT runs (int4; its int8 blockwise has no kernel)
HALF_MAX = float(np.finfo(np.float16).max)

MODE_LABELS: dict[Mode, str] = {
    "symmetric": "Symmetric: levels centred on zero (what LiteRT uses for weights)",
    "asymmetric": "Asymmetric: levels span the min..max range with a zero point",
}
GRANULARITY_LABELS: dict[Granularity, str] = {
    "per-channel": "Per channel: each output channel gets its own scale",
    "per-tensor": "Per tensor: one scale for the whole tensor",
}


@dataclass(frozen=True)
class QuantizationConfig:
    """How to quantize. ``granularity`` sets the scales of a tensor quantized on its own; a
    clustered tensor's scales follow its clustering instead (``pipeline.Techniques.grid``).
    ``block_size`` (symmetric per-channel grids of at most ``BLOCK_BITS`` bits, as LiteRT stores
    them) gives blocks of that many inputs their own scale.

    >>> QuantizationConfig(bits=4)
    QuantizationConfig(bits=4, mode='symmetric', granularity='per-channel', block_size=None)
    """

    bits: int = 8
    mode: Mode = "symmetric"
    granularity: Granularity = "per-channel"
    block_size: int | None = None

    def __post_init__(self) -> None:
        if not is_whole_number(self.bits) or self.bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))  # numpy ints are not JSON-able
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )
        if self.block_size is not None:
            if not is_whole_number(self.block_size) or self.block_size not in BLOCK_SIZES:
                raise ValueError(
                    f"block_size must be one of {BLOCK_SIZES} or None, got {self.block_size!r}"
                )
            object.__setattr__(self, "block_size", int(self.block_size))
            if self.granularity != "per-channel":
                raise ValueError(
                    f"block_size needs granularity 'per-channel', got {self.granularity!r}"
                )
            if not takes_blocks(self.bits, self.mode, self.granularity):
                raise ValueError(
                    f"block_size needs a symmetric grid of at most {BLOCK_BITS} bits (LiteRT "
                    f"stores blockwise weights as int4 without zero points), got {self.bits} "
                    f"bits {self.mode}"
                )


def takes_blocks(bits: int, mode: str, granularity: str) -> bool:
    """Whether a grid can have blocks: LiteRT stores blockwise weights as int4 codes per
    channel, with no zero point."""
    return granularity == "per-channel" and mode == "symmetric" and bits <= BLOCK_BITS


@dataclass(frozen=True)
class Quantized:
    """Integer codes with their per-channel (or single) scale and zero point.

    ``codes`` has the weights' shape; ``scale`` and ``zero_point`` have one entry per output
    channel (one in all for per-tensor; blocks x channels, block-major, for blockwise).
    ``values`` is the dequantized float tensor.
    """

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    values: np.ndarray


def code_range(bits: int, mode: Mode) -> tuple[int, int]:
    """The integer codes a ``bits``-bit tensor may use (narrow range when symmetric)."""
    qmax = 2 ** (bits - 1) - 1
    return (-qmax, qmax) if mode == "symmetric" else (-qmax - 1, qmax)


def scale_and_zero_point(
    lo: np.ndarray, hi: np.ndarray, config: QuantizationConfig, half: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column scale and zero point for columns with minimum ``lo`` and maximum ``hi``;
    ``half`` (blocks, always symmetric) rounds the scales up to float16 values (``half_up``)."""
    qmin, qmax = code_range(config.bits, config.mode)
    tiny = np.asarray(1e-9, dtype=lo.dtype)  # ai_edge_quantizer's floor: avoids a zero scale
    if config.mode == "symmetric":
        bound = np.maximum(np.maximum(np.abs(lo), np.abs(hi)), tiny)
        scale = bound / np.asarray(qmax, lo.dtype)
        return half_up(scale) if half else scale, np.zeros(lo.shape, np.int64)
    lo0 = np.minimum(lo, 0)
    bound = np.maximum(np.maximum(hi, 0) - lo0, tiny)
    scale = bound / np.asarray(qmax - qmin, lo.dtype)
    return scale, np.rint(qmin - lo0 / scale).astype(np.int64)


def half_up(scale: np.ndarray) -> np.ndarray:
    """``scale`` rounded up to the nearest float16 value, as LiteRT stores a blockwise scale
    (up, so the largest weight still gets a code in range). Scales beyond float16's range, for
    weights beyond 450,000, stay as they are; their file then reports its own accuracy.

    >>> half_up(np.array([0.1, 1.0, 1e-9], np.float32)).tolist()
    [0.10003662109375, 1.0, 5.960464477539063e-08]
    """
    half = np.minimum(scale, HALF_MAX).astype(np.float16)
    half = np.where(half < scale, np.nextafter(half, np.float16(np.inf)), half)
    return np.where(scale > HALF_MAX, scale, half.astype(scale.dtype))


def quantize(
    w: np.ndarray, config: QuantizationConfig, channel_axes: tuple[int, ...] = (-1,)
) -> Quantized:
    """Quantize ``w`` (not modified) to ``config.bits`` bits.

    >>> q = quantize(np.array([[-1.0, 0.5], [0.25, 0.0]], np.float32), QuantizationConfig(bits=2))
    >>> q.codes.tolist(), q.values.tolist()
    ([[-1, 1], [0, 0]], [[-1.0, 0.5], [0.0, 0.0]])
    """
    check_finite(w)
    blocks = blocked(w.shape, channel_axes, config.block_size)
    if config.granularity == "per-tensor":
        columns, restore = w.reshape(-1, 1), lambda cols: cols.reshape(w.shape)
    elif blocks:
        columns, restore = block_columns(w, config.block_size)
    else:
        columns, restore = as_channel_columns(w, channel_axes)
    if columns.size == 0:
        return Quantized(np.zeros(w.shape, np.int8), np.ones(1, w.dtype), np.zeros(1, np.int64), w)
    q = quantize_columns(columns, config, half=blocks)
    return Quantized(restore(q.codes), q.scale, q.zero_point, restore(q.values))


def blocked(shape: tuple[int, ...], channel_axes: tuple[int, ...], block_size: int | None) -> bool:
    """Whether a tensor of ``shape`` gets blockwise scales: a 2-D kernel with its output channels
    last whose inputs are a whole number of blocks (what LiteRT stores blockwise)."""
    return (
        block_size is not None
        and len(shape) == 2
        and tuple(a % 2 for a in channel_axes) == (1,)
        and shape[0] % block_size == 0
    )


def block_columns(
    w: np.ndarray, block_size: int
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """A 2-D kernel (inputs x outputs) as one column per (block of inputs, output channel),
    block-major, and the function that turns such columns back into ``w``'s shape."""
    blocks, outputs = w.shape[0] // block_size, w.shape[1]
    columns = w.reshape(blocks, block_size, outputs).transpose(1, 0, 2)

    def restore(cols: np.ndarray) -> np.ndarray:
        return cols.reshape(block_size, blocks, outputs).transpose(1, 0, 2).reshape(w.shape)

    return columns.reshape(block_size, blocks * outputs), restore


def quantize_columns(
    columns: np.ndarray, config: QuantizationConfig, half: bool = False
) -> Quantized:
    """``columns`` (2-D, not empty) quantized with one scale per column (``half``: blocks'
    scales, rounded up to float16 values)."""
    scale, zero_point = scale_and_zero_point(columns.min(axis=0), columns.max(axis=0), config, half)
    codes, values = round_to_grid(columns, scale, zero_point, config)
    code_dtype = np.int8 if config.bits <= 8 else np.int16
    return Quantized(codes.astype(code_dtype), scale, zero_point, values)


def round_to_grid(
    w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, config: QuantizationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(codes as floats, values) of ``w`` on the grid ``scale``/``zero_point`` (broadcast
    against ``w``), in ``w``'s float type, in ai_edge_quantizer's order of operations: divide,
    add the zero point, round, clip."""
    qmin, qmax = code_range(config.bits, config.mode)
    zp = zero_point.astype(w.dtype)  # keep float32 math in float32
    # ``+ 0.0`` makes rint's -0.0 (a small negative weight) the integer 0 it stands for, so
    # zero is stored as +0.0, as in the file, and merges with pruned zeros bit for bit.
    codes = np.clip(np.rint(w / scale + zp), qmin, qmax) + 0.0
    return codes, ((codes - zp) * scale).astype(w.dtype)


def quantize_table(coded: Coded, config: QuantizationConfig) -> Coded:
    """A clustered tensor quantized: its shared values (``coded.table``) rounded to the grid
    with one scale per table row, so per tensor for a one-row table and per output channel for
    one row a channel (``config.granularity`` is not used). Values that round to the same
    level are merged, so a row of k values keeps at most k and the table stays sorted and
    distinct. ``coded`` is not modified.

    >>> c = Coded(np.array([0, 1, 2, 1]), np.array([[-1.0, 0.1, 0.9]], np.float32))
    >>> t = quantize_table(c, QuantizationConfig(bits=2))
    >>> t.table.tolist(), t.codes.tolist()
    ([[-1.0, 0.0, 1.0]], [0, 1, 2, 1])
    """
    if coded.codes.size == 0:
        return coded
    table = coded.table
    used = np.isfinite(table)  # per-channel rows are padded with inf, which no code uses
    # Padding filled with the row's first value (every row has one) leaves its extremes.
    rows = quantize_columns(np.where(used, table, table[:, :1]).T, config).values.T
    # Rounding keeps order, so equal levels are neighbours in a row: ``merged`` joins them.
    return merged(coded, rows)


def coded(q: Quantized, config: QuantizationConfig, channel_axes: tuple[int, ...]) -> Coded | None:
    """``q`` as codes into a table of every value each scale can give, computed with the same
    operations as ``q.values`` (so equal to them), or ``None`` when that table would be too
    large to count with (``levels.countable``)."""
    qmin, qmax = code_range(config.bits, config.mode)
    if blocked(q.codes.shape, channel_axes, config.block_size):
        return None  # a table per block, which ``levels`` does not count with
    if not countable(q.scale.size, qmax - qmin + 1, q.codes.size):
        return None
    dtype = q.values.dtype
    steps = np.arange(qmin, qmax + 1, dtype=dtype)[None, :]
    table = ((steps - q.zero_point.astype(dtype)[:, None]) * q.scale[:, None]).astype(dtype)
    return Coded(q.codes, table, channel_axes, base=qmin)


def fake_quantize(
    w: np.ndarray, config: QuantizationConfig, channel_axes: tuple[int, ...] = (-1,)
) -> np.ndarray:
    """The dequantized floats of ``quantize``: what the quantized model computes with."""
    return quantize(w, config, channel_axes).values
