"""The column-by-column pass of data-aware compression (``optimizers.data_aware``): GPTQ's
rounding with SparseGPT's pruning, over a kernel laid out as rows (outputs) by columns (inputs).

Each column in turn is zeroed where pruned, rounded to its grid (``Grid``, ``row_grid``: per
channel, per block or per tensor, from the weights' range or a clipped share of it) or to the
nearest shared value of its row (``Table``, for clustering), and its error is moved onto the
columns not yet passed through the upper Cholesky factor of the dampened ``H⁻¹``
(``compress_rows``; the inner loop compiled, ``pass_columns``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from optimizers.quantization import (
    QuantizationConfig,
    code_range,
    round_to_grid,
    scale_and_zero_point,
)

COLUMN_BLOCK = 128  # columns updated lazily together (GPTQ's block size)
# Shares of a weight group's range its grid may span: clipping the largest weights buys finer
# steps for the rest (GPTQ's optional MSE grid search, here weighted by the inputs' energy).
SHRINKS = np.float32(1.0) - np.float32(0.03) * np.arange(20, dtype=np.float32)


def permute(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``a`` (G, R, C) with each group's columns in ``order`` (G, C)."""
    if len(order) == 1:
        return a[:, :, order[0]]
    return np.take_along_axis(a, np.broadcast_to(order[:, None, :], a.shape), axis=2)


# --- the column-by-column pass (GPTQ with SparseGPT's pruning) ------------------------------


