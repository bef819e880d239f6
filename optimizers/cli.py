"""Command line: ``python -m optimizers {apply,export,finetune,sweep} MODEL [options]``.

``apply`` measures a setting (and may write the optimized ``.keras`` file); ``export`` writes the
optimized model in a deployable format and verifies the file by running it on the data;
``finetune`` trains the model toward the setting on training data and measures the float,
post-training and fine-tuned models side by side; ``sweep`` measures a grid of uniform settings
as an Optuna study kept in a database (``optimizers/study.py``: any number of workers, resumed
after a crash), with its Pareto frontier, each layer's sensitivity and a per-layer recipe within
a budget. Exit
status 0 on success, 2 on any bad input (one ``error:`` line on stderr, no traceback, no output
file written).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from optimizers.clustering import GRANULARITIES as CLUSTER_GRANULARITIES
from optimizers.clustering import INITS, ClusteringConfig
from optimizers.datasets import PIXEL_RANGES
from optimizers.export import FORMAT_SUFFIXES, FORMATS
from optimizers.keras_io import InputError
from optimizers.pipeline import OptimizationConfig, config_from_dict, config_to_dict
from optimizers.pruning import SCOPES, STRUCTURES, PruningConfig
from optimizers.quantization import BITS, BLOCK_SIZES, GRANULARITIES, MODES, QuantizationConfig


class UsageError(Exception):
    """Bad command-line input: reported as ``error: ...`` with exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors follow the same rule
        raise UsageError(message)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--data", help=f"data to measure on ({DATA_FORMATS}); labels optional")
    add_data_arguments(p)
    p.add_argument("--recipe", help="JSON recipe (as downloaded from the app); flags override it")
    p.add_argument("--sparsity", type=float, help="fraction of weights to zero, 0 to 0.99")
    p.add_argument("--structure", choices=STRUCTURES, default="unstructured")
    p.add_argument("--scope", choices=SCOPES, default="per-layer")
    p.add_argument("--clusters", type=int, help="number of shared weight values per tensor")
    p.add_argument("--init", choices=INITS, default="linear", help="cluster initialization")
    p.add_argument("--cluster-granularity", choices=CLUSTER_GRANULARITIES, default="per-tensor")
    p.add_argument(
        "--no-preserve-sparsity",
        action="store_true",
        help="let clustering move pruned zeros (by default they stay zero)",
    )
    p.add_argument("--bits", type=int, choices=BITS, help="quantization bit width")
    p.add_argument("--mode", choices=MODES, default="symmetric", help="quantization mode")
    p.add_argument("--granularity", choices=GRANULARITIES, default="per-channel")
    p.add_argument(
        "--block-size",
        type=int,
        choices=BLOCK_SIZES,
        help="one scale per block of this many inputs of each output channel (Dense kernels)",
    )
    p.add_argument(
        "--data-aware",
        action="store_true",
        help="prune, cluster and round each layer with its calibration inputs (GPTQ, "
        "SparseGPT, clipping, refit shared values, bias correction); needs --calibration",
    )
    p.add_argument(
        "--calibration", help=".npz with x: calibration inputs, never the evaluation data"
    )
    p.add_argument("--skip", action="append", default=[], metavar="LAYER", help="leave a layer")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


