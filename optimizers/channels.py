"""Channel (structured) pruning: remove whole output channels and rewrite a smaller dense model.

Unstructured pruning stores smaller but runs no faster on a CPU: the kernels still multiply
every zero. Removing whole output channels (Conv filters, Dense units) shrinks the tensors
themselves, so the rewritten model does less work.

``plan(model, sparsity)`` reads the model's graph and decides which channels go;
``rewrite(model, plan)`` builds the smaller model (from the model's config with fewer
``filters``/``units``, and sliced weights); ``masked(model, plan)`` is the same-shape model
with those channels' weights zeroed, which computes what the rewrite computes.

Channels tied together are one group and pruned as one: the outputs of every producer (Dense,
Conv) that meets at a residual ``Add`` (or another element-wise merge), and everything in
between that keeps the channel count (``DepthwiseConv``, ``BatchNormalization``, activations,
pooling, padding, dropout). ``Concatenate`` joins groups side by side; ``Flatten`` repeats
them per position. A channel's score is the sum over its group's producers of the L2 norm of
its kernel slice; each group loses ``ceil(sparsity * channels)`` of its lowest-scoring
channels (ties: the lower index goes first), keeping at least one. Channels that reach a model
output, or come from a layer in ``skip``, stay.

A removed channel's values may still be computed (an activation of zero need not be zero,
after a BatchNorm), but every layer that reads them has its weights for them removed, so the
rewrite is exact. Only ``Sequential`` and functional models built from the layers named below
can be rewritten; anything else is refused in one sentence naming the layer.

>>> smaller = rewrite(model, plan(model, 0.5))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from optimizers.pruning import smallest_mask, target_zeros

if TYPE_CHECKING:
    import keras

PRODUCERS = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D"})
DEPTHWISE = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
MERGES = frozenset({"Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"})
# Layers without weights whose output channel c is computed from input channel c alone.
PASS_THROUGH = frozenset(
    {"InputLayer", "ReLU", "ELU", "LeakyReLU", "Dropout", "Identity", "Activation"}
    | {f"SpatialDropout{d}D" for d in (1, 2, 3)}
    | {"GaussianNoise", "GaussianDropout", "AlphaDropout"}
    | {
        f"{kind}{d}D"
        for d in (1, 2, 3)
        for kind in (
            "MaxPooling",
            "AveragePooling",
            "GlobalAveragePooling",
            "GlobalMaxPooling",
            "ZeroPadding",
            "Cropping",
            "UpSampling",
        )
    }
)
CHANNEL_MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})
FIXED = -1  # group id of channels that are never pruned (model inputs, unprunable groups)


@dataclass(frozen=True)
class Plan:
    """Which channels of each group stay.

    ``groups`` maps a group id to the names of its producer layers; ``kept`` maps it to the
    sorted indices of the channels that stay. ``slices`` gives, per layer name, the
    (weight index, axis, kept positions) of every weight the rewrite shrinks.
    """

    groups: dict[int, tuple[str, ...]]
    kept: dict[int, np.ndarray]
    sizes: dict[int, int]
    slices: dict[str, tuple[tuple[int, int, np.ndarray], ...]]
    units: dict[str, int]  # producer name -> its new number of filters or units

    @property
    def removed(self) -> int:
        """Channels removed, over all groups."""
        return sum(self.sizes[g] - len(k) for g, k in self.kept.items())


class _Graph:
    """Per tensor: the (group, channel) each of its channels comes from (group ``FIXED``: never
    pruned), found by walking the model's nodes from the inputs."""

    def __init__(self, model: keras.Model) -> None:
        graph = functional_graph(model)
        self.parent: dict[int, int] = {FIXED: FIXED}
        self.producers: dict[int, list[Any]] = {}
        self.origin: dict[int, np.ndarray] = {}  # tensor id -> (channels, 2) of (group, index)
        self.readers: list[tuple[Any, np.ndarray]] = []  # (layer, origin of its input)
        seen: set[str] = set()
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                layer = node.operation
                if layer.name in seen:
                    raise ValueError(
                        f"channel pruning cannot rewrite layer '{layer.name}': it is used more "
                        "than once in the model"
                    )
                seen.add(layer.name)
                self.visit(layer, list(node.input_tensors), list(node.outputs))
        for t in graph.outputs:  # what the model returns keeps every channel
            for g in np.unique(self.origin[id(t)][:, 0]):
                self.union(int(g), FIXED)

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            if b == FIXED:
                a, b = b, a
            self.parent[b] = a

    def visit(self, layer: Any, inputs: list[Any], outputs: list[Any]) -> None:
        kind = type(layer).__name__
        ins = [self.origin[id(t)] for t in inputs]
        channels = int(outputs[0].shape[-1]) if outputs and outputs[0].shape else 0
        if kind == "InputLayer":
            self.origin[id(outputs[0])] = fixed(channels)
            return
        check_layer(layer, kind)
        if kind in PRODUCERS:
            g = len(self.parent)
            self.parent[g] = g
            self.producers[g] = [layer]
            if getattr(layer, "activation", None) is not None and (
                layer.activation.__name__ in CHANNEL_MIXING_ACTIVATIONS
            ):
                self.union(g, FIXED)  # a softmax over the channels needs all of them
            self.readers.append((layer, ins[0]))
            self.origin[id(outputs[0])] = np.stack(
                [np.full(channels, g), np.arange(channels)], axis=1
            )
        elif kind in DEPTHWISE or kind == "BatchNormalization":
            self.readers.append((layer, ins[0]))
            self.origin[id(outputs[0])] = ins[0]
        elif kind in PASS_THROUGH:
            self.origin[id(outputs[0])] = ins[0]
        elif kind in MERGES:
            for other in ins[1:]:
                self.tie(ins[0], other)
            self.origin[id(outputs[0])] = ins[0]
        elif kind == "Concatenate":
            self.origin[id(outputs[0])] = np.concatenate(ins)
        elif kind == "Flatten":
            positions = int(np.prod(inputs[0].shape[1:-1]))
            self.origin[id(outputs[0])] = np.tile(ins[0], (positions, 1))
        else:
            raise ValueError(unknown_layer(layer, kind))

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        """Channels merged element-wise are pruned together: one group, if both sides are a
        whole group in order; otherwise every group involved is kept whole."""
        if whole_group(a) and whole_group(b) and len(a) == len(b):
            self.union(int(a[0, 0]), int(b[0, 0]))
            return
        for g in np.unique(np.concatenate([a[:, 0], b[:, 0]])):
            self.union(int(g), FIXED)