@dataclass(frozen=True)
class Grid:
    """The rounding of one tensor in row form: each weight's scale and zero point (G, R, C),
    and the same as ``Quantized`` stores them (per channel, per block or per tensor)."""

    config: QuantizationConfig
    scale: np.ndarray
    zero_point: np.ndarray
    stored: tuple[np.ndarray, np.ndarray]

    @property
    def shared(self) -> bool:
        """Whether every column of a row has the same scale (per channel or per tensor)."""
        return self.scale.strides[2] == 0 and self.zero_point.strides[2] == 0

    def permuted(self, order: np.ndarray) -> Grid:
        """The grid with its columns in ``order`` (G, C)."""
        if self.shared:
            return self
        return replace(
            self, scale=permute(self.scale, order), zero_point=permute(self.zero_point, order)
        )

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Scales and zero points as the pass reads them, float32 (G, C, R), or (G, 1, R) when
        every column of a row has the same."""
        return tuple(  # type: ignore[return-value]
            np.array((a[:, :, :1] if self.shared else a).transpose(0, 2, 1), np.float32, order="C")
            for a in (self.scale, self.zero_point)
        )


@dataclass(frozen=True)
class Table:
    """The shared values of a clustered tensor in row form: ``values`` (G, R, K), each row's
    own (sorted, padded with ``inf``). ``nearest`` is what a weight that is not zero may go to:
    ``values``, or, to keep pruned zeros the only zeros (``Table.of(..., keep_zero=True)``),
    ``values`` without its zero entries where a row has others; ``zero`` (G, R) is each row's
    zero entry for the pruned weights (-1: none)."""

    values: np.ndarray
    nearest: np.ndarray
    zero: np.ndarray

    @staticmethod
    def of(values: np.ndarray, keep_zero: bool) -> Table:
        is_zero = values == 0
        zero = np.where(is_zero.any(axis=2), np.argmax(is_zero, axis=2), -1)
        values = np.array(values, np.float32, order="C")  # writable, as the pass takes it
        if not keep_zero:
            return Table(values, values, np.full(zero.shape, -1, np.int64))
        others = np.any(np.isfinite(values) & ~is_zero, axis=2, keepdims=True)
        return Table(values, np.where(is_zero & others, np.inf, values), zero.astype(np.int64))


def row_grid(
    rows: np.ndarray,
    config: QuantizationConfig,
    block: int | None,
    energy: np.ndarray | None = None,
    channels: int | None = None,
) -> Grid:
    """Scales per channel, per block of a row (block-major when stored), or one per tensor:
    from the weights' range, as plain rounding takes them, or, given the inputs' ``energy``
    (G, 1 or R, C: the diagonal of ``H``, times each row's importance), from the share of that
    range (``SHRINKS``) that rounds them with the least ``Σ H_cc |w − q|^2.4`` (GPTQ's grid
    search and its norm, weighted here by the inputs). (Blockwise scales taken from the
    updated weights as the pass reaches each block, as GPTQ's reference code does, measured
    2 dB worse in output SNR on the digits MLP at 4 bits.)

    Each row is a channel, or, given ``channels``, row k of the G·R shares channel
    k mod ``channels``'s scale, taken over all its rows: an EinsumDense kernel (c, heads, dim)
    has heads·dim rows and, as the plain pipeline and the export quantize it, dim channels."""
    g, r, c = rows.shape
    channels = channels or g * r
    w = np.ascontiguousarray(rows, dtype=np.float32)

    def grouped(a: np.ndarray) -> np.ndarray:
        """``a`` (G, R, C) with the weights of each scale along its last axis."""
        if config.granularity == "per-tensor":
            return a.reshape(1, -1)
        if block is not None:
            return a.reshape(g, r, c // block, block)
        return a.reshape(-1, channels, c).transpose(1, 0, 2).reshape(channels, -1)

    groups = grouped(w)
    lo, hi = groups.min(axis=-1), groups.max(axis=-1)
    half = block is not None  # blockwise scales are float16 values
    if energy is None:
        scale, zp = scale_and_zero_point(lo, hi, config, half)
    else:
        weight = grouped(np.broadcast_to(energy.astype(np.float32), w.shape))
        scale, zp = clipped(groups, weight, lo, hi, config, half)
    if config.granularity == "per-tensor":
        wide = (np.broadcast_to(a[:, None, None], w.shape) for a in (scale, zp))
        return Grid(config, *wide, stored=(scale, zp))
    if block is not None:
        wide = (np.repeat(a, block, axis=2) for a in (scale, zp))
        return Grid(config, *wide, stored=(scale[0].T.reshape(-1), zp[0].T.reshape(-1)))
    wide = (
        np.broadcast_to(np.tile(a, g * r // channels).reshape(g, r, 1), w.shape)
        for a in (scale, zp)
    )
    return Grid(config, *wide, stored=(scale, zp))


def clipped(
    w: np.ndarray,
    weight: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    config: QuantizationConfig,
    half: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point per group of ``w``'s last axis (range ``lo``..``hi``): the range
    shrunk by the one of ``SHRINKS`` that gives the least ``Σ weight·|w − q|^2.4`` (the first
    of equals, so the full range when clipping gains nothing)."""
    best: list[np.ndarray] = []
    for shrink in SHRINKS:
        scale, zp = scale_and_zero_point(lo * shrink, hi * shrink, config, half)
        _, q = round_to_grid(w, scale[..., None], zp[..., None], config)
        error = np.einsum("...c,...c->...", weight, np.abs(w - q) ** 2.4)
        if not best:
            best = [scale, zp, error]
            continue
        better = error < best[2]
        best = [
            np.where(better, new, old) for new, old in zip((scale, zp, error), best, strict=True)
        ]
    return best[0], best[1]


@njit(
    "void(f4[:, :, :], f4[:, :, :], b1[:, :, :], f4[:, :, :], f4[:, :, :], f4, f4, "
    "f4[:, :, :], f4[:, :, :], i8[:, :], f4[:, :, :], f4[:, :, :], f4[:, :, :])",
    nogil=True,
    cache=True,
)
def pass_columns(
    w, u, keep, scale, zero_point, qmin, qmax, table, nearest, zero, out, codes, errors
):
    """The columns of one block (G, b, R), one after another: each column's weights are zeroed
    where ``keep`` is False, rounded (on the grid ``scale``/``zero_point``, (G, b or 1, R), or to
    the nearest shared value of ``nearest``, (G, R, K), given as ``table``'s entry; pruned zeros
    to ``zero``; neither when both are empty), written to ``out`` and ``codes``, and their
    error moves the block's later columns through ``u``, the block of the factor. Compiled
    (numba, without the GIL): numpy's calls a column cost more than their arithmetic (a
    ResNet50 setting took 1.2x as long with them). Same float32 arithmetic as
    ``quantization.round_to_grid``."""
    groups, width, rows = w.shape
    grid, shared = scale.shape[1] > 0, table.shape[2] > 0
    for g in range(groups):
        for j in range(width):
            k = j if scale.shape[1] > 1 else 0
            for r in range(rows):
                x = w[g, j, r]
                q = x if keep[g, j, r] else np.float32(0.0)
                if grid:
                    s, z = scale[g, k, r], zero_point[g, k, r]
                    c = min(max(np.rint(q / s + z), qmin), qmax) + np.float32(0.0)
                    codes[g, j, r] = c
                    q = (c - z) * s
                elif shared:
                    best, gap = 0, np.float32(np.inf)
                    for e in range(nearest.shape[2]):
                        d = abs(q - nearest[g, r, e])
                        if d < gap:
                            best, gap = e, d
                    if q == 0 and zero[g, r] >= 0:
                        best = zero[g, r]
                    codes[g, j, r] = best
                    q = table[g, r, best]
                out[g, j, r] = q
                errors[g, j, r] = (x - q) / u[g, j, j]
            for later in range(j + 1, width):
                factor = u[g, j, later]
                for r in range(rows):
                    w[g, later, r] -= factor * errors[g, j, r]


def compress_rows(
    rows: np.ndarray,
    root: np.ndarray,
    zeros: int = 0,
    keep: np.ndarray | None = None,
    grid: Grid | Table | None = None,
    importance: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One pass over the columns of ``rows`` (G, R, C): prune ``zeros`` weights by OBS saliency
    (or keep exactly ``keep``, a mask), round the rest on ``grid`` (or to the nearest shared
    value of a clustered row's ``Table``), and move each column's error onto the columns after
    it through ``root`` (G, C, C), the upper Cholesky factor of the dampened ``H⁻¹``. A row's
    saliency is multiplied by its ``importance`` (G, R) if given (``LayerInputs.importance``).

    Returns (values (G, R, C) float32, codes or ``None``). ``rows`` is not modified. The
    pass runs in float32, as GPTQ's reference code does (twice as fast as float64).

    >>> w = np.array([[[1.0, 1.0]]]); root = np.linalg.cholesky(np.linalg.inv(
    ...     np.array([[2.0, 1.0], [1.0, 2.0]]))).T[None]
    >>> compress_rows(w, root, zeros=1)[0].round(3).tolist()  # the zeroed weight moves on
    [[[0.0, 1.5]]]
    """
    g, r, c = rows.shape
    # Columns as the rows of a (G, C, R) copy: each column's step reads and updates contiguous
    # memory (a column of a row-major (G, R, C) array is strided: the pass was 5x slower).
    w = rows.transpose(0, 2, 1).astype(np.float32, order="C")  # always a copy
    root = root.astype(np.float32, copy=False)
    out = np.zeros_like(w)
    codes = np.zeros_like(w) if grid is not None else np.zeros((g, c, 0), np.float32)
    none3, none2 = np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.int64)
    scale, zero_point, qmin, qmax = none3, none3, np.float32(0), np.float32(0)
    table = (none3, none3, none2)
    if isinstance(grid, Grid):
        scale, zero_point = grid.columns()
        qmin, qmax = (np.float32(v) for v in code_range(grid.config.bits, grid.config.mode))
    elif isinstance(grid, Table):
        table = (grid.values, grid.nearest, grid.zero)
    block = COLUMN_BLOCK
    done = 0  # columns passed, for the exact count of pruned weights
    pruned = 0
    for i1 in range(0, c, block):
        i2 = min(i1 + block, c)
        w1, u1 = w[:, i1:i2], root[:, i1:i2, i1:i2]
        if keep is not None:
            keep1 = keep[:, :, i1:i2].transpose(0, 2, 1)
        elif zeros:
            # SparseGPT's adaptive mask: this block's share of the exact total, by saliency.
            done += i2 - i1
            count = min(zeros, math.ceil(zeros * done / c - 1e-9)) - pruned
            diag = np.diagonal(u1, axis1=1, axis2=2)  # (G, b)
            saliency = w1.transpose(0, 2, 1) ** 2 / diag[:, None, :] ** 2
            if importance is not None:
                saliency *= importance[:, :, None]
            saliency = saliency.ravel()
            order = np.argsort(saliency, kind="stable")  # ties: the lower (row, column) first
            kept = np.ones(saliency.size, bool)
            kept[order[:count]] = False
            keep1 = kept.reshape(g, r, i2 - i1).transpose(0, 2, 1)
            pruned += count
        else:
            keep1 = np.ones(w1.shape, bool)
        errors = np.zeros_like(w1)
        step = scale if scale.shape[1] <= 1 else scale[:, i1:i2]
        shift = zero_point if zero_point.shape[1] <= 1 else zero_point[:, i1:i2]
        pass_columns(
            w1, u1, keep1, step, shift, qmin, qmax, *table, out[:, i1:i2], codes[:, i1:i2], errors
        )
        w[:, i2:] -= root[:, i1:i2, i2:].transpose(0, 2, 1) @ errors
    return out.transpose(0, 2, 1), None if grid is None else codes.transpose(0, 2, 1)
