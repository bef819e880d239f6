"""All caching of the app, and the few calls the pages make into the library.

Everything here is shared by every session, so nothing here ever mutates what it caches
(``Prepared``'s own lock guards the one clone that ``explore`` writes weights into).

* A loaded Keras model and its ``explore.Prepared`` state are kept by the sha256 of the model's
  bytes plus the digest of the evaluation data.
* Each answer (``Outcome``) is kept by (model key, ``OptimizationConfig``): first as stage one
  (weights, report, exact sizes), then, once measured, with accuracy and the gzip figure. The
  config is a frozen dataclass, hashed by value.
* Each verified export (the file's bytes and the figures of running it) is kept the same way
  plus the format.
* Each completed fine-tuning run (the result and the fine-tuned model, opened from its
  ``.keras`` bytes) is kept by (model key, config, ``FinetuneConfig``, training-data digest).

Each kind lives in a ``ByteCache``: least recently used first out, bounded by the bytes its
entries hold rather than by their number, since one ResNet50 answer holds 100 MB of weights
and one sample answer 80 kB.

Functions that load files raise ``keras_io.InputError`` with a one-sentence message; pages show
it with ``st.error`` and keep the previous model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import streamlit as st

import sample_models
from optimizers import (
    calibration,
    datasets,
    delivery,
    explore,
    finetune,
    keras_io,
    recommend,
    study,
    sweep,
)
from optimizers.keras_io import InputError
from optimizers.pipeline import OptimizationConfig, Techniques, config_to_dict
from optimizers.size import gzip_size
from ui import tflite
from ui.background import Conversions, Job

if TYPE_CHECKING:
    import keras
    import optuna
    from optuna.storages import BaseStorage

TFLITE_SUFFIX = ".tflite"
UPLOAD_SUFFIXES = (*keras_io.MODEL_SUFFIXES, TFLITE_SUFFIX)
DATA_SUFFIXES = datasets.SUFFIXES
DATA_WHAT = "a data file"  # refusals: "x.txt is not a data file (expected one of .npz, ...)"
NO_CONFIG = OptimizationConfig()
MB = 1024 * 1024
T = TypeVar("T")
log = logging.getLogger(__name__)


class ByteCache(Generic[T]):
    """A thread-safe least-recently-used map bounded by the bytes its values hold.

    ``size(value)`` says what a value holds; the newest entry is always kept, even alone over
    the budget. Values are computed outside the lock, so a slow one never blocks other keys;
    a second caller of a key being computed waits for that result instead of computing it
    again (a rerun that starts while the previous run still loads the same upload must not
    load it twice), and computes it itself if the first computation failed or was abandoned.
    """

    def __init__(self, budget: int, size: Callable[[T], int]) -> None:
        self.budget, self.size = budget, size
        self._items: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self._making: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> T | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key: Hashable, value: T) -> T:
        with self._lock:
            self._items[key] = (value, self.size(value))
            self._items.move_to_end(key)
            while len(self._items) > 1 and self.held > self.budget:
                self._items.popitem(last=False)
        return value

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> T:
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key][0]
                making = self._making.get(key)
                if making is None:
                    making = self._making[key] = threading.Event()
                    break
            making.wait()  # another caller is making it: take its result, or try again
        try:
            return self.put(key, make())
        finally:
            with self._lock:
                del self._making[key]
            making.set()

    @property
    def held(self) -> int:
        return sum(n for _, n in self._items.values())


# Budgets: two ResNet50s (100 MB of weights each: the model; prepared, its two clones, a copy of
# the weights and where their values repeat), four of their answers and a few files; a sample
# keeps thousands of answers.
MODELS = ByteCache["keras.Model"](
    256 * MB, lambda m: sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in m.weights)
)
PREPARED = ByteCache["explore.Prepared"](832 * MB, lambda p: p.nbytes)
OUTCOMES = ByteCache["explore.Outcome"](448 * MB, lambda o: o.nbytes)


@dataclass(frozen=True)
class KerasModel:
    """A Keras model made ready to explore, with its evaluation data (if any)."""

    key: str  # sha256 of the model bytes + ":" + sha256 of the data bytes ("" without data)
    name: str  # file name shown to the user
    sample: str | None  # the bundled sample's name, None for an upload
    data_name: str | None
    prepared: explore.Prepared
    file_bytes: int
    # A fine-tuned model: the model it was fine-tuned from (its baseline stays that model's)
    # and the config it was trained toward.
    origin: KerasModel | None = None
    tuned_toward: OptimizationConfig | None = None
    data_note: str = ""  # how images or a table were read (``datasets.Data.note``)

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def has_labels(self) -> bool:
        return self.prepared.y is not None

    @property
    def has_data(self) -> bool:
        return self.prepared.x is not None

    @property
    def layers(self) -> tuple[str, ...]:
        """Names of the layers that own eligible tensors, in model order."""
        return tuple(dict.fromkeys(r.layer for r in self.prepared.refs))

    @property
    def tensors(self) -> tuple[str, ...]:
        """Paths of the eligible tensors, in model order."""
        return tuple(r.path for r in self.prepared.refs)


@dataclass(frozen=True)
class TfliteModel:
    """A ``.tflite`` file: inspected (tensors, histograms, sizes), not optimized."""

    key: str
    name: str
    file_bytes: int
    gzip_bytes: int
    tensors: tuple[tflite.Tensor, ...]

    @property
    def stem(self) -> str:
        return Path(self.name).stem


@dataclass(frozen=True)
class Comparison:
    """One setting's outcome next to the untouched model's."""

    baseline: explore.Outcome
    outcome: explore.Outcome


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def max_upload_bytes() -> int:
    """The upload limit of ``.streamlit/config.toml`` (``server.maxUploadSize``, in MB)."""
    return int(st.get_option("server.maxUploadSize")) * MB


def check_upload(name: str, data: bytes, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an upload over the size limit or with a suffix the app cannot read."""
    limit = max_upload_bytes()
    if len(data) > limit:
        raise InputError(
            f"{name} is {len(data) / MB:.1f} MB, over the {limit / MB:g} MB upload limit"
        )
    if Path(name).suffix.lower() not in suffixes:
        raise InputError(f"{name} is not {what} (expected one of {', '.join(suffixes)})")


