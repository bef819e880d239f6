"""Sweeps as Optuna studies: kept in a database, shared by any number of workers, resumed after
a crash.

A study measures one model on one data set with one grid; their sha256 and the grid are study
user attributes, so a study of another model, data or grid under the same name is refused. A
trial is a per-layer setting (parameters ``LAYER/sparsity``, ``LAYER/clusters``, ``LAYER/bits``:
positions on the grid's axes, gentle to harsh); its values are the quality (accuracy, agreement
without labels) to maximize and the packed bytes to minimize, its user attributes the other
figures, the recipe and the worker that measured it.
Every figure is ``sweep.measure``: what ``python -m optimizers apply`` prints for that setting.

* The grid's uniform settings (every layer equal) are queued when the study is created; a worker
  takes the next waiting one, so several workers measure each point once.
* ``search="pareto"`` then measures per-layer settings beyond the grid, as many trials again:
  first the grid's frontier moved one layer at a time (the smallest uniform setting within
  budget with one layer at a smaller frontier setting, largest layers first), then what a
  multi-objective TPE sampler asks for; a trial that loses more than the budget is infeasible
  to it. The recommendation is the smallest point within budget: on the study's Pareto front.
* On a database (``sqlite:///...``, ``postgresql://...``, ``mysql://...``) each running trial
  beats a heartbeat; a trial whose worker fell silent (killed, machine lost) is failed after two
  beats and queued again. Finished trials are committed as they finish.

>>> storage = open_storage("sqlite:///sweeps.db")  # doctest: +SKIP
>>> who = Identity.of_files("model.keras", "test.npz")  # doctest: +SKIP
>>> s = open_study(storage, who, Grid(), list(layers(prepared)))  # doctest: +SKIP
>>> run(s, prepared)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import (
    BaseStorage,
    InMemoryStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.trial import FrozenTrial, TrialState

from optimizers import explore
from optimizers.pipeline import OptimizationConfig, config_from_dict, config_to_dict
from optimizers.recommend import assemble, layers
from optimizers.sweep import (
    Grid,
    Point,
    Progress,
    Sweep,
    measure,
    pareto_flags,
    technique,
    within,
)

Search = Literal["grid", "pareto"]
SEARCHES: tuple[Search, ...] = ("grid", "pareto")  # grid: the uniform points; pareto: and beyond
STORAGE_ENV = "MODEL_OPTIMIZATION_SWEEPS"  # a storage URL that replaces the per-user default
SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT = 10  # seconds between a running trial's heartbeats; silent for two, it is retried
RETRIES = 3  # a point whose worker died this many times is left failed
READY_SECONDS = 30  # how long a worker waits for another worker to finish creating the study
AXES = ("sparsity", "clusters", "bits")
QUEUED = "grid"  # user attribute of a queued grid trial (kept by a retry)
WORKER = "worker"  # user attribute: the host and process id that measured the trial
SEEDED = "seeded"  # study user attribute: the per-layer search's first trials are queued
COPY_OF = "copy_of"  # user attribute of a sampled trial whose setting was measured before

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is noise here
logging.getLogger("alembic").setLevel(logging.WARNING)  # schema checks on every open


def default_storage() -> str:
    """``$MODEL_OPTIMIZATION_SWEEPS`` if set, else an SQLite file in the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``): the storage the app and the command line share."""
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return f"sqlite:///{cache / 'model-optimization-explorer' / 'sweeps.db'}"


def open_storage(url: str | None, heartbeat: int = HEARTBEAT) -> BaseStorage:
    """The Optuna storage at ``url`` (``None``: in memory, for one process), with heartbeats of
    ``heartbeat`` seconds; raises ``ValueError`` in one sentence when it cannot be opened."""
    if url is None:
        return InMemoryStorage()
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SCHEMES or "://" not in url:
        raise ValueError(
            f"--storage must be a database URL starting sqlite:///, postgresql:// or mysql://, "
            f"got {url!r}"
        )
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 1:
        raise ValueError(f"heartbeat must be a whole number of seconds >= 1, got {heartbeat!r}")
    engine: dict[str, Any] = {}
    if url.startswith("postgresql://"):  # SQLAlchemy 2.1 would pick psycopg 3: use psycopg2
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    if scheme == "sqlite":
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            folder = Path(path).parent
            if not folder.is_dir():
                try:
                    folder.mkdir(parents=True)
                except OSError as e:
                    raise ValueError(
                        f"{folder} cannot be made for the sweeps ({e.strerror})"
                    ) from None
        engine["connect_args"] = {"timeout": 60}  # workers take turns writing; wait, not fail
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(RETRIES),
                )
            return locked_on_begin(storage) if scheme == "sqlite" else storage
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors: the first line is the reason
            # Two workers that open a new database at once both make its tables: the slower
            # one fails, and finds them made when it tries again.
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            time.sleep(0.2 * (attempt + 1))
    raise ValueError(f"the storage {redacted(url)} cannot be opened: {error}")


def locked_on_begin(storage: RDBStorage) -> RDBStorage:
    """``storage`` whose SQLite transactions take the write lock as they begin (``BEGIN
    IMMEDIATE``). Optuna takes a queued trial by reading it WAITING, then marking it RUNNING;
    SQLite has no ``SELECT ... FOR UPDATE``, so two workers could both read it WAITING, both
    measure it, and the second fail to report it ("Cannot tell a COMPLETE trial")."""
    import sqlalchemy

    def no_implicit_begin(connection: Any, _: Any) -> None:
        connection.isolation_level = None  # sqlite3 then leaves BEGIN to the event below

    sqlalchemy.event.listen(storage.engine, "connect", no_implicit_begin)
    sqlalchemy.event.listen(
        storage.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE")
    )
    storage.engine.dispose()  # connections opened before the events: closed, reopened with them
    return storage


def redacted(url: str) -> str:
    """``url`` without its password, fit to print."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("://", 1)[-1]:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}:***@{tail}"


