"""Collaborative optimization: prune → cluster → quantize every eligible tensor of a model.

Eligible tensors are the weight matrices that carry almost all of a network's parameters: the
kernels of Dense, Conv1D/2D/3D, DepthwiseConv, SeparableConv (both kernels), ConvTranspose,
EinsumDense, recurrent layers (kernel and recurrent kernel), and Embedding tables, found in nested
models too. Biases and normalization parameters are tiny, sensitive, and stay float32.

With clustering and quantization both on, quantization rounds the shared values themselves, on
a grid whose scales follow the clustering's granularity (``Techniques.grid``): a tensor clustered
into k values per tensor (per channel) holds at most k per tensor (per channel) after it.

The work is done on plain numpy arrays (``optimize_weights``), so a caller that keeps a model's
weights can re-run it without touching Keras; ``optimize_model`` wraps it for a Keras model and
never mutates its input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from optimizers import quantization
from optimizers.clustering import ClusteringConfig, cluster_codes
from optimizers.input_rows import layer_layout
from optimizers.levels import Coded, Repeats, Statistics, repeats, statistics
from optimizers.pruning import (
    PruningConfig,
    compiled_floats,
    global_masks,
    keep_where,
    prune,
    sorted_magnitudes,
)
from optimizers.quantization import QuantizationConfig, blocked, quantize, quantize_table
from optimizers.tensors import as_channel_columns
from optimizers.workers import POOL

if TYPE_CHECKING:
    import keras

ELIGIBLE_WEIGHT_NAMES = frozenset(
    {"kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel", "embeddings"}
)
NO_TECHNIQUES = "none"
DEPTHWISE_LAYERS = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
TRANSPOSE_LAYERS = frozenset({"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"})


@dataclass(frozen=True)
class Techniques:
    """The three stages for one tensor; ``None`` turns a stage off."""

    pruning: PruningConfig | None = None
    clustering: ClusteringConfig | None = None
    quantization: QuantizationConfig | None = None

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(Techniques))

    @property
    def grid(self) -> QuantizationConfig | None:
        """The quantization grid the tensor gets: ``quantization``, except that after
        clustering its scales follow the clustering's granularity (one scale per tensor for
        shared values per tensor, one per output channel for shared values per channel),
        whatever ``quantization.granularity`` says: a finer grid would split the shared values.
        ``quantization.granularity`` applies to tensors that are quantized without clustering.

        >>> Techniques(clustering=ClusteringConfig(16), quantization=QuantizationConfig(4)).grid
        QuantizationConfig(bits=4, mode='symmetric', granularity='per-tensor', block_size=None)
        """
        q, c = self.quantization, self.clustering
        if q is None or c is None:
            return q
        return replace(q, granularity=c.granularity, block_size=None)


@dataclass(frozen=True)
class OptimizationConfig(Techniques):
    """Techniques for every eligible tensor, with per-layer exceptions.

    ``skip`` names layers left untouched; ``overrides`` gives layers their own ``Techniques``.
    ``data_aware`` prunes and rounds with calibration data (``optimizers.data_aware``).

    >>> OptimizationConfig(pruning=PruningConfig(0.6), skip=("predictions",)).for_layer("dense")
    Techniques(pruning=PruningConfig(sparsity=0.6, structure='unstructured', scope='per-layer'), clustering=None, quantization=None)
    """

    skip: tuple[str, ...] = ()
    overrides: tuple[tuple[str, Techniques], ...] = field(default=())
    data_aware: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.data_aware, bool):
            raise ValueError(f"data_aware must be true or false, got {self.data_aware!r}")

    def for_layer(self, layer: str) -> Techniques:
        if layer in self.skip:
            return Techniques()
        return dict(self.overrides).get(
            layer, Techniques(self.pruning, self.clustering, self.quantization)
        )


@dataclass(frozen=True)
class TensorRef:
    """Where an eligible tensor lives: its index in ``model.get_weights()`` and its names."""

    index: int
    path: str
    layer: str
    layer_type: str
    shape: tuple[int, ...]
    channel_axes: tuple[int, ...]
    input_axis: int | None = None  # where ``pruning.input_axis`` is not right: ``inputs_along``


@dataclass(frozen=True)
class TensorReport:
    """What the pipeline did to one tensor (``eligible=False``: left float32 by design).

    ``scales`` counts the float parameters a quantized tensor stores beside its codes (one
    scale per channel or per block, twice that with zero points), ``scale_bits`` bits each.
    """

    index: int
    path: str
    layer: str
    shape: tuple[int, ...]
    params: int
    eligible: bool
    techniques: str
    sparsity: float
    unique_values: int
    max_channel_values: int
    bits: int | None
    scales: int
    sqnr_db: float | None
    channel_axes: tuple[int, ...] = (-1,)
    per_channel: bool = False  # quantized with one scale per output channel
    scale_bits: int = 32  # float32 scales; LiteRT stores blockwise ones as float16
    entropy_bits: float = 0.0  # n x H of the values (per channel when per_channel); 0 if float
    # The distinct values and their counts, when at most ``levels.LEVELS_KEPT`` (eligible only).
    levels: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    @property
    def transformed(self) -> bool:
        """Whether any technique changed how this tensor is stored."""
        return self.eligible and self.techniques != NO_TECHNIQUES


def channel_axes(layer_type: str, weight_name: str) -> tuple[int, ...]:
    """Axes of a kernel that index output channels, as LiteRT quantizes them per channel."""
    if layer_type in DEPTHWISE_LAYERS or weight_name == "depthwise_kernel":
        return (-2, -1)  # input channel x depth multiplier
    if layer_type in TRANSPOSE_LAYERS:
        return (-2,)  # Keras stores transposed kernels as (..., out, in)
    return (-1,)


def inputs_along(layer: Any, weight_name: str) -> int | None:
    """The axis of ``layer``'s kernel its inputs run along (2:4 pruning keeps 2 of every 4 of
    them), where it is not ``pruning.input_axis``'s (a Dense kernel's first, a convolution's
    input channels): a transposed convolution's last (Keras stores it as (..., out, in)), an
    EinsumDense kernel's last contracted one (``input_rows.layer_layout``; ``None`` for the
    equations it refuses)."""
    kind = type(layer).__name__
    if kind in TRANSPOSE_LAYERS:
        return -1
    layout = layer_layout(layer) if kind == "EinsumDense" and weight_name == "kernel" else None
    return None if layout is None else layout.kernel[-1]


def eligible_tensors(model: keras.Model) -> list[TensorRef]:
    """The eligible tensors of ``model``, in ``model.weights`` order; shared weights once."""
    index = {id(v): i for i, v in enumerate(model.weights)}
    refs: dict[int, TensorRef] = {}
    # Keras 3 has no public recursive walk; _flatten_layers is what Layer.weights itself uses.
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if list(layer._flatten_layers(include_self=False, recursive=False)):
            continue  # a container: its leaves are visited on their own
        for v in layer.weights:
            i = index.get(id(v))
            if i is None or i in refs or v.name not in ELIGIBLE_WEIGHT_NAMES or len(v.shape) < 2:
                continue
            layer_type = type(layer).__name__
            refs[i] = TensorRef(
                i,
                v.path,
                layer.name,
                layer_type,
                tuple(v.shape),
                channel_axes(layer_type, v.name),
                inputs_along(layer, v.name),
            )
    return [refs[i] for i in sorted(refs)]


def distinct_counts(w: np.ndarray, axes: tuple[int, ...]) -> tuple[int, int]:
    """(distinct values in ``w``, the most distinct values in any one output channel)."""
    found = statistics(w, axes, per_channel=False)
    return found.distinct, found.max_channel


def sqnr_db(original: np.ndarray, optimized: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio in dB; ``None`` when nothing changed. Sums run in
    float32 (BLAS): a ratio in dB needs no more digits, and float64 would be 20x slower."""
    error = (original - optimized).ravel()
    noise = float(np.dot(error, error))
    if noise == 0:
        return None
    signal = float(np.dot(original.ravel(), original.ravel()))
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def describe(t: Techniques) -> str:
    """Short text of the stages applied, e.g. ``"prune 60% → 16 clusters → int4"``."""
    parts = []
    if t.pruning:
        p = t.pruning
        parts.append("prune 2:4" if p.structure == "2:4" else f"prune {p.sparsity:.0%}")
    if t.clustering:
        parts.append(f"{t.clustering.clusters} clusters")
    if t.quantization:
        parts.append(f"int{t.quantization.bits}")
    return " → ".join(parts) or NO_TECHNIQUES


