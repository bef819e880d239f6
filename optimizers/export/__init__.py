"""Deployable files from a model whose weights the pipeline has already optimized.

``export_bytes(model, fmt)`` turns a Keras model into the bytes of a ``.keras`` file or of a real
LiteRT (``.tflite``) flatbuffer, and ``run_tflite(data, x)`` runs such a file with LiteRT's
interpreter, so the app can measure the accuracy of the very file it offers for download.

| format              | weights stored as                        | computed in                   | file = preview?                  |
|---------------------|------------------------------------------|-------------------------------|----------------------------------|
| keras               | float32 (the optimized values)           | float32                       | yes, the same file               |
| tflite-float32      | float32, pruned tensors sparse if smaller | float32                      | yes (outputs to ~1e-7)           |
| tflite-float16      | float16                                  | float32                       | no: weights rounded to float16   |
| tflite-int8-dynamic | int8 per channel                         | int8 activations at run time  | weights yes (b <= 8 bits)        |
| tflite-int8         | int8 per channel, int8 activations       | int8, int8 input and output   | weights yes (b <= 8 bits)        |
| tflite-int4         | int4 per channel (packed, 2 per byte)    | float32 (dequantized on load) | yes for b <= 4 bits              |
| tflite-int2         | int2 per channel (packed, 4 per byte)    | float32 (dequantized on load) | yes for 2-bit (ternary) levels   |

"File = preview" means the weights in the file dequantize to the very float32 values the preview
computed with, so the file is as accurate as the preview said: the converter writes tensors with
LiteRT's symmetric grid (``scale = max|w| / (2^(b-1) - 1)`` per output channel), and after it
``snap_to_preview_grid`` re-expresses every channel whose values already lie on a coarser
symmetric grid (fewer bits, or per-tensor scales) in the container's integers with that grid's
scale. Channels not on any grid the container can hold (unquantized or clustered-only weights,
or more levels than the container has) keep the converter's own rounding. Where the converter
folds a BatchNormalization into the preceding kernel, the folded values stay on the grid up to
float rounding (about 1e-7 relative), and are found there.

The quantized formats keep activations float (int4, int2) or quantize them at run time (int8
dynamic, int8), so those outputs differ from the preview by activation rounding only.

Blockwise weights (one scale per block of inputs, ``QuantizationConfig.block_size``) go to the
int4 file: each fully connected kernel whose values lie on a blockwise grid is stored as LiteRT's
blockwise int4 with the preview's float16 scales (``recipes.blockwise_recipe``, then the grid
rewrite), and runs with activations rounded to int8 at run time (LiteRT has no weight-only
blockwise kernel). Other kernels stay per channel, as in the preview.

Only this package and ``keras_io`` import TensorFlow. One idea per module:

* ``conversion``: Keras -> float32 (dense or sparse) or full-integer int8 flatbuffer, checked
  against Keras, memoized; every other format starts from that float32 file.
* ``recipes``: ai_edge_quantizer recipes for the weight-only formats.
* ``grid``: the preview-grid rewrite (``snap_to_preview_grid``).
* ``flatbuffer``: reading a file's tensors, packing sub-byte integers.
* ``running``: running a file with LiteRT's interpreter.
* ``quiet``: silencing TensorFlow's and LiteRT's stderr meanwhile.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from optimizers import keras_io
from optimizers.export.apart import alongside
from optimizers.export.conversion import (
    _CACHE,
    base_file,
    calibration_samples,
    converted,
    dense_float32,
    input_signature,
    smallest_float32,
)
from optimizers.export.flatbuffer import (
    TFLITE_IDENTIFIER,
    TYPE_CODES,
    StoredTensor,
    dequantize,
    pack,
    read_flatbuffer,
    stored_weights,
    unpack,
)
from optimizers.export.grid import block_grid, fit_grid, snap_to_preview_grid
from optimizers.export.recipes import (
    blockwise_recipe,
    float16_recipe,
    integer_recipe,
    quantize_weights,
)
from optimizers.export.running import run_tflite
from optimizers.quantization import BLOCK_BITS, QuantizationConfig
from optimizers.workers import give_back_memory

if TYPE_CHECKING:
    import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow is imported lazily, after this

__all__ = [
    "alongside",
    "CONTAINER_BITS",
    "FORMATS",
    "FORMAT_LABELS",
    "FORMAT_NAMES",
    "FORMAT_SUFFIXES",
    "TFLITE_IDENTIFIER",
    "TYPE_CODES",
    "_CACHE",
    "Format",
    "StoredTensor",
    "converted",
    "dequantize",
    "export_bytes",
    "block_grid",
    "fit_grid",
    "input_signature",
    "natural_format",
    "pack",
    "read_flatbuffer",
    "run_tflite",
    "stored_weights",
    "unpack",
    "warm",
]

Format = Literal[
    "keras",
    "tflite-float32",
    "tflite-float16",
    "tflite-int8-dynamic",
    "tflite-int8",
    "tflite-int4",
    "tflite-int2",
]
FORMATS: tuple[Format, ...] = get_args(Format)

FORMAT_LABELS: dict[Format, str] = {
    "keras": "Keras (.keras): float32 weights, the optimized values exactly",
    "tflite-float32": "LiteRT float32: exact; pruned weights stored sparse when that is smaller",
    "tflite-float16": "LiteRT float16 weights: half the size, float32 compute",
    "tflite-int8-dynamic": "LiteRT int8 weights, activations quantized at run time (dynamic range)",
    "tflite-int8": "LiteRT full integer int8: int8 weights, activations, input and output",
    "tflite-int4": "LiteRT int4 weights (two per byte), float32 compute",
    "tflite-int2": "LiteRT int2 weights (four per byte, ternary levels), float32 compute",
}
FORMAT_NAMES: dict[Format, str] = {  # short names for tables and buttons
    "keras": "Keras",
    "tflite-float32": "LiteRT float32",
    "tflite-float16": "LiteRT float16",
    "tflite-int8-dynamic": "LiteRT int8 dynamic range",
    "tflite-int8": "LiteRT int8 full integer",
    "tflite-int4": "LiteRT int4",
    "tflite-int2": "LiteRT int2",
}
# Bits per stored weight value of each format's container.
CONTAINER_BITS: dict[Format, int] = {
    "keras": 32,
    "tflite-float32": 32,
    "tflite-float16": 16,
    "tflite-int8-dynamic": 8,
    "tflite-int8": 8,
    "tflite-int4": 4,
    "tflite-int2": 2,
}
FORMAT_SUFFIXES: dict[Format, str] = {f: ".keras" if f == "keras" else ".tflite" for f in FORMATS}

NO_CALIBRATION_DATA = "full-integer int8 export needs calibration data (an .npz with x)"

# time. Otherwise weight-only: a DEQUANTIZE op feeds float kernels (LiteRT evaluates it once).
INTEGER_FORMATS: dict[str, tuple[int, bool]] = {
    "tflite-int8-dynamic": (8, True),
    "tflite-int4": (4, False),
    "tflite-int2": (2, False),
}


def natural_format(q: QuantizationConfig | None) -> Format:
    """The smallest container that holds weights quantized by ``q`` as they are: 2 bits ->
    int2, 3-4 -> int4, 5-8 -> int8 (dynamic range; full integer is the microcontroller
    choice), 16 -> float16, no quantization -> float32; blockwise -> int4 (LiteRT's only
    blockwise weights). Below the container's width the levels are simulated: the file stores
    the container's integers but uses only ``2^bits`` of them."""
    if q is not None and q.block_size is not None:
        return "tflite-int4"
    bits = None if q is None else q.bits
    if bits is None or bits > 16:
        return "tflite-float32"
    if bits > 8:
        return "tflite-float16"
    if bits > 4:
        return "tflite-int8-dynamic"
    return "tflite-int4" if bits > 2 else "tflite-int2"


