"""Whole-model figures from per-tensor reports, and plain sentences about what a setting did.

Pure functions over ``explore.Outcome``/``TensorReport`` values: no Streamlit, so they are easy
to test and the pages stay free of arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optimizers import latency
from optimizers.delivery import Exported
from optimizers.explore import Outcome
from optimizers.export import CONTAINER_BITS, FORMAT_NAMES, FORMAT_SUFFIXES, natural_format
from optimizers.pipeline import OptimizationConfig, TensorReport, describe
from optimizers.quantization import QuantizationConfig, code_range
from optimizers.size import index_bits

KB = 1000
BUDGET_POINTS = 1.0  # accuracy points a recommended file may lose against the float model


def format_bytes(n: int | None) -> str:
    """``12.3 kB``/``4.5 MB`` (SI units), or a dash when unknown."""
    if n is None:
        return "—"
    if n < KB:
        return f"{n} B"
    if n < KB * KB:
        return f"{n / KB:.1f} kB"
    return f"{n / (KB * KB):.2f} MB"


def percent(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def zeros(reports: Sequence[TensorReport]) -> int:
    return sum(round(r.sparsity * r.params) for r in reports)


def overall_sparsity(reports: Sequence[TensorReport]) -> float:
    """Fraction of zeros among the weights of ``reports``."""
    total = sum(r.params for r in reports)
    return zeros(reports) / total if total else 0.0


def max_distinct(reports: Sequence[TensorReport]) -> int:
    """The most distinct values any one tensor holds."""
    return max((r.unique_values for r in reports), default=0)


def ratio(before: int | None, after: int | None) -> float | None:
    return before / after if before and after else None


def min_sqnr(reports: Sequence[TensorReport]) -> tuple[float, str] | None:
    """The lowest SQNR (dB) among changed tensors, with the tensor's path."""
    pairs = [(r.sqnr_db, r.path) for r in reports if r.sqnr_db is not None]
    return min(pairs) if pairs else None


def quality(outcome: Outcome) -> tuple[str, float] | None:
    """``("accuracy", value)`` with labels, ``("agreement", value)`` without, else ``None``."""
    if outcome.accuracy is not None:
        return "accuracy", outcome.accuracy
    if outcome.fidelity is not None:
        return "agreement", outcome.fidelity.agreement
    return None


def _pruning(config: OptimizationConfig, changed: Sequence[TensorReport]) -> str | None:
    p = config.pruning
    pruned = [r for r in changed if "prune" in r.techniques]
    if p is None or not pruned:
        return None
    n, total = zeros(pruned), sum(r.params for r in pruned)
    tensors = f"{len(pruned)} tensor{'' if len(pruned) == 1 else 's'}"
    counted = f"{n:,} of {total:,} weights in {tensors} are now exactly zero"
    # With calibration data the weights kept move to make up for the others (SparseGPT).
    least = "its layer's outputs on the calibration data depend on least"
    made_up = ", and moved the weights kept to make up for them" if config.data_aware else ""
    if p.structure == "2:4":
        which = "the 2 smallest of every 4 neighbouring input weights"
        if config.data_aware:
            which = f"the 2 of every 4 neighbouring input weights {least}"
        return (
            f"2:4 pruning zeroed {which}{made_up}: {counted} ({percent(n / total)}), a pattern "
            "sparse hardware can skip."
        )
    if p.scope == "global":
        lo = min(pruned, key=lambda r: r.sparsity)
        hi = max(pruned, key=lambda r: r.sparsity)
        return (
            f"Pruning used one magnitude threshold for all layers{made_up}, so {counted} "
            f"({percent(n / total)}); per tensor this ranges from {percent(lo.sparsity, 0)} in "
            f"{lo.path} to {percent(hi.sparsity, 0)} in {hi.path}."
        )
    which = f"the {percent(p.sparsity, 0)} smallest-magnitude weights of each tensor"
    if config.data_aware:
        which = f"the {percent(p.sparsity, 0)} of each tensor's weights {least}"
    return (
        f"Pruning set {which} to zero{made_up}: {counted}, which compression and sparse formats "
        "store almost for free."
    )


