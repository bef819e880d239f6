"""Reading a LiteRT flatbuffer's tensors, and LiteRT's packing of sub-byte integers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4 to 8
TYPE_CODES = {"float32": 0, "float16": 1, "int32": 2, "int8": 9, "int4": 17, "int2": 19}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items() if k != "int32"}
INT_BITS = {"int8": 8, "int4": 4, "int2": 2}
BLOCKWISE = 2  # QuantizationDetails.BlockwiseQuantization: scales in a float16 tensor of their own


@dataclass(frozen=True)
class StoredTensor:
    """A constant weight tensor as a LiteRT file stores it.

    ``dtype`` is ``float32``, ``float16``, ``int8``, ``int4`` or ``int2`` (``sparse `` in front
    when stored sparse). ``values`` are the dequantized float32 values (``None`` when sparse);
    ``codes``, ``scale`` and ``axis`` are the integers, per-channel scales and channel axis of a
    quantized tensor (blockwise: ``scale`` has one column per block of inputs, ``axis`` is
    ``None``). ``nbytes`` is the size of its buffer in the file.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    values: np.ndarray | None
    codes: np.ndarray | None = None
    scale: np.ndarray | None = None
    axis: int | None = None


def stored_weights(data: bytes) -> list[StoredTensor]:
    """The constant tensors of two or more dimensions (the weights) in a LiteRT file."""
    model = read_flatbuffer(data)
    found = []
    for subgraph in model.subgraphs:
        for t in subgraph.tensors:
            raw = buffer_bytes(model, t)
            if raw is None or t.shape is None or len(t.shape) < 2:
                continue
            name, shape = t.name.decode(), tuple(int(d) for d in t.shape)
            kind = TYPE_NAMES.get(t.type)
            if kind is None:
                continue
            if t.sparsity is not None:
                found.append(StoredTensor(name, "sparse " + kind, shape, len(raw), None))
            elif kind in ("float32", "float16"):
                values = np.frombuffer(raw, kind).astype(np.float32).reshape(shape)
                found.append(StoredTensor(name, kind, shape, len(raw), values))
            else:
                codes = unpack(raw, INT_BITS[kind], int(np.prod(shape))).reshape(shape)
                if t.quantization.detailsType == BLOCKWISE:
                    details, axis = t.quantization.details, None
                    held = subgraph.tensors[details.scales]
                    scale = np.frombuffer(buffer_bytes(model, held) or b"", np.float16)
                    scale = scale.astype(np.float32).reshape(shape[0], -1)
                    wide = np.repeat(scale, details.blockSize, axis=1)
                    values = (codes.astype(np.float32) * wide).astype(np.float32)
                else:
                    scale, zero_point, axis = quantization_of(t, shape)
                    values = dequantize(codes, scale, zero_point, axis)
                found.append(StoredTensor(name, kind, shape, len(raw), values, codes, scale, axis))
    return found


def read_flatbuffer(data: bytes) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def patched(
    data: bytes,
    buffers: dict[tuple[int, int], np.ndarray],
    scales: dict[tuple[int, int], np.ndarray],
) -> bytes:
    """``data`` with tensors' buffer bytes and float32 scales (keyed by (subgraph, tensor))
    overwritten where they lie, each the same size as before. Writing in place keeps a 100 MB
    file's rewrite to a copy: the flatbuffer object API re-serializes byte by byte (8 s for
    ResNet50)."""
    from ai_edge_litert import schema_py_generated as schema

    out = bytearray(data)
    root = schema.Model.GetRootAs(out, 0)
    for (g, i), new in buffers.items():
        buffer = root.Buffers(root.Subgraphs(g).Tensors(i).Buffer())
        if buffer.Offset() > 1:  # stored after the flatbuffer (ai_edge_quantizer does this)
            view = np.frombuffer(out, np.uint8, buffer.Size(), buffer.Offset())
        else:
            view = buffer.DataAsNumpy()  # a view into ``out``
        if view.size != new.size:
            raise ValueError(f"tensor {i}: {new.size} bytes do not fit in {view.size}")
        view[:] = new
    for (g, i), scale in scales.items():
        view = root.Subgraphs(g).Tensors(i).Quantization().ScaleAsNumpy()
        if view.size != scale.size:
            raise ValueError(f"tensor {i}: {scale.size} scales do not fit in {view.size}")
        view[:] = scale
    return bytes(out)


