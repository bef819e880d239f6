"""Data-aware pruning, clustering and rounding: each layer's error made up with its inputs.

Plain pruning and rounding treat every weight alone. Here each eligible layer's inputs on a few
hundred calibration samples (``optimizers.calibration``: their second moment ``H = XᵀX / n``,
gathered once per model) guide it. A setting then costs one pass over each kernel's input
columns:

* **GPTQ / OPTQ** (Frantar et al. 2022): round one input column, and spread its rounding error
  over the columns not yet rounded, through the upper Cholesky factor ``U`` of the dampened
  ``H⁻¹`` (``w_j -= (w_i − q_i) / U_ii · U_ij``), so that ``‖XW − XŴ‖`` stays small.
* **SparseGPT / OBS** (Frantar & Alistarh 2023; Hassibi & Stork 1993): the same pass zeros
  weights. Per block of columns, the weights with the smallest saliency ``w² / U_ii²`` are
  pruned (exactly ``ceil(s·n)`` in the tensor, ties to the lower index), and their error moves
  the rest. 2:4 pruning picks its 2 of every 4 inputs by the same saliency; global pruning
  keeps its magnitude mask (one threshold across tensors) and only moves the rest.
* **Bias correction** (Nagel et al. 2019): the mean output shift ``E[x]·(W − Ŵ)`` is added to
  the layer's bias, so each output channel keeps its float mean.
* **Clipping**: each scale may also span less than its weights' range (``SHRINKS``), chosen
  by the inputs' energy; the pass runs on both grids and keeps the better (``row_grid``).
* **Clustering** (GPTVQ's 1-D case, van Baalen et al. 2024): the pass gives each weight its
  nearest shared value instead of a grid level, then the shared values are refit to the
  layer's outputs (``cluster_tensor``, ``refit``).

Pruning and quantization run jointly (prune, then round the pruned weights, zeros stay zero).
Each tensor keeps the data-aware result only when its error ``tr((W − Ŵ) H (W − Ŵ)ᵀ)`` is not
larger than plain compression's, so it is never worse on the calibration data. Tensors without
statistics (``calibration`` says which layers have them) are compressed as without data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from optimizers import quantization
from optimizers.calibration import LayerInputs, Statistics
from optimizers.clustering import cluster_codes
from optimizers.levels import Coded, sorted_table
from optimizers.pipeline import (
    Known,
    OptimizationConfig,
    Techniques,
    TensorRef,
    TensorReport,
    global_pruning_masks,
    optimize_weights,
    report_tensor,
)
from optimizers.pruning import n_m_mask, target_zeros
from optimizers.quantization import (
    QuantizationConfig,
    Quantized,
    code_range,
    quantize_table,
    round_to_grid,
    scale_and_zero_point,
)
from optimizers.workers import POOL

COLUMN_BLOCK = 128  # columns updated lazily together (GPTQ's block size)
REFIT_STEPS = 4  # conjugate-gradient steps that refit a clustered tensor's shared values
# Shares of a weight group's range its grid may span: clipping the largest weights buys finer
# steps for the rest (GPTQ's optional MSE grid search, here weighted by the inputs' energy).
SHRINKS = np.float32(1.0) - np.float32(0.03) * np.arange(20, dtype=np.float32)


# --- kernels as rows x columns --------------------------------------------------------------


def kernel_axes(ndim: int, stats: LayerInputs) -> tuple[int, ...]:
    """The axes of a kernel that is not depthwise as rows then columns: ``stats.axes``, or the
    last axis (the output channels) then the others."""
    return stats.axes or (ndim - 1, *range(ndim - 1))


def as_rows(w: np.ndarray, stats: LayerInputs) -> np.ndarray:
    """``w`` as (G, R, C) float32 (a view when it can be): output channels by input columns,
    per group of ``stats``. A kernel (..., cin, cout) gives one group of cout rows by
    ``prod(...)·cin`` patch columns (a grouped convolution's G groups of cout / G rows); a
    depthwise kernel (..., cin, mult) gives cin groups of mult rows by ``prod(...)`` columns;
    an EinsumDense kernel one group of its output axes' entries by its contracted axes'
    (``LayerInputs.axes``)."""
    if stats.depthwise:
        taps = int(np.prod(w.shape[:-2]))
        rows = w.reshape(taps, w.shape[-2], w.shape[-1]).transpose(1, 2, 0)
    else:
        moved = w.transpose(kernel_axes(w.ndim, stats))
        rows = moved.reshape(stats.groups, -1, stats.hessian.shape[-1])
    return rows.astype(np.float32, copy=False)


def from_rows(rows: np.ndarray, shape: tuple[int, ...], stats: LayerInputs) -> np.ndarray:
    """The inverse of ``as_rows``."""
    if stats.depthwise:
        return rows.transpose(2, 0, 1).reshape(shape)
    axes = kernel_axes(len(shape), stats)
    return rows.reshape([shape[a] for a in axes]).transpose(np.argsort(axes))


def reconstruction_error(w: np.ndarray, w_hat: np.ndarray, stats: LayerInputs) -> float:
    """``‖XW − XŴ‖² / rows`` on the calibration data, from ``H`` alone."""
    d = as_rows(w, stats) - as_rows(w_hat, stats)
    return float(np.sum((d @ stats.hessian) * d, dtype=np.float64))


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
    (G, C), the diagonal of ``H``, from the share of that range (``SHRINKS``) that rounds them
    with the least ``Σ H_cc |w − q|^2.4`` (GPTQ's grid search and its norm, weighted here by
    the inputs). (Blockwise scales taken from the updated weights as the pass reaches each
    block, as GPTQ's reference code does, measured 2 dB worse in output SNR on the digits MLP
    at 4 bits.)

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
        weight = grouped(np.broadcast_to(energy[:, None, :].astype(np.float32), w.shape))
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
) -> tuple[np.ndarray, np.ndarray | None]:
    """One pass over the columns of ``rows`` (G, R, C): prune ``zeros`` weights by OBS saliency
    (or keep exactly ``keep``, a mask), round the rest on ``grid`` (or to the nearest shared
    value of a clustered row's ``Table``), and move each column's error onto the columns after
    it through ``root`` (G, C, C), the upper Cholesky factor of the dampened ``H⁻¹``.

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
            saliency = (w1.transpose(0, 2, 1) ** 2 / diag[:, None, :] ** 2).ravel()
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


# --- one tensor ----------------------------------------------------------------------------


def compress_tensor(
    w: np.ndarray,
    stats: LayerInputs,
    techniques: Techniques,
    channel_axes: tuple[int, ...],
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, Quantized | None, float]:
    """``w`` pruned and quantized with ``stats`` (not clustered: ``cluster_tensor``): the kernel,
    its ``Quantized`` when rounded, and its layer error (``reconstruction_error``), on the grid
    of the weights' range or the clipped one (``row_grid``), whichever leaves the smaller
    error. ``mask`` (True = kept) fixes which weights are zero (global pruning); otherwise the
    pruning config picks them. ``w`` is not modified."""
    p, q = techniques.pruning, techniques.quantization
    rows = as_rows(w, stats)
    order, back = stats.order, np.argsort(stats.order, axis=1)
    zeros, keep = 0, None
    if mask is not None:
        keep = permute(as_rows(mask, stats) > 0, order)
    elif p is not None and p.structure == "2:4":
        # The plain pattern (2 of every 4 inputs), chosen by saliency instead of magnitude.
        diag = permute(np.diagonal(stats.inverse_root, axis1=1, axis2=2)[:, None, :], back)
        saliency = from_rows(np.sqrt(rows**2 / diag**2), w.shape, stats)
        keep = permute(as_rows(n_m_mask(saliency), stats) > 0, order)
    elif p is not None:
        zeros = target_zeros(p.sparsity, w.size)

    ordered = permute(rows, order)

    def passed(grid: Grid | None) -> tuple[np.ndarray, Quantized | None]:
        values, codes = compress_rows(
            ordered,
            stats.inverse_root,
            zeros,
            keep,
            None if grid is None else grid.permuted(order),
        )
        kernel = from_rows(permute(values, back), w.shape, stats).astype(w.dtype)
        if grid is None or codes is None:
            return kernel, None
        kernel_codes = from_rows(permute(codes, back), w.shape, stats)
        code_dtype = np.int8 if grid.config.bits <= 8 else np.int16
        return kernel, Quantized(kernel_codes.astype(code_dtype), *grid.stored, kernel)

    def scored(grid: Grid | None) -> tuple[np.ndarray, Quantized | None, float]:
        kernel, rounded = passed(grid)
        return kernel, rounded, reconstruction_error(w, kernel, stats)

    if q is None:
        return scored(None)
    block = q.block_size if quantization.blocked(w.shape, channel_axes, q.block_size) else None
    channels = math.prod(w.shape[a] for a in channel_axes)
    full = row_grid(rows, q, block, channels=channels)
    energy = np.diagonal(stats.hessian, axis1=1, axis2=2)
    searched = row_grid(rows, q, block, energy, channels)
    found = [scored(full)]
    if not np.array_equal(searched.stored[0], full.stored[0]):
        # The weighted rounding error only estimates what the pass leaves: both are run.
        found.append(scored(searched))
    return min(found, key=lambda f: f[2])


def cluster_tensor(
    w: np.ndarray,
    stats: LayerInputs,
    techniques: Techniques,
    channel_axes: tuple[int, ...],
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, Coded, float]:
    """``w`` pruned, clustered and (if asked) quantized with ``stats``, with its codes and layer
    error (GPTVQ's 1-D case, van Baalen et al. 2024): the shared values start as plain
    clustering's of the data-aware pruned kernel; the pass then gives each weight its nearest
    shared value, column by column, moving the error onto the columns not yet passed; the
    shared values are refit to the layer's outputs (``refit``), then rounded to the grid.
    Zeros stay zero (``preserve_sparsity``)."""
    c = techniques.clustering
    assert c is not None
    pruned = w
    if techniques.pruning is not None:
        pruned = compress_tensor(w, stats, Techniques(techniques.pruning), channel_axes, mask)[0]
    start = cluster_codes(pruned, c, channel_axes)
    if techniques.grid is not None:
        start = quantize_table(start, techniques.grid)
    rows = as_rows(w, stats)
    g, r, _ = rows.shape
    # Each row's shared values: the tensor's, or its channel's (``refit``'s row k mod rows).
    shared = start.table[np.arange(g * r) % len(start.table)].reshape(g, r, -1)
    pruned_rows = as_rows(pruned, stats)
    keep = None
    if c.preserve_sparsity:  # the pass starts from ``w`` and zeros exactly what pruning did
        keep = permute(pruned_rows != 0, stats.order)
    begin = rows if c.preserve_sparsity else pruned_rows
    _, codes = compress_rows(
        permute(begin, stats.order),
        stats.inverse_root,
        keep=keep,
        grid=Table.of(shared, c.preserve_sparsity),
    )
    assert codes is not None
    codes = permute(codes, np.argsort(stats.order, axis=1)).astype(np.intp)
    fitted = refit(rows, codes, start.table, stats, c.preserve_sparsity)
    coded = sorted_table(Coded(from_rows(codes, w.shape, stats), fitted, start.channel_axes))
    if techniques.grid is not None:
        coded = quantize_table(coded, techniques.grid)
    return coded.values, coded, reconstruction_error(w, coded.values, stats)


def refit(
    rows: np.ndarray, codes: np.ndarray, table: np.ndarray, stats: LayerInputs, keep_zero: bool
) -> np.ndarray:
    """The shared values ``table`` (one row, or one per channel: row k of the G·R reads table
    row k mod its rows) that, with the weights' ``codes`` (G, R, C) fixed, minimise the layer's
    output error ``tr((W − Ŵ) H (W − Ŵ)ᵀ)``: its normal equations solved by ``REFIT_STEPS``
    conjugate-gradient steps from the current values (each step one product by ``H``). Zero
    entries stay zero with ``keep_zero``; unused entries stay."""
    g, r, _ = codes.shape
    width = table.shape[1]
    index = codes + width * (np.arange(g * r) % len(table)).reshape(g, r, 1)
    flat = index.ravel()
    n = table.size
    free = np.bincount(flat, minlength=n) > 0
    if keep_zero:
        free &= table.ravel() != 0
    hessian = stats.hessian

    def normal(v: np.ndarray) -> np.ndarray:  # the table's share of (values @ H), per entry
        y = v[index].astype(np.float32) @ hessian
        return np.where(free, np.bincount(flat, y.ravel(), minlength=n), 0.0)

    x = np.where(free, table.ravel(), 0.0)
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float64)
    target = (rows.astype(np.float32) @ hessian).ravel()
    residual = np.where(free, np.bincount(flat, target, minlength=n), 0.0) - normal(x)
    direction = residual.copy()
    rr = residual @ residual
    for _ in range(REFIT_STEPS):
        if rr <= 1e-30:
            break
        step = normal(direction)
        curvature = direction @ step
        if curvature <= 0:  # float rounding on a flat direction: nothing left to gain
            break
        alpha = rr / curvature
        x += alpha * direction
        residual -= alpha * step
        rr, before = residual @ residual, rr
        direction = residual + rr / before * direction
    out = np.where(free, x, table.ravel()).astype(table.dtype)
    return out.reshape(table.shape)


def bias_shift(w: np.ndarray, w_hat: np.ndarray, stats: LayerInputs) -> np.ndarray:
    """``E[x]·(W − Ŵ)`` per output channel: what to add to the bias to keep each output's
    float mean (Nagel et al. 2019)."""
    d = (as_rows(w, stats) - as_rows(w_hat, stats)).astype(np.float64)
    return np.einsum("grc,gc->gr", d, stats.mean.astype(np.float64)).reshape(-1)


def optimize(
    weights: Sequence[np.ndarray],
    refs: Sequence[TensorRef],
    config: OptimizationConfig,
    statistics: Statistics,
    known: Mapping[int, Known] | None = None,
) -> tuple[list[np.ndarray], list[TensorReport]]:
    """``pipeline.optimize_weights`` with the tensors that have ``statistics`` pruned and
    rounded data-aware, and their layers' biases corrected. Same return values.

    A tensor keeps the data-aware result when its reconstruction error on the calibration data
    is not larger than plain rounding's; the bias is corrected either way.
    """
    plan = {r.index: (r, config.for_layer(r.layer)) for r in refs}
    aware = {i: (r, t) for i, (r, t) in plan.items() if i in statistics and t.active}
    masks = global_pruning_masks(weights, plan)

    def one(i: int, r: TensorRef, t: Techniques) -> tuple[np.ndarray, Coded | None, float]:
        if t.clustering is not None:
            return cluster_tensor(weights[i], statistics[i], t, r.channel_axes, masks.get(i))
        kernel, q, error = compress_tensor(
            weights[i], statistics[i], t, r.channel_axes, masks.get(i)
        )
        coded = None if q is None else quantization.coded(q, t.quantization, r.channel_axes)
        return kernel, coded, error

    # Tensors are independent: side by side in the pool (numpy releases the GIL), while the
    # plain result each is compared with is made.
    jobs = {i: POOL.submit(one, i, r, t) for i, (r, t) in aware.items()}
    out, reports = optimize_weights(weights, refs, config, known)
    position = {report.index: k for k, report in enumerate(reports)}
    for i, job in jobs.items():
        kernel, coded, error = job.result()
        r, t = aware[i]
        stats = statistics[i]
        if error <= reconstruction_error(weights[i], out[i], stats):
            out[i] = kernel
            reports[position[i]] = report_tensor(
                i, r.path, r.layer, weights[i], kernel, t, r.channel_axes, coded
            )
        if stats.bias is not None:
            b = out[stats.bias]
            shift = bias_shift(weights[i], out[i], stats).reshape(b.shape)
            out[stats.bias] = (b + shift).astype(b.dtype)
    return out, reports
