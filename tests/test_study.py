"""Sweeps kept as Optuna studies: two worker processes on one study (SQLite and a real
PostgreSQL server), a worker killed with SIGKILL and started again, and a study of another model
refused. Workers are ``python -m optimizers sweep`` processes on the digits MLP sample and a
6-point grid."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sample_models
from optimizers import study, sweep
from optimizers.cli import main
from optimizers.pipeline import config_from_dict
from optimizers.sweep import pareto_flags

ROOT = Path(__file__).resolve().parents[1]
MLP, CNN = sample_models.get("digits_mlp"), sample_models.get("digits_cnn")
GRID = ["--grid", "sparsity=0,0.5,0.9", "--grid", "clusters=off", "--grid", "bits=off,4"]
POINTS = 6


def worker(storage: str, name: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "optimizers", "sweep", str(MLP.model_path)]
    argv += ["--data", str(MLP.data_path), *GRID, "--storage", storage, "--study", name]
    return subprocess.Popen(
        [*argv, "--json", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    return json.loads(out)


def two_workers_share_the_grid(storage: str, name: str) -> None:
    """Both start at once (so both try to create the study) with a share of half the grid each:
    together they measure every point exactly once, and either one reads the whole study."""
    first, second = (worker(storage, name, "--trials", str(POINTS // 2)) for _ in range(2))
    results = [finish(first), finish(second)]
    kept = optuna.load_study(study_name=name, storage=study.open_storage(storage))
    trials = kept.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == POINTS
    by_worker = {t.user_attrs[study.WORKER] for t in trials}
    assert by_worker == {f"{socket.gethostname()}:{p.pid}" for p in (first, second)}
    settings = [config_from_dict(t.user_attrs["recipe"]) for t in trials]
    grid = sweep.grid_from_strings(GRID[1::2])
    assert sorted(map(str, settings)) == sorted(str(sweep.uniform(s)) for s in grid.settings())
    last = max(results, key=lambda r: r["study"]["done"])
    assert last["study"] | {"name": name} == {
        "name": name,
        "search": "grid",
        "done": POINTS,
        "target": POINTS,
        "running": 0,
        "measured_twice": 0,
    }
    assert len(last["points"]) == POINTS and not any(p["per_layer"] for p in last["points"])
    # the figures are the ones a sweep in one process measures
    alone = sweep_in_memory()
    assert sorted((p["packed_bytes"], p["accuracy"]) for p in last["points"]) == sorted(
        (p.packed_bytes, p.accuracy) for p in alone.points
    )


def run_main(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def sweep_prepared():
    from optimizers import explore, keras_io

    model = keras_io.load_model(MLP.model_path)
    return explore.prepare(model, *keras_io.load_data(MLP.data_path, model))


def sweep_in_memory() -> sweep.Sweep:
    return sweep.sweep(sweep_prepared(), sweep.grid_from_strings(GRID[1::2]))


def test_two_workers_share_one_sqlite_study(tmp_path: Path) -> None:
    two_workers_share_the_grid(f"sqlite:///{tmp_path / 'sweeps.db'}", "shared")


# --- a real PostgreSQL server: a throwaway cluster in a temporary folder ---


def postgres_bin() -> Path:
    found = [shutil.which("pg_config")]
    if found[0]:
        out = subprocess.run([found[0], "--bindir"], capture_output=True, text=True).stdout
        if (Path(out.strip()) / "initdb").exists():
            return Path(out.strip())
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    pytest.fail("PostgreSQL is not installed (no initdb found): run `make postgresql`")


def known_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a free loopback port, its cluster in a temporary folder; as root
    (CI) it runs as the ``postgres`` user, since ``initdb`` refuses root."""
    bindir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="sweeps-pg-"))
    data, port = folder / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if known_user(u)), None)
        if user is None or not shutil.which("runuser"):
            pytest.fail("no user to run PostgreSQL as (initdb refuses root): run `make postgresql`")
        shutil.chown(folder, user)
        as_user = ["runuser", "-u", user, "--"]

    def pg(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, cwd=folder)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        pg(*pg_ctl, "-o", options, "-l", str(folder / "log"), "-w", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, *pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(postgres: str) -> None:
    two_workers_share_the_grid(postgres, "shared")


# --- a worker killed mid-sweep ---


def test_a_killed_worker_loses_no_finished_trial_and_the_study_completes(
    tmp_path: Path, capsys
) -> None:
    storage, name = f"sqlite:///{tmp_path / 'sweeps.db'}", "killed"
    doomed = worker(storage, name, "--heartbeat", "1")
    db = sqlite3.connect(tmp_path / "sweeps.db", timeout=60)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and doomed.poll() is None:
        # kill it once it holds a finished trial and a running one that beats its heartbeat
        # (a trial killed before its first beat is one Optuna cannot tell from a live one)
        try:
            states = dict(
                db.execute(
                    "SELECT t.state, COUNT(*) FROM trials t LEFT JOIN trial_heartbeats h "
                    "ON h.trial_id = t.trial_id WHERE t.state = 'COMPLETE' OR h.trial_id IS NOT "
                    "NULL AND t.state = 'RUNNING' GROUP BY t.state"
                ).fetchall()
            )
        except sqlite3.OperationalError:  # the tables are not made yet
            states = {}
        if states.get("COMPLETE") and states.get("RUNNING"):
            doomed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    db.close()
    doomed.wait(timeout=60)
    assert doomed.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    kept = optuna.load_study(study_name=name, storage=study.open_storage(storage))
    before = {t.number: t.values for t in kept.get_trials(states=(TrialState.COMPLETE,))}
    left_running = [t.number for t in kept.get_trials(states=(TrialState.RUNNING,))]
    assert before and len(before) < POINTS and left_running

    # started again (here in the test's process: the same command, without a second start-up)
    argv = ["sweep", str(MLP.model_path), "--data", str(MLP.data_path), *GRID]
    argv += ["--storage", storage, "--study", name, "--heartbeat", "1", "--json"]
    code, out, err = run_main(argv, capsys)  # its beats, 1 s, tell how soon a silent trial is dead
    assert code == 0, err
    result = json.loads(out)
    after = optuna.load_study(study_name=name, storage=study.open_storage(storage))
    done = {t.number: t.values for t in after.get_trials(states=(TrialState.COMPLETE,))}
    assert {n: done[n] for n in before} == before  # every finished trial kept as it was
    assert [t.number for t in after.get_trials(states=(TrialState.FAIL,))] == left_running
    assert len(result["points"]) == POINTS and result["study"]["done"] == POINTS
    assert result["study"]["running"] == 0


# --- identity ---


def test_a_study_of_another_model_or_grid_is_refused(tmp_path: Path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    small = ["--grid", "sparsity=0,0.5", "--grid", "clusters=off", "--grid", "bits=off"]
    base = ["--storage", storage, "--study", "mine", *small, "--json"]
    mlp = ["sweep", str(MLP.model_path), "--data", str(MLP.data_path)]
    code, out, err = run_main([*mlp, *base], capsys)
    assert code == 0, err
    assert json.loads(out)["study"]["done"] == 2
    cnn = ["sweep", str(CNN.model_path), "--data", str(CNN.data_path)]
    code, out, err = run_main([*cnn, *base], capsys)
    assert code == 2 and out == "" and len(err) == 1, err
    assert err[0].startswith("error: study mine measured other model (digits_mlp.keras")
    other_data = ["sweep", str(MLP.model_path), "--data", str(MLP.train_path)]
    code, out, err = run_main([*other_data, *base], capsys)
    assert code == 2 and "study mine measured other data" in err[0], err
    code, out, err = run_main([*mlp, *base, "--grid", "bits=off,4"], capsys)
    assert code == 2 and "study mine sweeps another grid (sparsity 0,0.5" in err[0], err
    aware = ["--data-aware", "--calibration", str(MLP.train_path)]
    code, out, err = run_main([*mlp, *base, *aware], capsys)
    assert code == 2 and "study mine measured other data" in err[0], err
    # the study itself is untouched by the refused runs
    kept = optuna.load_study(study_name="mine", storage=study.open_storage(storage))
    assert len(kept.get_trials()) == 2


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--storage", "redis://host"], "--storage must be a database URL"),
        (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot be opened"),
        (["--trials", "0"], "--trials must be at least 1, got 0"),
        (["--heartbeat", "0"], "heartbeat must be a whole number of seconds >= 1, got 0"),
        (["--search", "random"], "invalid choice"),
    ],
)
def test_bad_study_options_exit_2_with_one_error_line(args, phrase, capsys) -> None:
    argv = ["sweep", str(MLP.model_path), "--data", str(MLP.data_path), *args]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == "" and len(err) == 1, err
    assert err[0].startswith("error: ") and phrase in err[0], err


def test_the_default_storage_is_the_users_cache_unless_the_environment_says(monkeypatch) -> None:
    monkeypatch.delenv(study.STORAGE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert study.default_storage() == "sqlite:////somewhere/model-optimization-explorer/sweeps.db"
    monkeypatch.setenv(study.STORAGE_ENV, "postgresql://u@db/sweeps")
    assert study.default_storage() == "postgresql://u@db/sweeps"
    assert study.redacted("postgresql://u:secret@db/s") == "postgresql://u:***@db/s"


# --- the per-layer search ---


def test_pareto_search_adds_per_layer_settings_and_recommends_from_its_front(capsys) -> None:
    argv = ["sweep", str(MLP.model_path), "--data", str(MLP.data_path), *GRID, "--json"]
    code, out, err = run_main([*argv, "--search", "pareto", "--study", "pareto"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["study"]["done"] == result["study"]["target"] == 2 * POINTS
    layered = [p for p in result["points"] if p["per_layer"]]
    assert layered and len(result["points"]) == POINTS + len(layered)
    packed = [p["packed_bytes"] for p in result["points"]]
    quality = [p["accuracy"] for p in result["points"]]
    front = [p for p in result["points"] if p["pareto"]]
    assert [p["pareto"] for p in result["points"]] == pareto_flags(packed, quality)
    rec, base = result["recommended"], result["baseline"]
    fits = [p for p in result["points"] if sweep.within(p["accuracy"], base["accuracy"], 1.0)]
    smallest = min(fits, key=lambda p: p["packed_bytes"])
    assert rec["packed_bytes"] == smallest["packed_bytes"] and smallest in front
    assert rec["packed_bytes"] <= result["best_uniform"]["packed_bytes"]
    again = sweep.measure(sweep_prepared(), config_from_dict(rec["recipe"]))
    assert (again.accuracy, again.packed_bytes) == (rec["accuracy"], rec["packed_bytes"])
    # the first trial after the grid is the smallest uniform point within budget with one
    # layer moved to a smaller frontier setting
    kept = optuna.load_study(
        study_name="pareto", storage=study.open_storage(study.default_storage())
    )
    grid_trials, seed = kept.trials[:POINTS], kept.trials[POINTS]
    start = next(
        t
        for t in grid_trials
        if t.values[1] == result["best_uniform"]["packed_bytes"]
        and t.values[0] == result["best_uniform"]["accuracy"]
    )
    moved = {name.split("/")[0] for name, v in seed.params.items() if v != start.params[name]}
    assert len(moved) == 1 and seed.values[1] < start.values[1]


def test_grids_round_trip_through_the_study_with_data_awareness() -> None:
    aware = sweep.Grid((0.0, 0.5), (None,), (4,), data_aware=True)
    assert study.grid_from_list(study.grid_to_list(aware)) == aware
    assert study.grid_words(aware).endswith(" · data-aware")
    old = [[0.0, 0.5], [None], [4]]  # stored before data-aware sweeps
    assert study.grid_from_list(old) == sweep.Grid((0.0, 0.5), (None,), (4,))
    who = study.Identity("m.keras", "a" * 64, "b" * 64)
    assert who.default_name(aware) != who.default_name(replace(aware, data_aware=False))
    assert who.calibrated("c" * 64).data_sha256 not in (who.data_sha256, "c" * 64)


def test_a_points_gzip_estimate_round_trips_through_a_trial() -> None:
    """Whether a point's gzip figure is an estimate is kept with its trial; a trial kept before
    that was recorded counts as an estimate (its model's file size is not in it)."""
    from optimizers.pipeline import OptimizationConfig

    for exact in (True, False):
        p = sweep.Point(OptimizationConfig(), 0.9, 1.0, None, 100, 50, 40, gzip_exact=exact)
        attrs = study.point_attrs(p)
        trial = optuna.trial.create_trial(values=[0.9, 100], user_attrs=attrs)
        assert study.trial_point(trial) == p
    attrs.pop("gzip_exact")
    old = study.trial_point(optuna.trial.create_trial(values=[0.9, 100], user_attrs=attrs))
    assert not old.gzip_exact


def test_levels_run_gentle_to_harsh() -> None:
    assert study.levels(sweep.Grid((0.9, 0.0, 0.5), (4, None, 16), (4, None, 8))) == (
        [0.0, 0.5, 0.9],
        [None, 16, 4],
        [None, 8, 4],
    )
