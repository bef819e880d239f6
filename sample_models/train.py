"""Train the bundled sample models, deterministically, from scikit-learn's bundled datasets.

Run from the repository root::

    python -m sample_models.train                # writes into sample_models/
    python -m sample_models.train --out DIR      # writes somewhere else
    python -m sample_models.train --splits-only  # only the data splits, no training

For every sample this writes ``<name>.keras`` (the model), ``<name>_test.npz`` (the held-out
test set: ``x`` float32 in the model's input shape, ``y`` int64 class ids), ``<name>_train.npz``
(the training split the model was trained on, same format, for fine-tuning) and ``<name>.md``
(the model card, with the figures measured in this run), then prints a summary table.
``--splits-only`` writes just the two ``.npz`` files per sample: the split is a pure function of
scikit-learn's bundled data and the fixed seed, so it needs no training and leaves the committed
models untouched.

Nothing is downloaded: ``load_digits`` and ``load_breast_cancer`` ship inside scikit-learn.
Every model is trained from ``keras.utils.set_random_seed(0)`` with TensorFlow op determinism,
and the ``.keras`` archives are written with fixed timestamps, so a rerun on the same machine
and versions reproduces the same files byte for byte. Another CPU may round differently (oneDNN
picks kernels by instruction set), and 60 epochs amplify that: on one machine the digits CNN
retrained to 96.9% where the committed file, trained on another, scores 98.6%. The committed
files are the reference; their cards give the figures measured when they were trained.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import io
import json
import platform
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from sample_models import HERE, get

SEED = 0
TEST_SIZE = 0.2
ACCURACY_TARGET = 0.95
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp, for reproducible archives


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # one line for the model card
    labels: str  # what the class ids mean
    load: Callable[[], Split]
    build: Callable[[Split], keras.Model]
    loss: str
    epochs: int
    batch_size: int
    learning_rate: float
    regularization: str = ""  # for the model card


# ----------------------------------------------------------------------------- data


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y
    )
    return Split(
        x_train.astype(np.float32),
        y_train.astype(np.int64),
        x_test.astype(np.float32),
        y_test.astype(np.int64),
    )


def digits_flat() -> Split:
    x, y = load_digits(return_X_y=True)
    return _split(x / 16.0, y)  # pixel values 0..16 -> [0, 1]


def digits_images() -> Split:
    s = digits_flat()  # the same split, so both digits models share one test set
    return Split(s.x_train.reshape(-1, 8, 8, 1), s.y_train, s.x_test.reshape(-1, 8, 8, 1), s.y_test)


def breast_cancer() -> Split:
    """Features standardized with the training split's mean and standard deviation.

    Standardized inputs, not a Normalization layer inside the model: a full-integer int8 file
    quantizes its input with one scale, which raw features spanning 0.001 to 4,000 cannot share.
    """
    x, y = load_breast_cancer(return_X_y=True)
    s = _split(x, y)
    mean = s.x_train.astype(np.float64).mean(axis=0)
    std = s.x_train.astype(np.float64).std(axis=0)
    return Split(
        ((s.x_train - mean) / std).astype(np.float32),
        s.y_train,
        ((s.x_test - mean) / std).astype(np.float32),
        s.y_test,
    )


# ----------------------------------------------------------------------------- models


def build_digits_mlp(_: Split) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(64,), name="pixels"),
            keras.layers.Dense(128, activation="relu", name="dense_1"),
            keras.layers.Dense(64, activation="relu", name="dense_2"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="digits_mlp",
    )


def build_digits_cnn(_: Split) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1"),
            keras.layers.BatchNormalization(name="batch_norm"),
            keras.layers.SeparableConv2D(32, 3, activation="relu", name="separable_conv_2"),
            keras.layers.MaxPooling2D(2, name="max_pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dropout(0.3, name="dropout"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="digits_cnn",
    )


def build_breast_cancer_mlp(split: Split) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(split.x_train.shape[1],), name="features"),
            # L2 on the hidden kernels: without it the test accuracy sits at 95-96%.
            keras.layers.Dense(
                32,
                activation="relu",
                kernel_regularizer=keras.regularizers.L2(1e-2),
                name="dense_1",
            ),
            keras.layers.Dense(
                16,
                activation="relu",
                kernel_regularizer=keras.regularizers.L2(1e-2),
                name="dense_2",
            ),
            keras.layers.Dense(1, activation="sigmoid", name="classifier"),
        ],
        name="breast_cancer_mlp",
    )


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        name="digits_cnn",
        dataset="scikit-learn `load_digits`: 1,797 grayscale 8x8 images of handwritten digits, "
        "pixel values 0-16 scaled to [0, 1] (divided by 16), shaped (8, 8, 1)",
        labels="the digit, 0-9",
        load=digits_images,
        build=build_digits_cnn,
        loss="sparse_categorical_crossentropy",
        epochs=60,
        batch_size=32,
        learning_rate=2e-3,
        regularization="dropout 0.3 before the classifier",
    ),
    Recipe(
        name="digits_mlp",
        dataset="scikit-learn `load_digits`: 1,797 grayscale 8x8 images of handwritten digits, "
        "flattened to 64 pixel values 0-16 scaled to [0, 1] (divided by 16)",
        labels="the digit, 0-9",
        load=digits_flat,
        build=build_digits_mlp,
        loss="sparse_categorical_crossentropy",
        epochs=60,
        batch_size=32,
        learning_rate=1e-3,
    ),
    Recipe(
        name="breast_cancer_mlp",
        dataset="scikit-learn `load_breast_cancer` (Wisconsin diagnostic): 569 tumours, "
        "30 real-valued features of cell nuclei, standardized with the training split's "
        "per-feature mean and standard deviation (the test set holds standardized features)",
        labels="0 = malignant, 1 = benign (scikit-learn's coding); one sigmoid output, "
        "class 1 when it exceeds 0.5",
        load=breast_cancer,
        build=build_breast_cancer_mlp,
        loss="binary_crossentropy",
        epochs=100,
        batch_size=32,
        learning_rate=1e-3,
        regularization="L2 weight penalty 0.01 on the kernels of `dense_1` and `dense_2`",
    ),
)


# ----------------------------------------------------------------------------- evaluation


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class ids: threshold 0.5 for one output unit, arg-max otherwise."""
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return np.argmax(outputs, axis=1).astype(np.int64)


