"""Running a LiteRT file with LiteRT's interpreter on this CPU."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from optimizers.export.flatbuffer import TFLITE_IDENTIFIER
from optimizers.export.quiet import quiet

RUN_BATCH_SIZE = 256


def run_tflite(data: bytes, x: np.ndarray, batch_size: int = RUN_BATCH_SIZE) -> np.ndarray:
    """Outputs of the LiteRT model ``data`` on ``x`` (any number of samples), as float32.

    Batches of ``batch_size`` samples (of the file's own batch size if it has a fixed one); an
    int8 input is quantized with the file's input scale and zero point, and an integer output
    dequantized with the output's.
    """
    from ai_edge_litert.interpreter import Interpreter

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if bytes(data[4:8]) != TFLITE_IDENTIFIER:
        raise ValueError("the data is not a LiteRT (.tflite) model")
    with quiet():
        interpreter = Interpreter(
            model_content=bytes(data), num_threads=min(8, os.cpu_count() or 1)
        )
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"the file has {len(inputs)} inputs and {len(outputs)} outputs; "
            "only single-input, single-output models can be run"
        )
    inp, out = inputs[0], outputs[0]
    x = np.asarray(x)
    want = [int(d) for d in inp["shape_signature"][1:]]
    if x.ndim != len(want) + 1 or any(
        w not in (-1, g) for w, g in zip(want, x.shape[1:], strict=True)
    ):
        expected = "(n, " + ", ".join("?" if d == -1 else str(d) for d in want) + ")"
        raise ValueError(f"x has shape {x.shape} but the file expects {expected}")
    if len(x) == 0:
        return np.zeros((0, *[max(int(d), 0) for d in out["shape"][1:]]), np.float32)
    fixed = int(inp["shape_signature"][0])  # -1: any batch size; else the file's own
    step = fixed if fixed > 0 else batch_size
    parts, allocated = [], None
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        n = len(chunk)
        if fixed > 0 and n < fixed:  # pad the last batch of a fixed-batch file
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        if chunk.shape != allocated:
            with quiet():  # the XNNPack delegate announces itself on stderr here
                if fixed < 0:
                    interpreter.resize_tensor_input(inp["index"], list(chunk.shape))
                interpreter.allocate_tensors()
            allocated = chunk.shape
        interpreter.set_tensor(inp["index"], to_input(chunk, inp))
        interpreter.invoke()
        parts.append(from_output(interpreter.get_tensor(out["index"]), out)[:n])
    return np.concatenate(parts)


def to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """``x`` in the input tensor's type: quantized with its scale and zero point if integer."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        q = np.rint(x.astype(np.float32) / np.float32(scale) + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def from_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An output tensor as float32, dequantized if it is an integer one."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return ((y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(
            np.float32
        )
    return y.astype(np.float32)
