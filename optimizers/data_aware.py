"""Data-aware pruning and rounding: each layer's error corrected with the inputs it really sees.

Plain pruning and rounding treat every weight alone. Here a few hundred calibration inputs give
each eligible layer the second moment of its inputs, ``H = XᵀX / n`` (im2col patches for a
convolution, one ``H`` per channel for a depthwise kernel), gathered once per model
(``gather``). A setting then costs one pass over each kernel's inputs, column by column:

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

Pruning and quantization run jointly (prune, then round the pruned weights, zeros stay zero).
A clustered tensor is pruned this way and then clustered and quantized as without data. Each
tensor keeps the data-aware result only when its error ``tr((W − Ŵ) H (W − Ŵ)ᵀ)`` is not larger
than plain rounding's, so it is never worse on the calibration data.

At most ``CALIBRATION_SAMPLES`` inputs are read, in one run of the model; a layer takes at most
``ROWS_PER_BATCH`` input rows from a batch (a regular grid of a feature map's positions).

Layers with data: Dense, Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D and the input kernels
of recurrent layers, in nested models too. Data-free (plain, as without calibration): Embedding
tables, recurrent kernels, EinsumDense, Conv3D, transposed and grouped convolutions, and
layers with several inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from optimizers import evaluate, quantization
from optimizers.pipeline import (
    OptimizationConfig,
    Techniques,
    TensorRef,
    TensorReport,
    global_pruning_masks,
    optimize_weights,
    report_tensor,
)
from optimizers.pruning import n_m_mask, target_zeros
from optimizers.quantization import QuantizationConfig, Quantized, code_range, scale_and_zero_point
from optimizers.workers import POOL

if TYPE_CHECKING:
    import keras

CALIBRATION_SAMPLES = 512  # inputs used at most: GPTQ's 128 already suffice on large models
DAMPING = 0.01  # of H's mean diagonal, added to it before inverting (GPTQ's percdamp)
COLUMN_BLOCK = 128  # columns updated lazily together (GPTQ's block size)
# Input rows a layer takes from one batch: a 112x112 map of 8 images has 100,352 positions,
# far more than an H of a few hundred columns needs; a regular grid of them is kept.
ROWS_PER_BATCH = 4096
CONV_LAYERS = frozenset({"Conv1D", "Conv2D"})
DEPTHWISE_LAYERS = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
SEPARABLE_LAYERS = frozenset({"SeparableConv1D", "SeparableConv2D"})
RECURRENT_LAYERS = frozenset({"LSTM", "GRU", "SimpleRNN"})


@dataclass(frozen=True)
class LayerInputs:
    """What one kernel's inputs look like on the calibration data, as ``G`` groups of ``C``
    input columns (``G`` = channels for a depthwise kernel, else 1).

    ``hessian`` (G, C, C) is ``XᵀX / rows``; ``order`` (G, C) the columns by decreasing
    ``H_ii`` (GPTQ's act-order: the inputs with the most energy are rounded first, while the
    most columns remain to take their error); ``inverse_root`` (G, C, C) the upper Cholesky
    factor of the dampened inverse of ``H`` in that order; ``mean`` (G, C) the mean input;
    ``bias`` the index of the layer's bias in the model's weights (``None``: no bias to
    correct)."""

    hessian: np.ndarray
    order: np.ndarray
    inverse_root: np.ndarray
    mean: np.ndarray
    rows: int
    depthwise: bool
    bias: int | None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.hessian, self.order, self.inverse_root, self.mean))


Statistics = Mapping[int, LayerInputs]  # by tensor index in ``model.get_weights()``


# --- kernels as rows x columns --------------------------------------------------------------


def as_rows(w: np.ndarray, depthwise: bool) -> np.ndarray:
    """``w`` as (G, R, C) float64: output channels by input columns, per group. A kernel
    (..., cin, cout) gives one group of cout rows by ``prod(...)·cin`` patch columns; a
    depthwise kernel (..., cin, mult) gives cin groups of mult rows by ``prod(...)`` columns."""
    if depthwise:
        taps = int(np.prod(w.shape[:-2]))
        return w.reshape(taps, w.shape[-2], w.shape[-1]).transpose(1, 2, 0).astype(np.float64)
    return w.reshape(-1, w.shape[-1]).T[None].astype(np.float64)


def from_rows(rows: np.ndarray, shape: tuple[int, ...], depthwise: bool) -> np.ndarray:
    """The inverse of ``as_rows``."""
    if depthwise:
        return rows.transpose(2, 0, 1).reshape(shape)
    return rows[0].T.reshape(shape)


def reconstruction_error(w: np.ndarray, w_hat: np.ndarray, stats: LayerInputs) -> float:
    """``‖XW − XŴ‖² / rows`` on the calibration data, from ``H`` alone."""
    d = (as_rows(w, stats.depthwise) - as_rows(w_hat, stats.depthwise)).astype(np.float32)
    return float(np.sum((d @ stats.hessian) * d, dtype=np.float64))


# --- the column-by-column pass (GPTQ with SparseGPT's pruning) ------------------------------


@dataclass(frozen=True)
class Grid:
    """The rounding of one tensor in row form: each weight's scale and zero point (G, R, C),
    and the same as ``Quantized`` stores them (per channel, per block or per tensor)."""

    config: QuantizationConfig
    scale: np.ndarray
    zero_point: np.ndarray
    stored: tuple[np.ndarray, np.ndarray]

    def permuted(self, order: np.ndarray) -> Grid:
        """The grid with its columns in ``order`` (G, C)."""
        index = np.broadcast_to(order[:, None, :], self.scale.shape)
        scale, zp = (np.take_along_axis(a, index, axis=2) for a in (self.scale, self.zero_point))
        return replace(self, scale=scale, zero_point=zp)


def row_grid(rows: np.ndarray, config: QuantizationConfig, block: int | None) -> Grid:
    """Scales from the weights' range before the pass, as plain rounding takes them: per row
    (per channel), per block of a row (block-major when stored), or one per tensor.
    (Blockwise scales taken from the updated weights as the pass reaches each block, as
    GPTQ's reference code does, measured 2 dB worse in output SNR on the digits MLP at 4
    bits.)"""
    g, r, c = rows.shape
    w = rows.astype(np.float32)
    if config.granularity == "per-tensor":
        scale, zp = scale_and_zero_point(w.min().reshape(1), w.max().reshape(1), config)
        wide = (np.broadcast_to(a[:, None, None], w.shape) for a in (scale, zp))
        return Grid(config, *wide, stored=(scale, zp))
    if block is not None:
        blocks = w.reshape(g, r, c // block, block)
        scale, zp = scale_and_zero_point(blocks.min(axis=3), blocks.max(axis=3), config, half=True)
        wide = (np.repeat(a, block, axis=2) for a in (scale, zp))
        return Grid(config, *wide, stored=(scale[0].T.reshape(-1), zp[0].T.reshape(-1)))
    scale, zp = scale_and_zero_point(w.min(axis=2), w.max(axis=2), config)
    wide = (np.broadcast_to(a[:, :, None], w.shape) for a in (scale, zp))
    return Grid(config, *wide, stored=(scale.reshape(-1), zp.reshape(-1)))


def round_to(
    w: np.ndarray, scale: np.ndarray, zp: np.ndarray, config: QuantizationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(codes, values) of ``w`` on the grid, with ``quantize_columns``' float32 arithmetic."""
    qmin, qmax = code_range(config.bits, config.mode)
    zpf = zp.astype(np.float32)
    codes = np.clip(np.rint(w.astype(np.float32, copy=False) / scale + zpf), qmin, qmax) + 0.0
    return codes, ((codes - zpf) * scale).astype(np.float32, copy=False)