def measure_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    outputs = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(predicted_classes(outputs) == y))


# ----------------------------------------------------------------------------- saving


def make_reproducible(path: Path) -> None:
    """Rewrite a ``.keras`` archive with fixed zip timestamps and no ``date_saved``.

    Keras stamps every member with the current time and writes the save time into
    ``metadata.json``; neither is read when loading. Members, order and compression (stored)
    stay as Keras wrote them, so the file loads exactly as before.
    """
    members: list[tuple[zipfile.ZipInfo, bytes]] = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta).encode()
            members.append((info, data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for info, data in members:
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
            fixed.compress_type = info.compress_type
            fixed.external_attr = 0o644 << 16
            zf.writestr(fixed, data)
    path.write_bytes(buffer.getvalue())


def save_test_set(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write ``x`` (float32) and ``y`` (int64) as a compressed ``.npz`` (any split, not only test)."""
    with open(path, "wb") as f:  # a file object: np.savez would otherwise append ".npz"
        np.savez_compressed(f, x=x.astype(np.float32), y=y.astype(np.int64))


def save_splits(recipe: Recipe, out: Path, split: Split | None = None) -> None:
    """Write ``<name>_train.npz`` and ``<name>_test.npz``: the split the model is trained and
    measured on (loaded afresh when not given; deterministic, so no training is needed)."""
    split = split or recipe.load()
    save_test_set(out / f"{recipe.name}_train.npz", split.x_train, split.y_train)
    save_test_set(out / f"{recipe.name}_test.npz", split.x_test, split.y_test)


# ----------------------------------------------------------------------------- model card


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def model_card(recipe: Recipe, model: keras.Model, split: Split, accuracy: float, size: int) -> str:
    title = get(recipe.name).title
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    n_test = len(split.y_test)
    correct = round(accuracy * n_test)
    rows = [
        f"| `{layer.name}` | {type(layer).__name__} | {_shape(layer.output.shape)} "
        f"| {layer.count_params():,} |"
        for layer in model.layers
    ]
    notes = []
    if non_trainable:
        notes.append(
            f"The {non_trainable:,} non-trainable parameters are BatchNormalization's moving "
            "mean and variance."
        )
    lines = [
        f"# {title}",
        "",
        f"`{recipe.name}.keras`, test set `{recipe.name}_test.npz` (arrays `x`, float32 "
        f"{_shape(('n', *split.x_test.shape[1:]))}, and `y`, int64 class ids).",
        "",
        "## Data",
        "",
        f"- Dataset: {recipe.dataset}.",
        f"- Labels: {recipe.labels}.",
        f"- Split: `train_test_split(test_size={TEST_SIZE}, random_state={SEED}, stratify=y)`: "
        f"{len(split.y_train):,} training and {n_test:,} test samples. The test set is never "
        "used in training.",
        "",
        "## Architecture",
        "",
        f"Keras {keras.__version__} `Sequential` model `{model.name}`, built-in layers only "
        "(loads with `safe_mode=True`).",
        "",
        "| layer | type | output shape | parameters |",
        "|---|---|---|---:|",
        *rows,
        "",
        f"Total parameters: {trainable + non_trainable:,} ({trainable:,} trainable, "
        f"{non_trainable:,} non-trainable).",
        "",
        *(f"{note}\n" for note in notes),
        "## Training",
        "",
        f"Adam (learning rate {recipe.learning_rate:g}), `{recipe.loss}`, {recipe.epochs} "
        f"epochs, batch size {recipe.batch_size}, seed {SEED} "
        "(`keras.utils.set_random_seed`, TensorFlow op determinism)"
        + (f"; {recipe.regularization}." if recipe.regularization else "."),
        "",
        "The file holds the architecture and weights only: it is saved uncompiled, without "
        "the optimizer's state, so `keras.saving.load_model` returns an uncompiled model "
        "(use `predict`, or `compile` before `evaluate`).",
        "",
        "## Measured",
        "",
        f"- Test accuracy: {accuracy:.4f} ({correct} of {n_test} correct).",
        f"- File size: {size:,} bytes.",
        "",
        "## Retrain",
        "",
        "```bash",
        "python -m sample_models.train   # from the repository root; rewrites all samples",
        "```",
        "",
        f"Measured with TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"Python {platform.python_version()}.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Result:
    name: str
    params: int
    accuracy: float
    size: int
    seconds: float


def train_one(recipe: Recipe, out: Path) -> Result:
    start = time.perf_counter()
    keras.utils.set_random_seed(SEED)  # per model, so each is independent of the order
    split = recipe.load()
    model = recipe.build(split)
    model.compile(
        optimizer=keras.optimizers.Adam(recipe.learning_rate),
        loss=recipe.loss,
        metrics=["accuracy"],
    )
    model.fit(
        split.x_train,
        split.y_train,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        shuffle=True,
        verbose=0,
    )
    accuracy = measure_accuracy(model, split.x_test, split.y_test)

    model_path = out / f"{recipe.name}.keras"
    data_path = out / f"{recipe.name}_test.npz"
    # Save an uncompiled copy: a compiled model's file also holds Adam's two moment tensors
    # per weight (3x the size), which the app never uses (it loads with compile=False).
    # Not keras.models.clone_model: it compiles the clone too, optimizer variables included.
    export = type(model).from_config(model.get_config())
    export.set_weights(model.get_weights())
    export.save(model_path)
    make_reproducible(model_path)
    save_splits(recipe, out, split)

    # The saved files must reproduce the figure: reload both the safe way and re-measure.
    reloaded = keras.saving.load_model(model_path, safe_mode=True)
    with np.load(data_path, allow_pickle=False) as arrays:
        if sorted(arrays.files) != ["x", "y"]:
            raise RuntimeError(f"{data_path.name} holds {arrays.files}, expected x and y")
        x, y = arrays["x"], arrays["y"]
    reloaded_accuracy = measure_accuracy(reloaded, x, y)
    if reloaded_accuracy != accuracy:
        raise RuntimeError(
            f"{recipe.name}: reloaded accuracy {reloaded_accuracy} != trained {accuracy}"
        )
    if accuracy < ACCURACY_TARGET:
        raise RuntimeError(f"{recipe.name}: test accuracy {accuracy:.4f} < {ACCURACY_TARGET}")

    size = model_path.stat().st_size
    card = model_card(recipe, model, split, accuracy, size)
    (out / f"{recipe.name}.md").write_text(card, encoding="utf-8")
    return Result(recipe.name, model.count_params(), accuracy, size, time.perf_counter() - start)


def print_table(results: list[Result], total: float) -> None:
    header = f"{'model':<20} {'params':>8} {'test acc':>9} {'file bytes':>11} {'train s':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<20} {r.params:>8,} {r.accuracy:>9.4f} {r.size:>11,} {r.seconds:>8.1f}")
    print("-" * len(header))
    print(f"{'total':<20} {'':>8} {'':>9} {sum(r.size for r in results):>11,} {total:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sample_models.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output folder (default: sample_models/)"
    )
    parser.add_argument(
        "--splits-only",
        action="store_true",
        help="write only <name>_train.npz and <name>_test.npz; train and overwrite no model",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.splits_only:
        for recipe in RECIPES:
            save_splits(recipe, args.out)
            print(f"wrote {recipe.name}_train.npz and {recipe.name}_test.npz in {args.out}")
        return 0
    tf.config.experimental.enable_op_determinism()

    start = time.perf_counter()
    results = [train_one(recipe, args.out) for recipe in RECIPES]
    print_table(results, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