def fixed(channels: int) -> np.ndarray:
    return np.stack([np.full(channels, FIXED), np.arange(channels)], axis=1)


def whole_group(origin: np.ndarray) -> bool:
    return bool(
        len(origin)
        and origin[0, 0] != FIXED
        and np.all(origin[:, 0] == origin[0, 0])
        and np.array_equal(origin[:, 1], np.arange(len(origin)))
    )


def functional_graph(model: keras.Model) -> Any:
    """The functional graph of a ``Sequential`` or functional model; refuses anything else."""
    import keras

    graph = model._functional if isinstance(model, keras.Sequential) else model
    if not hasattr(graph, "_nodes_by_depth") or not getattr(graph, "inputs", None):
        raise ValueError(
            f"channel pruning needs a Sequential or functional model; '{model.name}' is a "
            f"subclassed {type(model).__name__} whose graph cannot be read"
        )
    return graph


def unknown_layer(layer: Any, kind: str) -> str:
    return (
        f"channel pruning cannot rewrite layer '{layer.name}' ({kind}): it does not know how "
        "that layer maps channels"
    )


def check_layer(layer: Any, kind: str) -> None:
    """Refuse the options of known layers that the rewrite does not handle."""
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"channel pruning needs channels_last; layer '{layer.name}' is not")
    if config.get("groups", 1) != 1:
        raise ValueError(f"channel pruning cannot rewrite grouped convolution '{layer.name}'")
    if kind in DEPTHWISE and config.get("depth_multiplier", 1) != 1:
        raise ValueError(
            f"channel pruning cannot rewrite layer '{layer.name}': its depth multiplier is "
            f"{config['depth_multiplier']}, not 1"
        )
    if kind == "BatchNormalization" and config.get("axis") not in (-1, len(layer.input.shape) - 1):
        raise ValueError(f"channel pruning needs BatchNormalization '{layer.name}' on axis -1")
    if kind == "Concatenate" and config.get("axis", -1) not in (
        -1,
        len(layer.output.shape) - 1,
    ):
        raise ValueError(f"channel pruning needs Concatenate '{layer.name}' on the last axis")
    if kind == "Activation" and config.get("activation") in CHANNEL_MIXING_ACTIVATIONS:
        raise ValueError(unknown_layer(layer, f"Activation {config['activation']}"))


