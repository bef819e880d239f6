"""Fine-tuning that recovers accuracy: train a model toward an ``OptimizationConfig``.

Post-training optimization moves weights without asking the loss; fine-tuning lets the other
weights adapt. Every transformed tensor is trained through a projection onto its structure, as
in the TensorFlow Model Optimization toolkit, but on plain Keras 3 (no layer wrappers):

| technique    | forward pass sees                             | gradient reaches                     |
|--------------|-----------------------------------------------|--------------------------------------|
| pruning      | ``mask * w``; the mask grows on a polynomial  | ``mask * g``: pruned weights get none |
|              | schedule (power 3, tfmot's PolynomialDecay)   |                                      |
| clustering   | ``centroids[index]``; memberships fixed       | each centroid: the sum over members  |
| quantization | ``fake_quantize(v)`` on the pipeline's grid   | ``v`` unchanged (straight-through)   |
|              | (``Techniques.grid``: a clustered tensor's    |                                      |
|              | scales follow its clustering)                 |                                      |

All three compose (PQAT, CQAT, PCQAT) for any combination: pruning ramps up first, clustering
starts once the masks are final (pruned zeros stay one of the k values), fake quantization is on
throughout. The loss mixes the labels' cross-entropy with knowledge distillation from the
float model's own outputs (Hinton et al., 2015), which tell the constrained model how sure to be
of every sample. After every epoch the weights are snapped onto the structure by the pipeline
itself (``constraints.snap``), BatchNorm statistics are re-estimated for those weights, and the
epoch with the best accuracy on a held-out validation split is kept. The result is an ordinary Keras
model whose weights the pipeline at the requested config and every export leave as they are, so
the downloaded file equals the preview.

Training needs TensorFlow (Keras 3's TensorFlow backend, a gradient tape), imported inside the
functions as in ``keras_io`` and ``export``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optimizers import constraints, evaluate
from optimizers.pipeline import OptimizationConfig, Techniques, TensorRef, eligible_tensors
from optimizers.quantization import QuantizationConfig, code_range
from optimizers.tensors import is_real_number, is_whole_number

if TYPE_CHECKING:
    import keras

    from optimizers.datasets import PixelRange

REFRESH_BATCH = 256  # samples per forward pass when re-estimating BatchNorm statistics
MIN_TRAIN = 2  # at least one sample to train on and one to validate on


@dataclass(frozen=True)
class FinetuneConfig:
    """How to train. The pruning schedule is given as fractions of all training steps.

    >>> FinetuneConfig(epochs=5).pruning_end
    0.5
    """

    epochs: int = 50
    learning_rate: float = 3e-3  # Adam, peak of a cosine decay
    batch_size: int = 32
    seed: int = 0
    validation_split: float = 0.1  # held out to pick the best epoch; 0 keeps the last epoch
    pruning_begin: float = 0.0  # the masks start growing here...
    pruning_end: float = 0.5  # ...reach the target here; clustering trains from here on
    pruning_frequency: float = 0.02  # the masks are recomputed this often
    distillation: float = 0.5  # weight of the float model's soft outputs in the loss
    temperature: float = 2.0  # softens both distributions for the distillation term

    def __post_init__(self) -> None:
        wholes = {"epochs": (1, 10_000), "batch_size": (1, 1 << 20), "seed": (0, 2**32 - 1)}
        for name, (lo, hi) in wholes.items():
            value = getattr(self, name)
            if not is_whole_number(value) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a whole number in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, int(value))
        reals = {
            "learning_rate": (0.0, 1.0, "(0, 1]"),
            "validation_split": (0.0, 0.5, "[0, 0.5]"),
            "pruning_begin": (0.0, 1.0, "[0, 1]"),
            "pruning_end": (0.0, 1.0, "[0, 1]"),
            "pruning_frequency": (0.0, 1.0, "(0, 1]"),
            "distillation": (0.0, 1.0, "[0, 1]"),
            "temperature": (0.0, 100.0, "(0, 100]"),
        }
        for name, (lo, hi, shown) in reals.items():
            value = getattr(self, name)
            open_low = shown.startswith("(")
            if (
                not is_real_number(value)
                or not math.isfinite(value)
                or not (lo < value if open_low else lo <= value)
                or value > hi
            ):
                raise ValueError(f"{name} must be a number in {shown}, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.pruning_end < self.pruning_begin:
            raise ValueError(
                f"pruning_end must be at least pruning_begin ({self.pruning_begin}), "
                f"got {self.pruning_end!r}"
            )


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss, validation accuracy (``None`` without a validation
    split) and the fraction of the target sparsity the masks had reached."""

    epoch: int  # 1-based
    loss: float
    val_accuracy: float | None
    pruning_progress: float


