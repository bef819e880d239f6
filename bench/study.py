"""Sweep-as-study targets: ``.venv/bin/python -m bench.study [--repeat N]``.

1. Workers: the digits CNN's default 36-point grid by one ``python -m optimizers sweep`` worker,
   then by two started together on one new SQLite study. The time is the study's own span (the
   first trial's start to the last trial's end, from the storage), so the workers' start-up and
   the sensitivity and recommendation each prints afterwards are left out; points measured twice
   are trials beyond the 36 distinct settings.
2. SIGKILL: one worker killed once it holds 12 finished trials and a running one, then the same
   command again: the finished trials (numbers and values) kept, the study completed.
3. Search: ``--search pareto`` (the grid plus as many per-layer trials again) against today's
   greedy recommendation, both within 1 point, on digits_cnn and digits_mlp.

Prints Markdown and writes ``bench/results/study.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

import sample_models
from optimizers import explore, keras_io, recommend, study, sweep
from optimizers.pipeline import OptimizationConfig

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1.0
GOALS = {"two_workers_ratio": 0.6, "measured_twice": 4}


def worker(sample: sample_models.Sample, storage: str, name: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "optimizers", "sweep", str(sample.model_path)]
    argv += ["--data", str(sample.data_path), "--storage", storage, "--study", name, "--json"]
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def span(storage: str, name: str) -> tuple[float, int, int]:
    """(seconds from the first trial's start to the last one's end, complete trials, distinct
    settings) of a finished study."""
    trials = optuna.load_study(study_name=name, storage=study.open_storage(storage)).get_trials(
        states=(TrialState.COMPLETE,)
    )
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    distinct = {json.dumps(t.user_attrs["recipe"], sort_keys=True) for t in trials}
    return (end - start).total_seconds(), len(trials), len(distinct)


def workers(n: int, tmp: Path, run: int) -> dict:
    sample = sample_models.get("digits_cnn")
    storage, name = f"sqlite:///{tmp / f'workers-{n}-{run}.db'}", f"cnn-{n}"
    started = time.perf_counter()
    procs = [worker(sample, storage, name) for _ in range(n)]
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, f"worker exited {p.returncode}: {err[-500:]}"
    wall = time.perf_counter() - started
    seconds, done, distinct = span(storage, name)
    return {"workers": n, "study_s": seconds, "wall_s": wall, "trials": done, "distinct": distinct}


def killed(tmp: Path) -> dict:
    sample = sample_models.get("digits_cnn")
    storage, name = f"sqlite:///{tmp / 'killed.db'}", "cnn-killed"
    doomed = worker(sample, storage, name)
    kept = None
    while doomed.poll() is None:
        try:
            kept = optuna.load_study(study_name=name, storage=study.open_storage(storage))
        except KeyError:
            time.sleep(0.5)
            continue
        states = [t.state for t in kept.get_trials()]
        if states.count(TrialState.COMPLETE) >= 12 and TrialState.RUNNING in states:
            doomed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    doomed.wait()
    assert kept is not None and doomed.returncode == -signal.SIGKILL
    before = {t.number: t.values for t in kept.get_trials(states=(TrialState.COMPLETE,))}
    running = [t.number for t in kept.get_trials(states=(TrialState.RUNNING,))]
    again = worker(sample, storage, name)
    out, err = again.communicate()
    assert again.returncode == 0, err[-500:]
    after = optuna.load_study(study_name=name, storage=study.open_storage(storage))
    done = {t.number: t.values for t in after.get_trials(states=(TrialState.COMPLETE,))}
    result = json.loads(out)["study"]
    return {
        "finished_before_kill": len(before),
        "left_running": running,
        "kept": sum(done.get(n) == v for n, v in before.items()),
        "failed_then_retried": [t.number for t in after.get_trials(states=(TrialState.FAIL,))],
        "done": result["done"],
        "target": result["target"],
        "distinct_points": len(json.loads(out)["points"]),
        "measured_twice": result["measured_twice"],
    }


def search(name: str) -> dict:
    sample = sample_models.get(name)
    model = keras_io.load_model(sample.model_path)
    prepared = explore.prepare(model, *keras_io.load_data(sample.data_path, model))
    grid = sweep.Grid()
    started = time.perf_counter()
    greedy = recommend.recommend(prepared, BUDGET, grid)
    greedy_s = time.perf_counter() - started
    identity = study.Identity.of_files(sample.model_path, sample.data_path)
    layers = list(recommend.layers(prepared))
    kept = study.open_study(study.open_storage(None), identity, grid, layers, search="pareto")
    started = time.perf_counter()
    study.run(kept, prepared, budget=BUDGET)
    pareto_s = time.perf_counter() - started
    found = study.result(kept, sweep.measure(prepared, OptimizationConfig()))
    best = found.sweep.best_within(BUDGET)
    uniform = found.sweep.uniform().best_within(BUDGET)
    assert best is not None and uniform is not None
    return {
        "sample": name,
        "float_quality": found.sweep.baseline.quality,
        "trials": found.done,
        "per_layer_points": sum(p.per_layer for p in found.sweep.points),
        "best_uniform_packed": uniform.packed_bytes,
        "greedy_packed": greedy.packed_bytes,
        "greedy_quality": greedy.quality,
        "greedy_s": greedy_s,
        "pareto_packed": best.packed_bytes,
        "pareto_quality": best.quality,
        "pareto_per_layer": best.per_layer,
        "pareto_s": pareto_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of one and two workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        runs = [workers(n, tmp, r) for r in range(args.repeat) for n in (1, 2)]
        kill = killed(tmp)
    searches = [search(name) for name in ("digits_cnn", "digits_mlp")]
    load = os.getloadavg()
    out = ROOT / "bench" / "results" / "study.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"goals": GOALS, "workers": runs, "killed": kill, "search": searches, "load": load},
            indent=2,
        )
    )
    print(f"load average before the searches: {load[0]:.1f} on {os.cpu_count()} cores")
    print("| workers | study s | wall s | trials | distinct | measured twice |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        twice = r["trials"] - r["distinct"]
        print(
            f"| {r['workers']} | {r['study_s']:.1f} | {r['wall_s']:.1f} | {r['trials']} "
            f"| {r['distinct']} | {twice} |"
        )
    for r in range(args.repeat):
        one, two = runs[2 * r], runs[2 * r + 1]
        print(
            f"run {r + 1}: two workers / one = {two['study_s'] / one['study_s']:.2f} (goal <= 0.6)"
        )
    print(f"SIGKILL: {json.dumps(kill)}")
    print(
        "| sample | float | best uniform packed | greedy packed (quality, s) | pareto packed "
        "(quality, per-layer, s) | trials |"
    )
    print("|---|---|---|---|---|---|")
    for s in searches:
        print(
            f"| {s['sample']} | {s['float_quality']:.2%} | {s['best_uniform_packed']:,} "
            f"| {s['greedy_packed']:,} ({s['greedy_quality']:.2%}, {s['greedy_s']:.0f} s) "
            f"| {s['pareto_packed']:,} ({s['pareto_quality']:.2%}, {s['pareto_per_layer']}, "
            f"{s['pareto_s']:.0f} s) | {s['trials']} |"
        )


if __name__ == "__main__":
    main()
