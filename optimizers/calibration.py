"""Calibration: what each eligible layer's inputs look like on a few hundred samples.

One run of the model over calibration inputs gives each eligible kernel the second moment of
its inputs, ``H = XᵀX / n`` (im2col patches for a convolution, with its strides, padding and
dilation; one ``H`` per channel for a depthwise kernel), their mean, the columns by decreasing
energy, and the upper Cholesky factor of the dampened ``H⁻¹`` that data-aware compression
(``optimizers.data_aware``) passes with. Gathered once per model (``gather``); each setting
then costs no run of the model.

At most ``CALIBRATION_SAMPLES`` inputs are read; a layer's inputs become the rows its kernel
reads as ``optimizers.input_rows`` lays them out (at most ``ROWS_PER_BATCH`` from a batch).

Layers with data: Dense, EinsumDense (``input_rows.einsum_layout`` says which equations;
those inside a MultiHeadAttention layer too, ``Replay``), Conv1D/2D/3D (grouped too),
DepthwiseConv1D/2D, SeparableConv1D/2D and both kernels of SimpleRNN, GRU and LSTM layers (the
recurrent one on the states before each step), in nested models too. Data-free (plain, as
without calibration): Embedding tables, transposed convolutions, stateful recurrent layers,
GRUs with ``reset_after=False``, and other layers with several inputs.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from optimizers import evaluate
from optimizers.channels import functional_graph
from optimizers.input_rows import EinsumLayout, layer_layout, patches, spread
from optimizers.pipeline import TensorRef

if TYPE_CHECKING:
    import keras

CALIBRATION_SAMPLES = 512  # inputs used at most: GPTQ's 128 already suffice on large models
DAMPING = 0.01  # of H's mean diagonal, added to it before inverting (GPTQ's percdamp)
DENSE_LAYERS = frozenset({"Dense", "EinsumDense"})
CONV_LAYERS = frozenset({"Conv1D", "Conv2D", "Conv3D"})
DEPTHWISE_LAYERS = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
SEPARABLE_LAYERS = frozenset({"SeparableConv1D", "SeparableConv2D"})
RECURRENT_LAYERS = frozenset({"LSTM", "GRU", "SimpleRNN"})
REPLAYED_LAYERS = frozenset({"MultiHeadAttention"})
REPLAYING = threading.Lock()  # held while a replayed layer's sublayers record their inputs


@dataclass(frozen=True)
class LayerInputs:
    """What one kernel's inputs look like on the calibration data, as ``G`` groups of ``C``
    input columns (``G`` = channels for a depthwise kernel, groups for a grouped convolution,
    else 1).

    ``hessian`` (G, C, C) is ``XᵀX / rows``; ``order`` (G, C) the columns by decreasing
    ``H_ii`` (GPTQ's act-order: the inputs with the most energy are rounded first, while the
    most columns remain to take their error); ``inverse_root`` (G, C, C) the upper Cholesky
    factor of the dampened inverse of ``H`` in that order; ``mean`` (G, C) the mean input;
    ``bias`` the index of the layer's bias in the model's weights (``None``: no bias to
    correct); ``axes`` the kernel's axes as rows then columns, for a kernel whose output
    channels are not just its last axis (EinsumDense, ``einsum_layout``; ``None``: the last);
    ``importance`` (G, R) what an error in each row weighs in what the next layer reads: the
    square of the factor a BatchNormalization that alone reads the layer's output multiplies
    that channel by (``batch_norm_factors``; ``None``: every row alike)."""

    hessian: np.ndarray
    order: np.ndarray
    inverse_root: np.ndarray
    mean: np.ndarray
    rows: int
    depthwise: bool
    bias: int | None
    axes: tuple[int, ...] | None = None
    importance: np.ndarray | None = None

    @property
    def groups(self) -> int:
        """Groups of output channels of a kernel that is not depthwise (grouped convolutions)."""
        return 1 if self.depthwise else len(self.hessian)

    @property
    def nbytes(self) -> int:
        arrays = (self.hessian, self.order, self.inverse_root, self.mean, self.importance)
        return sum(a.nbytes for a in arrays if a is not None)


Statistics = Mapping[int, LayerInputs]  # by tensor index in ``model.get_weights()``


# --- the factor the pass uses --------------------------------------------------------------


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


# --- gathering the statistics ----------------------------------------------------------------


@dataclass
class Accumulator:
    """Running sums of one kernel's inputs (float64), made into ``LayerInputs`` at the end."""

    depthwise: bool
    bias: int | None
    axes: tuple[int, ...] | None = None
    factor: np.ndarray | None = None  # the following BatchNormalization's, per output channel
    square: np.ndarray | None = None
    total: np.ndarray | None = None
    rows: int = 0

    def add(self, x: np.ndarray) -> None:
        """``x``: (rows, C); (G, rows, C) for a grouped convolution's G groups; or (cin, taps,
        rows) patches of a depthwise kernel."""
        x = x.astype(np.float32, copy=False)
        if self.depthwise:  # one BLAS product per channel
            square = x @ x.transpose(0, 2, 1)
            total = x.sum(axis=2, dtype=np.float64)
        else:
            x = x if x.ndim == 3 else x[None]
            square = x.transpose(0, 2, 1) @ x
            total = x.sum(axis=1, dtype=np.float64)
        self.square = square.astype(np.float64) + (0 if self.square is None else self.square)
        self.total = total + (0 if self.total is None else self.total)
        self.rows += x.shape[2] if self.depthwise else x.shape[1]

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
            self.axes,
            None if self.factor is None else (self.factor**2).reshape(len(hessian), -1),
        )


