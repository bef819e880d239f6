"""The structure a fine-tuned model is trained to keep, on numpy arrays (no Keras, no TF).

Fine-tuning (``optimizers.finetune``) trains float "shadow" weights while the forward pass sees
them projected onto the structure an ``OptimizationConfig`` defines. This module holds the
numpy side of that projection:

* ``polynomial_sparsity``: the gradual pruning schedule (tfmot's ``PolynomialDecay``, power 3);
* ``pruning_masks``: keep-masks at a given point of that schedule, made by the pipeline's own
  pruning functions (per layer, global or 2:4), so they agree with post-training pruning;
* ``cluster_assignments``: fixed cluster memberships and the starting centroids, from the
  pipeline's own clustering; during training only the centroids move;
* ``snap``: the final projection by ``optimize_weights`` itself, after which the pipeline at
  the user's own config (and so every export) leaves a fine-tuned model exactly as it is.
  Training fake-quantizes on the grid each tensor gets in the pipeline (``Techniques.grid``),
  so snapping only rounds the trained values and needs no other config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from optimizers.clustering import cluster_codes
from optimizers.pipeline import (
    OptimizationConfig,
    Techniques,
    TensorRef,
    optimize_weights,
)
from optimizers.pruning import PruningConfig, global_masks, magnitude_mask, n_m_mask
from optimizers.tensors import as_channel_columns

POWER = 3  # tfmot's PolynomialDecay default, and the exponent of Zhu & Gupta (2017)
MAX_SNAPS = 4  # passes of the pipeline until the weights stop changing (one suffices in practice)


def polynomial_sparsity(
    step: int,
    begin_step: int,
    end_step: int,
    final_sparsity: float,
    initial_sparsity: float = 0.0,
    power: int = POWER,
) -> float:
    """Sparsity at ``step`` of a schedule that rises from ``initial_sparsity`` at
    ``begin_step`` to ``final_sparsity`` at ``end_step``, fast at first and slowly at the end:
    ``final + (initial - final) * (1 - p) ** power`` with ``p`` the clipped progress (tfmot's
    ``PolynomialDecay``). Before ``begin_step`` it is ``initial_sparsity``, from ``end_step`` on
    ``final_sparsity``; ``end_step <= begin_step`` jumps to ``final_sparsity`` at ``begin_step``.

    >>> polynomial_sparsity(50, 0, 100, 0.8)  # 0.8 * (1 - 0.5 ** 3)
    0.7
    """
    if end_step <= begin_step:
        progress = 1.0 if step >= begin_step else 0.0
    else:
        progress = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power


def is_update_step(step: int, begin_step: int, end_step: int, frequency: int) -> bool:
    """Whether the masks are recomputed at ``step``: every ``frequency`` steps from
    ``begin_step``, and always at ``end_step`` so that the final sparsity is reached exactly
    (tfmot only reaches it when ``end_step - begin_step`` is a multiple of the frequency)."""
    if step < begin_step or step > max(end_step, begin_step):
        return False
    return (step - begin_step) % frequency == 0 or step == max(end_step, begin_step)


def plan(
    refs: Sequence[TensorRef], config: OptimizationConfig
) -> list[tuple[TensorRef, Techniques]]:
    """The eligible tensors ``config`` transforms, with their techniques, in model order."""
    return [(r, t) for r in refs if (t := config.for_layer(r.layer)).active]


def pruning_masks(
    weights: Mapping[int, np.ndarray],
    plans: Sequence[tuple[TensorRef, Techniques]],
    fraction: float,
) -> dict[int, np.ndarray]:
    """Keep-masks (float32, 1 = kept) at ``fraction`` of each tensor's target sparsity.

    ``weights`` maps a tensor's index to its current values. 2:4 masks are not gradual (their
    pattern is all or nothing) and appear once ``fraction`` is positive. Global groups share one
    threshold, as in ``optimize_weights``.
    """
    masks: dict[int, np.ndarray] = {}
    groups: dict[PruningConfig, list[int]] = {}
    for r, t in plans:
        p = t.pruning
        if p is None:
            continue
        w = weights[r.index]
        if p.structure == "2:4":
            masks[r.index] = (
                n_m_mask(w, axis=r.input_axis) if fraction > 0 else np.ones(w.shape, bool)
            )
        elif p.scope == "global":
            groups.setdefault(p, []).append(r.index)
        else:
            masks[r.index] = magnitude_mask(w, p.sparsity * fraction)
    for p, members in groups.items():
        found = global_masks([weights[i] for i in members], p.sparsity * fraction)
        masks.update(zip(members, found, strict=True))
    return {i: m.astype(np.float32) for i, m in masks.items()}


def cluster_assignments(
    w: np.ndarray, t: Techniques, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, index) with ``centroids[index] == cluster(w)``, per tensor or per channel.

    The pipeline's clustering picks the starting values; the index (int32, ``w``'s shape) then
    stays fixed while the centroids (one flat float32 vector; per channel, each channel's values
    follow the previous channel's) are trained.
    """
    assert t.clustering is not None
    coded = cluster_codes(w, t.clustering, axes)
    if coded.table.shape[0] == 1:
        return coded.table[0].astype(np.float32), coded.codes.astype(np.int32)
    # One row of values per channel, padded with inf: flat, each channel after the previous.
    used = np.isfinite(coded.table)
    sizes = used.sum(axis=1)
    columns, restore = as_channel_columns(coded.codes, axes)
    index = (columns + (np.cumsum(sizes) - sizes)).astype(np.int32)
    return coded.table[used].astype(np.float32), restore(index)


def snap(
    weights: Sequence[np.ndarray], refs: Sequence[TensorRef], config: OptimizationConfig
) -> list[np.ndarray]:
    """Project trained ``weights`` onto ``config``'s structure with the pipeline itself, and
    repeat until nothing changes, so that ``optimize_weights(snap(w), refs, config)`` is
    ``snap(w)``.

    The first pass is the post-training pipeline (the trained values already lie in the
    structure, so it only rounds them onto the grid); later passes are no-ops in practice.
    Raises ``RuntimeError`` if the weights do not settle, which would be a bug.
    """
    out, _ = optimize_weights(weights, refs, config)
    for _ in range(MAX_SNAPS):
        again, _ = optimize_weights(out, refs, config)
        if all(np.array_equal(a, b) for a, b in zip(again, out, strict=True)):
            return out
        out = again
    raise RuntimeError("fine-tuned weights do not settle on the pipeline's structure")