def _keras_model(model_digest: str, name: str, data: bytes) -> keras.Model:
    return MODELS.get_or_make(model_digest, lambda: keras_io.load_model_bytes(data, name))


def _prepared(
    key: str, model: keras.Model, x: np.ndarray | None, y: np.ndarray | None
) -> explore.Prepared:
    return PREPARED.get_or_make(key, lambda: explore.prepare(model, x, y))


@st.cache_resource(show_spinner=False, max_entries=16)
def _tflite(model_digest: str, name: str, _data: bytes) -> TfliteModel:
    tensors = sorted(tflite.inspect(_data, name), key=lambda t: -t.params)  # weights first
    return TfliteModel(model_digest, name, len(_data), gzip_size(_data), tuple(tensors))


def data_digest(data: bytes, pixel_range: datasets.PixelRange | None) -> str:
    """What evaluation data is, for cache keys: its bytes and how images are scaled."""
    return digest(data) + (f"@{pixel_range}" if pixel_range else "")


def open_keras(
    name: str,
    data: bytes,
    eval_data: tuple[str, bytes] | None = None,
    sample: str | None = None,
    pixel_range: datasets.PixelRange | None = None,
) -> KerasModel:
    """Load a Keras model (and optional evaluation data, ``datasets.SUFFIXES``) from bytes,
    cached."""
    model_digest = digest(data)
    model = _keras_model(model_digest, Path(name).name, data)
    x = y = None
    data_name, read_digest, note = None, "", ""
    if eval_data is not None:
        data_name, raw = eval_data
        read = datasets.read(raw, model, data_name, pixel_range)
        x, y, note = read.x, read.y, read.note
        read_digest = data_digest(raw, pixel_range)
    key = f"{model_digest}:{read_digest}"
    prepared = _prepared(key, model, x, y)
    return KerasModel(key, name, sample, data_name, prepared, len(data), data_note=note)


def open_upload(
    name: str,
    data: bytes,
    eval_data: tuple[str, bytes] | None = None,
    pixel_range: datasets.PixelRange | None = None,
) -> KerasModel | TfliteModel:
    """An uploaded model file: Keras (explorable) or TFLite (inspection only)."""
    check_upload(name, data, UPLOAD_SUFFIXES, "a model file")
    if eval_data is not None:
        check_upload(*eval_data, DATA_SUFFIXES, DATA_WHAT)
    if Path(name).suffix.lower() == TFLITE_SUFFIX:
        return _tflite(digest(data), name, data)
    return open_keras(name, data, eval_data, pixel_range=pixel_range)


def with_data(
    model: KerasModel | TfliteModel,
    name: str,
    data: bytes,
    pixel_range: datasets.PixelRange | None = None,
) -> KerasModel:
    """``model`` evaluated on the uploaded data file instead of its current data."""
    if not isinstance(model, KerasModel):
        raise InputError(f"{name} cannot be used with a TFLite file, which is inspection-only")
    check_upload(name, data, DATA_SUFFIXES, DATA_WHAT)
    keras_model = model.prepared.model
    read = datasets.read(data, keras_model, name, pixel_range)
    key = f"{model.key.split(':')[0]}:{data_digest(data, pixel_range)}"
    prepared = _prepared(key, keras_model, read.x, read.y)
    return KerasModel(
        key, model.name, model.sample, name, prepared, model.file_bytes, data_note=read.note
    )


def open_sample(name: str) -> KerasModel:
    """A bundled sample with its held-out test set."""
    sample = sample_models.get(name)
    eval_data = (sample.data_path.name, sample.data_path.read_bytes())
    return open_keras(sample.model_path.name, sample.model_path.read_bytes(), eval_data, name)


def sample_card(name: str) -> str | None:
    """The sample's model card (Markdown), if it has one."""
    path = sample_models.get(name).card_path
    return path.read_text() if path.exists() else None


# The layer statistics of a model's calibration data (``explore.calibrate``), by (model key,
# data digest), and the data each model's data-aware settings use: the last given for it (a
# sample's training split unless other data was given).
CALIBRATED = ByteCache["explore.Prepared"](
    512 * MB, lambda p: calibration.statistics_bytes(p.statistics or {})
)
_CALIBRATION: dict[str, str] = {}  # model key -> data digest
_CALIBRATION_LOCK = threading.Lock()


def calibrate(
    model: KerasModel, train: TrainingData, on_batch: explore.Progress | None = None
) -> explore.Prepared:
    """``model`` ready for data-aware settings, calibrated on ``train`` (cached), which its
    data-aware settings use from now on. ``ValueError`` (one sentence) refuses data that is
    the evaluation data."""
    found = CALIBRATED.get_or_make(
        (model.key, train.digest),
        lambda: explore.calibrate(
            model.prepared, explore.Calibration(train.x, train.name), on_batch
        ),
    )
    with _CALIBRATION_LOCK:
        _CALIBRATION[model.key] = train.digest
    return found


def calibrated(model: KerasModel, config: OptimizationConfig) -> explore.Prepared:
    """The prepared model ``config`` runs on: calibrated when it is data-aware (a sample
    calibrates on its training split on first use); without calibration data, the plain one,
    which ``explore.optimize`` refuses in one sentence."""
    if not config.data_aware:
        return model.prepared
    with _CALIBRATION_LOCK:
        digest = _CALIBRATION.get(model.key)
    found = None if digest is None else CALIBRATED.get((model.key, digest))
    if found is None:
        train = sample_training_data(model)
        found = model.prepared if train is None else calibrate(model, train)
    return found


def outcome_key(model: KerasModel, config: OptimizationConfig) -> Hashable:
    """Which answer ``config`` gives on ``model``: a data-aware one depends on its data."""
    if not config.data_aware:
        return (model.key, config)
    with _CALIBRATION_LOCK:
        return (model.key, config, _CALIBRATION.get(model.key))


def optimized(model: KerasModel, config: OptimizationConfig) -> explore.Outcome:
    """Stage one of ``config``'s answer, or the whole answer when it was measured before."""
    prepared = calibrated(model, config)
    key = outcome_key(model, config)
    return OUTCOMES.get_or_make(key, lambda: explore.optimize(prepared, config))


QUICK_MEASURE_S = 0.2  # a measurement this quick comes with the first stage: one answer drawn
MEASURE_SECONDS = ByteCache[float](64, lambda _: 1)  # the last measurement's seconds: 64 models


def measured_on(model: KerasModel, outcome: explore.Outcome) -> Hashable:
    """Which model ``outcome`` is measured on: ``model``, or its channel-pruned copy."""
    return model.key if outcome.source is None else (model.key, id(outcome.source))


def measured(
    model: KerasModel, config: OptimizationConfig, on_batch: explore.Progress | None = None
) -> explore.Outcome:
    """The whole answer of ``config``: accuracy and the gzip figure too (cached)."""
    outcome = optimized(model, config)
    if outcome.measured:
        return outcome
    start = time.perf_counter()
    found = OUTCOMES.put(
        outcome_key(model, config), explore.measure(model.prepared, outcome, on_batch)
    )
    MEASURE_SECONDS.put(measured_on(model, outcome), time.perf_counter() - start)
    return found


def measures_quickly(model: KerasModel, outcome: explore.Outcome) -> bool:
    """Whether the model ``outcome`` is measured on took under ``QUICK_MEASURE_S`` the last time
    (the samples take milliseconds): its answer is then drawn once, whole, rather than in two
    stages a few milliseconds apart, which a browser draws twice. Never measured (a new
    channel-pruned copy too), or slower: two stages, with progress and a newer move's stop."""
    seconds = MEASURE_SECONDS.get(measured_on(model, outcome))
    return seconds is not None and seconds < QUICK_MEASURE_S


def first_answer(model: KerasModel, config: OptimizationConfig) -> explore.Outcome:
    """What a page draws first for ``config``: stage one, or the whole answer when ``model``
    measures quickly (``measures_quickly``) or was measured before."""
    outcome = optimized(model, config)
    return measured(model, config) if measures_quickly(model, outcome) else outcome


def baseline(model: KerasModel, on_batch: explore.Progress | None = None) -> explore.Outcome:
    """The figures every delta is measured against (cached): the untouched model's, or for a
    fine-tuned model the original float model's it was fine-tuned from."""
    return measured(model.origin or model, NO_CONFIG, on_batch)


def compare(model: KerasModel, config: OptimizationConfig) -> Comparison:
    """The measured outcome of ``config`` next to the untouched model's (both cached)."""
    return Comparison(baseline(model), measured(model, config))


# --- the Download page's files: converted, verified and timed in the background, one at a time ---


@dataclass(frozen=True)
class Files:
    """One setting's files as far as they are made: by format, the verified file or why it
    cannot be made; ``timed`` once the LiteRT ones are timed too. A setting's files are one
    cache entry, so that a large model's files never push each other out while they are made."""

    made: dict[str, delivery.Exported | str]
    timed: bool = False

    @property
    def nbytes(self) -> int:
        return sum(e.size_bytes for e in self.made.values() if isinstance(e, delivery.Exported))


# Two ResNet50 settings' seven files (about 320 MB each), or thousands of a sample's.
FILES = ByteCache[Files](768 * MB, lambda f: f.nbytes)


CONVERSIONS = Conversions()
# The gzip sizes of one setting's files being measured while its next files are made, by
# format (``_gzip_meanwhile``). Only the conversion thread (``CONVERSIONS``) changes it; a page
# looks a finished size up in it (``exports``).
GZIPPING: dict[Hashable, dict[str, delivery.Gzipping]] = {}


def _with_sizes(
    made: Mapping[str, delivery.Exported | str], sizes: Mapping[str, delivery.Gzipping]
) -> dict[str, delivery.Exported | str]:
    """``made`` with the gzip sizes that ``sizes`` measured meanwhile (``gzip_so_far``)."""
    return {
        f: delivery.gzip_so_far(e, sizes.get(f)) if isinstance(e, delivery.Exported) else e
        for f, e in made.items()
    }


def _measuring(key: Hashable) -> dict[str, delivery.Gzipping]:
    """The gzip sizes of setting ``key``'s files being measured meanwhile. Every other
    setting's are dropped (left behind, their files need not stay): those not started are
    cancelled, those measured kept with its files."""
    for other in [k for k in GZIPPING if k != key]:
        sizes = GZIPPING.pop(other)
        for gzipping in sizes.values():
            gzipping.future.cancel()
        left = FILES.get(other)
        if left is not None:
            FILES.put(other, Files(_with_sizes(left.made, sizes), left.timed))
    return GZIPPING.setdefault(key, {})


def _gzip_meanwhile(key: Hashable, exported: delivery.Exported) -> None:
    """Start measuring ``exported``'s gzip size for its setting's timing (``key``), instead of
    an earlier copy's."""
    mine = _measuring(key)
    if exported.fmt in mine:
        mine[exported.fmt].future.cancel()
    mine[exported.fmt] = delivery.gzip_meanwhile(exported)


TIMING = "measuring gzip and speed…"  # what a setting's verified files wait for last

# Full-integer int8 is a conversion of its own, with calibration, where each other format is a
# rewrite of the model's converted file: on ResNet50 (25.6 M parameters) 26 s and about 1 GB
# more memory. From this many parameters it is made only when asked.
MADE_WHEN_ASKED_FROM = 10_000_000
# From this many parameters converting a model ahead takes seconds of both cores (ResNet50:
# 6 s) and waits for a pause in the answers; a smaller one converts in a fraction of one.
WAITS_FROM = 1_000_000


def parameters(model: KerasModel) -> int:
    """Every weight of ``model``, trainable or not (the Model page's "Parameters")."""
    return sum(int(w.size) for w in model.prepared.weights)


def made_when_asked(model: KerasModel, fmt: str) -> bool:
    """Whether ``model``'s ``fmt`` files wait until the user asks for them."""
    return fmt == "tflite-int8" and parameters(model) >= MADE_WHEN_ASKED_FROM


def _refusal(fmt: str, make: Callable[[], delivery.Exported]) -> delivery.Exported | str:
    try:
        return make()
    except ValueError as e:  # this model cannot be written in this format: say why, once
        return str(e)
    except Exception as e:  # a bug: log it, say it in one sentence, offer the other files
        log.exception("writing %s failed", fmt)
        return f"writing it failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})"


def exports(
    owner: str, model: KerasModel, config: OptimizationConfig, formats: Sequence[str]
) -> tuple[dict[str, delivery.Exported | str], dict[str, str]]:
    """Every file of ``formats`` that is ready (verified, then timed too), or why it cannot be
    made; and what the others wait for ("queued", "converting and verifying…", ``TIMING``, or
    "measuring speed…" once a file's gzip size is known).
    What is missing is asked for in the background (``CONVERSIONS``), the first format first."""
    key = (model.key, config)
    found = FILES.get(key) or Files({})
    if found.timed and set(formats) <= set(found.made):
        return found.made, {}
    outcome = measured(model, config)
    # A gzip size measured meanwhile is shown before the timing.
    files = _with_sizes(
        {f: found.made[f] for f in formats if f in found.made}, GZIPPING.get(key, {})
    )
    wanted: dict[Hashable, Job] = {}
    for position, fmt in enumerate(f for f in formats if f not in files):

        def make(fmt: str = fmt) -> None:  # the one worker thread writes FILES: no race
            made = (FILES.get(key) or Files({})).made
            if fmt not in made:  # not made since it was asked for
                verified = _refusal(
                    fmt, lambda: delivery.verify(model.prepared, outcome, fmt, gzip=False)
                )
                FILES.put(key, Files({**made, fmt: verified}))
                if isinstance(verified, delivery.Exported):
                    _gzip_meanwhile(key, verified)

        wanted[(*key, fmt)] = Job(make, (0, position), "converting and verifying…", {})
    if not wanted:  # every file verified: time them together with the original

        def time_all() -> None:
            if (FILES.get(key) or found).timed:  # timed since it was asked for
                return
            made = {f: e for f, e in files.items() if isinstance(e, delivery.Exported)}
            try:
                done = delivery.time_exports(model.prepared, made, _measuring(key))
            except Exception:  # a bug: the files stay offered, untimed, and it is not retried
                log.exception("timing the files failed")
                done = made
            FILES.put(key, Files({f: done.get(f, e) for f, e in files.items()}, timed=True))
            GZIPPING.pop(key, None)  # taken, and shown from FILES now

        wanted[key] = Job(time_all, (1, 0), TIMING, {})
    statuses = CONVERSIONS.ask(owner, wanted)
    waiting = {key[2]: status for key, status in statuses.items() if len(key) == 3}
    if not waiting:
        status = next(iter(statuses.values())).replace("queued", "to be measured")
        waiting = {
            f: "measuring speed…" if status == TIMING and e.gzip_bytes is not None else status
            for f, e in files.items()
            if isinstance(e, delivery.Exported)
        }
    return files, waiting


