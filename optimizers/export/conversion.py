"""Keras model -> float32 (dense or sparse) or full-integer int8 LiteRT flatbuffer, checked.

The converter freezes a traced inference function in memory (a SavedModel in a temporary folder,
always removed, is only the fallback); the float32 flatbuffers of the last few models are
memoized, so asking for several formats of one model converts it once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from optimizers.export import apart
from optimizers.export.quiet import quiet
from optimizers.export.reweight import Placement, kernel_placements, rewritten
from optimizers.export.running import run_tflite

if TYPE_CHECKING:
    import keras

CALIBRATION_SAMPLES = 128  # representative samples for full-integer calibration, evenly spread
SPARSITY_WORTH_TRYING = 0.3  # the converter stores a weight tensor sparse from this sparsity
SAVING_WORTH_TRYING = 0.05  # a sparse conversion is tried when it may save this much of the file


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

    The fast way hands the converter a traced concrete function, which it freezes (variables
    become constants; once, ``frozen_once``) on its frozen-graph path: faster than a SavedModel
    (MobileNetV2: 5 s against 18 s). Freezing it here first would freeze it twice (ResNet50:
    9.5 s and 2.2 GB more memory against 5.8 s and 1.7 GB). The SavedModel way (what
    ``from_keras_model`` does for Keras 3, in a temporary folder removed afterwards) is the
    fallback. Never hand ``from_concrete_functions`` the model as trackable: it leaves Keras 3
    variables uninitialized and the file computes garbage.
    """
    import tensorflow as tf

    call = functools.partial(model.__call__, training=False)
    if not via_saved_model:
        with quiet():
            traced = tf.function(call).get_concrete_function(*signature)
        yield lambda: frozen_once(tf.lite.TFLiteConverter.from_concrete_functions([traced]))
        return
    import keras

    with tempfile.TemporaryDirectory(prefix="model-export-") as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", call, signature)
        with quiet():
            archive.write_out(folder, verbose=False)
        yield lambda: tf.lite.TFLiteConverter.from_saved_model(folder)


def frozen_once(converter: Any) -> Any:
    """``converter`` (of one traced function) freezing its function without rebuilding it.

    The converter freezes the function's variables into a graph of constants, then imports
    that graph again as a new function, only to read its inputs and outputs and hand its graph
    to Grappler: on ResNet50 that import is 2.6 s of a 10 s conversion, and a second copy of
    the 100 MB of weights. The traced function has those inputs and outputs (less the captured
    values the freezing made constants) and its graph serves Grappler as well (it reads the
    graph's collections; the frozen graph is given to it). Where this TensorFlow's converter
    or freezing is not the one this was written against, the converter freezes as it does.
    """
    from tensorflow.python.framework import convert_to_constants as constants

    traced = converter._funcs[0] if len(getattr(converter, "_funcs", ())) == 1 else None
    data_type = getattr(constants, "_FunctionConverterDataInEager", None)
    replace = getattr(constants, "_replace_variables_by_constants", None)
    if traced is None or data_type is None or replace is None:
        return converter

    def freeze() -> tuple[Any, list[Any], list[Any], Any]:
        data = data_type(func=traced, lower_control_flow=False, aggressive_inlining=False)
        graph_def, converted = replace(converter_data=data)
        captured = {id(traced.graph.internal_captures[i]) for i in converted}
        inputs = [t for t in traced.inputs if id(t) not in captured and t.dtype.name != "resource"]
        return graph_def, inputs, traced.outputs, traced

    converter._freeze_concrete_function = freeze
    return converter


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
    """Raise ``ValueError`` unless the float32 file computes what the Keras model computes, on
    one random input: it reaches every weight as four would, and TensorFlow keeps buffers the
    size of its first eager call's batch for the rest of the process (ResNet50: 86 MB for one
    input, 555 MB for four, and 0.25 s a call instead of 0.6 s)."""
    if len(signature) != 1:
        return
    probe = probe_inputs(signature[0], count=1)
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
        h.update(np.ascontiguousarray(w).reshape(-1).view(np.uint8))  # its bytes, not a copy
    return h.hexdigest()


def converted(
    model: keras.Model,
    signature: list[Any],
    fmts: tuple[str, ...],
    samples: np.ndarray | None = None,
    key: str | None = None,
) -> dict[str, bytes]:
    """Converter outputs for ``fmts`` from one trace of the model; the float ones are memoized
    (by ``key``: ``model_digest(model)``, which a caller that has it may pass).

    The dense float32 file is checked against Keras; while a conversion fails or disagrees,
    the next of ``conversion_attempts`` is tried (the first failure is the one reported). A
    sparse float32 conversion that fails gives ``b""``.
    """
    key = model_digest(model) if key is None else key
    with _CACHE_LOCK:
        files = {f: _CACHE[(key, f)] for f in fmts if (key, f) in _CACHE}
        for f in files:
            _CACHE.move_to_end((key, f))
    missing = [f for f in fmts if f not in files]
    if not missing:
        return files
    apart.install()
    with apart.ready(model.count_params()):
        made = attempted(model, signature, missing, samples)
    files.update(made)
    with _CACHE_LOCK:
        for f in missing:
            if f != "tflite-int8":
                _CACHE[(key, f)] = files[f]
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return files


def attempted(
    model: keras.Model, signature: list[Any], fmts: list[str], samples: np.ndarray | None
) -> dict[str, bytes]:
    """``fmts`` converted from the first of ``conversion_attempts`` that converts them and whose
    dense float32 file computes what ``model`` computes; ``ValueError`` with the first failure
    when none does."""
    failure: ValueError | None = None
    for via_saved_model, sig in conversion_attempts(signature):
        try:
            made = {}
            with converter_source(model, sig, via_saved_model) as make:
                for f in fmts:
                    try:
                        made[f] = convert(make, f, samples)
                    except ValueError:
                        if f != "tflite-float32-sparse":
                            raise
                        made[f] = b""
            if "tflite-float32" in made:
                check_float_file(model, made["tflite-float32"], sig)
            return made
        except ValueError as e:
            failure = failure or e
    assert failure is not None
    raise ValueError(naming_the_layer(model, str(failure))) from None


