"""Trade-off targets on the samples: ``.venv/bin/python -m bench.sweep``.

Per sample: the default 36-point sweep and the sensitivity of every layer (wall seconds, once),
the recommended recipe against the smallest uniform setting within 1 point, the recipe applied
with ``python -m optimizers apply --recipe`` in a subprocess (its accuracy and bytes against the
sweep's), and both checked on the sample's training split, which no search saw. Prints a
Markdown table and writes ``bench/results/sweep.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sample_models
from optimizers import explore, keras_io, recommend, sweep
from optimizers.pipeline import OptimizationConfig, config_to_dict, describe

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1.0
GOALS = {"sweep_s": 10.0, "sensitivity_s": 5.0, "smaller": 0.15}


def applied(sample: sample_models.Sample, config: OptimizationConfig) -> dict:
    """What ``apply --recipe`` reports for ``config`` on the sample's test set."""
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.json"
        recipe.write_text(json.dumps(config_to_dict(config)))
        args = ["apply", str(sample.model_path), "--data", str(sample.data_path)]
        run = subprocess.run(
            [sys.executable, "-m", "optimizers", *args, "--recipe", str(recipe), "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(run.stdout)["optimized"]


def row(sample: sample_models.Sample) -> dict:
    model = keras_io.load_model(sample.model_path)
    prepared = explore.prepare(model, *keras_io.load_data(sample.data_path, model))
    start = time.perf_counter()
    swept = sweep.sweep(prepared, sweep.Grid())
    sweep_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = recommend.sensitivity(prepared, recommend.LEVELS)
    sensitivity_s = time.perf_counter() - start
    start = time.perf_counter()
    found = recommend.recommend(prepared, BUDGET)
    recommend_s = time.perf_counter() - start
    best = swept.best_within(BUDGET)
    assert best is not None  # the float model itself is a grid point
    cli = applied(sample, found.config)
    held = explore.prepare(model, *keras_io.load_data(sample.train_path, model))
    held_base = sweep.measure(held, OptimizationConfig()).quality
    return {
        "sample": sample.name,
        "points": len(swept.points),
        "sweep_s": sweep_s,
        "layers": len(rows),
        "sensitivity_s": sensitivity_s,
        "recommend_s": recommend_s,
        "float_accuracy": swept.baseline.quality,
        "uniform": tradeoff_point(best),
        "recommended": tradeoff_point(found),
        "smaller": 1 - found.packed_bytes / best.packed_bytes,
        "apply_accuracy": cli["accuracy"],
        "apply_packed_bytes": cli["packed_bytes"],
        "apply_gzip_bytes": cli["gzip_bytes"],
        "held_out_float": held_base,
        "held_out_uniform": sweep.measure(held, best.config).quality,
        "held_out_recommended": sweep.measure(held, found.config).quality,
        "recipe": config_to_dict(found.config),
    }


def tradeoff_point(p: sweep.Point) -> dict:
    per_layer = " + per-layer" if p.config.overrides or p.config.skip else ""
    return {"setting": describe(p.config) + per_layer, **sweep.point_to_dict(p)}


def table(results: list[dict]) -> str:
    lines = [
        "| sample | points | sweep s | layers | sensitivity s | float | best uniform within 1 pt "
        "| packed | recommended accuracy | packed | smaller | apply --recipe | held-out drop "
        "uniform / recommended |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        u, rec = r["uniform"], r["recommended"]
        same = (r["apply_accuracy"], r["apply_packed_bytes"]) == (
            rec["accuracy"],
            rec["packed_bytes"],
        )
        gzip_gap = r["apply_gzip_bytes"] - rec["gzip_bytes"]
        lines.append(
            f"| {r['sample']} | {r['points']} | {r['sweep_s']:.1f} | {r['layers']} "
            f"| {r['sensitivity_s']:.2f} | {r['float_accuracy']:.2%} "
            f"| {u['setting']} ({u['accuracy']:.2%}) | {u['packed_bytes']:,} "
            f"| {rec['accuracy']:.2%} | {rec['packed_bytes']:,} | {r['smaller']:.0%} "
            f"| {'same accuracy and packed bytes' if same else 'DIFFERS'}, gzip {gzip_gap:+d} B "
            f"| {100 * (r['held_out_float'] - r['held_out_uniform']):.2f} / "
            f"{100 * (r['held_out_float'] - r['held_out_recommended']):.2f} pts |"
        )
    return "\n".join(lines)


def main() -> None:
    results = [row(s) for s in sample_models.SAMPLES]
    out = ROOT / "bench" / "results" / "sweep.json"
    out.write_text(json.dumps({"budget": BUDGET, "goals": GOALS, "rows": results}, indent=2))
    print(table(results))
    for r in results:
        print(
            f"{r['sample']}: sweep {r['sweep_s']:.1f} s (goal <= {GOALS['sweep_s']:g}), "
            f"sensitivity {r['sensitivity_s']:.2f} s (<= {GOALS['sensitivity_s']:g}), "
            f"recommended {r['smaller']:.0%} smaller than the best uniform (>= 15% on the digits "
            f"samples), search {r['recommend_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