def report_tensor(
    index: int,
    path: str,
    layer: str,
    original: np.ndarray,
    optimized: np.ndarray,
    techniques: Techniques | None,
    axes: tuple[int, ...] = (-1,),
    coded: Coded | None = None,
    repeats: Repeats | None = None,
) -> TensorReport:
    """The report of ``optimized``, made from ``original``; ``coded`` are its codes when it is
    clustered or quantized, ``repeats`` the original's when it is only pruned."""
    size = int(optimized.size)
    zeros = size - int(np.count_nonzero(optimized))
    eligible = techniques is not None
    q = techniques.grid if eligible else None
    per_channel = q is not None and q.granularity == "per-channel"
    if eligible:
        found = statistics(optimized, axes, per_channel, coded, repeats)
    else:
        found = Statistics(int(np.unique(optimized).size), 0, 0.0)
    scales, scale_bits = 0, 32
    if q is not None and blocked(optimized.shape, axes, q.block_size):
        scales, scale_bits = optimized.size // q.block_size, 16
    elif q is not None:
        scales = (
            1 if q.granularity == "per-tensor" else as_channel_columns(optimized, axes)[0].shape[1]
        )
        scales *= 2 if q.mode == "asymmetric" else 1
    return TensorReport(
        index=index,
        path=path,
        layer=layer,
        shape=tuple(optimized.shape),
        params=size,
        eligible=eligible,
        techniques=describe(techniques) if eligible else "float32 (not eligible)",
        sparsity=zeros / size if size else 0.0,
        unique_values=found.distinct,
        max_channel_values=found.max_channel,
        bits=q.bits if q else None,
        scales=scales,
        scale_bits=scale_bits,
        sqnr_db=sqnr_db(original, optimized),
        channel_axes=axes,
        per_channel=per_channel,
        entropy_bits=found.bits,
        levels=found.levels,
    )