WARMED: set[Hashable] = set()  # the models whose converted file awaits their settings' files


def warm_exports(owner: str, model: KerasModel) -> None:
    """Ask the background to convert ``model`` once while its user explores, so that its
    Download page's first file is a rewrite of that file (seconds, not a conversion: about 6 s
    on ResNet50). Once per model per process, on the conversion thread (``Conversions``); from
    ``WAITS_FROM`` parameters, when the Explore page has not answered for a moment
    (``background.answering``): a slider's answers come first, and one made while it runs is
    slower (ResNet50: 2.3 s instead of 1.35 s)."""
    if model.key in WARMED:
        return

    def make() -> None:
        try:
            delivery.warm_exports(model.prepared)
        except ValueError as e:  # the Download page says why, format by format
            log.info("converting %s ahead failed: %s", model.name, e)
        finally:
            WARMED.add(model.key)

    job = Job(make, (2, 0), "converting the model…", {}, waits=parameters(model) >= WAITS_FROM)
    CONVERSIONS.ask(owner, {(model.key, "warm"): job})


def recipe_json(config: OptimizationConfig) -> str:
    """The JSON recipe that ``python -m optimizers apply MODEL --recipe FILE`` reads."""
    return json.dumps(config_to_dict(config), indent=2) + "\n"


# --- the Trade-off page: sweeps (Optuna studies in a database), sensitivity and recommendations
# (figures only, no weights, counted at 1 kB per measured setting) ---

KB = 1024
SENSITIVITIES = ByteCache["list[recommend.LayerSensitivity]"](
    16 * MB, lambda rows: KB * sum(len(r.scores) for r in rows)
)
RECOMMENDED = ByteCache[sweep.Point](4 * MB, lambda p: KB)


@st.cache_resource(show_spinner=False)
def _sweeps(url: str) -> BaseStorage:
    return study.open_storage(url)


def identity(model: KerasModel, grid: sweep.Grid | None = None) -> study.Identity:
    """What a study of ``model`` records: its name and the sha256 of its bytes and data (and
    of the data that calibrates it, for a data-aware ``grid``)."""
    model_sha, data_sha = model.key.split(":", 1)
    found = study.Identity(model.name, model_sha, data_sha)
    if grid is None or not grid.data_aware:
        return found
    with _CALIBRATION_LOCK:
        return found.calibrated(_CALIBRATION.get(model.key, ""))


def sweeps_study(model: KerasModel, grid: sweep.Grid) -> optuna.Study:
    """The study of ``grid`` on ``model`` in the sweeps storage the command line uses too
    (``study.default_storage()``): kept across restarts, shared by sessions and workers."""
    layers = list(recommend.layers(model.prepared))
    found = identity(model, grid)
    return study.open_study(_sweeps(study.default_storage()), found, grid, layers)


def swept_on(model: KerasModel, grid: sweep.Grid) -> explore.Prepared:
    """The prepared model ``grid``'s points run on: calibrated for a data-aware grid."""
    return calibrated(model, OptimizationConfig(data_aware=grid.data_aware))


def swept(
    model: KerasModel,
    grid: sweep.Grid,
    on_point: sweep.Progress | None = None,
    more: int = 0,
    budget: float = 1.0,
) -> study.Result:
    """Every setting of ``grid`` measured on ``model``, with ``more`` per-layer trials beyond
    what the study holds: the grid points no worker has taken yet are measured here, then the
    whole study is read back (points other workers still measure arrive later)."""
    prepared = swept_on(model, grid)  # calibrates first, so the study knows on what
    kept = sweeps_study(model, grid)
    if more:
        study.extend(kept, more)
    study.run(kept, prepared, budget=budget, on_trial=on_point, wait=False)
    return study.result(kept, sweep.point(baseline(model), NO_CONFIG))


