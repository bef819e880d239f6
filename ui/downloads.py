"""The Download page's files: the table of every format with what is ready and what it waits
for, the note on how speed was measured, the warnings, and one button per file.

They take what ``services.exports`` returned and draw it; every figure comes from ``explain``
and ``optimizers.latency``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import streamlit as st

from optimizers import latency
from optimizers.delivery import Exported
from optimizers.export import FORMAT_LABELS, FORMAT_NAMES, FORMAT_SUFFIXES, FORMATS, natural_format
from optimizers.pipeline import OptimizationConfig
from ui import explain, services
from ui.explain import format_bytes, percent, size_words


def export_rows(
    exports: dict[str, Exported | str], waiting: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """One row per format (``exports`` ready, then those ``waiting``, with what they wait for),
    as text to read ("—" where there is nothing): size and gzip size, size and speed next to
    the originals in words, preview and file accuracy, and whether the file does what the
    preview promised. ``delivery.exported_to_dict`` has the numbers."""
    waiting = waiting or {}
    formats = list(dict.fromkeys([*exports, *waiting]))
    made = {f: e for f, e in exports.items() if isinstance(e, Exported)}
    float32 = made["tflite-float32"].size_bytes if "tflite-float32" in made else None

    def column(
        cell: Callable[[Exported], str], pending: Callable[[Exported], bool] = lambda e: False
    ) -> list[str]:
        """``cell`` of each made file; what it waits for where its figure is ``pending``."""
        return [
            waiting[f]
            if f in made and f in waiting and pending(made[f])
            else cell(made[f])
            if f in made
            else "—"
            for f in formats
        ]

    def untimed(e: Exported) -> bool:
        return e.latency is None

    def acc(value: float | None) -> str:
        return "—" if value is None else percent(value)

    def timed(e: Exported, ms: Callable[[latency.Latency], float]) -> str:
        return latency.format_time(None if e.latency is None else ms(e.latency))

    def check(f: str) -> str:
        if f in made:
            return explain.verdict(made[f])
        return waiting[f] if f in waiting else f"not available: {exports[f]}"

    return pd.DataFrame(
        {
            "format": [FORMAT_NAMES[f] for f in formats],
            "size": column(lambda e: format_bytes(e.size_bytes)),
            "download (gzip)": column(
                lambda e: format_bytes(e.gzip_bytes), lambda e: e.gzip_bytes is None
            ),
            "vs float32": column(lambda e: size_words(float32, e.size_bytes)),
            "accuracy (preview)": column(lambda e: acc(e.preview_accuracy)),
            "accuracy (file)": column(lambda e: acc(e.file_accuracy)),
            "speed": column(lambda e: timed(e, lambda t: t.median_ms), untimed),
            "vs original": column(
                lambda e: latency.speed_words(e.latency, e.baseline_latency), untimed
            ),
            "all cores": column(lambda e: timed(e, lambda t: t.threads_ms), untimed),
            "activations": column(
                lambda e: format_bytes(None if e.latency is None else e.latency.activation_bytes),
                untimed,
            ),
            "check": [check(f) for f in formats],
        }
    )


EXPORT_HELP = {  # column of ``export_rows`` -> what it means, shown when hovering its header
    "format": "Hover a download button below for what each format is.",
    "size": "Bytes of the file as downloaded (1 kB = 1,000 bytes).",
    "download (gzip)": "The file's download size: its bytes after gzip -9, about what a "
    "download transfers (the headline's figure).",
    "vs float32": "This file's size next to the float32 LiteRT file of these settings.",
    "accuracy (preview)": "The optimized model's accuracy as the Explore page computes it.",
    "accuracy (file)": "The downloaded file itself, run on the evaluation data.",
    "speed": "Median time of one sample (batch 1, one thread) on this server's processor; "
    "µs is a millionth of a second, ms a thousandth.",
    "vs original": "This file's time next to the original model's float32 LiteRT file, timed in "
    "the same run, taking turns; 'same speed' when the difference is within the runs' noise.",
    "all cores": "Median time of one sample with one thread per core (at least "
    f"{latency.all_core_runs(latency.MIN_RUNS)} runs).",
    "activations": "The file's largest tensor computed at run time (dequantized weights too); "
    "the interpreter needs at least this much memory besides the file.",
    "check": "Does the file do what the preview promised?",
}


def export_table(
    exports: dict[str, Exported | str], waiting: Mapping[str, str] | None = None
) -> None:
    """The ``export_rows`` as a table, each column explained in its header's tooltip."""
    st.dataframe(
        export_rows(exports, waiting),
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.TextColumn(help=h) for c, h in EXPORT_HELP.items()},
    )


