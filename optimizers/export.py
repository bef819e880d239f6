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

Only this module and ``keras_io`` import TensorFlow. Conversion freezes a traced inference
function in memory (a SavedModel in a temporary folder, always removed, is only the fallback);
the float32 flatbuffers of the last few models are memoized, so asking for several formats of
one model converts it once, and every other format starts from that float32 file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import tempfile
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from optimizers import keras_io

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if TYPE_CHECKING:
    import keras

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
CALIBRATION_SAMPLES = 128  # representative samples for full-integer calibration, evenly spread
SPARSITY_WORTH_TRYING = 0.3  # a weight tensor this sparse may store smaller as a sparse tensor
RUN_BATCH_SIZE = 256

# LiteRT ops whose constant weight operand ai_edge_quantizer quantizes per output channel.
# (Keras 3 Embedding becomes GATHER, which it does not quantize: tables stay float32.)
WEIGHT_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_2D_TRANSPOSE",
    "BATCH_MATMUL",
    "EMBEDDING_LOOKUP",
)
# Integer weight formats: (bits, dynamic). Dynamic: integer kernels quantize activations at run
# time. Otherwise weight-only: a DEQUANTIZE op feeds float kernels (LiteRT evaluates it once).
INTEGER_FORMATS: dict[str, tuple[int, bool]] = {
    "tflite-int8-dynamic": (8, True),
    "tflite-int4": (4, False),
    "tflite-int2": (2, False),
}


# ----------------------------------------------------------------------------- public API


def natural_format(bits: int | None) -> Format:
    """The smallest container that holds ``bits``-bit weights as they are: 2 -> int2,
    3-4 -> int4, 5-8 -> int8 (dynamic range; full integer is the microcontroller choice),
    16 -> float16, no quantization -> float32. Below the container's width the levels are
    simulated: the file stores the container's integers but uses only ``2^bits`` of them."""
    if bits is None or bits > 16:
        return "tflite-float32"
    if bits > 8:
        return "tflite-float16"
    if bits > 4:
        return "tflite-int8-dynamic"
    return "tflite-int4" if bits > 2 else "tflite-int2"


def export_bytes(model: keras.Model, fmt: Format, calibration_x: np.ndarray | None = None) -> bytes:
    """The file of ``model`` in format ``fmt`` (see the module table), as bytes.

    ``calibration_x`` (inputs in the model's shape) is needed for ``tflite-int8`` only: it sets
    the int8 ranges of the activations. Raises ``ValueError`` with one sentence on bad input.
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
        dense = converted(model, signature, ("tflite-float32",))["tflite-float32"]
        if len(read_flatbuffer(dense).subgraphs) > 1:
            raise ValueError(
                "full-integer int8 export does not support recurrent layers or other loops "
                "(LiteRT's calibrator crashes on them); export tflite-int8-dynamic instead"
            )
        data = converted(model, signature, ("tflite-int8",), samples)["tflite-int8"]
        return snap_to_preview_grid(data, dense)
    if fmt == "tflite-float32":
        return smallest_float32(model, signature)
    dense = converted(model, signature, ("tflite-float32",))["tflite-float32"]
    if fmt == "tflite-float16":
        return quantize_weights(dense, float16_recipe())
    bits, dynamic = INTEGER_FORMATS[fmt]
    return snap_to_preview_grid(quantize_weights(dense, integer_recipe(bits, dynamic)), dense)


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


@dataclass(frozen=True)
class StoredTensor:
    """A constant weight tensor as a LiteRT file stores it.

    ``dtype`` is ``float32``, ``float16``, ``int8``, ``int4`` or ``int2`` (``sparse `` in front
    when stored sparse). ``values`` are the dequantized float32 values (``None`` when sparse);
    ``codes``, ``scale`` and ``axis`` are the integers, per-channel scales and channel axis of a
    quantized tensor. ``nbytes`` is the size of its buffer in the file.
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
                scale, zero_point, axis = quantization_of(t, shape)
                values = dequantize(codes, scale, zero_point, axis)
                found.append(StoredTensor(name, kind, shape, len(raw), values, codes, scale, axis))
    return found


# ----------------------------------------------------------------------------- conversion


def input_signature(model: keras.Model) -> list[Any]:
    """TensorSpecs of the model's inputs with a free batch dimension."""
    import tensorflow as tf

    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(f"model {model.name} has no defined inputs; build it with keras.Input")
    specs = [
        tf.TensorSpec((None, *tuple(t.shape)[1:]), dtype=t.dtype, name=f"input_{i}")
        for i, t in enumerate(inputs)
    ]
    return specs if len(specs) == 1 else [specs]


Converter = Callable[[], Any]  # makes a fresh tf.lite.TFLiteConverter for one conversion


