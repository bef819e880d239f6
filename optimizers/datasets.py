"""Read the user's data, as they keep it, into ``x`` (and ``y``) for one model.

``read(source, model)`` is the one way in, for the app and the CLI alike (evaluation, training
and calibration data):

| format            | what it holds                                                  | labels                          |
|-------------------|----------------------------------------------------------------|---------------------------------|
| ``.npz``          | array ``x`` in the model's input shape, optional ``y``         | class ids or one-hot rows       |
| ``.zip`` images   | PNG, JPEG, BMP or GIF files, one folder per class (a single    | folder names, sorted as Keras   |
|                   | top folder around them is fine), resized to the model's input  | sorts them; numeric names are   |
|                   | and read as grayscale or RGB as its channels say                | the class ids themselves        |
| ``.csv``          | a header, numeric feature columns in the model's input order   | column ``label``, ``target``,    |
| ``.parquet``      | (reshaped when the model takes images), one label column       | ``y`` or ``class``; category    |
|                   |                                                                | names map to ids in sorted order |

Images without class folders, and tables without a label column, have no labels: the tool then
measures agreement with the original model, as for an ``.npz`` without ``y``. Pixels are scaled
to the ``PIXEL_RANGES`` value asked for, or by default to ``0-255`` when the model starts with a
``Rescaling`` or ``Normalization`` layer (it scales them itself) and to ``0-1`` otherwise.

Every refusal is a ``keras_io.InputError`` whose message is one sentence naming the file and the
entry or line at fault; nothing is unpacked or allocated beyond ``keras_io.MAX_UNPACKED_BYTES``.

>>> data = read("digits.zip", model)  # doctest: +SKIP
>>> data.words  # doctest: +SKIP
'360 images in 10 class folders (numbered by their names), read as 8×8 grayscale, pixels 0-1'
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from optimizers.keras_io import (
    MAX_UNPACKED_BYTES,
    PICKLE_SIGNATURE,
    InputError,
    check_file,
    check_unpacked_size,
    model_io_shapes,
)

if TYPE_CHECKING:
    import keras

PixelRange = Literal["0-1", "0-255", "-1-1"]
# 0-1: pixel / 255 (most models trained on scaled images); 0-255: the pixel values as stored
# (models that start with Rescaling or Normalization); -1-1: pixel / 127.5 - 1 (MobileNet's
# preprocessing).
PIXEL_RANGES: tuple[PixelRange, ...] = get_args(PixelRange)
SUFFIXES = (".npz", ".zip", ".csv", ".parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
LABEL_COLUMNS = ("label", "target", "y", "class")  # looked for in this order, any case
MAX_IMAGE_PIXELS = 8192 * 8192  # one image, checked from its header before decoding
# Files a file manager or an OS adds to a zip, never data.
IGNORED = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")
NPY_SIGNATURE = b"\x93NUMPY"
Source = str | Path | bytes


@dataclass(frozen=True)
class Data:
    """Samples read for a model: ``x`` float32 in its input shape, ``y`` class ids or None.

    ``classes`` names each class id in order when the file named them (class folders, a label
    column of category names), so the page can show the mapping; ``pixel_range`` is the scaling
    used for images (None for other formats); ``words`` says what was read in one line.
    """

    name: str
    x: np.ndarray
    y: np.ndarray | None
    words: str
    classes: tuple[str, ...] = ()
    pixel_range: PixelRange | None = None

    @property
    def note(self) -> str:
        """What was decided while reading, for the user ('' for an ``.npz``, read as given):
        how images were scaled, where labels came from, which class got which id."""
        if Path(self.name).suffix.lower() == ".npz":
            return ""
        return self.words + (f"; classes {self.mapping}" if self.mapping else "")

    @property
    def mapping(self) -> str:
        """``cat → 0, dog → 1``: the class names and the ids they were given ('' if none)."""
        return ", ".join(f"{name} → {i}" for i, name in enumerate(self.classes) if name)


def read(
    source: Source,
    model: keras.Model,
    name: str | None = None,
    pixel_range: PixelRange | None = None,
    label_column: str | None = None,
) -> Data:
    """Read a data file (a path, or uploaded bytes with its ``name``) for ``model``.

    The format follows the suffix of the name (``SUFFIXES``). ``pixel_range`` overrides the
    default scaling of images; ``label_column`` names a table's label column. Raises
    ``InputError`` with one sentence per problem.
    """
    if pixel_range is not None and pixel_range not in PIXEL_RANGES:
        raise InputError(
            f"pixel range must be one of {', '.join(PIXEL_RANGES)}, got {pixel_range!r}"
        )
    if isinstance(source, bytes):
        if name is None or Path(name).name in ("", ".."):
            raise InputError(f"the uploaded data has no usable file name ({name!r})")
        name, raw = Path(name).name, source
        if not raw:
            raise InputError(f"{name} is empty")
    else:
        path = Path(source)
        check_file(path)
        name = name or path.name
        raw = path.read_bytes()
    suffix = Path(name).suffix.lower()
    if raw.startswith(NPY_SIGNATURE):
        raise InputError(f"{name} is a single .npy array; save x and y with np.savez")
    if suffix not in SUFFIXES:
        raise InputError(
            f"{name} is not a data file this tool reads (expected one of {', '.join(SUFFIXES)})"
        )
    if len(raw) > MAX_UNPACKED_BYTES:
        raise InputError(f"{name} is over the {MAX_UNPACKED_BYTES / 1024**3:g} GB limit for data")
    if suffix == ".npz":
        return read_npz(name, raw, model)
    if suffix == ".zip":
        return read_images(name, raw, model, pixel_range)
    return read_table(name, raw, model, label_column)


def no_labels(name: str) -> str:
    """What a file of ``name``'s format lacks when it has no labels, for messages."""
    return {
        ".npz": "no array named y",
        ".zip": "no class folders (one folder of images per class)",
    }.get(Path(name).suffix.lower(), f"no label column ({', '.join(LABEL_COLUMNS)})")


