"""Data-aware pruning, clustering and rounding: each layer's error made up with its inputs.

Plain pruning and rounding treat every weight alone. Here each eligible layer's inputs on a few
hundred calibration samples (``optimizers.calibration``: their second moment ``H = XᵀX / n``,
gathered once per model) guide it. A setting then costs one pass over each kernel's input
columns (``optimizers.columns``):

* **GPTQ / OPTQ** (Frantar et al. 2022): round one input column, and spread its rounding error
  over the columns not yet rounded, through the upper Cholesky factor ``U`` of the dampened
  ``H⁻¹`` (``w_j -= (w_i − q_i) / U_ii · U_ij``), so that ``‖XW − XŴ‖`` stays small.
* **SparseGPT / OBS** (Frantar & Alistarh 2023; Hassibi & Stork 1993): the same pass zeros
  weights. Per block of columns, the weights with the smallest saliency ``w² / U_ii²`` are
  pruned (exactly ``ceil(s·n)`` in the tensor, ties to the lower index), and their error moves
  the rest. 2:4 pruning picks its 2 of every 4 inputs by the same saliency; global pruning
  keeps its magnitude mask (one threshold across tensors) and only moves the rest.
* **BatchNormalization**: a layer read by one multiplies each output channel by its own factor
  ``γ / √(var + ε)``; an error in that channel reaches the next layer multiplied by it too, so
  each row's error and saliency are weighted by its square (``LayerInputs.importance``), as if
  the normalization were folded into the kernel first (Nagel et al. 2021; OBC folds it too).
* **Bias correction** (Nagel et al. 2019): the mean output shift ``E[x]·(W − Ŵ)`` is added to
  the layer's bias, so each output channel keeps its float mean.
* **Clipping**: each scale may also span less than its weights' range (``columns.SHRINKS``), chosen
  by the inputs' energy; the pass runs on both grids and keeps the better (``row_grid``).
* **Clustering** (GPTVQ's 1-D case, van Baalen et al. 2024): the pass gives each weight its
  nearest shared value instead of a grid level, then the shared values are refit to the
  layer's outputs (``cluster_tensor``, ``refit``).

Pruning and quantization run jointly (prune, then round the pruned weights, zeros stay zero).
Each tensor keeps the data-aware result only when its error ``tr((W − Ŵ) H (W − Ŵ)ᵀ)`` (rows
weighted by their importance) is not larger than plain compression's, so it is never worse on
the calibration data. Tensors without statistics (``calibration`` says which layers have them)
are compressed as without data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from optimizers import quantization
from optimizers.calibration import LayerInputs, Statistics
from optimizers.clustering import cluster_codes
from optimizers.columns import Grid, Table, compress_rows, permute, row_grid
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
    Quantized,
    quantize_table,
)
from optimizers.workers import POOL

REFIT_STEPS = 4  # conjugate-gradient steps that refit a clustered tensor's shared values


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
    """``‖XW − XŴ‖² / rows`` on the calibration data, from ``H`` alone, each output row
    weighted by its ``importance`` (what the next layer reads of it)."""
    d = as_rows(w, stats) - as_rows(w_hat, stats)
    per_row = np.sum((d @ stats.hessian) * d, axis=2, dtype=np.float64)
    if stats.importance is not None:
        per_row *= stats.importance
    return float(per_row.sum())


# --- one tensor ----------------------------------------------------------------------------


def compress_tensor(
    w: np.ndarray,
    stats: LayerInputs,
    techniques: Techniques,
    channel_axes: tuple[int, ...],
    mask: np.ndarray | None = None,
    input_axis: int | None = None,
) -> tuple[np.ndarray, Quantized | None, float]:
    """``w`` pruned and quantized with ``stats`` (not clustered: ``cluster_tensor``): the kernel,
    its ``Quantized`` when rounded, and its layer error (``reconstruction_error``), on the grid
    of the weights' range or the clipped one (``row_grid``), whichever leaves the smaller
    error. ``mask`` (True = kept) fixes which weights are zero (global pruning); otherwise the
    pruning config picks them (2:4 along ``input_axis``, ``pipeline.TensorRef``'s). ``w`` is
    not modified."""
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
        keep = permute(as_rows(n_m_mask(saliency, axis=input_axis), stats) > 0, order)
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
            stats.importance,
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
    energy = np.diagonal(stats.hessian, axis1=1, axis2=2)[:, None, :]
    if stats.importance is not None:  # one scale over several rows: each weighs its own
        energy = energy * stats.importance[:, :, None]
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
    input_axis: int | None = None,
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
        only = Techniques(techniques.pruning)
        pruned = compress_tensor(w, stats, only, channel_axes, mask, input_axis)[0]
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
    output error ``tr((W − Ŵ) H (W − Ŵ)ᵀ)`` (rows weighted by their ``importance``): its normal
    equations solved by ``REFIT_STEPS`` conjugate-gradient steps from the current values (each
    step one product by ``H``). Zero entries stay zero with ``keep_zero``; unused entries stay."""
    g, r, _ = codes.shape
    width = table.shape[1]
    index = codes + width * (np.arange(g * r) % len(table)).reshape(g, r, 1)
    flat = index.ravel()
    n = table.size
    free = np.bincount(flat, minlength=n) > 0
    if keep_zero:
        free &= table.ravel() != 0
    hessian = stats.hessian
    # Rows weigh by their importance where they share table rows; a row with its own values
    # has the same best values whatever its weight, and weights only slow the steps there.
    weight = 1.0
    if stats.importance is not None and len(table) < g * r:
        weight = stats.importance[:, :, None]

    def normal(v: np.ndarray) -> np.ndarray:  # the table's share of (values @ H), per entry
        y = (v[index].astype(np.float32) @ hessian) * weight
        return np.where(free, np.bincount(flat, y.ravel(), minlength=n), 0.0)

    x = np.where(free, table.ravel(), 0.0)
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float64)
    target = ((rows.astype(np.float32) @ hessian) * weight).ravel()
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
        where = (r.channel_axes, masks.get(i), r.input_axis)
        if t.clustering is not None:
            return cluster_tensor(weights[i], statistics[i], t, *where)
        kernel, q, error = compress_tensor(weights[i], statistics[i], t, *where)
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