@dataclass(frozen=True)
class FinetuneResult:
    """The fine-tuned model and how it got there.

    ``config`` is the config to preview and export ``model`` with, the requested one: the
    pipeline at it leaves the model's weights exactly as they are.
    """

    model: keras.Model
    config: OptimizationConfig
    history: tuple[EpochRecord, ...]
    epochs_run: int  # complete epochs
    best_epoch: int  # the epoch whose weights were kept (a stopped epoch counts as run)
    stopped: bool  # ended by ``should_stop``
    seconds: float


OnEpoch = Callable[[int, float, "float | None"], None]


def load_training_data(
    source: str | Path | bytes,
    model: keras.Model,
    name: str | None = None,
    pixel_range: PixelRange | None = None,
    label_column: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Training ``x`` and ``y`` from a data file (``datasets.read``: ``.npz``, image ``.zip``,
    ``.csv``, ``.parquet``), checked like evaluation data and refused without labels.

    Raises ``keras_io.InputError`` with one sentence per problem.
    """
    from optimizers import datasets
    from optimizers.keras_io import InputError

    data = datasets.read(source, model, name, pixel_range, label_column)
    x, y, name = data.x, data.y, data.name
    if y is None:
        raise InputError(f"{name} has {datasets.no_labels(name)}; fine-tuning needs labels")
    if len(x) < MIN_TRAIN:
        raise InputError(f"{name} holds {len(x)} sample; fine-tuning needs at least {MIN_TRAIN}")
    return x, y


def check_plans(plans: Sequence[tuple[TensorRef, Techniques]]) -> None:
    if not plans:
        raise ValueError("the config transforms no eligible tensor, so there is nothing to train")
    for r, t in plans:
        if t.pruning and t.clustering and not t.clustering.preserve_sparsity:
            raise ValueError(
                f"layer {r.layer}: fine-tuning keeps pruned weights at zero, so clustering "
                "must preserve sparsity when pruning is on"
            )


def output_kind(model: keras.Model, x: np.ndarray) -> tuple[bool, bool]:
    """(binary, from_logits) for the loss: one output unit is binary; outputs already in [0, 1]
    (summing to 1 over several units) are probabilities, anything else logits."""
    out = evaluate.predict(model, x)
    if out.ndim != 2:
        raise ValueError(
            f"fine-tuning needs a classifier with outputs of shape (n, classes), got {out.shape}"
        )
    binary = out.shape[1] == 1
    unit = bool(np.all(out >= 0) and np.all(out <= 1))
    probabilities = unit if binary else unit and bool(np.allclose(out.sum(axis=1), 1, atol=1e-3))
    return binary, not probabilities


def tf_fake_quantize(v: Any, q: QuantizationConfig, axes: tuple[int, ...]) -> Any:
    """``quantization.fake_quantize`` in TensorFlow, with a straight-through gradient. ``q`` is
    the grid the pipeline gives the tensor (``Techniques.grid``)."""
    import tensorflow as tf

    ndim = len(v.shape)
    reduce = None
    if q.granularity == "per-channel":
        channel = {a % ndim for a in axes}
        reduce = [a for a in range(ndim) if a not in channel]
    qmin, qmax = code_range(q.bits, q.mode)
    if q.mode == "symmetric":
        bound = tf.maximum(tf.reduce_max(tf.abs(v), axis=reduce, keepdims=True), 1e-9)
        scale = bound / qmax
        zero_point = tf.zeros_like(scale)
    else:
        lo = tf.minimum(tf.reduce_min(v, axis=reduce, keepdims=True), 0.0)
        hi = tf.maximum(tf.reduce_max(v, axis=reduce, keepdims=True), 0.0)
        scale = tf.maximum(hi - lo, 1e-9) / (qmax - qmin)
        zero_point = tf.round(qmin - lo / scale)
    codes = tf.clip_by_value(tf.round(v / scale + zero_point), qmin, qmax)
    return v + tf.stop_gradient((codes - zero_point) * scale - v)


@dataclass
class Trained:
    """One transformed tensor during training: the variable trained in its place (float
    shadow weights, or centroids once clustered), its keep-mask and cluster index."""

    ref: TensorRef
    techniques: Techniques
    kernel: Any  # the clone's variable, overwritten with the projection before every step
    param: Any
    mask: Any = None  # tf.Variable of 0/1, or None without pruning
    index: np.ndarray | None = None  # cluster memberships (int32, the kernel's shape)

    def project(self) -> Any:
        import tensorflow as tf

        v = self.param if self.index is None else tf.gather(self.param, self.index)
        if self.mask is not None:
            v = v * self.mask
        grid = self.techniques.grid  # the pipeline's: k shared values per tensor stay k
        if grid is not None:
            v = tf_fake_quantize(v, grid, self.ref.channel_axes)
        return v

    def value(self) -> np.ndarray:
        """The weights before quantization, as numpy."""
        v = np.asarray(self.param)
        v = v if self.index is None else v[self.index]
        return v if self.mask is None else v * np.asarray(self.mask)


def class_logits(out: Any, binary: bool, from_logits: bool) -> Any:
    """Outputs as logits over the classes: probabilities become their logarithms, and one
    binary unit becomes two classes with logits 0 and its own (``softmax`` gives ``1 - p, p``)."""
    import tensorflow as tf

    if not from_logits:
        p = tf.clip_by_value(out, 1e-7, 1 - 1e-7)
        out = tf.math.log(p) - tf.math.log1p(-p) if binary else tf.math.log(p)
    return tf.concat([tf.zeros_like(out), out], axis=1) if binary else out


Loss = Callable[[Any, Any, Any], Any]  # (labels, teacher's soft targets, outputs) -> loss


def make_loss(binary: bool, from_logits: bool, settings: FinetuneConfig) -> Loss:
    """Cross-entropy on the labels, mixed with knowledge distillation (Hinton et al., 2015):
    cross-entropy against the float model's outputs softened by ``settings.temperature``
    (``teacher_targets``), scaled by its square so the two terms' gradients stay comparable."""
    import keras
    import tensorflow as tf

    hard = (
        keras.losses.BinaryCrossentropy(from_logits=from_logits)
        if binary
        else keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    )
    weight, t = settings.distillation, settings.temperature

    def loss(y: Any, teacher: Any, out: Any) -> Any:
        if weight == 0:
            return hard(y, out)
        log_p = tf.nn.log_softmax(class_logits(out, binary, from_logits) / t)
        soft = -tf.reduce_mean(tf.reduce_sum(teacher * log_p, axis=1)) * t * t
        return (1 - weight) * hard(y, out) + weight * soft

    return loss


def teacher_targets(
    outputs: np.ndarray, binary: bool, from_logits: bool, temperature: float
) -> np.ndarray:
    """The float model's ``outputs`` as class distributions softened by ``temperature``."""
    import tensorflow as tf

    z = class_logits(tf.constant(outputs, tf.float32), binary, from_logits) / temperature
    return np.asarray(tf.nn.softmax(z), np.float32)


def dense(grads: list[Any], variables: list[Any]) -> list[Any]:
    """Gradients as dense tensors, zeros where a variable does not affect the loss."""
    import tensorflow as tf

    return [
        tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
        for g, v in zip(grads, variables, strict=True)
    ]


def make_step(model: keras.Model, tensors: list[Trained], loss_fn: Loss, learning_rate: float):
    """One compiled training step with a fresh Adam over the tensors' parameters and every
    other trainable weight. Gradients reach the parameters through the projection."""
    import keras
    import tensorflow as tf

    kernels = [t.kernel for t in tensors]
    taken = {id(k) for k in kernels}
    others = [v for v in model.trainable_variables if id(v) not in taken]
    params = [t.param for t in tensors]
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(params + others)

    @tf.function(reduce_retracing=True)
    def step(x: Any, y: Any, teacher: Any) -> Any:
        with tf.GradientTape() as projection:
            projected = [t.project() for t in tensors]
        for kernel, p in zip(kernels, projected, strict=True):
            kernel.assign(p)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, teacher, model(x, training=True))
            total = loss + tf.add_n(model.losses) if model.losses else loss
        grads = tape.gradient(total, kernels + others)
        grads = dense(grads, kernels + others)
        to_params = projection.gradient(projected, params, output_gradients=grads[: len(kernels)])
        # A centroid's gradient arrives as slices, one per member; dense sums them.
        to_params = dense(to_params, params)
        optimizer.apply(to_params + grads[len(kernels) :], params + others)
        return loss

    return step, optimizer


