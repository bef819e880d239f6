"""Accuracy on labelled data, and fidelity to the original model when there are no labels.

A model with one output unit is a binary classifier (class 1 when the output exceeds 0.5);
otherwise the predicted class is the arg-max. To evaluate many weight settings of one model,
``evaluation_clone`` makes one copy and ``outputs_with_weights`` only swaps its weights in:
no model is rebuilt per evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

BATCH_SIZE = 1024


@dataclass(frozen=True)
class Fidelity:
    """How closely an optimized model follows the original on the same inputs."""

    agreement: float  # fraction of samples with the same predicted class
    snr_db: float | None  # output signal-to-noise ratio; None when the outputs are identical


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Model outputs for ``x`` as float32 numpy, in batches, inference mode."""
    parts = [
        np.asarray(model(x[i : i + BATCH_SIZE], training=False), dtype=np.float32)
        for i in range(0, len(x), BATCH_SIZE)
    ]
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
    """A private copy of ``model`` whose weights ``outputs_with_weights`` may overwrite."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def outputs_with_weights(
    clone: keras.Model, weights: Sequence[np.ndarray], x: np.ndarray
) -> np.ndarray:
    """Outputs of ``clone`` on ``x`` after loading ``weights`` into it (it is changed)."""
    clone.set_weights(list(weights))
    return predict(clone, x)