def global_pruning_masks(
    weights: Sequence[np.ndarray], plan: Mapping[int, tuple[TensorRef, Techniques]]
) -> dict[int, np.ndarray]:
    """Global pruning's masks, by tensor index: one magnitude threshold across every tensor of
    ``plan`` (index -> (ref, its techniques)) that shares the same global pruning config."""
    masks: dict[int, np.ndarray] = {}
    groups: dict[PruningConfig, list[int]] = {}
    for i, (_, t) in plan.items():
        if t.pruning and t.pruning.scope == "global" and t.pruning.structure == "unstructured":
            groups.setdefault(t.pruning, []).append(i)
    for p, members in groups.items():
        masks.update(
            zip(members, global_masks([weights[i] for i in members], p.sparsity), strict=True)
        )
    return masks


class Known(NamedTuple):
    """What is read once from an original tensor, so that its settings are answered faster:
    ``|w|`` sorted (pruning reads its thresholds; ``None`` where it counts them in compiled
    passes as fast) and where its values repeat (a pruned tensor's report is counted, not
    sorted)."""

    magnitudes: np.ndarray | None
    repeats: Repeats | None


def read_once(w: np.ndarray, axes: tuple[int, ...]) -> Known:
    """``Known`` of ``w`` (channels along ``axes``): where its values repeat, and its magnitudes
    sorted where pruning reads them (``keeps_magnitudes``)."""
    return Known(sorted_magnitudes(w) if keeps_magnitudes(w) else None, repeats(w, axes))


def keeps_magnitudes(w: np.ndarray) -> bool:
    """Whether ``read_once`` keeps ``w``'s magnitudes sorted: pruning reads its thresholds from
    them unless it counts them in compiled passes, as fast."""
    return not compiled_floats(w)


def read_once_bytes(w: np.ndarray) -> int:
    """At most what ``read_once`` keeps of ``w``: its repeats (at most its size again) and
    its magnitudes sorted, where kept."""
    return (2 if keeps_magnitudes(w) else 1) * w.nbytes


def optimize_weights(
    weights: Sequence[np.ndarray],
    refs: Sequence[TensorRef],
    config: OptimizationConfig,
    known: Mapping[int, Known] | None = None,
) -> tuple[list[np.ndarray], list[TensorReport]]:
    """Apply ``config`` to the eligible ``refs`` of ``weights`` (a model's ``get_weights()``);
    ``known`` is ``read_once`` of the tensors, by index, where kept (the same answer, sooner).

    Returns new weights (untouched tensors are the same objects, never modified) and a report
    for every tensor: eligible ones first in model order, then the float32 ones.
    """
    out = list(weights)
    plan = {r.index: (r, config.for_layer(r.layer)) for r in refs}
    for r, _ in plan.values():
        if not np.all(np.isfinite(weights[r.index])):
            raise ValueError(f"tensor {r.path} holds NaN or Inf values; fix the model first")
    masks = global_pruning_masks(weights, plan)

    def one(i: int, r: TensorRef, t: Techniques) -> tuple[np.ndarray, TensorReport]:
        w, found = weights[i], (known or {}).get(i)
        if t.pruning:
            if i in masks:
                w = keep_where(w, masks[i])
            else:
                w = prune(w, t.pruning, None if found is None else found.magnitudes, r.input_axis)
        coded = None
        if t.clustering:
            coded = cluster_codes(w, t.clustering, r.channel_axes)
            if t.quantization:  # the shared values themselves: k of them stay at most k
                coded = quantize_table(coded, t.quantization)
            w = coded.values
        elif t.quantization:
            q = quantize(w, t.quantization, r.channel_axes)
            w, coded = q.values, quantization.coded(q, t.quantization, r.channel_axes)
        # Only a tensor that is just pruned holds its original's values: its report reads the
        # original's repeats.
        repeated = None if found is None or t.clustering or t.quantization else found.repeats
        report = report_tensor(
            i, r.path, r.layer, weights[i], w, t, r.channel_axes, coded, repeated
        )
        return w, report

    # Tensors are independent: side by side in the pool (numpy releases the GIL), the largest
    # first so that no large one is left running alone at the end; reports in model order.
    jobs = {i: POOL.submit(one, i, *plan[i]) for i in sorted(plan, key=lambda i: -weights[i].size)}
    reports = []
    for i in plan:
        out[i], report = jobs[i].result()
        reports.append(report)
    return out, reports