def warm(base: keras.Model) -> None:
    """Convert ``base`` now and find its kernels in the file (memoized), so that the first
    file of a setting optimized from it is a rewrite, not a conversion. Raises ``ValueError``
    (one sentence) when ``base`` cannot be converted, as ``export_bytes`` would."""
    base_file(base, input_signature(base))
    give_back_memory()


def export_bytes(
    model: keras.Model,
    fmt: Format,
    calibration_x: np.ndarray | None = None,
    base: keras.Model | None = None,
) -> bytes:
    """The file of ``model`` in format ``fmt`` (see the module table), as bytes.

    ``calibration_x`` (inputs in the model's shape) is needed for ``tflite-int8`` only: it sets
    the int8 ranges of the activations. ``base``, the model whose weights ``model``'s were
    optimized from (same layers), lets the LiteRT formats start from ``base``'s converted file
    with the kernels rewritten instead of converting again (``reweight``). Raises
    ``ValueError`` with one sentence on bad input.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "keras":
        return keras_io.save_model_bytes(model)
    signature = input_signature(model)
    if fmt == "tflite-int8":
        if calibration_x is None:
            raise ValueError(NO_CALIBRATION_DATA)
        samples = calibration_samples(calibration_x, signature)
        if any(type(layer).__name__ == "Embedding" for layer in model._flatten_layers()):
            raise ValueError(
                "full-integer int8 export would quantize the token ids an Embedding layer "
                "reads; export tflite-int8-dynamic instead"
            )
        dense = dense_float32(model, signature, base)
        if len(read_flatbuffer(dense).subgraphs) > 1:
            raise ValueError(
                "full-integer int8 export does not support recurrent layers or other loops "
                "(LiteRT's calibrator crashes on them); export tflite-int8-dynamic instead"
            )
        data = converted(model, signature, ("tflite-int8",), samples)["tflite-int8"]
        return snap_to_preview_grid(data, dense)
    dense = dense_float32(model, signature, base)
    if fmt == "tflite-float32":
        return smallest_float32(model, signature, dense)
    if fmt == "tflite-float16":
        return quantize_weights(dense, float16_recipe())
    bits, dynamic = INTEGER_FORMATS[fmt]
    recipe = integer_recipe(bits, dynamic)
    if bits == BLOCK_BITS:
        recipe += blockwise_recipe(dense, bits)
    return snap_to_preview_grid(quantize_weights(dense, recipe), dense)