@dataclass
class Tap:
    """One leaf layer whose input the gathering reads, and what it feeds."""

    layer: Any
    kernels: dict[str, Accumulator]  # by weight name: kernel, depthwise_kernel, ...
    einsum: EinsumLayout | None = None


@dataclass
class Replay:
    """A layer whose eligible sublayers its model's graph does not show (a MultiHeadAttention's
    query, key, value and output EinsumDense layers): it is run again on its real inputs (its
    first call's arguments), and each tap reads what its sublayer was called on. A layer whose
    inputs carry a mask (an Embedding's ``mask_zero``) is not replayed: its run would attend to
    the padding, so its sublayers stay data-free."""

    layer: Any
    taps: list[Tap]


def layer_input(layer: Any) -> Any | None:
    """The symbolic input of a layer with one input, in its model's graph (of its first call:
    a layer shared by several calls is calibrated on the first); ``None`` otherwise."""
    if not layer._inbound_nodes:
        return None
    tensors = sources_of(layer)
    return tensors[0] if len(tensors) == 1 else None


def batch_norm_factors(model: Any) -> dict[int, np.ndarray]:
    """By ``id`` of a layer of ``model`` (one level): the factor ``γ / √(var + ε)`` per channel of
    the BatchNormalization (on the last axis) that alone reads the layer's output, which the
    model does not return. The layer's error in a channel reaches the next layer multiplied by
    it, as if folded into the kernel, as post-training quantization usually folds it first
    (Nagel et al. 2021). Empty for a model whose graph cannot be read (subclassed)."""
    import keras

    try:
        graph = functional_graph(model)
    except ValueError:
        return {}
    nodes = [n for depth in graph._nodes_by_depth.values() for n in depth]
    readers: dict[int, list[Any]] = {}
    for node in nodes:
        for t in node.input_tensors:
            readers.setdefault(id(t), []).append(node.operation)
    returned = {id(t) for t in graph.outputs}
    calls = Counter(id(n.operation) for n in nodes)
    found = {}
    for node in nodes:
        outputs = list(node.outputs)
        if len(outputs) != 1 or id(outputs[0]) in returned or calls[id(node.operation)] > 1:
            continue
        reading = readers.get(id(outputs[0]), [])
        bn = reading[0] if len(reading) == 1 else None
        last = (-1, len(outputs[0].shape) - 1)
        if not isinstance(bn, keras.layers.BatchNormalization) or bn.axis not in last:
            continue
        gamma = 1.0 if bn.gamma is None else keras.ops.convert_to_numpy(bn.gamma)
        var = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
        found[id(node.operation)] = (gamma / np.sqrt(var + bn.epsilon)).astype(np.float32)
    return found


