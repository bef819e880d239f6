"""Safe loading and saving of models and evaluation data.

Models load with Keras ``safe_mode=True`` and ``compile=False``: no code from a file ever runs
(Lambda layers are refused, and custom classes unless the command line imported the user's own
module with ``import_trusted``), and the optimizer state is not needed. Data files are read by
``datasets``. Every refusal is an ``InputError`` whose message is one
sentence naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if TYPE_CHECKING:
    import keras

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
# Memory bounds, checked from what a file declares before anything is unpacked or allocated:
# a zip (a .keras archive or an .npz) may unpack to at most MAX_UNPACKED_BYTES, and a model may
# declare at most WEIGHT_SLACK_BYTES more weight bytes than its file holds.
MAX_UNPACKED_BYTES = 2 * 1024**3
WEIGHT_SLACK_BYTES = 16 * 1024**2
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PICKLE_SIGNATURE = b"\x80"  # first byte of every pickle since protocol 2
RESAVE_HINT = (
    "rebuild the model from built-in Keras layers and save it with model.save('model.keras')"
)


class InputError(ValueError):
    """A file the tool refuses, with a one-sentence reason for the user."""


def check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path.name}: no such file")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise InputError(
                f"{path.name} is a TensorFlow SavedModel, which cannot be loaded safely; "
                f"load it in TensorFlow and {RESAVE_HINT}"
            )
        raise InputError(f"{path.name} is a folder, not a model file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path.name} cannot be read (permission denied)")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty")


def check_model_container(path: Path) -> None:
    """Refuse files that are not what their suffix says before Keras sees them."""
    suffix = path.suffix
    if path.name == "saved_model.pb" or suffix.lower() == ".pb":
        raise InputError(
            f"{path.name} is part of a TensorFlow SavedModel, which cannot be loaded safely; "
            f"load it in TensorFlow and {RESAVE_HINT}"
        )
    if suffix.lower() not in MODEL_SUFFIXES:
        raise InputError(
            f"{path.name} is not a Keras model file (expected one of {', '.join(MODEL_SUFFIXES)})"
        )
    if suffix not in MODEL_SUFFIXES:  # Keras itself only recognizes lower-case suffixes
        raise InputError(
            f"{path.name}: Keras only reads lower-case suffixes; rename it to "
            f"{path.stem}{suffix.lower()}"
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if suffix == ".keras":
        if head[:2] != b"PK":
            raise InputError(f"{path.name} is not a Keras archive (a .keras file is a zip archive)")
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                check_unpacked_size(path.name, z)
                broken = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
            raise InputError(f"{path.name}: the Keras archive is truncated or corrupt") from None
        if broken is not None:
            raise InputError(f"{path.name}: the Keras archive is truncated or corrupt")
        if "config.json" not in names:
            raise InputError(f"{path.name} is a zip archive but not a Keras model (no config.json)")
    elif head != HDF5_SIGNATURE:
        raise InputError(f"{path.name} is not an HDF5 file, so not a Keras .h5 model")


def check_unpacked_size(name: str, archive: zipfile.ZipFile) -> None:
    """Refuse a zip whose members declare more than ``MAX_UNPACKED_BYTES`` (a zip bomb)."""
    total = sum(info.file_size for info in archive.infolist())
    if total > MAX_UNPACKED_BYTES:
        raise InputError(
            f"{name} would unpack to {total / 1024**3:.1f} GB, over the "
            f"{MAX_UNPACKED_BYTES / 1024**3:g} GB limit for a file's contents"
        )


def declared_weight_bytes(path: Path) -> int:
    """Bytes of the weights that the model's config declares, counted without allocating them:
    Keras builds the model in a stateless scope, where variables only record their shape. A
    build that fails part-way counts the variables made until then (Keras' own load, run
    next, would allocate those and then say what is wrong)."""
    import h5py
    import keras
    from keras.src.backend.common import global_state
    from keras.src.legacy.saving import saving_options, saving_utils
    from keras.src.saving import serialization_lib

    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            config, legacy = json.loads(z.read("config.json")), False
        if isinstance(config, dict):
            config["compile_config"] = None  # as load_model(compile=False): no optimizer
    else:
        with h5py.File(path, "r") as f:
            text = f.attrs.get("model_config")
        if text is None:
            raise ValueError("no model config found in the file")
        config = json.loads(text.decode() if isinstance(text, bytes) else text)
        legacy = True
    before = list(global_state.get_global_attribute("uninitialized_variables", []))
    try:
        with (
            keras.StatelessScope(initialize_variables=False),
            serialization_lib.SafeModeScope(True),
        ):
            if legacy:
                with saving_options.keras_option_scope(use_legacy_config=True):
                    saving_utils.model_from_config(config)
            else:
                serialization_lib.deserialize_keras_object(config, safe_mode=True)
    except Exception:
        pass  # the variables made before the build failed are the ones Keras would allocate
    finally:
        created = global_state.get_global_attribute("uninitialized_variables", [])[len(before) :]
        # Never let a later scope create the variables counted here.
        global_state.set_global_attribute("uninitialized_variables", before)
    return sum(
        int(np.prod(v.shape, dtype=np.float64)) * np.dtype(v.dtype).itemsize for v in created
    )


def check_declared_weights(path: Path) -> None:
    """Refuse a model whose config declares far more weights than its file holds, before
    Keras allocates them (an altered config could otherwise ask for any amount of memory)."""
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            stored = sum(info.file_size for info in z.infolist())
    else:
        stored = path.stat().st_size
    try:
        declared = declared_weight_bytes(path)
    except Exception:  # not buildable without weights: Keras' own load says what is wrong
        return
    if declared > stored + WEIGHT_SLACK_BYTES:
        raise InputError(
            f"{path.name} declares {declared / 1e6:,.0f} MB of weights but holds only "
            f"{stored / 1e6:,.1f} MB, so the file is damaged or was put together from two models"
        )


HDF5_SECONDS = 10
HDF5_WALK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, 4 * 1024**3))
import h5py
def read(name, obj):
    for key in obj.attrs:
        obj.attrs[key]
    if isinstance(obj, h5py.Dataset):
        obj[()]
with h5py.File(sys.argv[1], "r") as f:
    read("", f)
    f.visititems(read)
"""


