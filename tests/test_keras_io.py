"""``optimizers.keras_io``: every refusal is an ``InputError`` whose message is one sentence naming
the file, no code from a file ever runs, and good models and data load.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers.keras_io import InputError, load_data, load_model, load_model_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")  # "... loaded. Example ..." is two sentences


def assert_one_sentence(message: str, path: Path | str) -> str:
    """``message`` is one sentence that names the file by its name (not its full path)."""
    path = Path(path)
    assert path.name in message, f"the message does not name {path.name}: {message!r}"
    assert "\n" not in message, f"the message spans lines: {message!r}"
    assert not SENTENCE_BREAK.search(message), f"the message is several sentences: {message!r}"
    assert "Traceback" not in message
    if path.parent != Path("."):
        assert str(path.parent) not in message, f"the message leaks the folder: {message!r}"
    return message


def refused(load, path: Path | str, *phrases: str) -> str:
    """Run ``load()``, expect an ``InputError`` naming ``path`` and containing ``phrases``."""
    with pytest.raises(InputError) as info:
        load()
    message = assert_one_sentence(str(info.value), path)
    for phrase in phrases:
        assert phrase.lower() in message.lower(), f"{phrase!r} not in {message!r}"
    return message


def refused_model(path: Path, *phrases: str) -> str:
    return refused(lambda: load_model(path), path, *phrases)


def refused_data(path: Path, model, *phrases: str) -> str:
    return refused(lambda: load_data(path, model), path, *phrases)


def savez(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:  # a file object keeps the name exactly (no ".npz" appended)
        np.savez(f, **arrays)
    return path


def same_weights(a, b) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


# ------------------------------------------------------------------------------ model files


def test_missing_file_is_refused(tmp_path):
    refused_model(tmp_path / "nope.keras", "no such file")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_empty_file_is_refused(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    refused_model(path, "empty")


def test_text_file_renamed_keras_is_refused(tmp_path):
    path = tmp_path / "fake.keras"
    path.write_text("this is not a model\n")
    refused_model(path, "not a Keras archive")


def test_truncated_keras_archive_is_refused(tmp_path, model_files):
    data = model_files.cnn_keras.read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    message = refused_model(path)
    assert "truncated" in message or "corrupt" in message, message


def test_keras_archive_with_a_damaged_member_is_refused(tmp_path, model_files):
    # Same length, valid zip structure, but the weights' bytes no longer match their CRC.
    data = bytearray(model_files.mlp_keras.read_bytes())
    with zipfile.ZipFile(model_files.mlp_keras) as z:
        info = z.getinfo("model.weights.h5")
    assert info.compress_type == zipfile.ZIP_STORED
    header = info.header_offset  # local header: 30 bytes, then the name and extra field
    name_len, extra_len = np.frombuffer(bytes(data[header + 26 : header + 30]), "<u2")
    middle = header + 30 + int(name_len) + int(extra_len) + info.compress_size // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "damaged.keras"
    path.write_bytes(bytes(data))
    refused_model(path, "truncated or corrupt")


def test_truncated_h5_is_refused(tmp_path, model_files):
    data = model_files.mlp_h5.read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    refused_model(path, "truncated")


def test_zip_without_config_json_is_refused(tmp_path):
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "a zip, but no Keras model in it")
    refused_model(path, "config.json")


def test_fake_h5_is_refused(tmp_path):
    path = tmp_path / "fake.h5"
    path.write_text("not an HDF5 file at all\n")
    refused_model(path, "not an HDF5 file")


def test_wrong_suffix_is_refused(tmp_path, model_files):
    path = tmp_path / "model.txt"
    shutil.copy(model_files.mlp_keras, path)  # a good model under the wrong name
    refused_model(path, "not a Keras model file", ".keras")


def test_plain_folder_is_refused(tmp_path):
    folder = tmp_path / "folder.keras"
    folder.mkdir()
    refused_model(folder, "folder")


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory, model_files) -> Path:
    """A TensorFlow SavedModel exported by Keras 3 from the MLP."""
    model = keras.saving.load_model(model_files.mlp_keras, compile=False)
    folder = tmp_path_factory.mktemp("exported") / "digits_savedmodel"
    model.export(str(folder), verbose=False)
    assert (folder / "saved_model.pb").exists()
    return folder


def test_saved_model_folder_is_refused(saved_model_dir):
    refused_model(saved_model_dir, "SavedModel", "model.save('model.keras')")


def test_saved_model_pb_file_is_refused(saved_model_dir):
    refused_model(saved_model_dir / "saved_model.pb", "SavedModel")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused_and_its_code_never_runs(tmp_path, suffix):
    marker = tmp_path / "lambda_ran"
    # A real lambda (its bytecode is stored in the file) whose only job is to leave a marker.
    # Built with eval so that the path is a constant inside the code, not a default argument.
    function = eval(f"lambda x: __import__('pathlib').Path({str(marker)!r}).touch() or x")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(function, name="sneaky"), keras.layers.Dense(2)]
    )
    path = tmp_path / f"lambda{suffix}"
    model.save(path)
    marker.unlink(missing_ok=True)  # building the model ran the lambda once

    refused_model(path, "Lambda")
    assert not marker.exists(), "loading ran the Lambda layer's code"

    # Control: the marker does work, so its absence above means the code did not run.
    keras.saving.load_model(path, compile=False, safe_mode=False)
    assert marker.exists()


CUSTOM_LOADER = textwrap.dedent(
    """
    import json, sys
    from optimizers.keras_io import InputError, load_model
    results = []
    for path in sys.argv[1:]:
        try:
            load_model(path)
            results.append(["loaded", ""])
        except InputError as e:
            results.append(["InputError", str(e)])
        except Exception as e:
            results.append([type(e).__name__, str(e)])
    print(json.dumps(results))
    """
)


def test_custom_layer_class_is_refused_in_a_process_that_lacks_it(tmp_path):
    @keras.saving.register_keras_serializable(package="keras_io_tests")
    class ScaledDense(keras.layers.Dense):
        def call(self, inputs):
            return 2.0 * super().call(inputs)

    model = keras.Sequential([keras.Input((4,)), ScaledDense(3, name="scaled")])
    paths = [tmp_path / "custom.keras", tmp_path / "custom.h5"]
    for path in paths:
        model.save(path)
        # Control: where the class is registered, the file is a good model.
        assert same_weights(keras.saving.load_model(path, compile=False), model)

    # A fresh interpreter, where ScaledDense was never defined.
    result = subprocess.run(
        [sys.executable, "-c", CUSTOM_LOADER, *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    for path, (kind, message) in zip(paths, outcomes, strict=True):
        assert kind == "InputError", (path.name, kind, message)
        assert_one_sentence(message, path)
        assert "custom layer ScaledDense" in message and "--trust-code" in message, message


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_naming_the_weight(tmp_path, model_files, suffix, bad):
    model = keras.saving.load_model(model_files.mlp_keras, compile=False)
    weights = model.get_weights()
    weights[2][3, 1] = bad  # predictions/kernel
    model.set_weights(weights)
    path = tmp_path / f"broken{suffix}"
    model.save(path)
    message = refused_model(path, "NaN or Inf")
    assert "predictions/kernel" in message, message


def test_weights_that_do_not_fit_the_architecture_are_refused_in_one_sentence(tmp_path):
    # config.json of a 16-unit model with the weights of an 8-unit one.
    small = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="a")])
    large = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, name="a")])
    small.save(tmp_path / "small.keras")
    large.save(tmp_path / "large.keras")
    path = tmp_path / "mismatched.keras"
    with (
        zipfile.ZipFile(tmp_path / "small.keras") as s,
        zipfile.ZipFile(tmp_path / "large.keras") as g,
        zipfile.ZipFile(path, "w") as out,
    ):
        for name in s.namelist():
            out.writestr(name, g.read(name) if name == "config.json" else s.read(name))
    refused_model(path)


def test_upper_case_suffix_loads_or_is_refused_in_one_sentence(tmp_path, model_files):
    # check_model_container accepts suffixes in any case; Keras itself only knows ".keras".
    path = tmp_path / "MODEL.KERAS"
    shutil.copy(model_files.mlp_keras, path)
    try:
        model = load_model(path)
    except InputError as e:
        assert_one_sentence(str(e), path)
    else:
        assert same_weights(model, keras.saving.load_model(model_files.mlp_keras))


# ------------------------------------------------------------------------------ happy paths


def test_good_models_load_in_every_format(tmp_path, model_files, digits):
    hdf5 = tmp_path / "mlp.hdf5"
    shutil.copy(model_files.mlp_h5, hdf5)
    x, _ = digits
    for path, inputs in [
        (model_files.mlp_keras, x[:32]),
        (model_files.mlp_h5, x[:32]),
        (hdf5, x[:32]),
        (model_files.cnn_keras, x[:32].reshape(-1, 8, 8, 1)),
        (model_files.cnn_h5, x[:32].reshape(-1, 8, 8, 1)),
    ]:
        model = load_model(path)
        assert isinstance(model, keras.Model), path.name
        reference = keras.saving.load_model(path, compile=False, safe_mode=True)
        assert same_weights(model, reference), path.name
        np.testing.assert_array_equal(model.predict(inputs, verbose=0), reference(inputs))


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp", "breast_cancer_mlp"])
def test_bundled_sample_models_load_with_their_test_sets(name):
    sample_dir = ROOT / "sample_models"
    if not all((sample_dir / f"{name}{s}").exists() for s in (".keras", "_test.npz", ".md")):
        pytest.skip(f"sample_models/{name} not trained yet")
    model = load_model(sample_dir / f"{name}.keras")
    x, y = load_data(sample_dir / f"{name}_test.npz", model)
    assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)


def test_load_model_bytes_loads_keras_and_h5(model_files):
    for path in (model_files.mlp_keras, model_files.mlp_h5):
        model = load_model_bytes(path.read_bytes(), path.name)
        assert same_weights(model, keras.saving.load_model(path, compile=False)), path.name


def test_load_model_bytes_refuses_with_the_uploaded_name(model_files):
    refused(lambda: load_model_bytes(b"", "upload.keras"), "upload.keras", "empty")
    refused(lambda: load_model_bytes(b"hello", "upload.h5"), "upload.h5", "not an HDF5")
    data = model_files.mlp_keras.read_bytes()
    refused(lambda: load_model_bytes(data, "upload.exe"), "upload.exe", "not a Keras model")


def test_load_model_bytes_keeps_only_the_base_name(tmp_path, model_files):
    # A name with folders in it (as a browser might send) never writes outside the temp folder.
    name = str(tmp_path / "elsewhere" / "upload.keras")
    model = load_model_bytes(model_files.mlp_keras.read_bytes(), name)
    assert isinstance(model, keras.Model)
    assert not (tmp_path / "elsewhere").exists()
    message = refused(lambda: load_model_bytes(b"", name), "upload.keras", "empty")
    assert str(tmp_path) not in message


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_load_model_bytes_without_a_usable_name_is_refused(model_files, name):
    with pytest.raises(InputError):
        load_model_bytes(model_files.mlp_keras.read_bytes(), name)


# ------------------------------------------------------------------------------ data files


@pytest.fixture(scope="module")
def mlp():
    """Untrained: the data checks only look at the model's input and output shapes."""
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])


