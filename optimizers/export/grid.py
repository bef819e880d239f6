"""The preview-grid rewrite: quantized weights re-expressed on the grid the preview used."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from optimizers.export.flatbuffer import (
    BLOCKWISE,
    INT_BITS,
    TYPE_CODES,
    TYPE_NAMES,
    buffer_bytes,
    float_constants,
    pack,
    patched,
    quantization_of,
    read_flatbuffer,
    unpack,
)
from optimizers.quantization import BLOCK_SIZES

GRID_TOLERANCE = 1e-6  # relative to the channel's largest magnitude: float rounding of folding
PROBE_ROWS = 16  # values per channel screened against every candidate grid at once
CANDIDATE_BLOCK = 24  # candidate grids screened together (bounds the screening memory)


def snap_to_preview_grid(data: bytes, float_data: bytes) -> bytes:
    """Re-express each quantized weight channel of ``data`` on the grid its float values use.

    ``float_data`` is the float32 flatbuffer ``data`` was quantized from; tensors are matched by
    name and shape. For a channel whose float values all lie on a symmetric grid with at most the
    container's levels (``w = k * scale`` with integer ``|k| <= 2^(b-1) - 1``, exactly, or within
    float rounding), the integers and scale become that grid's, so the file dequantizes to the
    float values. Other channels keep the converter's rounding. Integer biases of full-integer
    kernels are re-expressed with the new scales (``bias scale = input scale * weight scale``).
    """
    model = read_flatbuffer(data)
    floats = float_constants(float_data)
    buffers: dict[tuple[int, int], np.ndarray] = {}
    scales: dict[tuple[int, int], np.ndarray] = {}
    users = Counter(t.buffer for subgraph in model.subgraphs for t in subgraph.tensors)
    for g, subgraph in enumerate(model.subgraphs):
        new_scales: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, t in enumerate(subgraph.tensors):
            kind = TYPE_NAMES.get(t.type)
            raw = buffer_bytes(model, t)
            source = floats.get(t.name.decode())
            if kind not in INT_BITS or raw is None or source is None or t.sparsity is not None:
                continue
            shape = tuple(int(d) for d in t.shape)
            if source.shape != shape or users[t.buffer] > 1:
                continue
            if t.quantization.detailsType == BLOCKWISE:
                found = block_grid(source, INT_BITS[kind])
                details = t.quantization.details
                if found is not None and found[1].shape[1] * details.blockSize == shape[1]:
                    buffers[(g, i)] = pack(found[0], INT_BITS[kind])
                    buffers[(g, details.scales)] = found[1].view(np.uint8).reshape(-1)
                continue
            scale, zero_point, axis = quantization_of(t, shape)
            if np.any(zero_point != 0):
                continue
            codes = unpack(raw, INT_BITS[kind], int(np.prod(shape))).reshape(shape)
            new_codes, new_scale = fit_grid(source, codes, scale, axis, INT_BITS[kind])
            if np.array_equal(new_codes, codes) and np.array_equal(new_scale, scale):
                continue
            buffers[(g, i)] = pack(new_codes, INT_BITS[kind])
            scales[(g, i)] = new_scale.astype(np.float32)
            new_scales[i] = (scale, new_scale)
        for i, (codes, scale) in rescaled_biases(model, g, new_scales).items():
            buffers[(g, i)] = codes
            scales[(g, i)] = scale
    return patched(data, buffers, scales) if buffers else data


def block_grid(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes and float16 scales (one per block of inputs of each output channel) on which
    ``w``, a fully connected kernel as LiteRT stores it (outputs x inputs), lies exactly with
    ``bits``-bit codes, for the largest block of ``BLOCK_SIZES`` that fits; ``None`` when none
    does, or every value is zero.

    A block with largest magnitude ``M`` fits when every value is ``k * float16(M / m)`` in
    float32 for one whole ``m <= 2^(bits-1) - 1`` (the preview's grid has ``m`` at its largest
    code, below it where error compensation moved the block's largest weight); an all-zero block
    fits any scale and gets 1. Screened on the first output channel, then confirmed on all.
    """
    qmax = 2 ** (bits - 1) - 1
    if w.ndim != 2 or not np.any(w):
        return None
    for size in sorted(BLOCK_SIZES, reverse=True):
        if w.shape[1] % size:
            continue
        blocks = w.reshape(w.shape[0], -1, size)
        if fit_blocks(blocks[:1], qmax) is None:
            continue
        found = fit_blocks(blocks, qmax)
        if found is not None:
            return found[0].reshape(w.shape), found[1]
    return None


