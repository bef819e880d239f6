"""Read the constant tensors (weights) of a ``.tflite`` file for inspection.

The LiteRT interpreter lists every tensor; the constant ones are those with data after
``allocate_tensors`` that are neither model inputs nor outputs. Quantized tensors are
dequantized with their stored scales and zero points, so histograms show real weight values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizers import export
from optimizers.keras_io import InputError


@dataclass(frozen=True)
class Tensor:
    """One constant tensor of a TFLite file."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # as stored: float32, int8, ...
    stored_bytes: int
    values: np.ndarray  # float values (dequantized when stored quantized)

    @property
    def params(self) -> int:
        return int(self.values.size)

    @property
    def distinct(self) -> int:
        return int(np.unique(self.values).size)

    @property
    def sparsity(self) -> float:
        return 1 - np.count_nonzero(self.values) / self.values.size if self.values.size else 0.0


def dequantize(raw: np.ndarray, quantization: dict) -> np.ndarray:
    """Float values of a stored tensor, from the interpreter's ``quantization_parameters``."""
    scales = np.asarray(quantization.get("scales", ()), np.float32)
    if scales.size == 0 or not np.issubdtype(raw.dtype, np.integer):
        return raw.astype(np.float32)
    zero_points = np.asarray(quantization.get("zero_points", ()), np.int64)
    if zero_points.size != scales.size:
        zero_points = np.zeros(scales.size, np.int64)
    per_axis = scales.size > 1 and raw.ndim > 0
    axis = int(quantization.get("quantized_dimension", 0)) if per_axis else None
    return export.dequantize(raw, scales, zero_points, axis)


def inspect(data: bytes, name: str) -> list[Tensor]:
    """The constant tensors of a TFLite model given as bytes; ``InputError`` if unreadable."""
    if len(data) < 8 or data[4:8] != export.TFLITE_IDENTIFIER:
        raise InputError(f"{Path(name).name} is not a TFLite model (no TFL3 identifier)")
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=data)
        interpreter.allocate_tensors()
    except Exception as e:  # the interpreter raises RuntimeError/ValueError with long text
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(
            f"{Path(name).name} could not be read as a TFLite model ({first})"
        ) from None
    io = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    tensors = []
    for detail in interpreter.get_tensor_details():
        if detail["index"] in io:
            continue
        try:
            raw = interpreter.get_tensor(detail["index"])
        except Exception:  # an activation (no data until the model runs) or an exotic type
            continue
        if raw.size == 0 or not np.issubdtype(raw.dtype, np.number):
            continue
        tensors.append(
            Tensor(
                name=detail["name"],
                shape=tuple(int(d) for d in raw.shape),
                dtype=np.dtype(raw.dtype).name,
                stored_bytes=int(raw.nbytes),
                values=dequantize(raw, detail.get("quantization_parameters", {})),
            )
        )
    if not tensors:
        raise InputError(f"{Path(name).name} holds no constant tensors to inspect")
    return tensors
