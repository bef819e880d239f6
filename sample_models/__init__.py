"""The bundled sample models: a small catalog of model files, test sets and model cards.

Importing this package does not import TensorFlow or Keras. The files are produced by
``python -m sample_models.train`` (deterministic; see ``train.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Sample:
    """One bundled model with its held-out test set (``x``, ``y``), the training split it was
    trained on (same format, for fine-tuning) and its model card."""

    name: str  # e.g. "digits_cnn"
    title: str  # e.g. "Digits CNN (8x8 images, 10 classes)"
    model_path: Path
    data_path: Path
    card_path: Path
    train_path: Path


def _sample(name: str, title: str) -> Sample:
    return Sample(
        name=name,
        title=title,
        model_path=HERE / f"{name}.keras",
        data_path=HERE / f"{name}_test.npz",
        card_path=HERE / f"{name}.md",
        train_path=HERE / f"{name}_train.npz",
    )


SAMPLES: tuple[Sample, ...] = (
    _sample("digits_cnn", "Digits CNN (8x8 images, 10 classes)"),
    _sample("digits_mlp", "Digits MLP (64 pixels, 10 classes)"),
    _sample("breast_cancer_mlp", "Breast cancer MLP (30 features, 2 classes)"),
)


def get(name: str) -> Sample:
    """The sample called ``name``; raises ``KeyError`` naming the available samples."""
    for sample in SAMPLES:
        if sample.name == name:
            return sample
    names = ", ".join(s.name for s in SAMPLES)
    raise KeyError(f"no sample model named {name!r}; available: {names}")