def latency_note() -> None:
    """One sentence on where and how the speed columns were measured."""
    st.caption(
        f"Speed: each LiteRT file run by LiteRT's interpreter (XNNPack) at batch 1 on this "
        f"server's processor ({latency.processor_name()}), median of at least "
        f"{latency.MIN_RUNS} runs with one thread ({latency.all_core_runs(latency.MIN_RUNS)} "
        "with every core) after warm-up, taking turns with the original model's float32 "
        "file in the same run so that other load on the server slows both alike. “Same speed”: "
        "the middle halves of the two files' run times overlap, or their medians differ by less "
        f"than {latency.SAME_WITHIN:.0%}. Phones and other processors differ, so compare the "
        "ratios rather than the times."
    )


def export_warnings(exports: dict[str, Exported | str], config: OptimizationConfig) -> None:
    """Say plainly which files do not do what the preview promised, and why."""
    for fmt, e in exports.items():
        if isinstance(e, Exported) and e.departs:
            st.warning(
                f"The {FORMAT_NAMES[fmt]} file scores {percent(e.file_accuracy or 0)} where the "
                f"preview promised {percent(e.preview_accuracy or 0)}: "
                f"{explain.departure_reason(fmt, config)}",
                icon=":material/warning:",
            )


def download_order(config: OptimizationConfig) -> list[str]:
    """Every format, the one that holds the setting's bit width as it is first: it is made,
    verified and offered first."""
    first = natural_format(config.grid)
    return [first, *(f for f in FORMATS if f != first)]


WHEN_ASKED = "made when you ask: a conversion of its own, slow on a model this large"


def export_buttons(
    model: services.KerasModel,
    exports: dict[str, Exported | str],
    recommended: str | None,
    waiting: Mapping[str, str] | None = None,
    drawing: int = 0,
    later: Sequence[str] = (),
    ask: Callable[[str], None] | None = None,
) -> None:
    """One download button per format, enabled as soon as its file is verified; the
    ``recommended`` file first, as the primary one; for each format made only ``later``, when
    asked, a button that asks (``ask(format)``). ``drawing``: which drawing of the buttons this
    is in one run of the page (each drawing's keys are its own)."""
    waiting = waiting or {}
    formats = list(dict.fromkeys([*exports, *waiting, *later]))
    order = sorted(formats, key=lambda f: f != recommended)
    for fmt, column in zip(order, st.columns(4) + st.columns(4), strict=False):
        e = exports.get(fmt, waiting.get(fmt, ""))
        suffix = FORMAT_SUFFIXES[fmt]
        label = FORMAT_NAMES[fmt].removeprefix("LiteRT ")
        if fmt in later:
            column.button(
                f"Make {label} {suffix}",
                on_click=ask,
                args=(fmt,),
                help=f"{FORMAT_LABELS[fmt]}; {WHEN_ASKED}.",
                icon=":material/play_arrow:",
                key=f"make_{fmt}_{drawing}",
                width="stretch",
            )
            continue
        column.download_button(
            "Download .keras" if fmt == "keras" else f"Download {label} {suffix}",
            # Handed over when clicked: bytes given here would be fetched by the browser at
            # each drawing (ResNet50: seven 100 MB files, gzipped by the server, again and
            # again while the others are made).
            (lambda data=e.data: data) if isinstance(e, Exported) else b"",
            file_name=explain.file_name(model.stem, fmt),
            mime="application/octet-stream",
            icon=":material/download:",
            type="primary" if fmt == recommended else "secondary",
            disabled=not isinstance(e, Exported),
            help=FORMAT_LABELS[fmt] if isinstance(e, Exported) else e,
            on_click="ignore",
            key=f"download_{fmt}_{drawing}",
            width="stretch",
        )