def check_hdf5(name: str, path: Path) -> None:
    """Read every attribute and dataset of an HDF5 file in a child process first: a damaged
    file can make the HDF5 library hang or crash, which must never take the app with it."""
    import subprocess
    import sys

    try:
        result = subprocess.run(
            [sys.executable, "-c", HDF5_WALK, str(path)], capture_output=True, timeout=HDF5_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"{name}: its HDF5 data could not be read within {HDF5_SECONDS} s, so it is damaged"
        ) from None
    if result.returncode != 0:
        raise InputError(f"{name} holds a damaged HDF5 file whose contents cannot be read")


def check_weights_file(path: Path) -> None:
    """``check_hdf5`` on the model's weights: the file itself, or the one in a Keras archive."""
    if path.suffix != ".keras":
        check_hdf5(path.name, path)
        return
    with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
        if "model.weights.h5" in z.namelist():
            check_hdf5(path.name, Path(z.extract("model.weights.h5", tmp)))


def explain_load_error(path: Path, error: Exception) -> str:
    text = str(error).replace(str(path), path.name)
    if "Lambda" in text or "safe_mode" in text:
        return (
            f"{path.name} contains a Lambda layer, whose Python code is never run here for "
            f"safety; {RESAVE_HINT}"
        )
    if "Could not locate" in text or "custom_objects" in text or "Unknown layer" in text:
        custom = re.search(
            r"Could not locate (?:class|function) '([^']+)'|Unknown \w+: '([^']+)'", text
        )
        named = next((g for g in custom.groups() if g), "") if custom else ""
        named = named.split(">")[-1]  # "package>Class", as registered
        what = f"the custom layer {named}" if named else "custom Python classes"
        return (
            f"{path.name} uses {what}, whose code is never imported unless you trust it: on "
            "the command line, pass --trust-code FILE.py naming the Python file that defines "
            "and registers it (the app never imports code), or "
            f"{RESAVE_HINT}"
        )
    if "objects could not be loaded" in text or "mismatch" in text:
        return (
            f"{path.name}: the weights stored in the file do not fit the layers of its "
            "architecture, so the file is damaged or was put together from two models"
        )
    # Keras' messages run over several sentences and lines; the first one says what failed.
    first = re.split(r"\n|(?<=[.!?])\s", text.strip(), maxsplit=1)[0] or type(error).__name__
    return f"{path.name} could not be loaded as a Keras model ({first[:200]})"