def leaf_tap(
    layer: Any,
    by_id: Mapping[int, Any],
    weight_index: Mapping[int, int],
    factor: np.ndarray | None = None,
) -> Tap | None:
    """The ``Tap`` of a leaf layer with data (its kernels among the tensors ``by_id``), or
    ``None``; ``factor``: the following BatchNormalization's (``batch_norm_factors``)."""
    kind = type(layer).__name__
    if kind in CONV_LAYERS | DEPTHWISE_LAYERS | SEPARABLE_LAYERS and (
        layer.data_format != "channels_last"
    ):
        return None
    if kind not in DENSE_LAYERS | CONV_LAYERS | DEPTHWISE_LAYERS | SEPARABLE_LAYERS | (
        RECURRENT_LAYERS
    ):
        return None
    einsum = None
    if kind == "EinsumDense":
        einsum = layer_layout(layer)
        if einsum is None:
            return None
    bias = getattr(layer, "bias", None)
    bias_index = None if bias is None else weight_index.get(id(bias))
    if einsum is not None and not einsum.bias:
        bias_index = None  # not one value per kernel row
    kernels = {}
    for v in layer.weights:
        i = weight_index.get(id(v))
        if i is None or i not in by_id:
            continue
        if v.name == "recurrent_kernel" and (
            layer.stateful or not getattr(layer, "reset_after", True)
        ):
            continue  # a carried state, or a GRU gate between the state and the kernel
        depthwise = v.name == "depthwise_kernel" or kind in DEPTHWISE_LAYERS
        own_bias = None if kind in SEPARABLE_LAYERS and depthwise else bias_index
        if kind in RECURRENT_LAYERS:
            own_bias = None  # the bias also serves the recurrent kernel
        axes = None if einsum is None else einsum.kernel
        # The rows of a kernel that makes the layer's output channels (not a separable
        # layer's depthwise half, which the pointwise one reads; not an EinsumDense's).
        half = kind in SEPARABLE_LAYERS and depthwise
        own_factor = None if half or einsum is not None or kind in RECURRENT_LAYERS else factor
        kernels[v.name] = Accumulator(depthwise, own_bias, axes, own_factor)
    return Tap(layer, kernels, einsum) if kernels else None


def taps_of(model: Any, refs: Sequence[TensorRef], weight_index: Mapping[int, int]) -> list[Any]:
    """The layers of ``model`` (one level) whose inputs give statistics: leaf ``Tap``s,
    ``Replay``s, and nested models as ``(model, taps)`` pairs."""
    by_id = {r.index: r for r in refs}
    factors = batch_norm_factors(model)
    found: list[Any] = []
    for layer in model.layers:
        if type(layer).__name__ in REPLAYED_LAYERS and layer._inbound_nodes:
            if any(getattr(t, "_keras_mask", None) is not None for t in sources_of(layer)):
                continue
            sublayers = layer._flatten_layers(include_self=False, recursive=True)
            inner = [leaf_tap(s, by_id, weight_index) for s in sublayers]
            if any(inner):
                found.append(Replay(layer, [t for t in inner if t is not None]))
            continue
        if layer_input(layer) is None:
            continue
        if hasattr(layer, "layers") and layer.layers:
            nested = taps_of(layer, refs, weight_index)
            if nested:
                found.append((layer, nested))
            continue
        tap = leaf_tap(layer, by_id, weight_index, factors.get(id(layer)))
        if tap is not None:
            found.append(tap)
    return found


def hidden_states(layer: Any, x: np.ndarray, extractors: dict[Any, Any]) -> np.ndarray:
    """What a recurrent layer's recurrent kernel multiplies on inputs ``x`` (N, T, D): the state
    before each step (zero, then every step's output but the last, in the order the layer
    steps), as (N·T, units) rows. A twin of the layer returning its sequences computes them."""
    import keras

    key = ("states", id(layer))
    if key not in extractors:
        config = {**layer.get_config(), "return_sequences": True, "return_state": False}
        twin = type(layer).from_config(config)
        twin.build(x.shape)
        twin.set_weights(layer.get_weights())
        extractors[key] = twin
    h = keras.ops.convert_to_numpy(extractors[key](x))
    before = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
    return before.reshape(-1, h.shape[-1])


def sources_of(layer: Any) -> list[Any]:
    """Every symbolic input of ``layer``'s first call in its model."""
    return list(layer._inbound_nodes[0].input_tensors)


def sources(tap: Any) -> list[Any]:
    """The symbolic tensors of its model that a tap reads: a layer's input, or every input of a
    ``Replay``'s layer."""
    if isinstance(tap, Replay):
        return sources_of(tap.layer)
    return [layer_input(tap.layer if isinstance(tap, Tap) else tap[0])]