def plan(model: keras.Model, sparsity: float, skip: Sequence[str] = ()) -> Plan:
    """Which channels ``sparsity`` removes from ``model`` (see the module docstring).

    Raises ``ValueError`` naming the layer when the model's graph cannot be rewritten.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    graph = _Graph(model)
    for g, layers in graph.producers.items():
        if any(layer.name in skip for layer in layers):
            graph.union(g, FIXED)
    members: dict[int, list[Any]] = {}
    for g, layers in graph.producers.items():
        members.setdefault(graph.find(g), []).extend(layers)
    kept: dict[int, np.ndarray] = {}
    sizes: dict[int, int] = {}
    for root, layers in members.items():
        if root == graph.find(FIXED):
            continue
        n = int(layers[0].get_weights()[0].shape[-1])
        score = np.zeros(n, np.float64)
        for layer in layers:
            kernel = layer.get_weights()[0].astype(np.float64)
            score += np.sqrt(np.square(kernel.reshape(-1, n)).sum(axis=0))
        sizes[root] = n
        kept[root] = np.flatnonzero(~smallest_mask(score, min(target_zeros(sparsity, n), n - 1)))

    def keep_positions(origin: np.ndarray) -> np.ndarray:
        groups, where = np.unique(origin[:, 0], return_inverse=True)
        roots = np.array([graph.find(int(g)) for g in groups])[where.reshape(-1)]
        stays = np.ones(len(origin), dtype=bool)
        for root in np.unique(roots):
            if int(root) in kept:
                at = roots == root
                stays[at] = np.isin(origin[at, 1], kept[int(root)])
        return np.flatnonzero(stays)

    slices: dict[str, tuple[tuple[int, int, np.ndarray], ...]] = {}
    units: dict[str, int] = {}
    for layer, origin in graph.readers:
        kind = type(layer).__name__
        inner = keep_positions(origin)
        count = len(layer.get_weights())
        if kind in PRODUCERS:
            out = kept.get(graph.find(producer_group(graph, layer)))
            out_all = np.arange(layer.get_weights()[0].shape[-1])
            out = out_all if out is None else out
            units[layer.name] = len(out)
            cuts = [(0, -2, inner), (0, -1, out)] + ([(1, 0, out)] if count > 1 else [])
        else:  # depthwise kernel and bias, or every BatchNorm parameter: one per channel
            axis_of = [-2 if kind in DEPTHWISE and i == 0 else 0 for i in range(count)]
            cuts = [(i, axis_of[i], inner) for i in range(count)]
        slices[layer.name] = tuple(cuts)
    groups = {root: tuple(layer.name for layer in layers) for root, layers in members.items()}
    return Plan(groups, kept, sizes, slices, units)


def producer_group(graph: _Graph, layer: Any) -> int:
    return next(g for g, layers in graph.producers.items() if layer in layers)


def sliced_weights(layer: Any, cuts: Sequence[tuple[int, int, np.ndarray]]) -> list[np.ndarray]:
    weights = layer.get_weights()
    for index, axis, keep in cuts:
        weights[index] = np.take(weights[index], keep, axis=axis)
    return weights


def masked_weights(layer: Any, cuts: Sequence[tuple[int, int, np.ndarray]]) -> list[np.ndarray]:
    weights = [w.copy() for w in layer.get_weights()]
    for index, axis, keep in cuts:
        drop = np.setdiff1d(np.arange(weights[index].shape[axis]), keep)
        moved = np.moveaxis(weights[index], axis, 0)
        moved[drop] = 0
    return weights


def rewrite(model: keras.Model, chosen: Plan) -> keras.Model:
    """A new, smaller model without the channels ``chosen`` removes; ``model`` is unchanged."""
    return rebuilt(model, chosen.units, sliced_weights, chosen)


def masked(model: keras.Model, chosen: Plan) -> keras.Model:
    """A copy of ``model`` with the weights of the removed channels zeroed (same shapes): it
    computes what ``rewrite(model, chosen)`` computes."""
    return rebuilt(model, {}, masked_weights, chosen)


def rebuilt(
    model: keras.Model,
    units: dict[str, int],
    weights_of: Callable[[Any, Sequence[tuple[int, int, np.ndarray]]], list[np.ndarray]],
    chosen: Plan,
) -> keras.Model:
    """``model`` built anew from its config with ``units`` filters/units per producer, and each
    layer's weights from ``weights_of(layer, cuts)`` (its own where the plan cuts nothing)."""
    config = model.get_config()
    for entry in config["layers"]:
        entry.pop("build_config", None)  # the old input shapes: every layer is built anew
        name = entry["config"]["name"]
        if name in units:
            key = "units" if entry["class_name"] == "Dense" else "filters"
            entry["config"][key] = units[name]
    new = type(model).from_config(config)
    for layer in model.layers:
        cuts = chosen.slices.get(layer.name, ())
        new.get_layer(layer.name).set_weights(weights_of(layer, cuts))
    return new


def prune_channels(model: keras.Model, sparsity: float, skip: Sequence[str] = ()) -> keras.Model:
    """``model`` rewritten without ``sparsity`` of each channel group's channels."""
    return rewrite(model, plan(model, sparsity, skip))