def fit_blocks(blocks: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``block_grid``'s codes (as ``blocks``) and float16 scales (one per block) of ``blocks``
    (outputs x blocks x inputs per block), or ``None`` when a block is on no such grid."""
    bound = np.abs(blocks).max(axis=2)
    codes = np.zeros(blocks.shape, np.int8)
    scales = np.ones(bound.shape, np.float16)
    todo = bound > 0
    for m in range(qmax, 0, -1):
        values = blocks[todo]
        s = (bound[todo] / np.float32(m)).astype(np.float16)
        k = np.rint(values / s.astype(np.float32)[:, None])
        back = (k * s.astype(np.float32)[:, None]).astype(np.float32)
        ok = np.all((back == values) & (np.abs(k) <= qmax), axis=1)
        where = tuple(axis[ok] for axis in np.nonzero(todo))
        codes[where], scales[where] = k[ok], s[ok]
        todo[where] = False
        if not todo.any():
            return codes, scales
    return None


def fit_grid(
    w: np.ndarray, codes: np.ndarray, scale: np.ndarray, axis: int | None, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Integers and per-channel scales putting ``w`` on its own grid where it has one.

    ``codes``/``scale`` are the container's rounding, kept for channels on no grid. A channel
    with largest magnitude ``M`` is tried on the grids ``scale = M / m`` for ``m`` = 1, 3, 7, ...
    (LiteRT's b-bit grids, coarsest first), then every other ``m`` up to ``2^(bits-1) - 1``
    (per-tensor or asymmetric grids); an exact fit (``k * scale == w`` in float32, trying the
    scale's float neighbours too) wins over one within ``GRID_TOLERANCE``. Candidates are
    screened on the first ``PROBE_ROWS`` values of every channel at once, then confirmed on all.
    """
    qmax = 2 ** (bits - 1) - 1
    per_channel = axis is not None and scale.size > 1
    if per_channel:
        cols = np.moveaxis(w, axis, -1).reshape(-1, w.shape[axis])
        old = np.moveaxis(codes, axis, -1).reshape(cols.shape)
    else:
        cols, old = w.reshape(-1, 1), codes.reshape(-1, 1)
    new_codes = old.astype(np.int64)
    new_scale = np.broadcast_to(scale.astype(np.float32), (cols.shape[1],)).copy()
    bound = np.abs(cols).max(axis=0) if cols.size else np.zeros(cols.shape[1], np.float32)
    # Channels the container already holds exactly (all zero, or on its own grid) stay as they are.
    open_ = ~np.all((old * new_scale).astype(np.float32) == cols, axis=0)
    ladder = [2 ** (b - 1) - 1 for b in range(2, bits + 1)]
    ms = np.asarray(ladder + [m for m in range(1, qmax + 1) if m not in ladder], np.float32)
    probe = cols[:PROBE_ROWS]
    for exact in (True, False):
        todo = np.flatnonzero(open_)
        if todo.size == 0:
            break
        base = (bound[todo][None, :] / ms[:, None]).astype(np.float32)
        if exact:  # m-major: each m's scale, then its two float neighbours
            neighbours = (base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf))
            scales = np.stack(neighbours, axis=1).reshape(-1, todo.size)
        else:
            scales = base
        for start in range(0, len(scales), CANDIDATE_BLOCK):
            block = scales[start : start + CANDIDATE_BLOCK]
            passed = on_grid(probe[None, :, todo], block[:, None, :], qmax, exact, bound[todo])
            passed &= open_[todo][None, :]
            while passed.any():  # confirm each channel's first screened candidate on all values
                live = np.flatnonzero(passed.any(axis=0))
                first = passed[:, live].argmax(axis=0)
                for row in np.unique(first):
                    pick = live[first == row]
                    channels, s = todo[pick], block[row, pick]
                    ok = on_grid(cols[:, channels], s, qmax, exact, bound[channels])
                    new_codes[:, channels[ok]] = np.rint(cols[:, channels[ok]] / s[ok])
                    new_scale[channels[ok]] = s[ok]
                    open_[channels[ok]] = False
                    passed[:, pick[ok]] = False
                    passed[row, pick[~ok]] = False
    # A changed channel must still round to what the container held: guards against a name
    # match that is not the same tensor (say, the converter folded something into it).
    container_scale = scale_of(scale, np.arange(cols.shape[1]), cols.shape[1])
    moved = ~open_ & (np.any(new_codes != old, axis=0) | (new_scale != container_scale))
    if moved.any():
        before = old[:, moved] * container_scale[moved]
        after = new_codes[:, moved] * new_scale[moved]
        slack = 0.5 * container_scale[moved] + 2 * GRID_TOLERANCE * bound[moved]
        revert = np.flatnonzero(moved)[np.any(np.abs(after - before) > slack, axis=0)]
        new_codes[:, revert] = old[:, revert]
        new_scale[revert] = container_scale[revert]
    if per_channel:
        moved_shape = np.moveaxis(codes, axis, -1).shape
        out = np.moveaxis(new_codes.reshape(moved_shape), -1, axis)
    else:
        out = new_codes.reshape(codes.shape)
        new_scale = new_scale.reshape(scale.shape)
    return out.astype(np.int8), new_scale