_PLACEMENTS: OrderedDict[str, dict[int, Placement]] = OrderedDict()
_PLACEMENTS_SIZE = 4


def dense_float32(model: keras.Model, signature: list[Any], base: keras.Model | None) -> bytes:
    """The checked dense float32 file of ``model``, memoized. When ``base`` (the model
    ``model``'s weights were optimized from: same graph, other values) is given, its file is
    converted once and each of ``model``'s is that file with the changed kernels rewritten
    (``reweight``), checked against Keras like a conversion; the converter is the fallback."""
    key = model_digest(model)
    with _CACHE_LOCK:
        found = _CACHE.get((key, "tflite-float32"))
    if found is None and base is not None:
        found = from_base(model, signature, base)
        if found is not None:
            with _CACHE_LOCK:
                _CACHE[(key, "tflite-float32")] = found
                while len(_CACHE) > _CACHE_SIZE:
                    _CACHE.popitem(last=False)
    if found is None:
        found = converted(model, signature, ("tflite-float32",), key=key)["tflite-float32"]
    return found


def base_file(base: keras.Model, signature: list[Any]) -> tuple[bytes, dict[int, Placement]]:
    """``base``'s checked float32 file and where its kernels lie in it, memoized: what every
    setting's file is rewritten from."""
    base_key = model_digest(base)
    data = converted(base, signature, ("tflite-float32",), key=base_key)["tflite-float32"]
    with _CACHE_LOCK:
        placements = _PLACEMENTS.get(base_key)
    if placements is None:
        placements = kernel_placements(base.get_weights(), data)
        with _CACHE_LOCK:
            _PLACEMENTS[base_key] = placements
            while len(_PLACEMENTS) > _PLACEMENTS_SIZE:
                _PLACEMENTS.popitem(last=False)
    return data, placements


def from_base(model: keras.Model, signature: list[Any], base: keras.Model) -> bytes | None:
    """``model``'s float32 file rewritten from ``base``'s, or ``None`` when it cannot be."""
    data, placements = base_file(base, signature)
    data = rewritten(data, placements, base.get_weights(), model.get_weights())
    if data is None:
        return None
    try:
        check_float_file(model, data, signature)
    except ValueError:
        return None
    return data


def conversion_attempts(signature: list[Any]) -> list[tuple[bool, list[Any]]]:
    """(via SavedModel?, signature) pairs to try in turn.

    Traced function with a free batch size first; then with batch size 1, which recurrent
    layers need (the converter cannot lower their tensor lists with an unknown batch size, and
    such a file runs one sample at a time); then the SavedModel path.
    """
    import tensorflow as tf

    def batch_one(spec: Any) -> Any:
        if isinstance(spec, list):
            return [batch_one(s) for s in spec]
        return tf.TensorSpec((1, *spec.shape[1:]), spec.dtype, spec.name)

    return [(False, signature), (False, batch_one(signature)), (True, signature)]


def sparse_saving(model: keras.Model) -> int:
    """At most how many bytes LiteRT's sparse format could save on ``model``'s weights: the
    converter stores a tensor (at least ``SPARSITY_WORTH_TRYING`` zeros) by rows of its last
    axis (a kernel's inputs: Keras's axis -2), each nonzero value with its 4 bytes and its
    column index (1 byte up to 256 columns, then 2, then 4), and the rows' offsets besides,
    which this leaves out."""
    saved = 0
    for w in model.get_weights():
        if w.ndim < 2 or not w.size:
            continue
        nonzero = np.count_nonzero(w)
        if 1.0 - nonzero / w.size < SPARSITY_WORTH_TRYING:
            continue
        index = 1 if w.shape[-2] <= 256 else 2 if w.shape[-2] <= 65536 else 4
        saved += max(0, 4 * w.size - (4 + index) * nonzero)
    return saved


def smallest_float32(model: keras.Model, signature: list[Any], dense: bytes) -> bytes:
    """The dense float32 file ``dense``, or the sparse one when the model is pruned and that is
    smaller.

    A sparse file stores pruned weights in LiteRT's compressed sparse format and DENSIFY ops
    expand them once when the interpreter prepares, so it computes exactly what the dense one
    does; it is kept only when it is smaller and its outputs agree with the dense file's. It is
    not made when it cannot save ``SAVING_WORTH_TRYING`` of the file (ResNet50 pruned 30%:
    a 13 s conversion that saved nothing).
    """
    if sparse_saving(model) < SAVING_WORTH_TRYING * len(dense):
        return dense
    sparse = converted(model, signature, ("tflite-float32-sparse",))["tflite-float32-sparse"]
    if not sparse or len(sparse) >= len(dense) or len(signature) != 1:
        return dense
    probe = probe_inputs(signature[0])
    try:
        reference, outputs = run_tflite(dense, probe), run_tflite(sparse, probe)
    except (RuntimeError, ValueError):
        return dense
    tolerance = 1e-5 * max(1.0, float(np.abs(reference).max()))
    return sparse if np.allclose(reference, outputs, rtol=1e-5, atol=tolerance) else dense


def probe_inputs(spec: Any, count: int = 4) -> np.ndarray:
    """``count`` deterministic inputs of the signature's shape, to compare two models' outputs."""
    shape = (count, *[d or 1 for d in spec.shape[1:]])
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
