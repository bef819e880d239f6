"""The bundled sample models: files present, small, safe to load, accurate, cards up to date."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import sample_models
from sample_models import SAMPLES, Sample

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 1_000_000
ACCURACY_TARGET = 0.95
IDS = [s.name for s in SAMPLES]


@cache
def load(name: str):
    import keras

    return keras.saving.load_model(sample_models.get(name).model_path, safe_mode=True)


@cache
def data(name: str) -> dict[str, np.ndarray]:
    with np.load(sample_models.get(name).data_path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


@cache
def accuracy(name: str) -> float:
    model, arrays = load(name), data(name)
    outputs = np.asarray(model.predict(arrays["x"], batch_size=1024, verbose=0))
    outputs = outputs.reshape(len(outputs), -1)
    if outputs.shape[1] == 1:  # one sigmoid unit: class 1 above 0.5
        predicted = (outputs[:, 0] > 0.5).astype(np.int64)
    else:
        predicted = np.argmax(outputs, axis=1)
    return float(np.mean(predicted == arrays["y"]))


def test_catalog():
    assert [s.name for s in SAMPLES] == ["digits_cnn", "digits_mlp", "breast_cancer_mlp"]
    assert sample_models.get("digits_cnn") is SAMPLES[0]
    for s in SAMPLES:
        assert s.title and s.name in s.model_path.name
        assert s.model_path.parent == ROOT / "sample_models"
    with pytest.raises(KeyError, match="digits_cnn, digits_mlp, breast_cancer_mlp"):
        sample_models.get("resnet50")


def test_catalog_import_does_not_load_tensorflow():
    code = "import sys, sample_models; assert 'tensorflow' not in sys.modules; assert 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_files_exist_and_are_small(sample: Sample):
    for path in (sample.model_path, sample.data_path, sample.card_path):
        assert path.is_file(), path
    assert sample.model_path.stat().st_size < MAX_BYTES
    with zipfile.ZipFile(sample.model_path) as z:  # architecture and weights, no optimizer
        assert {"config.json", "metadata.json", "model.weights.h5"} <= set(z.namelist())


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_loads_safely_with_named_builtin_layers(sample: Sample):
    import keras

    model = load(sample.name)
    assert isinstance(model, keras.Model) and model.name == sample.name
    assert len(model.inputs) == 1 and len(model.outputs) == 1
    for layer in model.layers:
        assert type(layer).__module__.startswith("keras.src.layers"), layer
        assert not isinstance(layer, keras.layers.Lambda)
    assert all(np.all(np.isfinite(np.asarray(w))) for w in model.weights)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_data_fits_the_model(sample: Sample):
    arrays, model = data(sample.name), load(sample.name)
    assert sorted(arrays) == ["x", "y"]
    x, y = arrays["x"], arrays["y"]
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.shape[1:] == tuple(model.inputs[0].shape[1:])
    assert y.shape == (len(x),) and len(x) > 0
    classes = int(model.outputs[0].shape[-1])
    assert set(np.unique(y)) == set(range(2 if classes == 1 else classes))


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_accuracy(sample: Sample):
    assert accuracy(sample.name) >= ACCURACY_TARGET


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_card_states_the_measured_figures(sample: Sample):
    card = sample.card_path.read_text(encoding="utf-8")
    assert card.startswith(f"# {sample.title}\n")
    stated = re.search(r"Test accuracy: ([0-9.]+)", card)
    assert stated and float(stated.group(1)) == pytest.approx(accuracy(sample.name), abs=5e-5)
    size = re.search(r"File size: ([0-9,]+) bytes", card)
    assert size and int(size.group(1).replace(",", "")) == sample.model_path.stat().st_size
    params = re.search(r"Total parameters: ([0-9,]+)", card)
    assert params and int(params.group(1).replace(",", "")) == load(sample.name).count_params()
    assert "python -m sample_models.train" in card