def compress_rows(
    rows: np.ndarray,
    root: np.ndarray,
    zeros: int = 0,
    keep: np.ndarray | None = None,
    grid: Grid | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One pass over the columns of ``rows`` (G, R, C): prune ``zeros`` weights by OBS saliency
    (or keep exactly ``keep``, a mask), round the rest on ``grid``, and move each column's
    error onto the columns after it through ``root`` (G, C, C), the upper Cholesky factor of
    the dampened ``H⁻¹``.

    Returns (values (G, R, C) float32, codes or ``None``). ``rows`` is not modified. The
    pass runs in float32, as GPTQ's reference code does (twice as fast as float64).

    >>> w = np.array([[[1.0, 1.0]]]); root = np.linalg.cholesky(np.linalg.inv(
    ...     np.array([[2.0, 1.0], [1.0, 2.0]]))).T[None]
    >>> compress_rows(w, root, zeros=1)[0].round(3).tolist()  # the zeroed weight moves on
    [[[0.0, 1.5]]]
    """
    g, r, c = rows.shape
    w = rows.astype(np.float32)  # a copy
    root = root.astype(np.float32, copy=False)
    out = np.zeros_like(w)
    codes = None if grid is None else np.zeros(w.shape, np.float32)
    block = COLUMN_BLOCK
    done = 0  # columns passed, for the exact count of pruned weights
    pruned = 0
    for i1 in range(0, c, block):
        i2 = min(i1 + block, c)
        w1, u1 = w[:, :, i1:i2], root[:, i1:i2, i1:i2]
        diag = np.diagonal(u1, axis1=1, axis2=2)  # (G, b)
        if keep is not None:
            keep1 = keep[:, :, i1:i2]
        elif zeros:
            # SparseGPT's adaptive mask: this block's share of the exact total, by saliency.
            done += i2 - i1
            count = min(zeros, math.ceil(zeros * done / c - 1e-9)) - pruned
            saliency = (w1**2 / diag[:, None, :] ** 2).ravel()
            order = np.argsort(saliency, kind="stable")  # ties: the lower index first
            keep1 = np.ones(saliency.size, bool)
            keep1[order[:count]] = False
            keep1 = keep1.reshape(w1.shape)
            pruned += count
        else:
            keep1 = None
        errors = np.zeros_like(w1)
        for j in range(i2 - i1):
            col = w1[:, :, j]
            q = col if keep1 is None else np.where(keep1[:, :, j], col, 0.0)
            if grid is not None:
                scale, zp = grid.scale[:, :, i1 + j], grid.zero_point[:, :, i1 + j]
                code, value = round_to(q, scale, zp, grid.config)
                codes[:, :, i1 + j] = code  # type: ignore[index]
                q = value
            out[:, :, i1 + j] = q
            err = (col - q) / diag[:, None, j]
            w1[:, :, j:] -= err[:, :, None] * u1[:, None, j, j:]
            errors[:, :, j] = err
        w[:, :, i2:] -= errors @ root[:, i1:i2, i2:]
    return out, codes


def lower_inverse(lower: np.ndarray) -> np.ndarray:
    """Inverses of lower-triangular matrices (G, n, n), by halves: ``[[A, 0], [C, D]]⁻¹ =
    [[A⁻¹, 0], [−D⁻¹ C A⁻¹, D⁻¹]]``, so the work is matrix products (4x faster than a general
    inverse at n = 4608, a ResNet50 3x3 convolution's inputs)."""
    n = lower.shape[-1]
    if n <= 512:
        return np.linalg.inv(lower)
    k = n // 2
    a, d = lower_inverse(lower[:, :k, :k]), lower_inverse(lower[:, k:, k:])
    out = np.zeros_like(lower)
    out[:, :k, :k], out[:, k:, k:] = a, d
    out[:, k:, :k] = -(d @ (lower[:, k:, :k] @ a))
    return out


def inverse_root(hessian: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """Upper Cholesky factors of ``(H + λI)⁻¹`` per group, λ = ``damping`` × mean diagonal
    (raised tenfold until positive definite). Inputs that were always zero get ``H_ii = 1``:
    their weights round alone and touch no other."""
    h = hessian.astype(np.float64)
    idx = np.arange(h.shape[-1])
    dead = h[:, idx, idx] == 0
    h[:, idx, idx] = np.where(dead, 1.0, h[:, idx, idx])
    mean_diag = h[:, idx, idx].mean(axis=1)[:, None]
    for attempt in range(6):
        damped = h.copy()
        damped[:, idx, idx] += damping * 10**attempt * mean_diag
        try:
            # With J the reversal, J H J = L Lᵀ gives H⁻¹ = Uᵀ U for U = J L⁻¹ J, upper
            # triangular with a positive diagonal: the factor, from one Cholesky and a solve.
            lower = np.linalg.cholesky(damped[:, ::-1, ::-1])
            return lower_inverse(lower)[:, ::-1, ::-1].copy()
        except np.linalg.LinAlgError:
            continue
    raise ValueError("the calibration inputs of a layer give no usable second moment")


# --- one tensor ----------------------------------------------------------------------------


def compress_tensor(
    w: np.ndarray,
    stats: LayerInputs,
    techniques: Techniques,
    channel_axes: tuple[int, ...],
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, Quantized | None]:
    """``w`` pruned (and, unless clustered, quantized) with ``stats``: the kernel and, when
    rounded, its ``Quantized`` on the same grid plain rounding would use. ``mask`` (True =
    kept) fixes which weights are zero (global pruning); otherwise the pruning config picks
    them. ``w`` is not modified."""
    p, q = techniques.pruning, None if techniques.clustering else techniques.quantization
    rows = as_rows(w, stats.depthwise)
    order = np.broadcast_to(stats.order[:, None, :], rows.shape)
    back = np.broadcast_to(np.argsort(stats.order, axis=1)[:, None, :], rows.shape)

    def permute(a: np.ndarray, index: np.ndarray = order) -> np.ndarray:
        return np.take_along_axis(a, index, axis=2)

    zeros, keep = 0, None
    if mask is not None:
        keep = permute(as_rows(mask, stats.depthwise) > 0)
    elif p is not None and p.structure == "2:4":
        # The plain pattern (2 of every 4 inputs), chosen by saliency instead of magnitude.
        diag = permute(np.diagonal(stats.inverse_root, axis1=1, axis2=2)[:, None, :], back)
        saliency = from_rows(np.sqrt(rows**2 / diag**2), w.shape, stats.depthwise)
        keep = permute(as_rows(n_m_mask(saliency), stats.depthwise) > 0)
    elif p is not None:
        zeros = target_zeros(p.sparsity, w.size)
    grid = None
    if q is not None:
        blocked = quantization.blocked(w.shape, channel_axes, q.block_size)
        grid = row_grid(rows, q, q.block_size if blocked else None)
    values, codes = compress_rows(
        permute(rows),
        stats.inverse_root,
        zeros,
        keep,
        None if grid is None else grid.permuted(stats.order),
    )
    kernel = from_rows(permute(values, back), w.shape, stats.depthwise).astype(w.dtype)
    if grid is None or codes is None:
        return kernel, None
    kernel_codes = from_rows(permute(codes, back), w.shape, stats.depthwise)
    code_dtype = np.int8 if grid.config.bits <= 8 else np.int16
    return kernel, Quantized(kernel_codes.astype(code_dtype), *grid.stored, kernel)


def bias_shift(w: np.ndarray, w_hat: np.ndarray, stats: LayerInputs) -> np.ndarray:
    """``E[x]·(W − Ŵ)`` per output channel: what to add to the bias to keep each output's
    float mean (Nagel et al. 2019)."""
    d = as_rows(w, stats.depthwise) - as_rows(w_hat, stats.depthwise)
    return np.einsum("grc,gc->gr", d, stats.mean.astype(np.float64)).reshape(-1)


def optimize(
    weights: Sequence[np.ndarray],
    refs: Sequence[TensorRef],
    config: OptimizationConfig,
    statistics: Statistics,
    magnitudes: Mapping[int, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[TensorReport]]:
    """``pipeline.optimize_weights`` with the tensors that have ``statistics`` pruned and
    rounded data-aware, and their layers' biases corrected. Same return values.

    A tensor keeps the data-aware result when its reconstruction error on the calibration data
    is not larger than plain rounding's; the bias is corrected either way.
    """
    plan = {r.index: (r, config.for_layer(r.layer)) for r in refs}
    aware = {
        i: (r, t)
        for i, (r, t) in plan.items()
        if i in statistics
        and (t.pruning is not None or (t.quantization is not None and t.clustering is None))
    }
    masks = global_pruning_masks(weights, plan)
    # Tensors are independent: side by side in the pool (numpy releases the GIL).
    jobs = {
        i: POOL.submit(compress_tensor, weights[i], statistics[i], t, r.channel_axes, masks.get(i))
        for i, (r, t) in aware.items()
    }
    found = {i: job.result() for i, job in jobs.items()}
    # Clustered tensors: pruned here, then clustered and quantized as without data (pruning
    # them again keeps exactly these zeros, the smallest magnitudes).
    given = list(weights)
    for i, (kernel, q) in found.items():
        if q is None and plan[i][1].clustering is not None:
            given[i] = kernel
    kept = {i: m for i, m in (magnitudes or {}).items() if given[i] is weights[i]}
    out, reports = optimize_weights(given, refs, config, kept)
    position = {report.index: k for k, report in enumerate(reports)}
    for i, (kernel, q) in found.items():
        r, t = aware[i]
        stats = statistics[i]
        if plan[i][1].clustering is None and reconstruction_error(
            weights[i], kernel, stats
        ) <= reconstruction_error(weights[i], out[i], stats):
            coded = None if q is None else quantization.coded(q, t.quantization, r.channel_axes)
            out[i] = kernel
            reports[position[i]] = report_tensor(
                i, r.path, r.layer, weights[i], kernel, t, r.channel_axes, coded
            )
        if stats.bias is not None:
            b = out[stats.bias]
            out[stats.bias] = (b + bias_shift(weights[i], out[i], stats)).astype(b.dtype)
    return out, reports


# --- gathering the statistics ----------------------------------------------------------------


def spread(n: int, positions: int) -> int:
    """The step that keeps at most ``ROWS_PER_BATCH`` of ``n`` images x ``positions`` rows,
    on a regular grid of positions (per axis, so its square for two axes)."""
    return max(1, math.ceil(math.sqrt(n * positions / ROWS_PER_BATCH)))


def patches(layer: Any, x: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """The im2col rows of a convolution's input ``x`` (N, ..., cin): one row per output
    position, ``prod(kernel_size)·cin`` long in the kernel's (..., cin) order; or, when
    ``per_channel``, (cin, taps, rows) for a depthwise kernel. Padding, strides and dilation
    are the layer's (``same`` pads as TensorFlow does: the extra one after). A large batch
    keeps a regular grid of its output positions (``spread``)."""
    size = tuple(layer.kernel_size)
    strides = tuple(layer.strides)
    dilation = tuple(layer.dilation_rate)
    padding = layer.padding
    if len(size) == 1:  # a 1-D convolution is a 2-D one of height 1
        if padding == "causal":
            x = np.pad(x, ((0, 0), ((size[0] - 1) * dilation[0], 0), (0, 0)))
            padding = "valid"
        x, size, strides, dilation = x[:, None], (1, *size), (1, *strides), (1, *dilation)
    if size == (1, 1) and strides == (1, 1) and not per_channel:
        step = spread(x.shape[0], x.shape[1] * x.shape[2])
        return x[:, ::step, ::step].reshape(-1, x.shape[-1])
    spans = [(k - 1) * d + 1 for k, d in zip(size, dilation, strict=True)]
    if padding == "same":
        outs = [-(-n // s) for n, s in zip(x.shape[1:3], strides, strict=True)]
        pads = [
            max((o - 1) * s + k - n, 0)
            for o, s, k, n in zip(outs, strides, spans, x.shape[1:3], strict=True)
        ]
        x = np.pad(x, ((0, 0), *((p // 2, p - p // 2) for p in pads), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=(1, 2))
    # (N, oh, ow, cin, kh, kw) at the strides and dilation, then (kh, kw, cin) per row.
    windows = windows[:, :: strides[0], :: strides[1], :, :: dilation[0], :: dilation[1]]
    step = spread(x.shape[0], windows.shape[1] * windows.shape[2])
    windows = windows[:, ::step, ::step]
    taps = size[0] * size[1]
    if per_channel:  # one copy, straight into the layout the per-channel products read
        return windows.transpose(3, 4, 5, 0, 1, 2).reshape(x.shape[-1], taps, -1)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, taps * x.shape[-1])


@dataclass
class Accumulator:
    """Running sums of one kernel's inputs (float64), made into ``LayerInputs`` at the end."""

    depthwise: bool
    bias: int | None
    square: np.ndarray | None = None
    total: np.ndarray | None = None
    rows: int = 0

    def add(self, x: np.ndarray) -> None:
        """``x``: (rows, C), or (cin, taps, rows) patches of a depthwise kernel."""
        x = x.astype(np.float32, copy=False)
        if self.depthwise:  # one BLAS product per channel
            square = x @ x.transpose(0, 2, 1)
            total = x.sum(axis=2, dtype=np.float64)
        else:
            square = (x.T @ x)[None]
            total = x.sum(axis=0, dtype=np.float64)[None]
        self.square = square.astype(np.float64) + (0 if self.square is None else self.square)
        self.total = total + (0 if self.total is None else self.total)
        self.rows += x.shape[-1] if self.depthwise else x.shape[0]

    def finish(self) -> LayerInputs:
        assert self.square is not None and self.total is not None
        hessian = self.square / self.rows
        diag = np.diagonal(hessian, axis1=1, axis2=2)
        order = np.argsort(-diag, axis=1, kind="stable")
        index = order[:, :, None]
        ordered = np.take_along_axis(np.take_along_axis(hessian, index, 1), order[:, None], 2)
        return LayerInputs(
            hessian.astype(np.float32),
            order,
            inverse_root(ordered).astype(np.float32),
            (self.total / self.rows).astype(np.float32),
            self.rows,
            self.depthwise,
            self.bias,
        )


@dataclass
class Tap:
    """One leaf layer whose input the gathering reads, and what it feeds."""

    layer: Any
    kernels: dict[str, Accumulator]  # by weight name: kernel, depthwise_kernel, ...


def layer_input(layer: Any) -> Any | None:
    """The symbolic input of a layer with one input, in its model's graph (of its first call:
    a layer shared by several calls is calibrated on the first); ``None`` otherwise."""
    if not layer._inbound_nodes:
        return None
    tensors = layer._inbound_nodes[0].input_tensors
    return tensors[0] if len(tensors) == 1 else None


def taps_of(model: Any, refs: Sequence[TensorRef], weight_index: Mapping[int, int]) -> list[Any]:
    """The layers of ``model`` (one level) whose inputs give statistics: leaf ``Tap``s, and
    nested models as ``(model, taps)`` pairs."""
    by_id = {r.index: r for r in refs}
    found: list[Any] = []
    for layer in model.layers:
        if layer_input(layer) is None:
            continue
        kind = type(layer).__name__
        if hasattr(layer, "layers") and layer.layers:
            inner = taps_of(layer, refs, weight_index)
            if inner:
                found.append((layer, inner))
            continue
        if kind in CONV_LAYERS | DEPTHWISE_LAYERS | SEPARABLE_LAYERS and (
            getattr(layer, "groups", 1) != 1 or layer.data_format != "channels_last"
        ):
            continue
        if kind not in {"Dense"} | CONV_LAYERS | DEPTHWISE_LAYERS | SEPARABLE_LAYERS | (
            RECURRENT_LAYERS
        ):
            continue
        bias = getattr(layer, "bias", None)
        bias_index = None if bias is None else weight_index.get(id(bias))
        kernels = {}
        for v in layer.weights:
            i = weight_index.get(id(v))
            if i is None or i not in by_id or v.name == "recurrent_kernel":
                continue
            depthwise = v.name == "depthwise_kernel" or kind in DEPTHWISE_LAYERS
            own_bias = None if kind in SEPARABLE_LAYERS and depthwise else bias_index
            if kind in RECURRENT_LAYERS:
                own_bias = None  # the bias also serves the recurrent kernel
            kernels[v.name] = Accumulator(depthwise, own_bias)
        if kernels:
            found.append(Tap(layer, kernels))
    return found


def feed(
    taps: Sequence[Any],
    model: Any,
    x: np.ndarray,
    extractors: dict[int, Any],
    real: int | None = None,
) -> None:
    """Run one batch ``x`` through ``model``'s extractor and add each tap's inputs, of the
    first ``real`` samples (the rest fill the batch)."""
    import keras

    key = id(model)
    if key not in extractors:
        outputs = [layer_input(t.layer if isinstance(t, Tap) else t[0]) for t in taps]
        extractors[key] = keras.Model(model.inputs, outputs)
    found = extractors[key].predict_on_batch([x])  # compiled once: twice as fast as a call
    found = found if isinstance(found, list | tuple) else [found]
    for tap, inputs in zip(taps, found, strict=True):
        inputs = keras.ops.convert_to_numpy(inputs)[:real]
        if not isinstance(tap, Tap):
            feed(tap[1], tap[0], inputs, extractors)  # already the real samples
            continue
        layer, kind = tap.layer, type(tap.layer).__name__
        if kind == "Dense" or kind in RECURRENT_LAYERS:
            flat = inputs.reshape(-1, inputs.shape[-1])
            tap.kernels["kernel"].add(flat[:: spread(1, len(flat)) ** 2])
            continue
        if kind in CONV_LAYERS:
            tap.kernels["kernel"].add(patches(layer, inputs))
            continue
        rows = patches(layer, inputs, per_channel=True)  # (cin, taps, rows)
        name = "kernel" if kind in DEPTHWISE_LAYERS else "depthwise_kernel"
        if name in tap.kernels:
            tap.kernels[name].add(rows)
        if "pointwise_kernel" in tap.kernels:  # its input: the float depthwise output
            dw = keras.ops.convert_to_numpy(layer.depthwise_kernel).astype(np.float32)
            cin, mult = dw.shape[-2], dw.shape[-1]
            dw = dw.reshape(-1, cin, mult)
            mid = np.einsum("ckn,kcm->ncm", rows, dw)
            tap.kernels["pointwise_kernel"].add(mid.reshape(-1, cin * mult))


def gather(
    model: keras.Model,
    refs: Sequence[TensorRef],
    x: np.ndarray,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[int, LayerInputs]:
    """Each data-aware tensor's ``LayerInputs`` from calibration inputs ``x`` (at most
    ``CALIBRATION_SAMPLES`` of them), by tensor index. The model runs once over ``x``, in
    batches; ``on_batch(done, total)`` follows them.

    >>> stats = gather(model, eligible_tensors(model), x_train)  # doctest: +SKIP
    """
    x = np.asarray(x)[:CALIBRATION_SAMPLES]
    if len(x) == 0:
        raise ValueError("the calibration data holds no samples")
    weight_index = {id(v): i for i, v in enumerate(model.weights)}
    taps = taps_of(model, refs, weight_index)
    if not taps:
        return {}
    extractors: dict[int, Any] = {}
    # Half an evaluation batch: every layer's inputs of a batch are held at once.
    batch_size = batch_size or max(1, evaluate.batch_size(x) // 2)
    total = -(-len(x) // batch_size)
    for k, start in enumerate(range(0, len(x), batch_size)):
        part = x[start : start + batch_size]
        real = len(part)
        if 0 < start and real < batch_size:  # a full batch, so the model is not traced again
            part = np.concatenate([part, x[: batch_size - real]])
        feed(taps, model, part, extractors, real)
        if on_batch is not None:
            on_batch(k + 1, total)
    found: dict[int, LayerInputs] = {}

    def collect(items: Sequence[Any]) -> None:
        for tap in items:
            if not isinstance(tap, Tap):
                collect(tap[1])
                continue
            for v in tap.layer.weights:
                if v.name in tap.kernels and id(v) in weight_index:
                    found[weight_index[id(v)]] = tap.kernels[v.name].finish()

    collect(taps)
    return found


def statistics_bytes(statistics: Statistics) -> int:
    """Memory the statistics hold."""
    return sum(s.nbytes for s in statistics.values())
