"""Accuracy on labelled data, and fidelity to the original model when there are no labels.

A model with one output unit is a binary classifier (class 1 when the output exceeds 0.5);
otherwise the predicted class is the arg-max. To evaluate many weight settings of one model,
``evaluation_clone`` makes one copy whose weights the caller swaps:
no model is rebuilt per evaluation, and Keras's compiled predict function, traced on the first
batch, is reused by every later one (eager calls cost a real-size model about twice as much).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

MAX_BATCH = 1024
BATCH_ELEMENTS = 1 << 22  # input numbers per batch: 16 images of 224x224x3, 1024 small rows


@dataclass(frozen=True)
class Fidelity:
    """How closely an optimized model follows the original on the same inputs."""

    agreement: float  # fraction of samples with the same predicted class
    snr_db: float | None  # output signal-to-noise ratio; None when the outputs are identical


def batch_size(x: np.ndarray) -> int:
    """Samples per batch: as many as keep a batch's inputs near ``BATCH_ELEMENTS`` numbers."""
    per_sample = max(1, int(np.prod(x.shape[1:])))
    return max(1, min(MAX_BATCH, BATCH_ELEMENTS // per_sample))


def predict(
    model: keras.Model, x: np.ndarray, on_batch: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """Model outputs for ``x`` as float32 numpy, in batches, inference mode, through the
    model's compiled predict function. ``on_batch(done, total)`` follows each batch: a caller
    can show progress, or raise to abandon the evaluation."""
    step = batch_size(x)
    parts = []
    for start in range(0, len(x), step):
        parts.append(np.asarray(model.predict_on_batch(x[start : start + step]), np.float32))
        if on_batch is not None:
            on_batch(min(start + step, len(x)), len(x))
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class ids from outputs: threshold 0.5 for one unit, arg-max otherwise."""
    outputs = outputs.reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return np.argmax(outputs, axis=1)


def accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the label."""
    return float(np.mean(predicted_classes(outputs) == y))


def fidelity(reference: np.ndarray, outputs: np.ndarray) -> Fidelity:
    """Top-1 agreement and output SNR of ``outputs`` against the original model's."""
    agreement = float(np.mean(predicted_classes(reference) == predicted_classes(outputs)))
    noise = float(np.sum((reference.astype(np.float64) - outputs) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    snr = None if noise == 0 else float(10 * np.log10(signal / noise)) if signal else float("-inf")
    return Fidelity(agreement, snr)


def evaluation_clone(model: keras.Model) -> keras.Model:
    """A private copy of ``model`` whose weights the caller may overwrite."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone
