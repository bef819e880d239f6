"""One answer to one setting: weights, per-tensor report, accuracy and sizes, in two stages.

``prepare`` does the once-per-model work (read the weights, find the eligible tensors, make one
evaluation clone, run the original model on the data, measure the saved file; then sort the
tensors in the background, ``pipeline.read_once``). An answer then comes in two stages, so that
an app can show the first at once and the second when it is done:

1. ``optimize``: the optimized weights, the per-tensor report and every size figure that is
   exact and cheap (float32, packed, entropy, file bytes). Milliseconds for a sample, about
   0.1 s for a MobileNet. Pruning finds its thresholds (counted in compiled passes, or read
   from magnitudes sorted ahead, ``pipeline.keeps_magnitudes``); a clustered or quantized
   tensor's report is counted from its codes, a pruned one's from where the original's values
   repeat (``levels``).
2. ``measure``: accuracy (or fidelity) from running the model on the data, with progress per
   batch, while the gzip figure (sampled, ``size.GzipBasis``) is measured in other threads.

``run`` does both; the app and the CLI call the same functions, so they show the same figures.
A setting's files, written, verified on the data and timed, are ``delivery``'s.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from optimizers import channels, evaluate, keras_io
from optimizers.calibration import CALIBRATION_SAMPLES, LayerInputs, gather, statistics_bytes
from optimizers.pipeline import (
    Known,
    OptimizationConfig,
    TensorRef,
    TensorReport,
    eligible_tensors,
    float_reports,
    optimize_weights,
    read_once,
    read_once_bytes,
)
from optimizers.size import GzipBasis, Sizes, start_gzip_basis, weight_sizes
from optimizers.workers import BACKGROUND

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Prepared:
    """A model made ready for repeated evaluation; treat as read-only (the clone is guarded)."""

    model: keras.Model
    weights: tuple[np.ndarray, ...]
    refs: tuple[TensorRef, ...]
    float_reports: tuple[TensorReport, ...]
    x: np.ndarray | None
    y: np.ndarray | None
    reference_outputs: np.ndarray | None
    clone: keras.Model
    file_bytes: int  # the saved .keras file: the same for every setting (weights keep shapes)
    gzip: GzipBasis
    # Each eligible tensor's ``pipeline.read_once``, made in the background: answers use
    # those that are ready (``ready_known``), and search and sort the others.
    known: dict[int, Future[Known]]
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    # A second clone for the files, made by the first or by the conversion ahead
    # (``delivery.export_clone``); guarded by ``export_lock``, so a conversion never holds
    # ``lock`` and a slider's answer never waits for one.
    export_clones: list[keras.Model] = field(default_factory=list, compare=False)
    export_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    # Channel-pruned rewrites of this model, by (sparsity, skip); see ``channel_pruned``.
    derived: OrderedDict[Any, Prepared] = field(default_factory=OrderedDict, compare=False)
    # Each data-aware tensor's input statistics, from ``calibrate``; ``None`` until then.
    statistics: Mapping[int, LayerInputs] | None = None
    calibration: Calibration | None = None

    @property
    def nbytes(self) -> int:
        """Memory this holds beside the model: its copy of the weights, the clone's and the
        verifier's clone's as much again each (the latter counted before
        ``delivery.export_clone`` makes it: a cache measures an entry once, when it is put), and
        what is read once of each tensor (its repeats: at most as much again; its magnitudes
        sorted, where pruning reads them)."""
        return (
            3 * sum(w.nbytes for w in self.weights)
            + sum(read_once_bytes(self.weights[i]) for i in self.known)
            + statistics_bytes(self.statistics or {})
        )

    def ready_known(self) -> dict[int, Known]:
        """What is read once of each tensor, so far (answers are the same without, slower)."""
        return {i: job.result() for i, job in self.known.items() if job.done()}


@dataclass(frozen=True)
class Calibration:
    """The data a model's layer statistics come from: its inputs and, in words, what it is
    (``"the training split of digits_cnn"``), which the app and the CLI show."""

    x: np.ndarray
    source: str

    @property
    def words(self) -> str:
        n = min(len(self.x), CALIBRATION_SAMPLES)
        return f"{n:,} samples of {self.source}"


@dataclass(frozen=True)
class Outcome:
    """Everything known about one config; ``measured`` is False after stage one, when
    ``accuracy``, ``fidelity`` and ``sizes.gzip`` are still to come."""

    weights: list[np.ndarray]
    reports: list[TensorReport]  # every tensor: eligible first, then float32 ones
    accuracy: float | None
    fidelity: evaluate.Fidelity | None
    sizes: Sizes
    measured: bool = True
    source: Prepared | None = None  # the channel-pruned model the weights belong to, if any
    outputs: np.ndarray | None = None  # the preview's outputs on the data, once measured

    @property
    def eligible(self) -> list[TensorReport]:
        return [r for r in self.reports if r.eligible]

    @property
    def nbytes(self) -> int:
        """Memory of the weights this outcome holds on its own (untouched tensors are shared
        with the prepared model)."""
        return sum(
            self.weights[r.index].nbytes + sum(a.nbytes for a in r.levels or ())
            for r in self.eligible
        ) + (0 if self.outputs is None else self.outputs.nbytes)


Progress = Callable[[int, int], None]


def prepare(
    model: keras.Model,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    on_batch: Progress | None = None,
    prunable: bool = True,
) -> Prepared:
    """Read ``model`` once for fast repeated answers; ``x``/``y`` are optional data and
    ``on_batch(done, total)`` follows the original model's evaluation on them. A model that is
    not ``prunable`` (a channel-pruned rewrite) is not read ahead (``read_once``)."""
    weights = tuple(model.get_weights())
    refs = tuple(eligible_tensors(model))
    paths = [v.path for v in model.weights]
    layers = [p.rsplit("/", 1)[0] for p in paths]
    floats = float_reports(weights, paths, layers, {r.index for r in refs})
    clone = evaluate.evaluation_clone(model)
    file = keras_io.save_model_bytes(clone)
    basis = start_gzip_basis(file, weights, [r.index for r in refs])  # compresses meanwhile
    reference = None if x is None else evaluate.predict(clone, x, on_batch)
    known = {
        r.index: BACKGROUND.submit(read_once, weights[r.index], r.channel_axes)
        for r in refs
        if prunable
    }
    return Prepared(
        model,
        weights,
        refs,
        tuple(floats),
        x,
        y,
        reference,
        clone,
        len(file),
        basis(),
        known,
    )


def calibrate(
    prepared: Prepared, calibration: Calibration, on_batch: Progress | None = None
) -> Prepared:
    """``prepared`` with the layer statistics of ``calibration`` (``optimizers.calibration.gather``), which
    data-aware settings need; ``on_batch(done, total)`` follows the one run over the data.
    Refuses data that is the evaluation data: a setting tuned on it would be measured on it."""
    check_not_evaluation(calibration.x, prepared.x)
    statistics = gather(prepared.model, prepared.refs, calibration.x, on_batch=on_batch)
    return replace(prepared, statistics=statistics, calibration=calibration)


def calibration_words(prepared: Prepared) -> str | None:
    """Which data calibrated ``prepared``, in words; ``None`` when none did."""
    return None if prepared.calibration is None else prepared.calibration.words


def check_not_evaluation(calibration: np.ndarray, evaluation: np.ndarray | None) -> None:
    """Raise ``ValueError`` when most calibration samples are also evaluation samples."""
    if evaluation is None:
        return
    used = np.asarray(calibration, np.float32)[:CALIBRATION_SAMPLES]
    rows = np.asarray(evaluation, np.float32).reshape(len(evaluation), -1)
    seen = {row.tobytes() for row in rows}
    shared = sum(row.tobytes() in seen for row in used.reshape(len(used), -1))
    if shared > len(used) / 2:
        raise ValueError(
            f"the calibration data is the evaluation data ({shared} of its {len(used)} samples "
            "are evaluation samples); calibrate on other data, such as the training split"
        )


def optimize(prepared: Prepared, config: OptimizationConfig) -> Outcome:
    """Stage one: apply ``config``; the exact, cheap figures (no accuracy, no gzip yet).

    Channel pruning answers with the smaller, rewritten model (``Outcome.source``) and applies
    the other techniques to it. A data-aware ``config`` needs ``calibrate`` first."""
    if config.pruning is not None and config.pruning.structure == "channels":
        smaller = channel_pruned(prepared, config.pruning.sparsity, config.skip)
        return replace(optimize(smaller, replace(config, pruning=None)), source=smaller)
    if config.data_aware and prepared.statistics is None:
        raise ValueError(
            "data-aware compression needs calibration data (a training split or a "
            "calibration .npz), which this model has not been given"
        )
    if config.data_aware:
        from optimizers import data_aware  # its compiled pass loads numba (0.8 s): when used

        assert prepared.statistics is not None
        weights, reports = data_aware.optimize(
            prepared.weights,
            prepared.refs,
            config,
            prepared.statistics,
            prepared.ready_known(),
        )
    else:
        weights, reports = optimize_weights(
            prepared.weights, prepared.refs, config, prepared.ready_known()
        )
    reports = reports + list(prepared.float_reports)
    sizes = weight_sizes(weights, reports, file=prepared.file_bytes)
    return Outcome(weights, reports, None, None, sizes, measured=False)


def measure(prepared: Prepared, outcome: Outcome, on_batch: Progress | None = None) -> Outcome:
    """Stage two: ``outcome`` with its accuracy (fidelity) and gzip figure. ``on_batch(done,
    total)`` follows the evaluation; an exception it raises abandons the measurement."""
    prepared = outcome.source or prepared
    gzip = prepared.gzip.start(outcome.weights)  # compresses in other threads meanwhile
    accuracy = fid = outputs = None
    if prepared.x is not None:
        with prepared.lock:
            prepared.clone.set_weights(outcome.weights)
            outputs = evaluate.predict(prepared.clone, prepared.x, on_batch)
        if prepared.y is not None:
            accuracy = evaluate.accuracy(outputs, prepared.y)
        fid = evaluate.fidelity(prepared.reference_outputs, outputs)
    exact = prepared.gzip.exact(outcome.weights, prepared.weights)
    sizes = replace(outcome.sizes, gzip=gzip(), gzip_exact=exact)
    return replace(
        outcome, accuracy=accuracy, fidelity=fid, sizes=sizes, measured=True, outputs=outputs
    )


DERIVED_KEPT = 4  # channel-pruned rewrites kept per prepared model


def channel_pruned(prepared: Prepared, sparsity: float, skip: tuple[str, ...]) -> Prepared:
    """The prepared model rewritten without ``sparsity`` of its channels (``skip``: layers
    left whole), made once per (sparsity, skip). Fidelity compares with the original model."""
    found = prepared.derived.get((sparsity, skip))
    if found is None:
        smaller = channels.prune_channels(prepared.model, sparsity, skip)
        found = replace(
            prepare(smaller, prunable=False),  # the other techniques follow, never pruning
            x=prepared.x,
            y=prepared.y,
            reference_outputs=prepared.reference_outputs,
        )
        if prepared.calibration is not None:  # the smaller model's layers see other inputs
            found = calibrate(found, prepared.calibration)
        with prepared.lock:
            prepared.derived[(sparsity, skip)] = found
            while len(prepared.derived) > DERIVED_KEPT:
                prepared.derived.popitem(last=False)
    return found


def run(prepared: Prepared, config: OptimizationConfig) -> Outcome:
    """Apply ``config`` and measure accuracy (or fidelity) and every size figure."""
    return measure(prepared, optimize(prepared, config))


def optimized_model_bytes(prepared: Prepared, weights: Sequence[np.ndarray]) -> bytes:
    """The ``.keras`` file of the prepared model carrying ``weights``."""
    with prepared.lock:
        prepared.clone.set_weights(list(weights))
        return keras_io.save_model_bytes(prepared.clone)


def outcome_to_dict(outcome: Outcome) -> dict[str, Any]:
    """JSON-able figures: accuracy, fidelity, sizes (bytes) and the eligible tensors' report."""
    s = outcome.sizes
    fid = outcome.fidelity
    return {
        "accuracy": outcome.accuracy,
        "agreement": None if fid is None else fid.agreement,
        "output_snr_db": None if fid is None else fid.snr_db,
        "size_bytes": s.file,
        "gzip_bytes": s.gzip,
        "gzip_exact": s.gzip_exact,
        "float32_bytes": s.float32,
        "packed_bytes": s.packed,
        "entropy_bytes": s.entropy,
        "layers": [
            {
                "name": r.path,
                "layer": r.layer,
                "shape": list(r.shape),
                "params": r.params,
                "techniques": r.techniques,
                "sparsity": r.sparsity,
                "unique_values": r.unique_values,
                "max_channel_values": r.max_channel_values,
                "bits": r.bits,
                "sqnr_db": r.sqnr_db,
            }
            for r in outcome.eligible
        ],
    }