DATA_FORMATS = ".npz with x and y, .zip of image folders, .csv or .parquet with a label column"


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """How to read the data files and the model: wherever ``--data`` or ``--train`` is."""
    p.add_argument(
        "--pixel-range",
        choices=PIXEL_RANGES,
        help="scale the pixels of images read from a .zip to this range (default: 0-255 when "
        "the model starts with Rescaling or Normalization, else 0-1)",
    )
    p.add_argument("--label-column", metavar="NAME", help="a table's label column")
    p.add_argument(
        "--trust-code",
        action="append",
        default=[],
        metavar="FILE.py",
        help="import this Python file before loading the model, so the custom layers it "
        "registers load (repeatable; only for code you trust)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m optimizers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    apply = sub.add_parser("apply", help="prune, cluster and quantize a model and measure it")
    add_config_arguments(apply)
    apply.add_argument("--output", help="write the optimized model here (.keras)")
    export = sub.add_parser(
        "export", help="write the optimized model as .keras or LiteRT and verify the file"
    )
    add_config_arguments(export)
    export.add_argument("--format", required=True, choices=FORMATS, help="file format")
    export.add_argument("--output", required=True, help="the file to write")
    finetune = sub.add_parser(
        "finetune", help="train the model toward the setting (QAT, PQAT, CQAT, PCQAT) and measure"
    )
    add_config_arguments(finetune)
    add_finetune_arguments(finetune)
    add_sweep_arguments(
        sub.add_parser(
            "sweep", help="measure a grid of settings, each layer's sensitivity, and recommend"
        )
    )
    return parser


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--data", required=True, help=f"data to measure on ({DATA_FORMATS})")
    add_data_arguments(p)
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="accuracy points (agreement without labels) the recommended recipe may lose",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="AXIS=V1,V2",
        help="values of one axis (sparsity, clusters, bits; 'off' leaves a stage out), "
        "repeat per axis; default sparsity=0,0.5,0.75,0.9 clusters=off,16,4 bits=off,8,4",
    )
    p.add_argument(
        "--data-aware",
        action="store_true",
        help="prune, cluster and round every point with the calibration inputs (what is "
        "reachable without training); needs --calibration",
    )
    p.add_argument(
        "--calibration", help=".npz with x: calibration inputs, never the evaluation data"
    )
    add_study_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    from optimizers import study

    p.add_argument(
        "--storage",
        help="Optuna storage URL the study is kept in: sqlite:///FILE, postgresql://... or "
        f"mysql://... (default ${study.STORAGE_ENV}, else the app's {study.default_storage()})",
    )
    p.add_argument(
        "--study",
        help="study name; workers with the same storage and name share the work "
        "(default: the model's name and a hash of model, data and grid)",
    )
    p.add_argument("--trials", type=int, help="measure at most this many trials in this worker")
    p.add_argument(
        "--search",
        choices=study.SEARCHES,
        default="grid",
        help="grid: the uniform settings; pareto: then as many per-layer settings again, "
        "recommending from the study's Pareto front",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=study.HEARTBEAT,
        help="seconds between a running trial's heartbeats; a trial silent for two is retried",
    )


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    from optimizers.finetune import FinetuneConfig

    default = FinetuneConfig()
    p.add_argument("--train", required=True, help=f"labelled data to train on ({DATA_FORMATS})")
    p.add_argument("--epochs", type=int, default=default.epochs, help="training epochs")
    p.add_argument("--learning-rate", type=float, default=default.learning_rate, help="Adam peak")
    p.add_argument("--batch-size", type=int, default=default.batch_size)
    p.add_argument("--seed", type=int, default=default.seed, help="same seed, same weights")
    p.add_argument("--output", help="write the fine-tuned model here (.keras)")


def config_from_args(args: argparse.Namespace) -> OptimizationConfig:
    """The recipe file (if any), with the stage flags given on the command line on top."""
    base = OptimizationConfig()
    if args.recipe:
        try:
            base = config_from_dict(json.loads(Path(args.recipe).read_text()))
        except FileNotFoundError:
            raise UsageError(f"{args.recipe}: no such recipe file") from None
        except IsADirectoryError:
            raise UsageError(f"{args.recipe} is a folder, not a recipe file") from None
        except OSError as e:
            raise UsageError(f"{args.recipe} cannot be read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UsageError(f"{args.recipe} is not valid JSON") from None
    changes: dict[str, Any] = {}
    if args.scope != "per-layer" and args.sparsity is None:
        raise UsageError(f"--scope {args.scope} needs --sparsity")
    if args.sparsity is not None or args.structure != "unstructured":
        changes["pruning"] = PruningConfig(
            0.5 if args.sparsity is None else args.sparsity, args.structure, args.scope
        )
    if args.clusters is not None:
        changes["clustering"] = ClusteringConfig(
            args.clusters,
            args.init,
            preserve_sparsity=not args.no_preserve_sparsity,
            granularity=args.cluster_granularity,
        )
    if args.block_size is not None and args.bits is None:
        raise UsageError("--block-size needs --bits")
    if args.bits is not None:
        changes["quantization"] = QuantizationConfig(
            args.bits, args.mode, args.granularity, args.block_size
        )
    if args.data_aware:
        changes["data_aware"] = True
    if args.skip:
        changes["skip"] = tuple(args.skip)
    return replace(base, **changes)


def check_output(path: str, suffix: str = ".keras") -> Path:
    """The output path, refused before any work if it cannot be written as asked."""
    out = Path(path)
    if out.suffix != suffix:
        raise UsageError(f"{out.name}: the output must end in {suffix}")
    if out.is_dir():
        raise UsageError(f"{out} is a folder; give a file name for the output")
    if not out.parent.exists():
        raise UsageError(f"{out.parent}: no such folder for the output")
    return out


def prepared_model(args: argparse.Namespace, config: OptimizationConfig) -> Any:
    """The model of ``args`` with its data, ready for ``explore.run``; refuses a ``config``
    that names layers the model has no eligible weights in."""
    from optimizers import datasets, explore, keras_io

    keras_io.import_trusted(args.trust_code)
    model = keras_io.load_model(args.model)
    x = y = None
    if args.data:
        data = datasets.read(args.data, model, None, args.pixel_range, args.label_column)
        x, y = data.x, data.y
        if data.note:  # what was decided while reading, beside the answer on stdout
            print(f"data: {data.name}: {data.note}", file=sys.stderr)
    prepared = explore.prepare(model, x, y)
    calibration = getattr(args, "calibration", None)
    if config.data_aware and calibration is None:
        raise UsageError("--data-aware needs --calibration: an .npz of inputs other than --data")
    if calibration is not None and not config.data_aware:
        raise UsageError("--calibration is used by data-aware settings only; add --data-aware")
    if calibration is not None:
        xc = datasets.read(calibration, model, None, args.pixel_range, args.label_column).x
        prepared = explore.calibrate(prepared, explore.Calibration(xc, Path(calibration).name))
    layers = list(dict.fromkeys(r.layer for r in prepared.refs))
    unknown = [name for name in (*config.skip, *dict(config.overrides)) if name not in layers]
    if unknown:
        shown = ", ".join(layers[:8]) + (", ..." if len(layers) > 8 else "")
        raise UsageError(
            f"{Path(args.model).name} has no eligible layer named {', '.join(unknown)} "
            f"(its layers with kernels: {shown or 'none'})"
        )
    return prepared


def apply_command(args: argparse.Namespace) -> dict[str, Any]:
    from optimizers import explore

    config = config_from_args(args)
    output = None if args.output is None else check_output(args.output)
    prepared = prepared_model(args, config)
    baseline = explore.run(prepared, OptimizationConfig())
    optimized = explore.run(prepared, config)
    if output is not None:
        output.write_bytes(
            explore.optimized_model_bytes(optimized.source or prepared, optimized.weights)
        )
    return {
        "model": Path(args.model).name,
        "config": config_to_dict(config),
        "baseline": explore.outcome_to_dict(baseline),
        "optimized": explore.outcome_to_dict(optimized),
        "calibration": explore.calibration_words(prepared),
        "output": None if output is None else str(output),
    }


def export_command(args: argparse.Namespace) -> dict[str, Any]:
    from optimizers import delivery, explore

    config = config_from_args(args)
    output = check_output(args.output, FORMAT_SUFFIXES[args.format])
    prepared = prepared_model(args, config)
    exported = delivery.export_file(prepared, explore.run(prepared, config), args.format)
    output.write_bytes(exported.data)
    return {
        "model": Path(args.model).name,
        "config": config_to_dict(config),
        **delivery.exported_to_dict(exported),
        "calibration": explore.calibration_words(prepared),
        "output": str(output),
    }


def finetune_command(args: argparse.Namespace) -> dict[str, Any]:
    from optimizers import explore, finetune, keras_io

    config = config_from_args(args)
    if config.data_aware:
        raise UsageError(
            "finetune trains the weights instead; --data-aware is for apply and export"
        )
    settings = finetune.FinetuneConfig(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    output = None if args.output is None else check_output(args.output)
    if args.data is None:
        raise UsageError("finetune needs --data: the labelled test set to measure on")
    prepared = prepared_model(args, config)
    if prepared.y is None:
        raise UsageError(f"{Path(args.data).name} has no labels (y); finetune measures accuracy")
    x_train, y_train = finetune.load_training_data(
        args.train, prepared.model, None, args.pixel_range, args.label_column
    )
    result = finetune.finetune(prepared.model, config, x_train, y_train, settings)
    tuned = explore.run(explore.prepare(result.model, prepared.x, prepared.y), result.config)
    if output is not None:
        output.write_bytes(keras_io.save_model_bytes(result.model))
    return {
        "model": Path(args.model).name,
        "config": config_to_dict(config),
        "finetuned_config": config_to_dict(result.config),
        "settings": finetune.finetune_config_to_dict(settings),
        "baseline": explore.outcome_to_dict(explore.run(prepared, OptimizationConfig())),
        "post_training": explore.outcome_to_dict(explore.run(prepared, config)),
        "finetuned": explore.outcome_to_dict(tuned),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "output": None if output is None else str(output),
    }


def sweep_command(args: argparse.Namespace) -> dict[str, Any]:
    from optimizers import explore, recommend, study, sweep

    grid = replace(sweep.grid_from_strings(args.grid), data_aware=args.data_aware)
    sweep.check_budget(args.budget)
    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    storage = study.open_storage(args.storage or study.default_storage(), args.heartbeat)
    prepared = prepared_model(args, OptimizationConfig(data_aware=args.data_aware))
    identity = study.Identity.of_files(args.model, args.data)
    if args.calibration is not None:  # prepared_model refused it without --data-aware
        calibration = Path(args.calibration).read_bytes()
        identity = identity.calibrated(hashlib.sha256(calibration).hexdigest())
    layers = list(recommend.layers(prepared))
    kept = study.open_study(storage, identity, grid, layers, args.study, args.search)
    study.run(kept, prepared, args.trials, args.budget)
    found = study.result(kept, sweep.measure(prepared, OptimizationConfig()))
    swept = found.sweep
    best = swept.uniform().best_within(args.budget)
    if args.search == "pareto":
        recommended = swept.best_within(args.budget) or swept.baseline
    else:
        recommended = recommend.recommend(prepared, args.budget, grid)
    return {
        "model": Path(args.model).name,
        "budget": args.budget,
        "study": {
            "name": kept.study_name,
            "search": args.search,
            "done": found.done,
            "target": found.target,
            "running": found.running,
            "measured_twice": found.measured_twice,
        },
        "baseline": sweep.point_to_dict(swept.baseline),
        "points": [
            {**sweep.grid_point_to_dict(p), "per_layer": p.per_layer, "trial": number}
            for p, number in zip(swept.points, found.trials, strict=True)
        ],
        "calibration": explore.calibration_words(prepared),
        "sensitivity": [
            recommend.sensitivity_to_dict(row)
            for row in recommend.sensitivity(prepared, recommend.LEVELS, data_aware=args.data_aware)
        ],
        "recommended": {
            "recipe": config_to_dict(recommended.config),
            **sweep.point_to_dict(recommended),
        },
        "best_uniform": None if best is None else sweep.grid_point_to_dict(best),
    }


# How a gzip figure that is not ``gzip_exact`` (``size.Sizes``) is marked wherever it is printed.
ESTIMATED = "estimated from a sample"


def print_sweep(result: dict[str, Any]) -> None:
    def quality(d: dict[str, Any]) -> str:
        value = d["agreement"] if d["accuracy"] is None else d["accuracy"]
        return f"{value:>8.2%}"

    def setting(d: dict[str, Any]) -> str:
        return f"{d['sparsity']:>8.0%} {d['clusters'] or 'off':>8} {d['bits'] or 'off':>5}"

    print(f"model      {result['model']}, budget {result['budget']:g} points")
    if result["calibration"]:
        print(f"data-aware every point, calibrated on {result['calibration']}")
    found = result["study"]
    print(
        f"study      {found['name']}: {found['done']} of {found['target']} trials done, "
        f"{found['measured_twice']} measured twice"
    )
    print(f"{'sparsity':>8} {'clusters':>8} {'bits':>5} {'quality':>8} {'packed':>9} {'gzip':>9}")
    base = result["baseline"]
    print(f"{'float':>23} {quality(base)} {base['packed_bytes']:>9,} {base['gzip_bytes']:>9,}")
    for d in result["points"]:
        mark = (" pareto" if d["pareto"] else "") + (" per-layer" if d["per_layer"] else "")
        print(f"{setting(d)} {quality(d)} {d['packed_bytes']:>9,} {d['gzip_bytes']:>9,}{mark}")
    if not all(d["gzip_exact"] for d in result["points"]):
        print(f"gzip figures of the optimized settings are {ESTIMATED} of the file")
    print("sensitivity (quality with only this layer optimized), most fragile first")
    for row in result["sensitivity"]:
        levels = ", ".join(f"{v['setting']} {v['quality']:.1%}" for v in row["levels"])
        print(f"  {row['layer']}: {levels}")
    best, rec = result["best_uniform"], result["recommended"]
    if best is not None:
        print(f"best uniform  {setting(best)} {quality(best)} {best['packed_bytes']:>9,} packed")
    print(f"recommended   {quality(rec)} {rec['packed_bytes']:>9,} packed, recipe:")
    print(json.dumps(rec["recipe"]))


def print_finetune(result: dict[str, Any]) -> None:
    print(f"model      {result['model']}")
    print(
        f"trained    {result['epochs_run']} epochs in {result['seconds']:.1f} s, "
        f"kept epoch {result['best_epoch']}"
    )
    print(f"{'':<14} {'accuracy':>9} {'gzip bytes':>11} {'packed bytes':>13}")
    for key in ("baseline", "post_training", "finetuned"):
        d = result[key]
        about = "" if d["gzip_exact"] else f"  (gzip {ESTIMATED})"
        print(
            f"{key:<14} {d['accuracy']:>9.2%} {d['gzip_bytes']:>11,} {d['packed_bytes']:>13,}{about}"
        )
    if result["output"]:
        print(f"wrote {result['output']}")


def print_summary(result: dict[str, Any]) -> None:
    base, opt = result["baseline"], result["optimized"]

    def acc(d: dict[str, Any]) -> str:
        return "n/a (no labels)" if d["accuracy"] is None else f"{d['accuracy']:.2%}"

    print(f"model      {result['model']}")
    if result["calibration"]:
        print(f"calibrated on {result['calibration']}")
    print(f"accuracy   {acc(base)} -> {acc(opt)}")
    for key, label in [
        ("size_bytes", "file"),
        ("gzip_bytes", "gzip"),
        ("packed_bytes", "packed"),
        ("entropy_bytes", "entropy"),
    ]:
        ratio = base[key] / opt[key] if opt[key] else float("nan")
        about = "" if key != "gzip_bytes" or opt["gzip_exact"] else f", {ESTIMATED}"
        print(
            f"{label:<10} {base[key]:>10,} -> {opt[key]:>10,} bytes  ({ratio:.2f}x smaller{about})"
        )
    print(f"{'tensor':<40} {'sparsity':>8} {'values':>7} {'bits':>5}")
    for layer in opt["layers"]:
        bits = layer["bits"] or "-"
        print(
            f"{layer['name']:<40} {layer['sparsity']:>8.1%} {layer['unique_values']:>7} {bits:>5}"
        )
    if result["output"]:
        print(f"wrote {result['output']}")


def print_export(result: dict[str, Any]) -> None:
    def acc(key: str) -> str:
        return "n/a (no labels)" if result[key] is None else f"{result[key]:.2%}"

    print(f"model      {result['model']} -> {result['output']} ({result['format']})")
    if result["calibration"]:
        print(f"calibrated on {result['calibration']}")
    print(f"accuracy   preview {acc('preview_accuracy')}, file {acc('file_accuracy')}")
    print(f"size       {result['size_bytes']:,} bytes, {result['gzip_bytes']:,} gzipped")
    if result["latency_ms"] is not None:
        from optimizers.latency import format_time as time

        print(
            f"speed      {time(result['latency_ms'])} (batch 1, 1 thread; "
            f"{time(result['latency_threads_ms'])} with {result['latency_threads']} threads): "
            f"{result['speed_words']} {'as' if result['speed_verdict'] == 'same speed' else 'than'}"
            " the original float32 file "
            f"({time(result['baseline_latency_ms'])} in the same run)"
        )
    if result["departs_from_preview"]:
        print("warning    the file's accuracy departs from the preview's by more than 0.5 points")


COMMANDS = {
    "apply": (apply_command, print_summary),
    "export": (export_command, print_export),
    "finetune": (finetune_command, print_finetune),
    "sweep": (sweep_command, print_sweep),
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        command, summary = COMMANDS[args.command]
        result = command(args)
    except (UsageError, InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        summary(result)
    return 0