@contextlib.contextmanager
def converter_source(
    model: keras.Model, signature: list[Any], via_saved_model: bool
) -> Iterator[Converter]:
    """Makers of TFLite converters for ``model``'s inference call (``training=False``).

    The fast way freezes a traced concrete function (variables become constants) and uses the
    converter's frozen-graph path: three times faster than a SavedModel (MobileNetV2: 5 s
    against 18 s). The SavedModel way (what ``from_keras_model`` does for Keras 3, in a temporary
    folder removed afterwards) is the fallback. Never hand ``from_concrete_functions`` an
    unfrozen function with the model as trackable: it leaves Keras 3 variables uninitialized and
    the file computes garbage.
    """
    import tensorflow as tf

    call = functools.partial(model.__call__, training=False)
    if not via_saved_model:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        with quiet():
            frozen = convert_variables_to_constants_v2(
                tf.function(call).get_concrete_function(*signature)
            )
        yield lambda: tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        return
    import keras

    with tempfile.TemporaryDirectory(prefix="model-export-") as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", call, signature)
        with quiet():
            archive.write_out(folder, verbose=False)
        yield lambda: tf.lite.TFLiteConverter.from_saved_model(folder)


def convert(make: Converter, fmt: str, samples: np.ndarray | None = None) -> bytes:
    """One conversion: float32, sparse float32 or full-integer int8."""
    import tensorflow as tf

    with quiet():
        converter = make()
    if fmt == "tflite-float32-sparse":
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    elif fmt == "tflite-int8":
        assert samples is not None
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s[None]] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with quiet():
            return bytes(converter.convert())
    except Exception as e:  # ConverterError and friends: one readable sentence
        raise ValueError(f"LiteRT could not convert the model to {fmt} ({reason(e)})") from None


def naming_the_layer(model: keras.Model, message: str) -> str:
    """``message`` with the layer that holds the TensorFlow op it complains about, if found.

    The converter names the op (``'tf.ResizeBicubic' op is neither a custom op nor a flex op``)
    but not the layer, so each layer is traced on its own until one turns out to contain it.
    """
    import tensorflow as tf

    op = re.search(r"'tf\.(\w+)' op", message)
    if op is None:
        return message
    for layer in model._flatten_layers(include_self=False, recursive=True):
        try:
            specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), layer.input)
            with quiet():
                graph = tf.function(layer.call).get_concrete_function(specs).graph
        except Exception:  # a layer that cannot be traced alone (shared, nested inputs, ...)
            continue
        if any(o.type == op.group(1) for o in graph.get_operations()):
            return f"{message}; it comes from layer '{layer.name}' ({type(layer).__name__})"
    return message


def reason(error: Exception) -> str:
    """The first diagnostic of a converter error, without MLIR's source locations."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = next((line for line in lines if "error:" in line), lines[0] if lines else "")
    return first.rsplit("error:", 1)[-1].strip()[:200] or type(error).__name__


def check_float_file(model: keras.Model, data: bytes, signature: list[Any]) -> None:
    """Raise ``ValueError`` unless the float32 file computes what the Keras model computes."""
    if len(signature) != 1:
        return
    probe = probe_inputs(signature[0])
    reference = np.asarray(model(probe, training=False), np.float32)
    if not np.all(np.isfinite(reference)):
        return
    outputs = run_tflite(data, probe)
    tolerance = 1e-4 * float(np.abs(reference).max()) + 1e-30
    if outputs.shape != reference.shape or not np.allclose(
        outputs, reference, rtol=1e-3, atol=tolerance
    ):
        raise ValueError("the converted LiteRT file does not compute what the Keras model computes")


_CACHE: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def model_digest(model: keras.Model) -> str:
    """A fingerprint of the architecture and every weight value."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(str((w.shape, w.dtype.str)).encode())
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def converted(
    model: keras.Model,
    signature: list[Any],
    fmts: tuple[str, ...],
    samples: np.ndarray | None = None,
) -> dict[str, bytes]:
    """Converter outputs for ``fmts`` from one trace of the model; the float ones are memoized.

    The dense float32 file is checked against Keras; while a conversion fails or disagrees,
    the next of ``conversion_attempts`` is tried (the first failure is the one reported). A
    sparse float32 conversion that fails gives ``b""``.
    """
    key = model_digest(model)
    with _CACHE_LOCK:
        files = {f: _CACHE[(key, f)] for f in fmts if (key, f) in _CACHE}
        for f in files:
            _CACHE.move_to_end((key, f))
    missing = [f for f in fmts if f not in files]
    if not missing:
        return files
    failure: ValueError | None = None
    for via_saved_model, sig in conversion_attempts(signature):
        try:
            made = {}
            with converter_source(model, sig, via_saved_model) as make:
                for f in missing:
                    try:
                        made[f] = convert(make, f, samples)
                    except ValueError:
                        if f != "tflite-float32-sparse":
                            raise
                        made[f] = b""
            if "tflite-float32" in made:
                check_float_file(model, made["tflite-float32"], sig)
            break
        except ValueError as e:
            failure = failure or e
    else:
        assert failure is not None
        raise ValueError(naming_the_layer(model, str(failure))) from None
    files.update(made)
    with _CACHE_LOCK:
        for f in missing:
            if f != "tflite-int8":
                _CACHE[(key, f)] = files[f]
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return files


