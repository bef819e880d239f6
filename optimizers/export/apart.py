"""Converting a real-size model in a child process, so the converter's memory goes with it.

Converting ResNet50 in process peaks at 4.0 GB and leaves the process 1.7 GB larger for good
(TensorFlow's and the converter's heaps, which ``malloc_trim`` does not give back). A model with
at least ``APART_BYTES`` of weights is converted by a child process instead: it converts and
checks exactly as in process (``conversion.convert_files``), one request at a time, and exits
once no request has come for ``IDLE_SECONDS``, handing all of that memory back.

The child is started ahead (``stand_by``, when a real-size model is loaded) and imports
TensorFlow while it waits (4.5 s). A request is a folder holding the model's architecture as
JSON (rebuilt in safe mode, as every upload, once per model: ResNet50 0.6 s, against 3.1 s for
loading its ``.keras`` file), its weights as one ``.npz`` (0.4 s to write and set), the formats
and any calibration samples; the child writes the files there and answers with one line:
``ok``, ``refused`` (``refused.txt`` says why in one sentence) or ``unloadable`` (a layer only
the parent knows: the parent converts it then). Smaller models convert in process, where they
take less than a child's start.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

APART_BYTES = 32_000_000  # weights from which a conversion runs in a child process
IDLE_SECONDS = 60.0  # a child with no request for this long exits, and its memory goes with it
NICE = 10  # as the app's conversion thread (``ui.background``): a slider's answer comes first
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the ``optimizers`` package

_child: subprocess.Popen[str] | None = None
_lock = threading.Lock()  # one request at a time, and one child


def worth_it(model: keras.Model) -> bool:
    """Whether ``model`` is large enough to convert in a child process."""
    size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    return size >= APART_BYTES


def start() -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "optimizers.export.apart"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def stand_by() -> None:
    """Start the child now (if none runs), so the first conversion does not wait for it."""
    global _child
    with _lock:
        if _child is None or _child.poll() is not None:
            _child = start()


def ask(folder: Path) -> str:
    """The child's answer to the request in ``folder`` (a new child when none runs, or the one
    asked had just left, idle)."""
    global _child
    with _lock:
        for _ in range(2):
            if _child is None or _child.poll() is not None:
                _child = start()
            try:
                _child.stdin.write(f"{folder}\n")  # type: ignore[union-attr]
                _child.stdin.flush()  # type: ignore[union-attr]
                answer = _child.stdout.readline().strip()  # type: ignore[union-attr]
            except BrokenPipeError:
                answer = ""
            if answer:
                return answer
            _child.wait()  # it left (idle, or it crashed): once more with a new one
        raise RuntimeError(f"the conversion process failed (exit status {_child.returncode})")


def convert_apart(
    model: keras.Model, fmts: list[str], samples: np.ndarray | None
) -> dict[str, bytes] | None:
    """``conversion.convert_files`` of ``model`` run by the child: the files, or ``None`` when
    the child cannot rebuild the model (convert it here then). Raises ``ValueError`` with the
    child's one sentence when the model cannot be converted."""
    with tempfile.TemporaryDirectory(prefix="convert-") as tmp:
        folder = Path(tmp)
        (folder / "model.json").write_text(model.to_json())
        np.savez(folder / "weights.npz", *model.get_weights())
        if samples is not None:
            np.save(folder / "samples.npy", samples)
        (folder / "formats.json").write_text(json.dumps(fmts))
        answer = ask(folder)
        if answer == "unloadable":
            return None
        if answer == "refused":
            raise ValueError((folder / "refused.txt").read_text())
        return {f: (folder / f"{f}.tflite").read_bytes() for f in fmts}


def serve() -> None:
    """The child: answer requests until stdin closes (the parent is gone) or none has come for
    ``IDLE_SECONDS`` since the last (the first may take as long as it takes)."""
    import keras

    from optimizers.export.conversion import convert_files, input_signature

    built: tuple[str, keras.Model] | None = None  # the last model's JSON and the model
    served = False
    while True:
        if served and not select.select([sys.stdin], [], [], IDLE_SECONDS)[0]:
            return
        line = sys.stdin.readline().strip()
        if not line:
            return
        served = True
        folder = Path(line)
        text = (folder / "model.json").read_text()
        try:
            if built is None or built[0] != text:
                built = None
                model = keras.saving.deserialize_keras_object(json.loads(text), safe_mode=True)
                built = (text, model)
            with np.load(folder / "weights.npz") as weights:
                built[1].set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
        except Exception:  # a class only the parent knows, a Lambda: the parent converts
            print("unloadable", flush=True)
            continue
        fmts = json.loads((folder / "formats.json").read_text())
        samples_file = folder / "samples.npy"
        samples = np.load(samples_file) if samples_file.exists() else None
        try:
            files = convert_files(built[1], input_signature(built[1]), fmts, samples)
        except ValueError as e:
            (folder / "refused.txt").write_text(str(e))
            print("refused", flush=True)
            continue
        for fmt, data in files.items():
            (folder / f"{fmt}.tflite").write_bytes(data)
        print("ok", flush=True)


if __name__ == "__main__":
    os.setpriority(os.PRIO_PROCESS, 0, NICE)
    import tensorflow  # noqa: F401  (imported while standing by: the slow part of starting)

    serve()