def _clustering(config: OptimizationConfig, changed: Sequence[TensorReport]) -> str | None:
    c = config.clustering
    clustered = [r for r in changed if config.for_layer(r.layer).clustering == c]
    if c is None or not clustered:
        return None
    unit = "tensor" if c.granularity == "per-tensor" else "channel"

    def distinct(r: TensorReport) -> int:  # what the k shared values are counted against
        return r.unique_values if unit == "tensor" else r.max_channel_values

    most = max(clustered, key=distinct)
    scope = "each tensor" if unit == "tensor" else "each output channel"
    zero = " (zero kept as one of them)" if c.preserve_sparsity and config.pruning else ""
    n = distinct(most)
    fitted = ", fitted to the layer's outputs on the calibration data" if config.data_aware else ""
    return (
        f"Clustering replaced the weights of {scope} by at most {c.clusters} shared "
        f"values{zero}{fitted}: "
        f"{most.path} now uses {n} distinct values per {unit}, so a weight can be stored "
        f"as a {index_bits(n)}-bit index into a table of {n} numbers."
    )


def _quantization(config: OptimizationConfig, changed: Sequence[TensorReport]) -> str | None:
    q, c = config.grid, config.clustering  # after clustering, the grid's scales follow it
    quantized = [r for r in changed if r.bits is not None]
    if q is None or not quantized:
        return None
    lo, hi = code_range(q.bits, q.mode)
    unit = "channel" if q.granularity == "per-channel" else "tensor"
    scale = "one scale per output channel" if unit == "channel" else "one scale"
    if q.block_size is not None:
        scale = (
            f"one scale per block of {q.block_size} inputs in Dense kernels made of whole "
            "blocks, one per output channel elsewhere"
        )
    rounded = "every weight"
    if c is not None:
        scale = f"one scale per {unit}, as the {c.clusters} shared values are per {unit}"
        rounded = "the shared values"
    text = (
        f"Quantization rounded {rounded} to a {q.bits}-bit grid of {hi - lo + 1:,} evenly "
        f"spaced levels ({q.mode}, {scale})"
    )
    if config.data_aware and c is None:
        text += (
            ", passing each weight's rounding error on to the weights not yet rounded, so the "
            "layer's outputs on the calibration data stay close"
        )
    worst = min_sqnr(quantized)
    if worst is None:
        return text + "; no weight had to move."
    return (
        text + f"; the roughest tensor, {worst[1]}, keeps a signal-to-noise ratio of "
        f"{worst[0]:.1f} dB (about 6 dB per bit of precision)."
    )


def _result(outcome: Outcome, baseline: Outcome) -> str:
    s, b = outcome.sizes, baseline.sizes
    text = (
        f"Together the weights pack into {format_bytes(s.packed)} instead of "
        f"{format_bytes(b.float32)} as float32"
    )
    smaller = ratio(b.float32, s.packed)
    if smaller is not None:
        text += f" ({smaller:.1f}× smaller)"
    if s.gzip is not None and b.gzip is not None:
        text += (
            f", and the gzipped .keras file goes from {download_size(b.gzip, b.gzip_exact)} to "
            f"{download_size(s.gzip, s.gzip_exact)}"
        )
    now, before = quality(outcome), quality(baseline)
    if now is None or before is None:
        return text + "."
    if now[0] == "accuracy":
        return text + f"; test accuracy is {percent(now[1])} (was {percent(before[1])})."
    return text + f"; {percent(now[1])} of predictions match the original model's."