def conversion_attempts(signature: list[Any]) -> list[tuple[bool, list[Any]]]:
    """(via SavedModel?, signature) pairs to try in turn.

    Frozen function with a free batch size first; then with batch size 1, which recurrent
    layers need (the converter cannot lower their tensor lists with an unknown batch size, and
    such a file runs one sample at a time); then the SavedModel path.
    """
    import tensorflow as tf

    def batch_one(spec: Any) -> Any:
        if isinstance(spec, list):
            return [batch_one(s) for s in spec]
        return tf.TensorSpec((1, *spec.shape[1:]), spec.dtype, spec.name)

    return [(False, signature), (False, batch_one(signature)), (True, signature)]


def max_weight_sparsity(model: keras.Model) -> float:
    """The largest fraction of zeros in any weight tensor of two or more dimensions."""
    fractions = [
        1.0 - np.count_nonzero(w) / w.size for w in model.get_weights() if w.ndim >= 2 and w.size
    ]
    return max(fractions, default=0.0)


def smallest_float32(model: keras.Model, signature: list[Any]) -> bytes:
    """The dense float32 file, or the sparse one when the model is pruned and that is smaller.

    A sparse file stores pruned weights in LiteRT's compressed sparse format and DENSIFY ops
    expand them once when the interpreter prepares, so it computes exactly what the dense one
    does; it is kept only when it is smaller and its outputs agree with the dense file's.
    """
    if max_weight_sparsity(model) < SPARSITY_WORTH_TRYING:
        return converted(model, signature, ("tflite-float32",))["tflite-float32"]
    files = converted(model, signature, ("tflite-float32", "tflite-float32-sparse"))
    dense, sparse = files["tflite-float32"], files["tflite-float32-sparse"]
    if not sparse or len(sparse) >= len(dense) or len(signature) != 1:
        return dense
    probe = probe_inputs(signature[0])
    try:
        reference, outputs = run_tflite(dense, probe), run_tflite(sparse, probe)
    except (RuntimeError, ValueError):
        return dense
    tolerance = 1e-5 * max(1.0, float(np.abs(reference).max()))
    return sparse if np.allclose(reference, outputs, rtol=1e-5, atol=tolerance) else dense


def probe_inputs(spec: Any) -> np.ndarray:
    """A few deterministic inputs of the signature's shape, to compare two files' outputs."""
    shape = (4, *[d or 1 for d in spec.shape[1:]])
    rng = np.random.default_rng(0)
    if spec.dtype.is_integer:
        return rng.integers(0, 2, shape).astype(spec.dtype.as_numpy_dtype)
    return rng.standard_normal(shape).astype(spec.dtype.as_numpy_dtype)


def calibration_samples(x: np.ndarray, signature: list[Any]) -> np.ndarray:
    """Up to ``CALIBRATION_SAMPLES`` samples of ``x``, evenly spread, checked against the input."""
    if len(signature) != 1:
        raise ValueError("full-integer int8 export supports models with one input only")
    spec = signature[0]
    if not spec.dtype.is_floating:
        raise ValueError(f"full-integer int8 export needs a float input, not {spec.dtype.name}")
    x = np.asarray(x)
    want = tuple(spec.shape[1:])
    fits = x.ndim == len(want) + 1 and all(
        w in (None, g) for w, g in zip(want, x.shape[1:], strict=True)
    )
    if not fits:
        expected = "(n, " + ", ".join("?" if d is None else str(d) for d in want) + ")"
        raise ValueError(f"calibration x has shape {x.shape} but the model expects {expected}")
    if len(x) == 0 or not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ValueError("calibration x must hold at least one sample of finite numbers")
    pick = np.unique(
        np.linspace(0, len(x) - 1, min(len(x), CALIBRATION_SAMPLES)).round().astype(int)
    )
    return x[pick].astype(np.float32)


# ----------------------------------------------------------------------------- quantization