def feed(
    taps: Sequence[Any],
    model: Any,
    x: np.ndarray,
    extractors: dict[Any, Any],
    real: int | None = None,
) -> None:
    """Run one batch ``x`` through ``model``'s extractor and add each tap's inputs, of the
    first ``real`` samples (the rest fill the batch)."""
    import keras

    key = id(model)
    if key not in extractors:
        extractors[key] = keras.Model(model.inputs, [s for t in taps for s in sources(t)])
    found = extractors[key].predict_on_batch([x])  # compiled once: twice as fast as a call
    found = iter(found if isinstance(found, list | tuple) else [found])
    for tap in taps:
        values = [keras.ops.convert_to_numpy(next(found))[:real] for _ in sources(tap)]
        if isinstance(tap, Replay):
            replay(tap, values, extractors)
        elif isinstance(tap, Tap):
            add(tap, values[0], extractors)
        else:
            feed(tap[1], tap[0], values[0], extractors)  # already the real samples


def replay(tap: Replay, values: Sequence[np.ndarray], extractors: dict[Any, Any]) -> None:
    """Run a ``Replay``'s layer on ``values``, its inputs, and add what each of its taps'
    sublayers was called on (their ``call`` wrapped for the run, to record it)."""
    import keras

    node = tap.layer._inbound_nodes[0]
    args, kwargs = node.arguments.fill_in(
        {id(t): v for t, v in zip(node.input_tensors, values, strict=True)}
    )
    seen: dict[int, Any] = {}
    me = threading.get_ident()

    def recording(layer: Any) -> Callable[..., Any]:
        call = layer.call

        def record(inputs: Any, *rest: Any, **options: Any) -> Any:
            if threading.get_ident() == me:  # not another thread's run of the same model
                seen[id(layer)] = inputs
            return call(inputs, *rest, **options)

        return record

    with REPLAYING:  # one wrapping at a time: two calibrations may share the model
        before = [t.layer.__dict__.get("call") for t in tap.taps]
        for t in tap.taps:
            object.__setattr__(t.layer, "call", recording(t.layer))
        try:
            tap.layer(*args, **kwargs)
        finally:
            for t, call in zip(tap.taps, before, strict=True):
                if call is None:
                    object.__delattr__(t.layer, "call")
                else:
                    object.__setattr__(t.layer, "call", call)
    for t in tap.taps:
        if id(t.layer) in seen:  # a sublayer that did not run its ``call`` gives no data
            add(t, keras.ops.convert_to_numpy(seen[id(t.layer)]), extractors)


def add(tap: Tap, inputs: np.ndarray, extractors: dict[Any, Any]) -> None:
    """Add a leaf layer's ``inputs`` (a batch) to its tap's kernels."""
    import keras

    layer, kind = tap.layer, type(tap.layer).__name__
    if kind in DENSE_LAYERS | RECURRENT_LAYERS:
        contracted = 1
        if tap.einsum is not None:  # the contracted axes last, as the kernel's columns
            inputs, contracted = inputs.transpose(tap.einsum.inputs), tap.einsum.contracted
        flat = inputs.reshape(math.prod(inputs.shape[:-contracted]), -1)
        step = spread(len(inputs), len(flat) // len(inputs))
        tap.kernels["kernel"].add(flat[::step])
        if "recurrent_kernel" in tap.kernels:  # as many states as inputs
            tap.kernels["recurrent_kernel"].add(hidden_states(layer, inputs, extractors)[::step])
        return
    if kind in CONV_LAYERS:
        rows, groups = patches(layer, inputs), layer.groups
        if groups > 1:  # each group of outputs reads its own share of the input channels
            taps = int(np.prod(layer.kernel_size))
            rows = rows.reshape(len(rows), taps, groups, -1).transpose(2, 0, 1, 3)
            rows = rows.reshape(groups, rows.shape[1], -1)
        tap.kernels["kernel"].add(rows)
        return
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
    extractors: dict[Any, Any] = {}
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
                collect(tap.taps if isinstance(tap, Replay) else tap[1])
                continue
            for v in tap.layer.weights:
                kernel = tap.kernels.get(v.name)
                if kernel is not None and kernel.rows and id(v) in weight_index:
                    found[weight_index[id(v)]] = kernel.finish()

    collect(taps)
    return found


def statistics_bytes(statistics: Statistics) -> int:
    """Memory the statistics hold."""
    return sum(s.nbytes for s in statistics.values())
