"""``optimizers.datasets``: image folders in a zip, CSV and Parquet tables, read for a model as
its ``.npz`` would be, checked against Keras' own ``image_dataset_from_directory``, and every bad
file refused in one sentence naming the file and the entry or line."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers import datasets, explore, finetune, keras_io  # noqa: E402
from optimizers.keras_io import InputError  # noqa: E402
from optimizers.pipeline import OptimizationConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")


def png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def zipped(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


def refused(read, *phrases: str) -> str:
    with pytest.raises(InputError) as info:
        read()
    message = str(info.value)
    assert "\n" not in message and not SENTENCE_BREAK.search(message), message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    return message


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    outcome = explore.run(explore.prepare(model, x, y), OptimizationConfig())
    assert outcome.accuracy is not None
    return outcome.accuracy


@pytest.fixture(scope="module")
def cnn():
    return keras_io.load_model(SAMPLES / "digits_cnn.keras")


@pytest.fixture(scope="module")
def table_model():
    return keras_io.load_model(SAMPLES / "breast_cancer_mlp.keras")


def test_image_folders_give_the_npz_accuracy(cnn, user_files):
    npz = datasets.read(SAMPLES / "digits_cnn_test.npz", cnn)
    images = datasets.read(user_files.digits_zip, cnn)
    assert images.pixel_range == "0-1" and "10 class folders" in images.words
    order = np.argsort([f"{label}/{i:04d}" for i, label in enumerate(npz.y)])
    assert np.array_equal(images.y, npz.y[order])
    assert np.max(np.abs(images.x - npz.x[order])) <= 0.5 / 255 + 1e-7  # 8-bit rounding only
    assert abs(accuracy(cnn, images.x, images.y) - accuracy(cnn, npz.x, npz.y)) <= 0.005
    raw = user_files.digits_zip.read_bytes()
    from_bytes = datasets.read(raw, cnn, "digits.zip")
    assert np.array_equal(from_bytes.x, images.x) and np.array_equal(from_bytes.y, images.y)


def test_a_csv_and_a_parquet_table_give_the_npz_accuracy(table_model, user_files, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    npz = datasets.read(SAMPLES / "breast_cancer_mlp_test.npz", table_model)
    table = datasets.read(user_files.cancer_csv, table_model)
    assert table.words == "114 rows, 30 feature columns, labels from column target"
    assert np.array_equal(table.x, npz.x) and np.array_equal(table.y, npz.y)
    assert accuracy(table_model, table.x, table.y) == accuracy(table_model, npz.x, npz.y)
    columns = {f"f{i}": npz.x[:, i] for i in range(30)} | {"Label": npz.y}
    pq.write_table(pa.table(columns), tmp_path / "cancer.parquet")
    parquet = datasets.read(tmp_path / "cancer.parquet", table_model)
    assert np.array_equal(parquet.x, npz.x) and np.array_equal(parquet.y, npz.y)


def test_class_folders_and_pixels_match_keras_image_dataset_from_directory(tmp_path):
    model = keras.Sequential(
        [keras.Input((6, 5, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    rng = np.random.default_rng(0)
    entries = {}
    for folder in ("dog", "Bird", "cat"):  # Keras sorts class names as Python sorts strings
        for i in range(2):
            entries[f"{folder}/{i}.png"] = png(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    data = datasets.read(zipped(entries), model, "pets.zip", pixel_range="0-255")
    assert data.classes == ("Bird", "cat", "dog")
    assert data.mapping == "Bird → 0, cat → 1, dog → 2"
    folder = tmp_path / "pets"
    with zipfile.ZipFile(io.BytesIO(zipped(entries))) as z:
        z.extractall(folder)
    reference = keras.utils.image_dataset_from_directory(
        folder, image_size=(6, 5), shuffle=False, batch_size=None, verbose=False
    )
    x_ref = np.stack([np.asarray(x) for x, _ in reference])
    y_ref = np.array([int(y) for _, y in reference])
    assert reference.class_names == list(data.classes)
    assert np.array_equal(data.y, y_ref) and np.array_equal(data.x, x_ref)


def test_numeric_folder_names_are_the_class_ids_and_a_flat_zip_has_no_labels(cnn):
    image = png(np.zeros((8, 8), np.uint8))
    numbered = datasets.read(zipped({"3/a.png": image, "7/b.png": image}), cnn, "n.zip")
    assert numbered.y.tolist() == [3, 7] and numbered.classes == ()
    for layout in ({"a.png": image, "b.png": image}, {"top/a.png": image, "top/b.png": image}):
        flat = datasets.read(zipped(layout), cnn, "flat.zip")
        assert flat.y is None and "no class folders" in flat.words and len(flat.x) == 2
    assert "no class folders" in refused(
        lambda: finetune.load_training_data(zipped({"a.png": image}), cnn, "flat.zip")
    )


def test_images_are_resized_and_converted_to_the_models_channels_and_range():
    rescaling = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten()]
    )
    gray = np.full((8, 8), 200, np.uint8)  # a grayscale 8×8 image for an RGB 4×4 model
    archive = zipped({"a/1.png": png(gray), "b/2.jpg": png(gray, "JPEG"), "b/3.gif": png(gray)})
    data = datasets.read(archive, rescaling, "mixed.zip")
    assert data.x.shape == (3, 4, 4, 3) and data.pixel_range == "0-255"
    assert np.allclose(data.x, 200, atol=2)  # JPEG may move a flat image by a level or two
    assert "(the default for this model)" in data.words
    scaled = datasets.read(archive, rescaling, "mixed.zip", pixel_range="-1-1")
    assert np.allclose(scaled.x, data.x / 127.5 - 1) and scaled.pixel_range == "-1-1"
    assert "the default" not in scaled.words


def test_category_names_map_to_sorted_class_ids(table_model):
    rows = "a,b,diagnosis\n" + "".join(f"{i},{i},{d}\n" for i, d in enumerate("MBBM"))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    data = datasets.read(rows.encode(), model, "t.csv", label_column="diagnosis")
    assert data.y.tolist() == [1, 0, 0, 1] and data.mapping == "B → 0, M → 1"
    assert "classes B → 0, M → 1" in data.note


def bad_csv(text: str) -> bytes:
    return text.encode()


HEADER = ",".join(f"f{i}" for i in range(30))
ROW = ",".join(["0.5"] * 30)


@pytest.mark.parametrize(
    ("name", "content", "phrases"),
    [
        ("ragged.csv", f"{HEADER},label\n{ROW},1\n{ROW}\n", ("line 3 has 30 values", "31")),
        ("text.csv", f"{HEADER},y\n{ROW},1\n{ROW.replace('0.5', 'abc', 1)},0\n", ("line 3",)),
        ("blank.csv", f"{HEADER},y\n{ROW.replace('0.5', '', 1)},0\n", ("line 2", "f0 is empty")),
        ("labels.csv", f"{HEADER},y,label\n{ROW},1,1\n", ("2 columns named like labels",)),
        ("narrow.csv", "a,b,label\n1,2,0\n", ("2 feature columns", "takes 30 values")),
        ("noheader.csv", f"{ROW},1\n", ("not a header",)),
        ("latin1.csv", "caf\xe9,y\n".encode("latin-1"), ("not UTF-8",)),
        ("empty_rows.csv", f"{HEADER},y\n", ("holds no rows",)),
        ("twice.csv", "a,a,y\n1,2,0\n", ("two columns named a",)),
        ("class.csv", f"{HEADER},y\n{ROW},3\n", ("class 3", "0 to 1")),
        ("inf.csv", f"{HEADER},y\n{ROW.replace('0.5', 'inf', 1)},0\n", ("line 2", "f0")),
        ("broken.parquet", b"PAR1 not really", ("not a readable Parquet file",)),
        ("notes.txt", b"x", ("not a data file", ".zip")),
    ],
)
def test_bad_tables_are_refused_in_one_sentence_naming_the_line(
    table_model, name, content, phrases
):
    raw = content if isinstance(content, bytes) else content.encode()
    message = refused(lambda: datasets.read(raw, table_model, name), name, *phrases)
    assert message.startswith(name)


def test_a_label_column_named_on_the_command_line_must_exist(table_model):
    raw = f"{HEADER},outcome\n{ROW},1\n".encode()
    assert datasets.read(raw, table_model, "t.csv", label_column="outcome").y.tolist() == [1]
    refused(lambda: datasets.read(raw, table_model, "t.csv", label_column="kind"), "no column")


def test_bad_image_zips_are_refused_in_one_sentence_naming_the_entry(cnn, table_model):
    good = png(np.zeros((8, 8), np.uint8))
    cases = [
        ({"0/a.png": good, "1/b.png": good[:40]}, ("entry 1/b.png", "not a readable image")),
        ({"0/a.png": good, "b.png": good}, ("mixes images in class folders", "b.png")),
        ({"notes.txt": b"hello"}, ("holds no images",)),
        ({f"c{i}/a.png": good for i in range(11)}, ("11 class folders", "10 classes")),
        ({"0/a.png": png(np.zeros((8, 8), np.uint16))}, ("16-bit",)),
    ]
    for entries, phrases in cases:
        refused(lambda e=entries: datasets.read(zipped(e), cnn, "bad.zip"), "bad.zip", *phrases)
    refused(lambda: datasets.read(b"PK\x03\x04junk", cnn, "cut.zip"), "not a readable zip")
    refused(
        lambda: datasets.read(zipped({"0/a.png": good}), table_model, "img.zip"),
        "takes inputs shaped (n, 30), not images",
    )
    refused(lambda: datasets.read(b"x", cnn, "d.zip", pixel_range="0-2"), "pixel range")


def test_system_files_in_a_zip_are_ignored(cnn):
    good = png(np.zeros((8, 8), np.uint8))
    entries = {"0/a.png": good, "__MACOSX/0/._a.png": b"junk", "0/.DS_Store": b"x"}
    assert len(datasets.read(zipped(entries), cnn, "mac.zip").x) == 1