def float_reports(
    weights: Sequence[np.ndarray], paths: Sequence[str], layers: Sequence[str], skip: set[int]
) -> list[TensorReport]:
    """Reports for the tensors the pipeline leaves in float32 (biases, normalization, ...)."""
    return [
        report_tensor(i, paths[i], layers[i], w, w, None)
        for i, w in enumerate(weights)
        if i not in skip
    ]


def optimize_model(
    model: keras.Model, config: OptimizationConfig
) -> tuple[keras.Model, list[TensorReport]]:
    """A new model with ``config`` applied, and the per-tensor report (float tensors included).

    >>> new_model, report = optimize_model(model, OptimizationConfig(pruning=PruningConfig(0.5)))
    ... # doctest: +SKIP
    """
    import keras

    refs = eligible_tensors(model)
    weights = model.get_weights()
    new_weights, reports = optimize_weights(weights, refs, config)
    clone = keras.models.clone_model(model)
    clone.set_weights(new_weights)
    layers = [v.path.rsplit("/", 1)[0] for v in model.weights]
    paths = [v.path for v in model.weights]
    reports += float_reports(weights, paths, layers, {r.index for r in refs})
    return clone, reports


# --- recipes: the config as plain JSON-able data (the CLI's --recipe and the app's download) ---

STAGES: Mapping[str, type] = {
    "pruning": PruningConfig,
    "clustering": ClusteringConfig,
    "quantization": QuantizationConfig,
}


def techniques_to_dict(t: Techniques) -> dict[str, Any]:
    return {name: None if getattr(t, name) is None else asdict(getattr(t, name)) for name in STAGES}


def techniques_from_dict(data: Any, where: str = "the recipe") -> Techniques:
    """Stage settings from a recipe; ``where`` names their place in error messages."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a JSON object of stage settings")
    unknown = set(data) - set(STAGES)
    if unknown:
        raise ValueError(
            f"unknown recipe keys {sorted(unknown)} in {where}; expected {sorted(STAGES)}"
        )
    for name in STAGES:
        if data.get(name) is not None and not isinstance(data[name], Mapping):
            raise ValueError(f"{name!r} in {where} must be a JSON object of settings or null")
    return Techniques(
        **{
            name: None if data.get(name) is None else cls(**data[name])
            for name, cls in STAGES.items()
        }
    )


def config_to_dict(config: OptimizationConfig) -> dict[str, Any]:
    """The config as JSON-able data; ``config_from_dict`` reads it back."""
    return {
        **techniques_to_dict(config),
        "skip": list(config.skip),
        "overrides": {layer: techniques_to_dict(t) for layer, t in config.overrides},
        "data_aware": config.data_aware,
    }


def config_from_dict(data: Mapping[str, Any]) -> OptimizationConfig:
    """Parse a recipe; raises ``ValueError`` naming what is wrong."""
    if not isinstance(data, Mapping):
        raise ValueError("a recipe must be a JSON object")
    data = dict(data)
    skip = data.pop("skip", [])
    overrides = data.pop("overrides", {})
    data_aware = data.pop("data_aware", False)
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise ValueError("recipe 'skip' must be a list of layer names")
    if not isinstance(overrides, Mapping):
        raise ValueError("recipe 'overrides' must map layer names to stage settings")
    try:
        base = techniques_from_dict(data)
        pairs = tuple(
            (str(k), techniques_from_dict(v, f"the recipe override for layer {k!r}"))
            for k, v in overrides.items()
        )
    except TypeError as e:
        raise ValueError(f"recipe has an unknown setting: {e}") from None
    return replace(
        OptimizationConfig(skip=tuple(skip), overrides=pairs, data_aware=data_aware),
        **techniques_to_kwargs(base),
    )


def techniques_to_kwargs(t: Techniques) -> dict[str, Any]:
    return {name: getattr(t, name) for name in STAGES}