@pytest.fixture(scope="module")
def cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


@pytest.fixture(scope="module")
def sigmoid():
    return keras.Sequential([keras.Input((30,)), keras.layers.Dense(1, activation="sigmoid")])


X = np.linspace(0, 1, 5 * 64, dtype=np.float32).reshape(5, 64)
Y = np.array([0, 3, 9, 1, 1])


def test_data_loads_and_converts(tmp_path, mlp):
    x, y = load_data(savez(tmp_path / "d.npz", x=X.astype(np.float64), y=Y.astype(np.int32)), mlp)
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


def test_data_without_labels_loads(tmp_path, mlp):
    x, y = load_data(savez(tmp_path / "unlabelled.npz", x=X), mlp)
    assert y is None and x.shape == X.shape


def test_cnn_data_loads(model_files, cnn):
    x, y = load_data(model_files.cnn_data, cnn)
    assert x.shape[1:] == (8, 8, 1) and len(y) == len(x)


def test_missing_data_file_is_refused(tmp_path, mlp):
    refused_data(tmp_path / "absent.npz", mlp, "no such file")


def test_empty_data_file_is_refused(tmp_path, mlp):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    refused_data(path, mlp, "empty")


def test_object_array_in_npz_is_refused_as_pickle(tmp_path, mlp):
    objects = np.empty(5, dtype=object)
    objects[:] = [{"evil": i} for i in range(5)]
    refused_data(savez(tmp_path / "pickled.npz", x=objects, y=Y), mlp, "pickled")