@dataclass(frozen=True)
class Identity:
    """What a study measures: the model (file name and sha256 of its bytes) and the data (of
    the evaluation data's bytes, and of the calibration data's for a data-aware sweep)."""

    model: str
    model_sha256: str
    data_sha256: str

    @classmethod
    def of_files(cls, model: str | Path, data: str | Path) -> Identity:
        return cls(
            Path(model).name,
            hashlib.sha256(Path(model).read_bytes()).hexdigest(),
            hashlib.sha256(Path(data).read_bytes()).hexdigest(),
        )

    def calibrated(self, calibration_sha256: str) -> Identity:
        """This identity for data-aware sweeps calibrated on data of that sha256."""
        both = f"{self.data_sha256}:{calibration_sha256}".encode()
        return replace(self, data_sha256=hashlib.sha256(both).hexdigest())

    def default_name(self, grid: Grid) -> str:
        """The study a grid of this model on this data goes to unless named: ``STEM-HASH``."""
        key = json.dumps([self.model_sha256, self.data_sha256, grid_to_list(grid)])
        return f"{Path(self.model).stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def grid_axes(grid: Grid) -> list[list[Any]]:
    """The grid's three axes, in ``AXES`` order."""
    return [list(grid.sparsities), list(grid.clusters), list(grid.bits)]


def grid_to_list(grid: Grid) -> list[list[Any]]:
    """The grid as a study stores it: its axes, and ``[true]`` after them when data-aware (a
    grid stored before data-aware sweeps has three axes, and is not)."""
    return [*grid_axes(grid), [True]] if grid.data_aware else grid_axes(grid)


def grid_words(grid: Grid) -> str:
    """``sparsity 0,0.5 · clusters off,16 · bits off,4`` (`` · data-aware`` after it)"""
    words = " · ".join(
        f"{axis} {','.join('off' if v is None else f'{v:g}' for v in values)}"
        for axis, values in zip(AXES, grid_axes(grid), strict=True)
    )
    return words + (" · data-aware" if grid.data_aware else "")


@dataclass(frozen=True)
class Stored:
    """A stored study of one model: its name, grid and how far it is."""

    name: str
    grid: Grid
    done: int  # complete trials
    target: int  # trials the study was asked for