def learning_rate(peak: float, step: int, total: int) -> float:
    """Cosine decay from ``peak`` at step 0 towards 0 at ``total`` steps: large steps while the
    structure changes, small ones to settle in it."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def refresh_batchnorm(model: keras.Model, x: np.ndarray) -> None:
    """Re-estimate every BatchNormalization's moving statistics for the current weights:
    forward passes in training mode with the momentum set so the moving values become the plain
    average over the batches (the optimizer is not involved)."""
    import keras

    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers:
        return
    saved = [layer.momentum for layer in layers]
    size = min(REFRESH_BATCH, len(x))
    try:
        for t, start in enumerate(range(0, len(x) - size + 1, size)):
            for layer in layers:
                layer.momentum = t / (t + 1)
            model(x[start : start + size], training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum


def finetune(
    model: keras.Model,
    config: OptimizationConfig,
    x: np.ndarray,
    y: np.ndarray,
    settings: FinetuneConfig | None = None,
    on_epoch: OnEpoch | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinetuneResult:
    """Train a copy of ``model`` so that ``config``'s structure costs as little accuracy as
    possible; ``model`` is not changed.

    ``x``/``y`` are training inputs and class ids (``load_training_data``); a seeded
    ``settings.validation_split`` of them is held out to pick the best epoch. ``on_epoch(epoch,
    loss, val_accuracy)`` is called after each epoch (1-based; ``val_accuracy`` is None without
    a validation split). ``should_stop()`` is polled after every batch: when it returns True
    training ends there, the partial epoch is measured like a full one, and the best epoch so
    far is kept. The same seed gives the same weights.

    >>> result = finetune(model, OptimizationConfig(quantization=QuantizationConfig(2)), x, y)
    ... # doctest: +SKIP
    """
    import keras
    import tensorflow as tf

    settings = settings or FinetuneConfig()
    start = time.perf_counter()
    refs = eligible_tensors(model)
    plans = constraints.plan(refs, config)
    check_plans(plans)
    x = np.asarray(x, np.float32)
    if len(x) != len(y) or len(x) < MIN_TRAIN:
        raise ValueError(f"need at least {MIN_TRAIN} samples and one label each")
    binary, from_logits = output_kind(model, x[:REFRESH_BATCH])
    labels = np.asarray(y, np.float32).reshape(-1, 1) if binary else np.asarray(y, np.int32)
    loss_fn = make_loss(binary, from_logits, settings)
    soft = teacher_targets(evaluate.predict(model, x), binary, from_logits, settings.temperature)

    keras.utils.set_random_seed(settings.seed)  # dropout in the clone, below
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(x))
    n_val = min(len(x) - 1, math.ceil(settings.validation_split * len(x)))
    val, fit = order[:n_val], order[n_val:]
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    evaluator = keras.models.clone_model(model)  # candidates are measured here

    steps_per_epoch = math.ceil(len(fit) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    begin = round(settings.pruning_begin * total)
    end = round(settings.pruning_end * total)
    frequency = max(1, round(settings.pruning_frequency * total))
    prunes = any(t.pruning for _, t in plans)
    cluster_step = end if prunes else 0

    initial = model.get_weights()
    tensors = [
        Trained(r, t, clone.weights[r.index], keras.Variable(initial[r.index], name="shadow"))
        for r, t in plans
    ]
    for t in tensors:
        if t.techniques.pruning:
            t.mask = tf.Variable(np.ones(t.ref.shape, np.float32), trainable=False)
    step_fn, optimizer = make_step(clone, tensors, loss_fn, settings.learning_rate)

    def progress(at: int) -> float:
        return constraints.polynomial_sparsity(at, begin, end, 1.0) if prunes else 0.0

    def start_clustering() -> None:
        nonlocal step_fn, optimizer
        for t in tensors:
            if not t.techniques.clustering:
                continue
            centroids, index = constraints.cluster_assignments(
                t.value(), t.techniques, t.ref.channel_axes
            )
            t.param, t.index = keras.Variable(centroids, name="centroids"), index
            if t.mask is not None:  # the zero cluster holds the pruned weights
                t.mask.assign((centroids[index] != 0).astype(np.float32))
        step_fn, optimizer = make_step(clone, tensors, loss_fn, settings.learning_rate)

    def candidate() -> tuple[list[np.ndarray], float | None]:
        weights = [np.asarray(v) for v in clone.weights]
        for t in tensors:
            weights[t.ref.index] = t.value().astype(weights[t.ref.index].dtype)
        evaluator.set_weights(constraints.snap(weights, refs, config))
        refresh_batchnorm(evaluator, x[fit])
        acc = None
        if n_val:
            acc = evaluate.accuracy(evaluate.predict(evaluator, x[val]), np.asarray(y)[val])
        return evaluator.get_weights(), acc

    history: list[EpochRecord] = []
    best: tuple[float, int, list[np.ndarray]] | None = None
    stopped = False
    at = 0
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        batches = rng.permutation(fit)
        losses = []
        for i in range(0, len(batches), settings.batch_size):
            if prunes and constraints.is_update_step(at, begin, end, frequency):
                values = {t.ref.index: t.value() for t in tensors}
                masks = constraints.pruning_masks(values, plans, progress(at))
                for t in tensors:
                    if t.ref.index in masks:
                        t.mask.assign(masks[t.ref.index])
            if at == cluster_step and any(t.techniques.clustering for t in tensors):
                start_clustering()
            batch = batches[i : i + settings.batch_size]
            optimizer.learning_rate = learning_rate(settings.learning_rate, at, total)
            inputs = (tf.constant(a[batch]) for a in (x, labels, soft))
            losses.append(float(step_fn(*inputs)))
            at += 1
            if should_stop is not None and should_stop():
                stopped = True
                break
        weights, acc = candidate()
        score = -1.0 if acc is None else acc
        if best is None or score >= best[0]:  # ties: the later epoch, with more training
            best = (score, epoch, weights)
        if stopped:
            break
        loss = float(np.mean(losses))
        history.append(EpochRecord(epoch, loss, acc, progress(at)))
        if on_epoch is not None:
            on_epoch(epoch, loss, acc)
    assert best is not None
    result = keras.models.clone_model(model)
    result.set_weights(best[2])
    return FinetuneResult(
        model=result,
        config=config,
        history=tuple(history),
        epochs_run=len(history),
        best_epoch=best[1],
        stopped=stopped,
        seconds=time.perf_counter() - start,
    )


def finetune_config_to_dict(settings: FinetuneConfig) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(FinetuneConfig)}