def test_pickle_file_renamed_npz_is_refused(tmp_path, mlp):
    path = tmp_path / "pickle.npz"
    path.write_bytes(pickle.dumps({"x": X, "y": Y}))
    refused_data(path, mlp, "pickled")


def test_text_file_renamed_npz_is_not_called_pickled(tmp_path, mlp):
    # numpy treats any file that is neither .npy nor zip as a pickle; a CSV is not one.
    path = tmp_path / "table.npz"
    path.write_text("x,y\n0.1,3\n")
    message = refused_data(path, mlp, "not a readable .npz")
    assert "pickle" not in message, message


def test_truncated_npz_is_refused(tmp_path, mlp):
    data = savez(tmp_path / "whole.npz", x=X, y=Y).read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    refused_data(path, mlp, "not a readable .npz")


def test_plain_npy_file_is_refused_with_a_hint(tmp_path, mlp):
    path = tmp_path / "x.npy"
    np.save(path, X)
    refused_data(path, mlp, ".npy", "np.savez")


def test_missing_x_is_refused(tmp_path, mlp):
    message = refused_data(savez(tmp_path / "no_x.npz", inputs=X, y=Y), mlp, "no array named x")
    assert "inputs" in message and "y" in message  # what the file does hold


def test_x_with_wrong_shape_is_refused(tmp_path, mlp, cnn):
    refused_data(savez(tmp_path / "narrow.npz", x=X[:, :63]), mlp, "(5, 63)", "(n, 64)")
    refused_data(savez(tmp_path / "flat.npz", x=X), cnn, "(5, 64)", "(n, 8, 8, 1)")
    refused_data(savez(tmp_path / "one.npz", x=X[0]), mlp, "(64,)", "(n, 64)")