def scale_of(scale: np.ndarray, channels: np.ndarray, n: int) -> np.ndarray:
    """The container's float32 scales of ``channels`` (one scale shared when per-tensor)."""
    return np.broadcast_to(scale.astype(np.float32).reshape(-1), (n,))[channels]


def on_grid(
    cols: np.ndarray, s: np.ndarray, qmax: int, exact: bool, bound: np.ndarray
) -> np.ndarray:
    """Per column (last axis): are all values (axis -2) integer multiples, at most ``qmax``, of
    the column's scale ``s``? Exactly in float32, or within ``GRID_TOLERANCE * bound``."""
    k = np.rint(cols / s)
    back = (k * s).astype(np.float32)
    near = back == cols if exact else np.abs(back - cols) <= GRID_TOLERANCE * bound
    return np.all(near & (np.abs(k) <= qmax), axis=-2)


def rescaled_biases(
    model: Any, g: int, new_scales: dict[int, tuple[np.ndarray, np.ndarray]]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The int32 biases of subgraph ``g``'s full-integer kernels whose weight scales changed,
    re-expressed: tensor index -> (buffer bytes, scales).

    LiteRT requires ``bias scale = input scale * weight scale`` per channel.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if not new_scales:
        return found
    subgraph = model.subgraphs[g]
    for op in subgraph.operators:
        inputs = list(op.inputs)
        # TRANSPOSE_CONV takes (output shape, weights, input, bias); the others (input, weights, bias).
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "TRANSPOSE_CONV":
            act, weights, bias_index = 2, 1, 3
        else:
            act, weights, bias_index = 0, 1, 2
        if len(inputs) <= bias_index or inputs[weights] not in new_scales or inputs[bias_index] < 0:
            continue
        bias = subgraph.tensors[inputs[bias_index]]
        raw = buffer_bytes(model, bias)
        if bias.type != TYPE_CODES["int32"] or raw is None or bias.quantization is None:
            continue
        input_scale = float(np.asarray(subgraph.tensors[inputs[act]].quantization.scale)[0])
        weight_scale = new_scales[inputs[weights]][1].astype(np.float64)
        new_bias_scale = (input_scale * weight_scale).astype(np.float32)
        values = np.frombuffer(raw, np.int32) * np.asarray(bias.quantization.scale, np.float64)
        info = np.iinfo(np.int32)
        codes = np.clip(np.rint(values / new_bias_scale.astype(np.float64)), info.min, info.max)
        found[inputs[bias_index]] = (codes.astype(np.int32).view(np.uint8), new_bias_scale)
    return found