def stored_sweeps(model: KerasModel, grid: sweep.Grid) -> list[study.Stored]:
    """The studies of ``model`` on its data (and calibration data, when ``grid`` is
    data-aware) in the sweeps storage, newest first."""
    return study.stored(_sweeps(study.default_storage()), identity(model, grid))


def sensitivity(
    model: KerasModel,
    settings: tuple[Techniques, ...],
    grid: sweep.Grid,
    on_step: sweep.Progress | None = None,
) -> list[recommend.LayerSensitivity]:
    """Each layer alone at each of ``settings``, data-aware when ``grid`` is (as its sweep),
    most fragile first (cached)."""
    return SENSITIVITIES.get_or_make(
        (identity(model, grid), settings),
        lambda: recommend.sensitivity(swept_on(model, grid), settings, on_step, grid.data_aware),
    )


def recommended(
    model: KerasModel,
    grid: sweep.Grid,
    budget: float,
    on_step: Callable[[str], None] | None = None,
) -> sweep.Point:
    """The per-layer recipe within ``budget`` points, measured as ``apply`` would (cached)."""
    return RECOMMENDED.get_or_make(
        (identity(model, grid), grid, budget),
        lambda: recommend.recommend(swept_on(model, grid), budget, grid, on_step),
    )


# --- fine-tuning ---


@dataclass(frozen=True)
class TrainingData:
    """Labelled samples to fine-tune on, checked against the model they are for."""

    name: str
    digest: str  # ``data_digest``: the file's bytes and how images are scaled
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Finetuned:
    """A fine-tuning run and its model, opened from the ``.keras`` bytes Download writes and
    evaluated on the original's data (preview it with ``result.config``)."""

    result: finetune.FinetuneResult
    model: KerasModel


FINETUNED = ByteCache[Finetuned](64 * MB, lambda f: f.model.prepared.nbytes)


def training_data(
    model: KerasModel, name: str, data: bytes, pixel_range: datasets.PixelRange | None = None
) -> TrainingData:
    """An uploaded labelled training file (``datasets.SUFFIXES``), checked like evaluation
    data."""
    check_upload(name, data, DATA_SUFFIXES, DATA_WHAT)
    x, y = finetune.load_training_data(data, model.prepared.model, name, pixel_range)
    return TrainingData(Path(name).name, data_digest(data, pixel_range), x, y)


def sample_training_data(model: KerasModel) -> TrainingData | None:
    """The training split a bundled sample ships with (None for an upload)."""
    if model.sample is None:
        return None
    path = sample_models.get(model.sample).train_path
    return training_data(model, path.name, path.read_bytes())


def finetuned(
    model: KerasModel,
    config: OptimizationConfig,
    settings: finetune.FinetuneConfig,
    train: TrainingData,
    on_epoch: finetune.OnEpoch | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Finetuned:
    """``model`` fine-tuned toward ``config`` on ``train`` (cached; a stopped run is not, as
    the same settings run again would train further)."""
    key = (model.key, config, settings, train.digest)
    found = FINETUNED.get(key)
    if found is not None:
        return found
    result = finetune.finetune(
        model.prepared.model, config, train.x, train.y, settings, on_epoch, should_stop
    )
    data = keras_io.save_model_bytes(result.model)
    name = f"{model.stem}_finetuned.keras"
    keras_model = _keras_model(digest(data), name, data)
    tuned_key = f"{digest(data)}:{model.key.split(':', 1)[1]}"
    prepared = _prepared(tuned_key, keras_model, model.prepared.x, model.prepared.y)
    tuned = Finetuned(
        result,
        KerasModel(
            tuned_key,
            name,
            None,
            model.data_name,
            prepared,
            len(data),
            model.origin or model,
            result.config,
            model.data_note,
        ),
    )
    return tuned if result.stopped else FINETUNED.put(key, tuned)