def open_study(
    storage: BaseStorage,
    identity: Identity,
    grid: Grid,
    names: Sequence[str],
    name: str | None = None,
    search: Search = "grid",
) -> optuna.Study:
    """The study ``name`` (default ``identity.default_name(grid)``): created with the grid
    queued (every layer of ``names`` at each uniform setting), or joined; ``search="pareto"``
    asks for as many trials again beyond the grid. Refuses in one sentence a study of another
    model, data or grid."""
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    name = name or identity.default_name(grid)
    if not name.strip():
        raise ValueError("--study must name the study, got an empty name")
    directions = ["maximize", "minimize"]
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        check(study, identity, grid, name)
    else:
        ordered = levels(grid)
        for setting in itertools.product(*grid_axes(grid)):  # Grid.settings' order
            study.enqueue_trial(
                {
                    f"{layer}/{axis}": axis_levels.index(v)
                    for layer in names
                    for axis, v, axis_levels in zip(AXES, setting, ordered, strict=True)
                },
                user_attrs={QUEUED: True},
            )
        attrs = {
            "model": identity.model,
            "model_sha256": identity.model_sha256,
            "data_sha256": identity.data_sha256,
            "grid": grid_to_list(grid),
            "target": len(grid.settings()),
        }
        for key, value in attrs.items():  # "target" last: once it is there, the study is ready
            study.set_user_attr(key, value)
    wanted = len(grid.settings()) * (2 if search == "pareto" else 1)
    if target(study) < wanted:
        study.set_user_attr("target", wanted)
    return study


def levels(grid: Grid) -> tuple[list[Any], list[Any], list[Any]]:
    """Each axis gentle to harsh (off first, then less sparsity, more clusters, more bits): a
    trial's parameters are positions on these, so a sampler's small step is a small change.

    >>> levels(Grid((0.5, 0.0), (4, None, 16), (4, 8)))
    ([0.0, 0.5], [None, 16, 4], [8, 4])
    """
    return (
        sorted(grid.sparsities),
        sorted(grid.clusters, key=lambda k: -1 if k is None else 1 / k),
        sorted(grid.bits, key=lambda b: -1 if b is None else 1 / b),
    )


def check(study: optuna.Study, identity: Identity, grid: Grid, name: str) -> None:
    """Refuse a study of another model, data or grid (waiting while another worker creates it)."""
    deadline = time.monotonic() + READY_SECONDS
    while "target" not in study.user_attrs:
        if time.monotonic() > deadline:
            raise ValueError(f"study {name} exists but holds no sweep; give another --study name")
        time.sleep(0.2)
    attrs = study.user_attrs
    if (attrs["model_sha256"], attrs["data_sha256"]) != (
        identity.model_sha256,
        identity.data_sha256,
    ):
        what = "model" if attrs["model_sha256"] != identity.model_sha256 else "data"
        raise ValueError(
            f"study {name} measured other {what} ({attrs['model']}, model sha256 "
            f"{attrs['model_sha256'][:12]}, data sha256 {attrs['data_sha256'][:12]}); give "
            "another --study name"
        )
    if attrs["grid"] != json.loads(json.dumps(grid_to_list(grid))):
        raise ValueError(
            f"study {name} sweeps another grid ({grid_words(grid_from_list(attrs['grid']))}); "
            "give the same --grid or another --study name"
        )


def grid_from_list(axes: Sequence[Sequence[Any]]) -> Grid:
    return Grid(*(tuple(values) for values in axes[:3]), data_aware=len(axes) > 3)


def target(study: optuna.Study) -> int:
    return int(study.user_attrs.get("target", 0))


def extend(study: optuna.Study, trials: int) -> None:
    """Ask for ``trials`` more per-layer trials beyond what the study holds or runs."""
    held = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))
    study.set_user_attr("target", max(target(study), held + trials))