def load_model(path: str | Path) -> keras.Model:
    """Load a ``.keras``/``.h5`` model safely; raises ``InputError`` with a clear reason."""
    path = Path(path)
    check_file(path)
    check_model_container(path)
    import keras  # only now: the checks above refuse bad files without the slow import

    check_weights_file(path)
    try:
        check_declared_weights(path)
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except InputError:
        raise
    except Exception as e:  # Keras raises many types; all become one readable sentence
        raise InputError(explain_load_error(path, e)) from None
    if not isinstance(model, keras.Model):
        raise InputError(f"{path.name} holds a single layer, not a model")
    for v in model.weights:
        if not np.all(np.isfinite(np.asarray(v))):
            raise InputError(f"{path.name}: weight {v.path} holds NaN or Inf values")
    return model


SAVED_ON = "1980-01-01@00:00:00"  # the date every saved file records, the zip format's first


def save_model_bytes(model: keras.Model) -> bytes:
    """The ``.keras`` file of ``model`` as bytes, reproducible: Keras records the date and time
    of saving (in ``metadata.json`` and each zip entry), which are fixed here, so the same model
    always gives the same bytes and the same gzip figure, in the app and the CLI alike."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.keras"
        model.save(target)
        out = Path(tmp) / "fixed.keras"
        with zipfile.ZipFile(target) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                content = src.read(info)
                if info.filename == "metadata.json":
                    meta = json.loads(content)
                    meta["date_saved"] = SAVED_ON
                    content = json.dumps(meta).encode()
                info.date_time = (1980, 1, 1, 0, 0, 0)
                dst.writestr(info, content)
        return out.read_bytes()


def load_model_bytes(data: bytes, name: str) -> keras.Model:
    """Load a model from uploaded bytes; ``name`` gives the suffix and the name in messages."""
    if Path(name).name in ("", ".."):
        raise InputError(f"the uploaded model has no usable file name ({name!r})")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(name).name
        target.write_bytes(data)
        return load_model(target)


def model_io_shapes(model: keras.Model) -> tuple[tuple, int]:
    """The single input's shape (without batch) and the number of output units."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(
            f"model {model.name} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; only single-input, single-output models can be evaluated"
        )
    return tuple(model.inputs[0].shape[1:]), int(model.outputs[0].shape[-1] or 0)


def load_data(path: str | Path, model: keras.Model) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and ``y`` (class ids, or None) of a data file for ``model``, with the defaults of
    ``datasets.read``, which reads every format (``.npz``, image ``.zip``, ``.csv``,
    ``.parquet``) and says what it read."""
    from optimizers import datasets  # datasets imports this module's checks

    data = datasets.read(path, model)
    return data.x, data.y


def import_trusted(paths: Sequence[str | Path]) -> None:
    """Import each Python file of ``paths`` as a module, so that the layers it registers with
    ``keras.saving.register_keras_serializable`` can be loaded (still ``safe_mode=True``: no
    Lambda layer or pickle ever runs). Only the command line calls this, on files the user
    names; the app never imports user code. Raises ``InputError`` for a missing or broken file.
    """
    import importlib.util
    import sys

    for given in paths:
        path = Path(given)
        if not path.is_file():
            raise InputError(f"{path.name}: no such Python file for --trust-code")
        if path.suffix != ".py":
            raise InputError(f"{path.name} is not a Python file (.py) for --trust-code")
        module = "trusted_" + re.sub(r"\W", "_", path.stem)
        spec = importlib.util.spec_from_file_location(module, path)
        if spec is None or spec.loader is None:
            raise InputError(f"{path.name} cannot be imported as a Python module")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[module] = loaded
        try:
            spec.loader.exec_module(loaded)
        except Exception as e:  # the user's own code: say where it failed, in one line
            del sys.modules[module]
            first = " ".join(str(e).split())[:200]
            raise InputError(
                f"{path.name} failed to import ({type(e).__name__}: {first})"
            ) from None