# --- .npz ---


def read_npz(name: str, raw: bytes, model: keras.Model) -> Data:
    """``x`` and optional ``y`` from an ``.npz`` (``allow_pickle=False``)."""
    if raw.startswith(b"PK"):
        check_npz_contents(name, raw)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as e:
        # numpy calls every file that is neither .npy nor zip "pickled"; only real pickles are.
        if raw[:1] == PICKLE_SIGNATURE or "Object arrays" in str(e):
            raise InputError(
                f"{name} holds pickled Python objects, which are refused for safety"
            ) from None
        raise InputError(f"{name} is not a readable .npz file") from None
    x, y = check_data(name, arrays, model)
    what = f"{len(x):,} samples" + ("" if y is not None else " without labels")
    return Data(name, x, y, f"{what} from arrays x{'' if y is None else ' and y'}")


def check_npz_contents(name: str, raw: bytes) -> None:
    """Refuse, before reading any array, an ``.npz`` that would unpack to too much, or whose
    arrays declare more data than they hold, or hold Python objects."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            check_unpacked_size(name, z)
            for info in z.infolist():
                with z.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise InputError(
                        f"{name} holds pickled Python objects, which are refused for safety"
                    )
                declared = float(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if declared > info.file_size:
                    raise InputError(
                        f"{name}: array {Path(info.filename).stem} declares "
                        f"{declared / 1e6:,.1f} MB of data but holds "
                        f"{info.file_size / 1e6:,.1f} MB, so the file is damaged"
                    )
    except InputError:
        raise
    except Exception:
        raise InputError(f"{name} is not a readable .npz file") from None


def check_data(
    name: str, arrays: dict[str, np.ndarray], model: keras.Model
) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` as float32 and ``y`` as int64 class ids, checked against ``model``."""
    if "x" not in arrays:
        raise InputError(f"{name} has no array named x (found: {', '.join(arrays) or 'none'})")
    x = arrays["x"]
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"{name}: x must be numeric, got {x.dtype}")
    input_shape, classes = model_io_shapes(model)
    fits = x.ndim == len(input_shape) + 1 and all(
        want is None or want == got for want, got in zip(input_shape, x.shape[1:], strict=True)
    )
    if not fits:
        raise InputError(
            f"{name}: x has shape {x.shape} but the model expects {expected(input_shape)}"
        )
    if len(x) == 0:
        raise InputError(f"{name}: x holds no samples")
    with np.errstate(over="ignore"):  # what overflows float32 becomes Inf, refused below
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name}: x holds NaN or Inf values (or values too large for float32)")
    y = arrays.get("y")
    if y is None:
        return x, None
    if y.ndim == 0:
        raise InputError(f"{name}: y is a single value, not one label per sample")
    if len(y) != len(x):
        raise InputError(f"{name}: y has {len(y)} labels for {len(x)} samples")
    if not np.issubdtype(y.dtype, np.number):
        raise InputError(f"{name}: y must hold numeric class ids, got {y.dtype}")
    n_classes = 2 if classes == 1 else classes
    if y.ndim == 2 and y.shape[1] == classes and classes > 1:
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
            raise InputError(f"{name}: y rows must be one-hot, with a single 1 in each row")
        y = np.argmax(y, axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.all(np.equal(np.mod(y, 1), 0)):
        raise InputError(
            f"{name}: y must be integer class ids or one-hot rows of width {classes}, "
            f"got shape {y.shape} and dtype {y.dtype}"
        )
    if y.min() < 0 or y.max() >= n_classes:
        raise InputError(
            f"{name}: y holds class {int(y.max()) if y.max() >= n_classes else int(y.min())}, "
            f"but the model predicts classes 0 to {n_classes - 1}"
        )
    return x, y.astype(np.int64)


def expected(input_shape: tuple) -> str:
    return "(n, " + ", ".join("?" if d is None else str(d) for d in input_shape) + ")"


# --- .zip of image folders ---


def default_pixel_range(model: keras.Model) -> PixelRange:
    """``0-255`` when the model scales pixels itself (its first layer is ``Rescaling`` or
    ``Normalization``), else ``0-1``."""
    import keras

    first = next(
        (layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), None
    )
    scales = isinstance(first, keras.layers.Rescaling | keras.layers.Normalization)
    return "0-255" if scales else "0-1"


def image_shape(name: str, model: keras.Model) -> tuple[int | None, int | None, str, int]:
    """Height, width, PIL mode and channels of the images ``model`` takes."""
    shape, _ = model_io_shapes(model)
    if len(shape) == 2:
        return shape[0], shape[1], "L", 0
    channels = shape[-1] if len(shape) == 3 else None
    if channels not in (1, 3, 4):
        raise InputError(
            f"{name} holds images, but the model takes inputs shaped {expected(shape)}, not "
            "images (height, width) or (height, width, channels) with 1, 3 or 4 channels"
        )
    return shape[0], shape[1], {1: "L", 3: "RGB", 4: "RGBA"}[channels], channels


def image_entries(name: str, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's image files, sorted by path; other files are ignored, as Keras does."""
    found = []
    for info in archive.infolist():
        path = info.filename
        if info.is_dir() or any(part in path for part in IGNORED):
            continue
        if PurePosixPath(path).name.startswith("."):
            continue
        if PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES:
            found.append(info)
    if not found:
        raise InputError(
            f"{name} holds no images ({', '.join(s.lstrip('.').upper() for s in IMAGE_SUFFIXES)})"
            "; put one folder of images per class in the zip"
        )
    return sorted(found, key=lambda info: info.filename)


def class_folders(
    name: str, entries: list[zipfile.ZipInfo]
) -> tuple[list[str] | None, tuple[str, ...]]:
    """Each entry's class folder (None without folders) and the class names in id order.

    Folders shared by every entry (a top folder around the classes) are not classes. Names that
    are all whole numbers are the class ids themselves; others are numbered in sorted order."""
    parts = [PurePosixPath(info.filename).parts for info in entries]
    while all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    flat = [p for p in parts if len(p) == 1]
    if len(flat) == len(parts):
        return None, ()
    if flat:
        raise InputError(
            f"{name} mixes images in class folders with images outside them ({flat[0][0]}); "
            "put every image in its class's folder"
        )
    labels = [p[0] for p in parts]
    names = sorted(set(labels))
    if all(n.isdigit() for n in names):
        ids = sorted({int(n) for n in names})
        return labels, tuple(
            next((n for n in names if int(n) == i), "") for i in range(ids[-1] + 1)
        )
    return labels, tuple(names)


def decode(name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, mode: str):
    """One image from the archive, converted to ``mode``; refused in one sentence if damaged."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(archive.read(info)))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InputError(
                f"{name}: entry {info.filename} is {image.width}×{image.height} pixels, over the "
                f"{MAX_IMAGE_PIXELS:,}-pixel limit for one image"
            )
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            raise InputError(
                f"{name}: entry {info.filename} has {image.mode} pixels (16-bit or float); "
                "save it with 8-bit pixels"
            )
        image.load()
        return image if image.mode == mode else image.convert(mode)
    except InputError:
        raise
    except Exception:
        raise InputError(
            f"{name}: entry {info.filename} is not a readable image (damaged, or not PNG, "
            "JPEG, BMP or GIF)"
        ) from None


def read_images(
    name: str, raw: bytes, model: keras.Model, pixel_range: PixelRange | None = None
) -> Data:
    """A zip of images, one folder per class (or none: unlabelled), in ``model``'s input."""
    from PIL import Image

    height, width, mode, channels = image_shape(name, model)
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise InputError(f"{name} is not a readable zip archive") from None
    with archive:
        check_unpacked_size(name, archive)
        entries = image_entries(name, archive)
        labels, classes = class_folders(name, entries)
        images = []
        for info in entries:
            try:
                image = decode(name, archive, info, mode)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
                raise InputError(f"{name}: entry {info.filename} is damaged in the zip") from None
            if height is None or width is None:  # the model takes any size: keep the first's
                height, width = image.height, image.width
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            if not images:
                bytes_needed = len(entries) * height * width * max(channels, 1) * 4
                if bytes_needed > MAX_UNPACKED_BYTES:
                    raise InputError(
                        f"{name}: its {len(entries):,} images would take "
                        f"{bytes_needed / 1024**3:.1f} GB as float32, over the "
                        f"{MAX_UNPACKED_BYTES / 1024**3:g} GB limit"
                    )
            images.append(np.asarray(image, dtype=np.uint8))
    pixels = np.stack(images)
    if channels == 1:
        pixels = pixels[..., None]
    used = pixel_range or default_pixel_range(model)
    x = scale_pixels(pixels, used)
    arrays = {"x": x}
    if labels is not None:
        arrays["y"] = np.array(
            [int(n) if n.isdigit() else classes.index(n) for n in labels], dtype=np.int64
        )
    _, n_classes = model_io_shapes(model)
    numbered = all(n.isdigit() for n in classes if n)
    if labels is not None and len(classes) > max(n_classes, 2):
        raise InputError(
            f"{name} has a class folder named {classes[-1]}, but the model predicts classes 0 "
            f"to {max(n_classes, 2) - 1}"
            if numbered
            else f"{name} has {len(classes)} class folders but the model predicts "
            f"{max(n_classes, 2)} classes"
        )
    x, y = check_data(name, arrays, model)
    look = {"L": "grayscale", "RGB": "RGB", "RGBA": "RGBA"}[mode]
    how = "no class folders, so no labels"
    if labels is not None:
        how = f"{len(set(labels))} class folders" + (
            " (numbered by their names)" if numbered else ""
        )
    words = f"{len(x):,} images in {how}, read as {width}×{height} {look}, pixels {used}" + (
        "" if pixel_range else " (the default for this model)"
    )
    named = labels is not None and not numbered  # numbered folders are their own ids
    return Data(name, x, y, words, classes if named else (), used)


def scale_pixels(pixels: np.ndarray, pixel_range: PixelRange) -> np.ndarray:
    """8-bit pixels as float32 in ``pixel_range``."""
    x = pixels.astype(np.float32)
    if pixel_range == "0-1":
        return x / 255.0
    if pixel_range == "-1-1":
        return x / 127.5 - 1.0
    return x


# --- .csv and .parquet tables ---


@dataclass(frozen=True)
class Rows:
    """Where a table's rows are, for messages: ``line`` numbers of a CSV file, or Parquet
    ``row`` numbers."""

    word: str
    numbers: np.ndarray

    def at(self, index: int) -> str:
        return f"{self.word} {int(self.numbers[index])}"


def read_table(name: str, raw: bytes, model: keras.Model, label_column: str | None = None) -> Data:
    """A table with a header: feature columns in the model's input order and a label column."""
    header, columns, rows = (
        parquet_columns(name, raw) if name.lower().endswith(".parquet") else csv_columns(name, raw)
    )
    label = pick_label_column(name, header, label_column)
    features = [i for i, column in enumerate(header) if column != label]
    shape, _ = model_io_shapes(model)
    size = int(np.prod([d or 0 for d in shape]))
    if len(features) != size:
        raise InputError(
            f"{name} has {len(features)} feature columns"
            + (f" besides the label column {label}" if label else "")
            + f", but the model takes {size} values per sample {expected(shape)}"
        )
    n = len(columns[0]) if columns else 0
    if n == 0:
        raise InputError(f"{name} holds no rows")
    x = np.empty((n, len(features)), dtype=np.float64)
    for j, i in enumerate(features):
        x[:, j] = numeric(name, header[i], columns[i], rows)
    arrays = {"x": x.reshape((n, *shape))}
    classes: tuple[str, ...] = ()
    if label is not None:
        arrays["y"], classes = class_ids(name, label, columns[header.index(label)], rows)
    x_checked, y = check_data(name, arrays, model)
    words = f"{n:,} rows, {len(features)} feature columns, " + (
        "no label column, so no labels"
        if label is None
        else f"labels from column {label}" + (" (category names)" if classes else "")
    )
    return Data(name, x_checked, y, words, classes)


def csv_columns(name: str, raw: bytes) -> tuple[list[str], list[np.ndarray], Rows]:
    """Header, each column as strings, and where each row is (its line in the file)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name} is not UTF-8 text, so not a readable CSV file") from None
    if "\x00" in text:
        raise InputError(f"{name} holds binary data, so it is not a CSV file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise InputError(f"{name} has no header line naming its columns")
        header = [cell.strip() for cell in header]
        if all(is_number(cell) for cell in header):
            raise InputError(
                f"{name} starts with numbers, not a header; add a first line naming the "
                "columns (the label column label, target, y or class)"
            )
        check_header(name, header)
        rows, lines = [], []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines, as spreadsheets write at the end
            if len(row) != len(header):
                raise InputError(
                    f"{name}: line {reader.line_num} has {len(row)} values, but the header "
                    f"names {len(header)} columns"
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise InputError(f"{name}: line {reader.line_num} is not valid CSV ({e})") from None
    cells = np.array(rows, dtype=str).reshape(len(rows), len(header))
    columns = [np.char.strip(cells[:, i]) for i in range(len(header))]
    return header, columns, Rows("line", np.array(lines, dtype=np.int64))


def check_header(name: str, header: list[str]) -> None:
    seen = set()
    for column in header:
        if not column:
            raise InputError(f"{name} has a column without a name in its header")
        if column in seen:
            raise InputError(f"{name} has two columns named {column}")
        seen.add(column)


def parquet_columns(name: str, raw: bytes) -> tuple[list[str], list[np.ndarray], Rows]:
    """Header and each column (numbers, or strings), read with pyarrow; row 1 is the first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(io.BytesIO(raw))
        meta = file.metadata
        unpacked = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if unpacked > MAX_UNPACKED_BYTES:
            raise InputError(
                f"{name} would unpack to {unpacked / 1024**3:.1f} GB, over the "
                f"{MAX_UNPACKED_BYTES / 1024**3:g} GB limit for a file's contents"
            )
        table = file.read()
    except InputError:
        raise
    except Exception:
        raise InputError(f"{name} is not a readable Parquet file") from None
    header = [str(column) for column in table.column_names]
    check_header(name, header)
    columns = []
    for column_name, column in zip(header, table.columns, strict=True):
        if column.null_count:
            row = next(i for i, v in enumerate(column.is_null().to_pylist()) if v) + 1
            raise InputError(f"{name}: row {row}, column {column_name} is empty")
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            columns.append(column.to_numpy().astype(np.float64))
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            columns.append(np.array(column.to_pylist(), dtype=str))
        else:
            raise InputError(
                f"{name}: column {column_name} holds {kind} values, not numbers or category names"
            )
    return header, columns, Rows("row", np.arange(1, table.num_rows + 1))


def pick_label_column(name: str, header: list[str], asked: str | None) -> str | None:
    """The label column: the one asked for, or the one named like a label (None without)."""
    if asked is not None:
        if asked not in header:
            raise InputError(
                f"{name} has no column named {asked} (its columns: {', '.join(header[:8])}"
                + (", ...)" if len(header) > 8 else ")")
            )
        return asked
    found = [c for c in header if c.lower() in LABEL_COLUMNS]
    if len(found) > 1:
        raise InputError(
            f"{name} has {len(found)} columns named like labels ({', '.join(found)}); name the "
            "one to use with --label-column"
        )
    return found[0] if found else None


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def numeric(name: str, column: str, values: np.ndarray, rows: Rows) -> np.ndarray:
    """A column as float64; an empty or non-numeric cell is refused with its row."""
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise InputError(
                f"{name}: {rows.at(bad[0])}, column {column} holds {values[bad[0]]}, "
                "not a finite number"
            )
        return values
    try:
        converted = values.astype(np.float64)
    except ValueError:
        at = next(i for i, cell in enumerate(values) if not is_number(cell))
        cell = values[at]
        held = "is empty" if not cell else f"holds {cell[:40]!r}, not a number"
        raise InputError(f"{name}: {rows.at(at)}, column {column} {held}") from None
    return numeric(name, column, converted, rows)


def class_ids(
    name: str, column: str, values: np.ndarray, rows: Rows
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class ids from a label column: numbers are the ids themselves; category names are
    numbered in sorted order, and returned in that order."""
    if values.dtype.kind == "f" or all(is_number(cell) for cell in values):
        return numeric(name, column, values, rows), ()
    empty = np.flatnonzero(values == "")
    if len(empty):
        raise InputError(f"{name}: {rows.at(empty[0])}, column {column} is empty")
    names, ids = np.unique(values, return_inverse=True)
    return ids.astype(np.int64), tuple(str(n) for n in names)