def stored(storage: BaseStorage, identity: Identity) -> list[Stored]:
    """The studies of ``identity``'s model and data in ``storage``, newest first."""
    found = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        if (attrs.get("model_sha256"), attrs.get("data_sha256")) != (
            identity.model_sha256,
            identity.data_sha256,
        ):
            continue
        done = len(
            optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(
                deepcopy=False, states=(TrialState.COMPLETE,)
            )
        )
        found.append(
            Stored(summary.study_name, grid_from_list(attrs["grid"]), done, int(attrs["target"]))
        )
    return found[::-1]


def counts(study: optuna.Study) -> dict[TrialState, int]:
    out = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def sampler(seed: int) -> optuna.samplers.BaseSampler:
    """Multi-objective TPE, all parameters modelled together (a layer's sparsity and bits
    interact); it reads each trial's budget constraint, which ``run`` sets, so its "good" trials
    are the feasible frontier. The constant liar keeps parallel workers from asking the same."""
    with warnings.catch_warnings():  # "multivariate" is "experimental" since Optuna 2.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def run(
    study: optuna.Study,
    prepared: explore.Prepared,
    trials: int | None = None,
    budget: float = 1.0,
    seed: int = 0,
    on_trial: Progress | None = None,
    wait: bool = True,
    poll: float = 1.0,
) -> int:
    """Measure the study's trials on ``prepared``, at most ``trials`` of them (``None``: until
    the study is done): queued grid points first, then sampled per-layer settings up to the
    study's target. With ``wait``, return only when no other worker's trial is running either
    (retrying one whose worker died). ``on_trial(done, target)`` after each. Returns how many
    trials this worker measured."""
    if prepared.x is None:
        raise ValueError("a sweep needs evaluation data (an .npz with x and optionally y)")
    params = layers(prepared)
    grid = grid_from_list(study.user_attrs["grid"])
    if grid.data_aware and prepared.statistics is None:
        raise ValueError(
            "a data-aware sweep needs calibration data (a training split or a calibration "
            ".npz), which this model has not been given"
        )
    worker = f"{socket.gethostname()}:{os.getpid()}"
    measured = 0

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        queued = bool(trial.user_attrs.get(QUEUED))
        if not queued and held(study, trial.number) >= target(study):
            raise optuna.TrialPruned()  # the queue emptied under us and the study is done
        choice = {
            layer: technique(
                *(
                    values[trial.suggest_int(f"{layer}/{axis}", 0, len(values) - 1)]
                    for axis, values in zip(AXES, levels(grid), strict=True)
                )
            )
            for layer in params
        }
        config = assemble(choice, params, grid.data_aware)
        recipe = config_to_dict(config)
        before = [t for t in finished(study) if t.user_attrs["recipe"] == recipe]
        if before and not queued:  # the sampler asked again: the figures are known
            p = trial_point(before[0])
            trial.set_user_attr(COPY_OF, before[0].number)
        else:
            p = measure(prepared, config)
        for key, value in {**point_attrs(p), WORKER: worker}.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("budget", reference - budget / 100 - p.quality)  # > 0: too lossy
        return p.quality, p.packed_bytes

    # Each worker its own seed (how many trials it found), the same for a lone worker's rerun.
    study.sampler = sampler(seed + len(study.trials))
    reference = 0.0  # the untouched model's quality: measured before the first trial
    while trials is None or measured < trials:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial goes back to the queue
        n = counts(study)
        if n[TrialState.WAITING] or n[TrialState.COMPLETE] + n[TrialState.RUNNING] < target(study):
            if not measured:
                reference = measure(prepared, OptimizationConfig()).quality
            if not n[TrialState.WAITING] and not study.user_attrs.get(SEEDED):
                study.set_user_attr(SEEDED, True)  # once per study (a race adds copies only)
                room = target(study) - n[TrialState.COMPLETE] - n[TrialState.RUNNING]
                for seed_params in seeds(study, params, grid, reference, budget)[:room]:
                    study.enqueue_trial(seed_params)
            study.optimize(objective, n_trials=1, catch=())
            measured += 1
            if on_trial is not None:
                on_trial(counts(study)[TrialState.COMPLETE], target(study))
        elif wait and n[TrialState.RUNNING]:
            time.sleep(poll)
        else:
            break
    return measured