def sentences(config: OptimizationConfig, outcome: Outcome, baseline: Outcome) -> list[str]:
    """Two to five plain sentences about what the active techniques did, with real numbers. A
    per-layer recipe is said first; the techniques' sentences then count only the tensors of
    the layers the sliders set."""
    own = dict(config.overrides)
    changed = [r for r in outcome.eligible if r.transformed and r.layer not in own]
    parts = [
        _pruning(config, changed),
        _clustering(config, changed),
        _quantization(config, changed),
    ]
    found = [p for p in parts if p]
    if own:
        each = "; ".join(f"{layer} {describe(t)}" for layer, t in own.items())
        rest = ", and the sliders set the other layers" if found else ""
        found.insert(0, f"The per-layer recipe gives layers their own setting: {each}{rest}.")
    if not found:
        return [
            "Nothing is applied yet: move a slider to prune, cluster or quantize the weights "
            "and watch the histogram, sizes and accuracy respond."
        ]
    if config.skip:
        found.append(f"Left untouched, as asked: {', '.join(config.skip)}.")
    return [*found, _result(outcome, baseline)]


def container(q: QuantizationConfig | None) -> str:
    """Which file holds the bit-width setting as it is, or simulates it in a wider container."""
    fmt = natural_format(q)
    name = FORMAT_NAMES[fmt]
    if q is None:
        return (
            f"The weights are not quantized, so **{name}** holds them exactly (pruned tensors "
            "are stored sparse when that makes the file smaller)."
        )
    if q.block_size is not None:
        return (
            f"{q.bits}-bit weights in blocks of {q.block_size} inputs deploy as they are in "
            f"**{name}**: its Dense layers store one float16 scale per block, as the preview "
            "does, and round their inputs to int8 at run time."
        )
    width = CONTAINER_BITS[fmt]
    if q.bits == width:
        return f"{q.bits}-bit weights deploy as they are in **{name}**."
    lo, hi = code_range(q.bits, q.mode)
    return (
        f"{q.bits}-bit weights are simulated in **{name}**: the file stores {width}-bit "
        f"integers but uses only the {hi - lo + 1} levels per channel that the preview uses, so "
        f"it is as accurate as the preview and as large as any {width}-bit file."
    )


def verdict(exported: Exported) -> str:
    """One short phrase: does the file do what the preview promised?"""
    if exported.file_accuracy is None or exported.preview_accuracy is None:
        if exported.agreement is None:
            return "runs (no data to check it on)"
        return f"runs; agrees with the preview on {percent(exported.agreement)}"
    diff = 100 * (exported.file_accuracy - exported.preview_accuracy)
    if exported.departs:
        return f"departs from the preview by {diff:+.1f} points"
    return "matches the preview" if abs(diff) < 0.05 else f"within {abs(diff):.1f} points"


def size_words(before: int | None, after: int | None) -> str:
    """``2.9× smaller``, ``1.2× larger`` or ``same size`` (to 0.1×); a dash when unknown."""
    r = ratio(before, after)
    if r is None:
        return "—"
    return "same size" if round(max(r, 1 / r), 1) == 1 else latency.times(r, "smaller", "larger")


def file_name(stem: str, fmt: str) -> str:
    """The name a downloaded file gets, e.g. ``digits_cnn_int4.tflite``."""
    name = "optimized" if fmt == "keras" else fmt.removeprefix("tflite-")
    return f"{stem}_{name}{FORMAT_SUFFIXES[fmt]}"


@dataclass(frozen=True)
class _Quality:
    """How good each written file is, and what "good enough" is measured against."""

    made: dict[str, Exported]
    scores: dict[str, float]  # each file's accuracy; without labels, agreement with the preview
    goal: float  # the float model's accuracy; without labels, full agreement
    labelled: bool

    def within(self, budget_points: float) -> list[str]:
        return [f for f, v in self.scores.items() if 100 * (self.goal - v) <= budget_points + 1e-9]


def _quality(exports: Mapping[str, Exported | str], reference: float | None) -> _Quality:
    made = {f: e for f, e in exports.items() if isinstance(e, Exported)}
    if reference is not None:
        accuracy = {f: e.file_accuracy for f, e in made.items() if e.file_accuracy is not None}
        if accuracy:
            return _Quality(made, accuracy, reference, True)
    agreement = {f: e.agreement for f, e in made.items() if e.agreement is not None}
    return _Quality(made, agreement, 1.0, False)