def integer_recipe(bits: int, dynamic: bool) -> list[dict[str, Any]]:
    """An ai_edge_quantizer recipe: symmetric per-channel ``bits``-bit weights of WEIGHT_OPS.

    ``skip_checks``: the default policy offers int2 only with dynamic kernels, and int4
    weight-only not for depthwise convolutions, but LiteRT's DEQUANTIZE reads both (its hybrid
    int2 convolution returns NaN, and it has no hybrid int4 depthwise kernel, hence weight-only).
    """
    return [
        {
            "regex": ".*",
            "operation": op,
            "algorithm_key": "min_max_uniform_quantize",
            "op_config": {
                "weight_tensor_config": {
                    "num_bits": bits,
                    "symmetric": True,
                    "granularity": "CHANNELWISE",
                    "dtype": "INT",
                },
                "compute_precision": "INTEGER" if dynamic else "FLOAT",
                "explicit_dequantize": not dynamic,
                "skip_checks": True,
            },
        }
        for op in WEIGHT_OPS
    ]


def float16_recipe() -> list[dict[str, Any]]:
    """An ai_edge_quantizer recipe storing the weights of WEIGHT_OPS as float16."""
    return [
        {
            "regex": ".*",
            "operation": op,
            "algorithm_key": "float_casting",
            "op_config": {
                "weight_tensor_config": {
                    "num_bits": 16,
                    "symmetric": True,
                    "granularity": "TENSORWISE",
                    "dtype": "FLOAT",
                },
                "compute_precision": "FLOAT",
                "explicit_dequantize": True,
                "skip_checks": True,
            },
        }
        for op in (
            "FULLY_CONNECTED",
            "CONV_2D",
            "DEPTHWISE_CONV_2D",
            "CONV_2D_TRANSPOSE",
            "EMBEDDING_LOOKUP",
        )
    ]


def quantize_weights(float_data: bytes, recipe: list[dict[str, Any]]) -> bytes:
    """Apply an ai_edge_quantizer recipe to a float LiteRT flatbuffer."""
    from ai_edge_quantizer import quantizer

    with quiet():
        q = quantizer.Quantizer(bytearray(float_data), recipe)
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


# ----------------------------------------------------------------------------- the preview grid

INT_BITS = {"int8": 8, "int4": 4, "int2": 2}
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
    changed = False
    users = Counter(t.buffer for subgraph in model.subgraphs for t in subgraph.tensors)
    for subgraph in model.subgraphs:
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
            scale, zero_point, axis = quantization_of(t, shape)
            if np.any(zero_point != 0):
                continue
            codes = unpack(raw, INT_BITS[kind], int(np.prod(shape))).reshape(shape)
            new_codes, new_scale = fit_grid(source, codes, scale, axis, INT_BITS[kind])
            if np.array_equal(new_codes, codes) and np.array_equal(new_scale, scale):
                continue
            model.buffers[t.buffer].data = pack(new_codes, INT_BITS[kind])
            t.quantization.scale = new_scale.astype(np.float32)
            new_scales[i] = (scale, new_scale)
            changed = True
        rescale_biases(model, subgraph, new_scales)
    if not changed:
        return data
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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


def rescale_biases(
    model: Any, subgraph: Any, new_scales: dict[int, tuple[np.ndarray, np.ndarray]]
) -> None:
    """Re-express the int32 biases of full-integer kernels whose weight scales changed.

    LiteRT requires ``bias scale = input scale * weight scale`` per channel.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    if not new_scales:
        return
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
        model.buffers[bias.buffer].data = np.frombuffer(codes.astype(np.int32).tobytes(), np.uint8)
        bias.quantization.scale = new_bias_scale


# ----------------------------------------------------------------------------- flatbuffers

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4 to 8
TYPE_CODES = {"float32": 0, "float16": 1, "int32": 2, "int8": 9, "int4": 17, "int2": 19}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items() if k != "int32"}


def read_flatbuffer(data: bytes) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


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


# ----------------------------------------------------------------------------- running


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


def silence_fd(fd: int) -> int:
    """Point ``fd`` at /dev/null; returns a duplicate of the old one to restore (-1: untouched)."""
    try:
        saved = os.dup(fd)
    except OSError:
        return -1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return -1
    return saved


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_saved_stderr = -1
_saved_levels: list[tuple[Any, int]] = []


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence TensorFlow's Python warnings and the C++ converter's stderr lines meanwhile.

    The converter and interpreter print from C++ straight to file descriptor 2, so that is
    pointed at /dev/null, and the ``tensorflow`` and ``absl`` loggers are raised to ERROR, for
    the duration: once for nested and concurrent callers, restored when the last one leaves.
    """
    global _quiet_depth, _saved_stderr
    import logging

    with _QUIET_LOCK:
        if _quiet_depth == 0:
            _saved_stderr = silence_fd(2)
            _saved_levels[:] = [
                (logger, logger.level)
                for logger in (logging.getLogger("tensorflow"), logging.getLogger("absl"))
            ]
            for logger, _ in _saved_levels:
                logger.setLevel(logging.ERROR)
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                for logger, level in _saved_levels:
                    logger.setLevel(level)
                if _saved_stderr >= 0:
                    os.dup2(_saved_stderr, 2)
                    os.close(_saved_stderr)
                    _saved_stderr = -1