def test_non_numeric_x_is_refused(tmp_path, mlp):
    refused_data(savez(tmp_path / "text.npz", x=np.full((5, 64), "a")), mlp, "numeric")
    refused_data(savez(tmp_path / "bool.npz", x=np.ones((5, 64), bool)), mlp, "numeric")


def test_complex_x_is_refused(tmp_path, mlp):
    # complex128 is refused; complex64 must be too (casting would drop the imaginary part).
    refused_data(savez(tmp_path / "c128.npz", x=X.astype(np.complex128)), mlp, "numeric")
    refused_data(savez(tmp_path / "c64.npz", x=X.astype(np.complex64)), mlp, "numeric")


def test_empty_x_is_refused(tmp_path, mlp):
    refused_data(savez(tmp_path / "none.npz", x=np.zeros((0, 64), np.float32)), mlp, "no samples")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x_is_refused(tmp_path, mlp, bad):
    x = X.copy()
    x[2, 7] = bad
    refused_data(savez(tmp_path / "nan.npz", x=x, y=Y), mlp, "NaN or Inf")


def test_x_that_overflows_float32_is_refused(tmp_path, mlp):
    # Finite as float64, but the model computes in float32, where 1e300 is inf.
    x = X.astype(np.float64)
    x[0, 0] = 1e300
    refused_data(savez(tmp_path / "huge.npz", x=x, y=Y), mlp, "NaN or Inf")


def test_y_of_wrong_length_is_refused(tmp_path, mlp):
    refused_data(savez(tmp_path / "short.npz", x=X, y=Y[:4]), mlp, "4 labels for 5 samples")


def test_scalar_y_is_refused(tmp_path, mlp):
    refused_data(savez(tmp_path / "scalar.npz", x=X, y=np.int64(3)), mlp)


def test_y_out_of_class_range_is_refused(tmp_path, mlp):
    refused_data(savez(tmp_path / "ten.npz", x=X, y=[0, 1, 2, 3, 10]), mlp, "class 10", "0 to 9")
    refused_data(savez(tmp_path / "neg.npz", x=X, y=[0, 1, -1, 3, 4]), mlp, "class -1")


def test_fractional_or_non_numeric_y_is_refused(tmp_path, mlp):
    refused_data(savez(tmp_path / "frac.npz", x=X, y=[0, 1.5, 2, 3, 4]), mlp, "integer class ids")
    refused_data(savez(tmp_path / "nan_y.npz", x=X, y=[0, np.nan, 2, 3, 4]), mlp, "integer")
    refused_data(savez(tmp_path / "text_y.npz", x=X, y=list("abcde")), mlp, "numeric")


def test_one_hot_y_is_accepted_and_converted(tmp_path, mlp):
    one_hot = np.eye(10, dtype=np.float32)[Y]
    _, y = load_data(savez(tmp_path / "onehot.npz", x=X, y=one_hot), mlp)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, Y)


def test_two_dimensional_y_that_is_not_one_hot_is_refused(tmp_path, mlp):
    # arg-max of an all-ones or all-zeros row silently makes every label class 0.
    refused_data(savez(tmp_path / "ones.npz", x=X, y=np.ones((5, 10))), mlp, "one-hot")
    refused_data(savez(tmp_path / "zeros.npz", x=X, y=np.zeros((5, 10))), mlp, "one-hot")


def test_binary_labels_for_a_sigmoid_model(tmp_path, sigmoid):
    x = np.zeros((4, 30), np.float32)
    for name, labels in [
        ("ints.npz", np.array([0, 1, 1, 0])),
        ("floats.npz", np.array([0.0, 1.0, 1.0, 0.0])),
        ("column.npz", np.array([[0], [1], [1], [0]])),
    ]:
        _, y = load_data(savez(tmp_path / name, x=x, y=labels), sigmoid)
        np.testing.assert_array_equal(y, [0, 1, 1, 0])
        assert y.dtype == np.int64
    refused_data(savez(tmp_path / "two.npz", x=x, y=[0, 1, 2, 0]), sigmoid, "class 2", "0 to 1")