def recommended_format(
    exports: Mapping[str, Exported | str],
    reference_accuracy: float | None,
    budget_points: float = BUDGET_POINTS,
) -> str | None:
    """The format to ship (see ``recommend_file``); ``None`` when no file was written."""
    q = _quality(exports, reference_accuracy)
    size = {f: e.size_bytes for f, e in q.made.items()}
    if not q.scores:  # no data: the smallest file
        return min(size, key=size.__getitem__, default=None)
    within = q.within(budget_points)
    if not within:  # nothing is good enough: the closest, the smaller of equals
        return min(q.scores, key=lambda f: (-q.scores[f], size[f]))
    return min(within, key=size.__getitem__)


def _versus_original(e: Exported) -> str:
    """``, 1.4× faster than the original`` or ``, same speed as the original``; nothing when
    the file was not timed."""
    words = latency.speed_words(e.latency, e.baseline_latency)
    if words == "—":
        return ""
    return (
        ", same speed as the original" if words == "same speed" else f", {words} than the original"
    )


def _pace(e: Exported) -> tuple[int, float]:
    """Sort key of a timed file's speed: its verdict first (a noisy ratio does not outrank a
    clear one), then its ratio to the original."""
    assert e.latency is not None and e.baseline_latency is not None
    verdict = latency.speed_verdict(e.latency, e.baseline_latency)
    return ("slower", "same speed", "faster").index(verdict), latency.speedup(
        e.latency, e.baseline_latency
    )


def recommend_file(
    exports: Mapping[str, Exported | str],
    reference_accuracy: float | None,
    stem: str,
    budget_points: float = BUDGET_POINTS,
) -> str:
    """One sentence naming the file to ship and why: the smallest file whose own accuracy is
    within ``budget_points`` accuracy points of ``reference_accuracy`` (the float model's), and,
    if another file within that budget is faster, the fastest (``_pace``: by its ratio to the
    original, timed in the same run). Without labels, agreement with the preview stands in for accuracy;
    without data, the smallest file. ``stem`` names the files as the download buttons do.

    >>> recommend_file(exports, 0.981, "digits_cnn")  # doctest: +SKIP
    "Ship digits_cnn_int4.tflite: the smallest file within 1 point of the float model's 98.1%..."
    """
    fmt = recommended_format(exports, reference_accuracy, budget_points)
    if fmt is None:
        return "No file could be written for this model."
    q = _quality(exports, reference_accuracy)
    e, name, size = q.made[fmt], file_name(stem, fmt), format_bytes(q.made[fmt].size_bytes)
    if not q.scores:
        return (
            f"Ship {name}: the smallest file ({size}{_versus_original(e)}); without evaluation "
            "data its accuracy is not checked."
        )
    score = percent(q.scores[fmt]) if q.labelled else f"agrees on {percent(q.scores[fmt])}"
    facts = f"{size}, {score}{_versus_original(e)}"
    budget = f"{budget_points:g} point{'' if budget_points == 1 else 's'}"
    goal = (
        f"the float model's {percent(q.goal)}" if q.labelled else "full agreement with the preview"
    )
    within = q.within(budget_points)
    if fmt not in within:
        return (
            f"No file is within {budget} of {goal}: the closest is {name} ({facts}); "
            "try gentler settings."
        )
    sentence = f"Ship {name}: the smallest file within {budget} of {goal} ({facts})"
    timed = [q.made[f] for f in within if q.made[f].latency and q.made[f].baseline_latency]
    fastest = max(timed, key=_pace, default=e)
    if _versus_original(fastest) != _versus_original(e) and fastest.latency is not None:
        sentence += (
            f"; the fastest within budget is {file_name(stem, fastest.fmt)} "
            f"({latency.format_time(fastest.latency.median_ms)}{_versus_original(fastest)})"
        )
    if not q.labelled:
        sentence += "; the data has no labels, so agreement with the preview stands in for accuracy"
    return sentence + "."


