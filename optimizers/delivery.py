"""A setting's files: written in each format, verified on the data, timed.

``verify`` writes ``explore``'s answer to a setting as a file (``export.export_bytes``, from a
clone of the model of its own, ``export_clone``) and runs that file on the evaluation data: its
accuracy beside the preview's, and how often the two agree. ``time_exports`` then measures the
files' gzip sizes (or takes those ``gzip_meanwhile`` measured while the next files were made)
and times the LiteRT ones with the original model's float32 file, in one run
(``latency.time_files``); ``gzip_so_far`` gives a size measured meanwhile before that run.
``warm_exports`` converts a model ahead, so that its first file is a
rewrite of that conversion. The app's Download page and the CLI's ``export`` call these, so a
file's figures are the same in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from optimizers import evaluate, keras_io, latency
from optimizers.explore import Outcome, Prepared
from optimizers.latency import Latency
from optimizers.size import gzip_size
from optimizers.workers import POOL, SPARE, give_back_memory

MAX_DEPARTURE = 0.005  # file accuracy this far from the preview's (0.5 points) is reported
# Seconds the timing waits for a gzip size still being measured on the spare thread (ResNet50's
# slowest file alone takes 7.5 s); past them the machine is busy, and it is measured again.
MEANWHILE_WAIT = 10.0


@dataclass(frozen=True)
class Exported:
    """A downloadable file, checked by running it on the evaluation data."""

    fmt: str
    data: bytes
    gzip_bytes: int | None  # None until measured: gzip -9 of a 100 MB file takes up to 16 s
    preview_accuracy: float | None  # the optimized model as the preview computes it
    file_accuracy: float | None  # the file itself, run by Keras or the LiteRT interpreter
    agreement: float | None  # fraction of samples where the file predicts what the preview does
    latency: Latency | None = None  # batch-1 time of a LiteRT file on this CPU
    baseline_latency: Latency | None = None  # the original float32 file, timed in the same run

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @property
    def departs(self) -> bool:
        """The file's accuracy is more than ``MAX_DEPARTURE`` away from the preview's."""
        if self.file_accuracy is None or self.preview_accuracy is None:
            return False
        return abs(self.file_accuracy - self.preview_accuracy) > MAX_DEPARTURE


def export_file(prepared: Prepared, outcome: Outcome, fmt: str) -> Exported:
    """The file of ``outcome``'s weights in format ``fmt``, verified and timed (``verify``,
    then ``time_exports``). Raises ``ValueError`` (one sentence) when the model cannot be
    written in ``fmt``."""
    return time_exports(prepared, {fmt: verify(prepared, outcome, fmt)})[fmt]


def verify(prepared: Prepared, outcome: Outcome, fmt: str, gzip: bool = True) -> Exported:
    """The file of ``outcome``'s weights in format ``fmt``, run on the data to verify it (not
    yet timed; its gzip size left to ``time_exports`` unless ``gzip``). The evaluation inputs
    also calibrate a full-integer file. Raises ``ValueError`` (one sentence) when the model
    cannot be written in ``fmt``."""
    from optimizers import export

    prepared = outcome.source or prepared
    with prepared.export_lock:
        if not prepared.export_clones:  # a refusal to convert: the file's own export says why
            export_clone(prepared, convert=fmt != "keras")
        clone = prepared.export_clones[0]
        clone.set_weights(outcome.weights)
        data = export.export_bytes(clone, fmt, prepared.x, base=prepared.model)
        compressed = POOL.submit(gzip_size, data) if gzip else None  # zlib frees the GIL
        file_accuracy = agreement = None
        if prepared.x is not None:
            if fmt == "keras":
                outputs = evaluate.predict(
                    keras_io.load_model_bytes(data, "model.keras"), prepared.x
                )
            else:
                outputs = export.run_tflite(data, prepared.x)
            preview = outcome.outputs
            if preview is None:  # not measured
                preview = evaluate.predict(clone, prepared.x)
            agreement = evaluate.fidelity(preview, outputs).agreement
            if prepared.y is not None:
                file_accuracy = evaluate.accuracy(outputs, prepared.y)
    gzip_bytes = None if compressed is None else compressed.result()
    give_back_memory()
    return Exported(fmt, data, gzip_bytes, outcome.accuracy, file_accuracy, agreement)


def export_clone(prepared: Prepared, convert: bool) -> ValueError | None:
    """Make the verifier's own clone of ``prepared``'s model unless it is made (call with
    ``export_lock`` held; a slider's answer never waits for it). With ``convert``, the model is
    converted too (``export.warm``), the clone made while the converter's helper has the graph
    (``export.alongside``): ResNet50's clone takes 1.0-1.7 s of the GIL, and beside the
    tracing and freezing it slowed them as much. Returns why the model cannot be converted
    (``None``: it can, or was not asked to)."""
    from optimizers import export

    model = prepared.model

    def converting() -> ValueError | None:
        if not convert:
            return None
        try:
            export.warm(model)
        except ValueError as e:
            return e
        return None

    if prepared.export_clones:
        return converting()
    with export.alongside(model.count_params(), lambda: evaluate.evaluation_clone(model)) as made:
        refused = converting()
    prepared.export_clones.append(made.result())
    return refused


def warm_exports(prepared: Prepared) -> None:
    """Convert ``prepared``'s model now and make the verifier's clone (``export_clone``), so
    that its first file to verify is a rewrite of that file, made at once. Raises
    ``ValueError`` as ``verify`` would."""
    with prepared.export_lock:
        refused = export_clone(prepared, convert=True)
    if refused is not None:
        raise refused


@dataclass(frozen=True)
class Gzipping:
    """A file's gzip size being measured on the spare thread (``gzip_meanwhile``)."""

    data: bytes
    future: Future[int]

    def measures(self, exported: Exported) -> bool:
        """Whether this measures ``exported``'s very bytes (not another copy's), still unsized."""
        return self.data is exported.data and exported.gzip_bytes is None


def gzip_meanwhile(exported: Exported) -> Gzipping:
    """The gzip size of ``exported``'s file, measured for ``time_exports`` on the spare thread
    (``workers.SPARE``), on the core the next files' conversion and run leave free: ResNet50's
    six files took 14 s of both cores when measured after the last one."""
    return Gzipping(exported.data, SPARE.submit(gzip_size, exported.data))


def gzip_so_far(exported: Exported, gzipping: Gzipping | None) -> Exported:
    """``exported`` with its gzip size once ``gzipping`` (``gzip_meanwhile``'s, for these very
    bytes) has measured it, so that it can be shown before the timing; as it is otherwise."""
    if gzipping is None or not gzipping.measures(exported):
        return exported
    future = gzipping.future
    if not future.done() or future.cancelled() or future.exception() is not None:
        return exported
    return replace(exported, gzip_bytes=future.result())


def time_exports(
    prepared: Prepared,
    files: Mapping[str, Exported],
    meanwhile: Mapping[str, Gzipping] | None = None,
) -> dict[str, Exported]:
    """``files`` with their gzip sizes measured where ``verify`` left them out (those of
    ``meanwhile``, ``gzip_meanwhile``'s by format, taken or waited for, those not started
    dropped; the others on every core at once), and the LiteRT ones timed, all together with
    the original model's float32 file in one run, taking turns (``latency.time_files``), so
    load on the machine falls on every file and the baseline alike."""
    from optimizers import export

    # Those not started are dropped first: waited for one by one, each would start meanwhile.
    started = {}
    for f, gzipping in (meanwhile or {}).items():
        if gzipping.future.cancel():  # not started: measured with the others
            continue
        if f in files and gzipping.measures(files[f]):
            started[f] = gzipping.future
    missing = [f for f, e in files.items() if e.gzip_bytes is None and f not in started]
    sizes = dict(zip(missing, POOL.map(gzip_size, [files[f].data for f in missing]), strict=True))
    for f, future in started.items():
        try:
            sizes[f] = future.result(timeout=MEANWHILE_WAIT)
        except Exception:  # a busy machine starves the spare thread (or it failed): measured here
            sizes[f] = gzip_size(files[f].data)
    files = {f: replace(e, gzip_bytes=sizes.get(f, e.gzip_bytes)) for f, e in files.items()}
    timed = [fmt for fmt, e in files.items() if fmt != "keras"]
    if not timed:
        return files
    baseline = export.export_bytes(prepared.model, "tflite-float32")
    *times, base = latency.time_files([files[fmt].data for fmt in timed] + [baseline])
    found = dict(zip(timed, times, strict=True))
    return {
        fmt: replace(e, latency=found[fmt], baseline_latency=base) if fmt in found else e
        for fmt, e in files.items()
    }


def exported_to_dict(exported: Exported) -> dict[str, Any]:
    """JSON-able figures of an export (not its bytes)."""
    return {
        "format": exported.fmt,
        "preview_accuracy": exported.preview_accuracy,
        "file_accuracy": exported.file_accuracy,
        "agreement_with_preview": exported.agreement,
        "size_bytes": exported.size_bytes,
        "gzip_bytes": exported.gzip_bytes,
        "departs_from_preview": exported.departs,
        **latency.latency_to_dict(exported.latency, exported.baseline_latency),
    }