def seeds(
    study: optuna.Study, params: dict[str, int], grid: Grid, reference: float, budget: float
) -> list[dict[str, int]]:
    """The first per-layer trials, from the grid's frontier: the smallest uniform setting
    within budget with one layer moved to a smaller frontier setting (which loses too much on
    every layer, but maybe not on one); largest layers and harshest settings first, for at most
    half the grid's number of trials."""
    uniform = [p for _, p in distinct(study) if not p.per_layer]
    fits = [p for p in uniform if within(p.quality, reference, budget)]
    if not fits:
        return []
    start = min(fits, key=lambda p: p.packed_bytes)
    flags = pareto_flags([p.packed_bytes for p in uniform], [p.quality for p in uniform])
    smaller = sorted(
        (
            p
            for p, f in zip(uniform, flags, strict=True)
            if f and p.packed_bytes < start.packed_bytes
        ),
        key=lambda p: p.packed_bytes,
    )
    ordered = levels(grid)

    def positions(config: OptimizationConfig) -> list[int]:
        values = (
            config.pruning.sparsity if config.pruning else 0.0,
            config.clustering.clusters if config.clustering else None,
            config.quantization.bits if config.quantization else None,
        )
        return [axis.index(v) for axis, v in zip(ordered, values, strict=True)]

    base = positions(start.config)
    largest_first = sorted(params, key=lambda layer: -params[layer])
    return [
        {
            f"{layer}/{axis}": i
            for layer in params
            for axis, i in zip(AXES, positions(p.config) if layer == moved else base, strict=True)
        }
        for moved in largest_first
        for p in smaller
    ][: len(grid.settings()) // 2]


def distinct(study: optuna.Study) -> list[tuple[int, Point]]:
    """Each setting's first complete trial (its number and point), in trial order."""
    first: dict[Any, tuple[int, Point]] = {}
    for t in sorted(finished(study), key=lambda t: t.number):
        p = trial_point(t)
        first.setdefault(p.config, (t.number, p))
    return list(first.values())


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def held(study: optuna.Study, but: int) -> int:
    """Trials complete or running, other than number ``but``."""
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.RUNNING) and t.number != but
        for t in study.get_trials(deepcopy=False)
    )


def point_attrs(p: Point) -> dict[str, Any]:
    return {
        "accuracy": p.accuracy,
        "agreement": p.agreement,
        "snr_db": p.snr_db,
        "gzip_bytes": p.gzip_bytes,
        "gzip_exact": p.gzip_exact,
        "entropy_bytes": p.entropy_bytes,
        "recipe": config_to_dict(p.config),
    }


def trial_point(t: FrozenTrial) -> Point:
    a = t.user_attrs
    assert t.values is not None
    return Point(
        config_from_dict(a["recipe"]),
        a["accuracy"],
        a["agreement"],
        a["snr_db"],
        int(t.values[1]),
        a["gzip_bytes"],
        a["entropy_bytes"],
        gzip_exact=a.get("gzip_exact", False),  # kept before it was recorded: not known
    )


@dataclass(frozen=True)
class Result:
    """A study read back: every distinct measured setting (the first trial of each, in trial
    order) with its Pareto flag, and how many trials measured a setting again (two workers
    that took one grid point at once, or a retried point; a setting the sampler asks for again
    is not measured again but copied)."""

    name: str
    sweep: Sweep
    trials: tuple[int, ...]  # the trial number of each point
    done: int  # complete trials
    target: int
    running: int
    measured_twice: int


def result(study: optuna.Study, baseline: Point) -> Result:
    """What ``study`` holds now (from every worker), against the untouched model's ``baseline``."""
    complete = finished(study)
    first = distinct(study)
    measurements = sum(COPY_OF not in t.user_attrs for t in complete)
    numbers = [n for n, _ in first]
    points = [p for _, p in first]
    flags = pareto_flags([p.packed_bytes for p in points], [p.quality for p in points])
    return Result(
        study.study_name,
        Sweep(baseline, tuple(replace(p, pareto=f) for p, f in zip(points, flags, strict=True))),
        tuple(numbers),
        len(complete),
        target(study),
        counts(study)[TrialState.RUNNING],
        measurements - len(points),
    )