def departure_reason(fmt: str, config: OptimizationConfig) -> str:
    """Why a file may compute other than the preview, in one sentence."""
    bits = 32 if config.quantization is None else config.quantization.bits
    if CONTAINER_BITS[fmt] < bits:
        preview = "float32" if config.quantization is None else f"{bits}-bit"
        return (
            f"its {CONTAINER_BITS[fmt]}-bit weights are coarser than the preview's {preview} "
            f"weights; set the bit width to {CONTAINER_BITS[fmt]} to preview this file."
        )
    if fmt == "tflite-int8":
        return "its activations, input and output are int8 too, which the preview does not model."
    if fmt == "tflite-int8-dynamic":
        return "it rounds activations to int8 at run time, which the preview does not model."
    if config.grid is not None and config.grid.block_size is not None:
        if fmt == "tflite-int4":
            return (
                "its blockwise layers round activations to int8 at run time, which the preview "
                "does not model."
            )
        return "it stores one scale per channel, where the preview uses one per block of inputs."
    if config.quantization is not None and config.quantization.mode == "asymmetric":
        return "LiteRT stores symmetric levels, and the preview uses asymmetric ones."
    return "its weights are stored differently from the preview's."


DOWNLOAD_DEFINITION = (
    "Download size: the model file compressed with gzip -9, roughly what an app store or a web "
    "download transfers. Here the .keras file as the app saves it; zeros and repeated values "
    "compress well. Exact for a file up to 2 MB; for a larger one (or one whose tensors cannot "
    "be told apart in the file) the changed kernels are compressed on a spread sample for each "
    "setting (measured within 2% of compressing the whole file), and the figure is marked ≈."
)


def download_size(gzip: int | None, exact: bool) -> str:
    """A download size (``DOWNLOAD_DEFINITION``) in words: "4.64 MB", or "≈4.64 MB" when it is
    not ``exact`` (``Sizes.gzip_exact``)."""
    return ("" if exact else "≈") + format_bytes(gzip)


def approx(outcome: Outcome, baseline: Outcome) -> str:
    """``"≈"`` when either download size is an estimate (``Sizes.gzip_exact``), else ``""``:
    what ``download_ratio`` is written after."""
    return "" if outcome.sizes.gzip_exact and baseline.sizes.gzip_exact else "≈"


def download_ratio(outcome: Outcome, baseline: Outcome) -> float | None:
    """The headline figure: the baseline's download size ÷ this one's (``DOWNLOAD_DEFINITION``),
    ``None`` until measured."""
    return ratio(baseline.sizes.gzip, outcome.sizes.gzip)


def headline(outcome: Outcome, baseline: Outcome) -> str:
    """The one sentence a manager reads at a glance, e.g. "4.8× smaller download, accuracy
    97.5% (−1.1 points)": the download size (``download_ratio``) and the quality."""
    if not outcome.measured:
        return "Measuring the download size and accuracy…"
    smaller = download_ratio(outcome, baseline)
    if smaller is None:
        size = "Download size unknown"
    elif round(smaller, 1) == 1:
        size = f"Same download size ({download_size(outcome.sizes.gzip, outcome.sizes.gzip_exact)})"
    else:
        about = approx(outcome, baseline)
        size = (
            f"{about}{smaller:.1f}× smaller download"
            if smaller > 1
            else f"{about}{1 / smaller:.1f}× larger download"
        )
    now, before = quality(outcome), quality(baseline)
    if now is None or before is None:
        return f"{size}, accuracy not measured (no evaluation data)"
    diff = 100 * (now[1] - before[1])
    change = "unchanged" if abs(diff) < 0.05 else f"{diff:+.1f} points".replace("-", "−")
    if now[0] == "accuracy":
        return f"{size}, accuracy {percent(now[1])} ({change})"
    return f"{size}, {percent(now[1])} of predictions as before ({change})"
