"""Shared fixtures: small trained digits models saved as ``.keras`` and ``.h5``, and their data.

Keras is imported inside the fixtures only, so test modules that never ask for a model do not pay
for the TensorFlow import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The same examples on every run, so CI is repeatable; explore new ones locally with
# `pytest --hypothesis-profile=default` (a failure there becomes a fixed example or a fix).
settings.register_profile("repeatable", derandomize=True)
settings.load_profile("repeatable")


@pytest.fixture(scope="session", autouse=True)
def sweeps_storage(tmp_path_factory) -> str:
    """Sweeps (Optuna studies) of this run go to a file of its own, never to the user's cache
    folder; subprocesses (CLI workers, the browser test's server) inherit it."""
    from optimizers.study import STORAGE_ENV

    url = f"sqlite:///{tmp_path_factory.mktemp('sweeps') / 'sweeps.db'}"
    os.environ[STORAGE_ENV] = url
    return url


ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
N_TRAIN = 1400  # load_digits has 1,797 samples: the rest is the held-out test set


@dataclass(frozen=True)
class ModelFiles:
    """Model files and ``.npz`` test sets (``x`` in the model's input shape, ``y`` class ids)."""

    mlp_keras: Path  # Dense MLP on 64 inputs, 10 softmax outputs
    mlp_h5: Path
    mlp_data: Path
    cnn_keras: Path  # small CNN on (8, 8, 1) images, 10 softmax outputs
    cnn_h5: Path
    cnn_data: Path


@dataclass(frozen=True)
class CliModel:
    """The model the CLI tests optimize: the bundled sample CNN when it exists, else ours."""

    model: Path
    data: Path
    source: str  # "sample_models" or "built"


def sample_complete(name: str) -> bool:
    """Whether ``sample_models/`` holds a finished sample (the model card is written last)."""
    return all((SAMPLES / f"{name}{suffix}").exists() for suffix in (".keras", "_test.npz", ".md"))


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: x (1797, 64) float32 in [0, 1], y int64 class ids."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory, digits) -> ModelFiles:
    """A Dense MLP and a small CNN, trained a few epochs on digits, saved to .keras and .h5."""
    import keras

    out = tmp_path_factory.mktemp("models")
    x, y = digits
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential(
        [
            keras.Input(shape=(64,), name="pixels"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="predictions"),
        ],
        name="test_mlp",
    )
    cnn = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="predictions"),
        ],
        name="test_cnn",
    )
    images = x.reshape(-1, 8, 8, 1)
    files = {}
    for name, model, inputs in (("mlp", mlp, x), ("cnn", cnn, images)):
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(inputs[:N_TRAIN], y[:N_TRAIN], epochs=5, batch_size=64, verbose=0)
        # Save uncompiled copies: the optimizer state is of no use to the tool.
        export = keras.models.clone_model(model)
        export.set_weights(model.get_weights())
        for suffix in ("keras", "h5"):
            files[f"{name}_{suffix}"] = out / f"{name}.{suffix}"
            export.save(files[f"{name}_{suffix}"])
        files[f"{name}_data"] = out / f"{name}_test.npz"
        np.savez(files[f"{name}_data"], x=inputs[N_TRAIN:], y=y[N_TRAIN:])
    return ModelFiles(**files)


@pytest.fixture(scope="session")
def cli_model(request) -> CliModel:
    """The bundled digits CNN and its test set when they exist, else the fixture's CNN."""
    if sample_complete("digits_cnn"):
        return CliModel(
            SAMPLES / "digits_cnn.keras", SAMPLES / "digits_cnn_test.npz", "sample_models"
        )
    files = request.getfixturevalue("model_files")  # trained only when needed
    return CliModel(files.cnn_keras, files.cnn_data, "built")


def images_zip(x: np.ndarray, y: np.ndarray, top: str = "digits") -> bytes:
    """Images (float in [0, 1], one channel) as 8-bit PNG files in one folder per class, under
    one top folder, as a file manager zips an ``image_dataset_from_directory`` folder."""
    import io
    import zipfile

    from PIL import Image

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            png = io.BytesIO()
            Image.fromarray(np.round(255 * image[..., 0]).astype(np.uint8)).save(png, "PNG")
            z.writestr(f"{top}/{label}/{i:04d}.png", png.getvalue())
    return out.getvalue()


def table_csv(x: np.ndarray, y: np.ndarray, label: str = "target") -> bytes:
    """Feature rows (exact float text) with a header and a label column last."""
    lines = [",".join([*(f"feature {i}" for i in range(x.shape[1])), label])]
    lines += [",".join([*map(repr, map(float, row)), str(t)]) for row, t in zip(x, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class UserFiles:
    """The bundled samples' test sets as users keep such data: the digits CNN's as a zip of
    PNG class folders, the breast cancer MLP's as a CSV table with a ``target`` column."""

    digits_zip: Path
    cancer_csv: Path


@pytest.fixture(scope="session")
def user_files(tmp_path_factory) -> UserFiles:
    out = tmp_path_factory.mktemp("user_files")
    with np.load(SAMPLES / "digits_cnn_test.npz") as d:
        (out / "digits.zip").write_bytes(images_zip(d["x"], d["y"]))
    with np.load(SAMPLES / "breast_cancer_mlp_test.npz") as d:
        (out / "cancer.csv").write_bytes(table_csv(d["x"], d["y"]))
    return UserFiles(out / "digits.zip", out / "cancer.csv")


def einsum_model(attention: bool = False):
    """12 positions of 32 features through causal multi-head self-attention (``attention``) or
    EinsumDense layers of its projections' equations (query (c, heads, dim), output (heads,
    dim, out)), then a Dense-like EinsumDense head."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 32))
    if attention:
        y = keras.layers.MultiHeadAttention(4, 16)(inputs, inputs, use_causal_mask=True)
    else:
        y = keras.layers.EinsumDense(
            "abc,cde->abde", (None, 4, 16), bias_axes="de", activation="gelu", name="query"
        )(inputs)
        y = keras.layers.EinsumDense(
            "abcd,cde->abe", (None, 32), bias_axes="e", activation="gelu", name="attention_output"
        )(y)
    outputs = keras.layers.EinsumDense("abc,cd->abd", (None, 10), bias_axes="d", name="head")(y)
    return keras.Model(inputs, outputs)
