"""Modern architectures, built here and small: a transformer encoder (Embedding, a learned
position layer of its own registered with ``keras.saving.register_keras_serializable``,
MultiHeadAttention, LayerNormalization) and a recurrent model (LSTM, GRU), through ``apply``,
fine-tuning, a sweep and every export format. What cannot be done is refused in one sentence,
asserted here; the custom layer loads through the CLI only with ``--trust-code``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers import cli, delivery, explore, finetune, keras_io, sweep  # noqa: E402
from optimizers.clustering import ClusteringConfig  # noqa: E402
from optimizers.export import FORMATS  # noqa: E402
from optimizers.keras_io import InputError  # noqa: E402
from optimizers.pipeline import OptimizationConfig  # noqa: E402
from optimizers.pruning import PruningConfig  # noqa: E402
from optimizers.quantization import QuantizationConfig  # noqa: E402

SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")
REGISTERED = "architectures>PositionEmbedding"
LAYER_CODE = '''
import keras


@keras.saving.register_keras_serializable(package="architectures")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position."""

    def __init__(self, length, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape):
        self.table = self.add_weight(
            shape=(self.length, input_shape[-1]), initializer="glorot_uniform", name="table"
        )

    def call(self, x):
        return x + self.table[None, : keras.ops.shape(x)[1]]

    def get_config(self):
        return {**super().get_config(), "length": self.length}
'''
CONFIG = OptimizationConfig(
    pruning=PruningConfig(0.5),
    clustering=ClusteringConfig(8),
    quantization=QuantizationConfig(8),
)
# What each model cannot be exported as, and the sentence that says so.
REFUSED = {
    ("transformer", "tflite-int8"): "full-integer int8 export needs a float input",
    ("recurrent", "tflite-int8"): "full-integer int8 export does not support recurrent layers",
}


def one_sentence(message: str) -> str:
    assert message and "\n" not in message and not SENTENCE_BREAK.search(message), message
    return message


@pytest.fixture(scope="module")
def layer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trusted") / "positions.py"
    path.write_text(LAYER_CODE)
    return path


def transformer(layer_file: Path) -> keras.Model:
    keras_io.import_trusted([layer_file])
    positions = sys.modules["trusted_positions"].PositionEmbedding
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 16, name="embed")(tokens)
    h = positions(12, name="positions")(h)
    attended = keras.layers.MultiHeadAttention(2, 8, name="attention")(h, h)
    h = keras.layers.LayerNormalization(name="norm")(h + attended)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    out = keras.layers.Dense(3, activation="softmax", name="classes")(h)
    return keras.Model(tokens, out, name="tiny_transformer")


def recurrent() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((10, 4), name="series"),
            keras.layers.LSTM(8, return_sequences=True, name="lstm"),
            keras.layers.GRU(8, name="gru"),
            keras.layers.Dense(3, activation="softmax", name="classes"),
        ],
        name="tiny_recurrent",
    )


@pytest.fixture(scope="module")
def built(layer_file) -> dict[str, tuple[keras.Model, np.ndarray, np.ndarray]]:
    """Both models as initialized (seeded), with 240 samples labelled by a rule each could
    learn; training them first would add seconds and change nothing that is asserted."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 20, (240, 12))
    series = rng.normal(size=(240, 10, 4)).astype(np.float32)
    data = {
        "transformer": (tokens.astype(np.float32), tokens[:, 0] % 3),
        "recurrent": (series, np.digitize(series[:, :, 0].mean(axis=1), [-0.15, 0.15])),
    }
    models = {}
    for name, make in (("transformer", lambda: transformer(layer_file)), ("recurrent", recurrent)):
        keras.utils.set_random_seed(0)
        models[name] = (make(), *data[name])
    return models


@pytest.mark.parametrize("name", ["transformer", "recurrent"])
def test_apply_finetune_sweep_and_every_export(built, name):
    model, x, y = built[name]
    prepared = explore.prepare(model, x[:120], y[:120])
    paths = " ".join(r.path for r in prepared.refs)
    for part in (
        ("embed/", "attention/query", "classes/") if name == "transformer" else ("lstm/", "gru/")
    ):
        assert part in paths, paths
    outcome = explore.run(prepared, CONFIG)
    for report in (r for r in outcome.reports if r.eligible):
        assert report.sparsity >= 0.5 - 1e-9 and report.unique_values <= 8, report
    assert outcome.accuracy is not None

    result = finetune.finetune(
        model, CONFIG, x[120:], y[120:], finetune.FinetuneConfig(epochs=1, batch_size=32)
    )
    assert result.epochs_run == 1 and result.config == CONFIG
    tuned = explore.run(explore.prepare(result.model, x[:120], y[:120]), CONFIG)
    for before, after in zip(
        explore.prepare(result.model).weights, tuned.weights, strict=True
    ):  # the pipeline at the trained-toward config leaves the fine-tuned weights as they are
        assert np.array_equal(before, after)

    swept = sweep.sweep(prepared, sweep.Grid((0.0, 0.5), (None,), (None, 8)))
    assert len(swept.points) == 4 and any(p.pareto for p in swept.points)

    with pytest.raises(ValueError) as refused:
        explore.run(prepared, OptimizationConfig(pruning=PruningConfig(0.5, "channels")))
    first = "embed' (Embedding)" if name == "transformer" else "lstm' (LSTM)"
    assert first in one_sentence(str(refused.value)) and "channel pruning" in str(refused.value)

    for fmt in FORMATS:
        if (name, fmt) in REFUSED:
            with pytest.raises(ValueError) as refused:
                delivery.verify(prepared, outcome, fmt)
            assert REFUSED[name, fmt] in one_sentence(str(refused.value))
            continue
        exported = delivery.verify(prepared, outcome, fmt)
        assert exported.agreement is not None and exported.data, fmt
        if fmt in ("keras", "tflite-float32"):  # the very weights of the preview
            assert exported.agreement >= 0.99, (fmt, exported.agreement)


def test_a_custom_layer_loads_only_with_trust_code(built, layer_file, tmp_path, capsys):
    model, x, y = built["transformer"]
    saved, data = tmp_path / "transformer.keras", tmp_path / "tokens.npz"
    model.save(saved)
    np.savez(data, x=x[:60], y=y[:60])
    objects = keras.saving.get_custom_objects()
    registered = objects.pop(REGISTERED)  # as in a fresh process that never imported it
    try:
        assert cli.main(["apply", str(saved), "--data", str(data)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: transformer.keras uses the custom layer PositionEmbedding")
        assert "--trust-code FILE.py" in one_sentence(error)
        with pytest.raises(InputError) as app_refusal:  # the app never imports code
            from ui import services

            services.open_upload(saved.name, saved.read_bytes())
        assert "PositionEmbedding" in one_sentence(str(app_refusal.value))

        args = ["apply", str(saved), "--data", str(data), "--bits", "8", "--json"]
        assert cli.main([*args, "--trust-code", str(layer_file)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["baseline"]["accuracy"] is not None
        assert any(layer["name"].startswith("attention") for layer in result["optimized"]["layers"])

        broken = tmp_path / "broken.py"
        broken.write_text("import keras\nclass Oops(:\n")
        for bad, phrase in ((tmp_path / "absent.py", "no such Python file"), (broken, "failed")):
            assert cli.main([*args, "--trust-code", str(bad)]) == 2
            error = capsys.readouterr().err
            assert error.startswith(f"error: {bad.name}") and phrase in error
            assert error.count("\n") == 1 and "Traceback" not in error
    finally:
        objects[REGISTERED] = registered