def buffer_bytes(model: Any, tensor: Any) -> bytes | None:
    """The constant data of ``tensor``, or ``None`` for activations."""
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0:
        return None
    return np.asarray(data, np.uint8).tobytes()


def float_constants(float_data: bytes) -> dict[str, np.ndarray]:
    """Name -> value of the float32 constant tensors of a flatbuffer (names seen twice dropped)."""
    model = read_flatbuffer(float_data)
    found: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for subgraph in model.subgraphs:
        for t in subgraph.tensors:
            raw = buffer_bytes(model, t)
            if raw is None or t.type != TYPE_CODES["float32"] or t.sparsity is not None:
                continue
            name = t.name.decode()
            if name in seen:
                found.pop(name, None)
                continue
            seen.add(name)
            found[name] = np.frombuffer(raw, np.float32).reshape(tuple(int(d) for d in t.shape))
    return found


def quantization_of(t: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Scale, zero point and channel axis (``None``: one scale) of a quantized tensor."""
    q = t.quantization
    scale = np.asarray(q.scale, np.float32)
    zero_point = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.int64)
    axis = int(q.quantizedDimension) if scale.size > 1 else None
    if axis is not None and shape[axis] != scale.size:
        raise ValueError(
            f"tensor {t.name.decode()}: {scale.size} scales for axis {axis} of {shape}"
        )
    return scale, zero_point, axis


def dequantize(
    codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None
) -> np.ndarray:
    """``(codes - zero_point) * scale`` in float32, per channel along ``axis``."""
    if axis is not None:
        shape = [1] * codes.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((codes.astype(np.float32) - zero_point.astype(np.float32)) * scale).astype(np.float32)


def unpack(raw: bytes, bits: int, count: int) -> np.ndarray:
    """Signed ``bits``-bit integers from LiteRT's packing (first value in the low bits)."""
    data = np.frombuffer(raw, np.uint8)
    if bits == 8:
        return data.view(np.int8)[:count].copy()
    per_byte = 8 // bits
    parts = np.stack([(data >> (k * bits)) & ((1 << bits) - 1) for k in range(per_byte)], axis=1)
    values = parts.reshape(-1)[:count].astype(np.int16)
    return np.where(values >= 1 << (bits - 1), values - (1 << bits), values).astype(np.int8)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """LiteRT's packing of signed ``bits``-bit integers, as the uint8 buffer of a tensor."""
    flat = codes.reshape(-1).astype(np.int8)
    if bits == 8:
        return flat.view(np.uint8).copy()
    per_byte = 8 // bits
    padded = np.zeros(-(-flat.size // per_byte) * per_byte, np.uint8)
    padded[: flat.size] = flat.view(np.uint8) & ((1 << bits) - 1)
    groups = padded.reshape(-1, per_byte)
    out = np.zeros(len(groups), np.uint8)
    for k in range(per_byte):
        out |= groups[:, k] << np.uint8(k * bits)
    return out


# Bytes per element of LiteRT tensor types (schema TensorType codes), for activation sizes.
TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 12: 8, 15: 4, 16: 2, 18: 2}


def largest_activation_bytes(data: bytes) -> int:
    """Bytes of the largest non-constant tensor of the main graph at batch 1.

    A lower bound on the interpreter's activation memory (its arena holds at least that tensor
    at once), read from the file because LiteRT's Python interpreter does not report its arena.
    A free batch dimension is stored as 1 in the tensor's shape, so this is batch 1.
    """
    model = read_flatbuffer(data)
    graph = model.subgraphs[0]
    sizes = [
        int(np.prod([max(int(d), 1) for d in t.shape])) * TYPE_BYTES.get(t.type, 4)
        for t in graph.tensors
        if t.shape is not None and buffer_bytes(model, t) is None
    ]
    return max(sizes, default=0)
