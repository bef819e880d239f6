"""The Learn page's speed: how long the page takes to render, and what each slider costs.

    python -m bench.learn                  # prints a markdown table and writes JSON
    python -m bench.learn --repeats 3      # fewer runs

Server time under Streamlit's AppTest (no browser): ``render`` is one whole run of the page
(``app.py`` and ``pages/learn.py``; the first run of the process, imports included, is reported
on its own). A slider on the page reruns only its lesson, an ``st.fragment``; AppTest reruns
the whole script instead, so each lesson's own time is taken inside the run, from the start to
the end of its fragment function: that is what the server spends on a slider move.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
PAGE = "pages/learn.py"
# (widget kind, key, values to move through, the lesson function it reruns)
MOVES = (
    ("select_slider", "learn_sparsity", (10, 30, 60, 90, 50), "pruning"),
    ("select_slider", "learn_clusters", (2, 4, 16, 32, 8), "clustering"),
    ("select_slider", "learn_bits", (2, 3, 6, 8, 4), "quantization"),
)
GOALS_MS = {"render": 1000, "slider": 100}


def time_fragments(times: dict[str, list[float]]) -> None:
    """Make ``st.fragment`` record how long each fragment function takes, by its name."""
    import streamlit as st

    real = st.fragment

    def fragment(func: Callable | None = None, **kwargs):
        if func is None:
            return lambda f: fragment(f, **kwargs)

        @functools.wraps(func)
        def timed(*args, **kw):
            start = time.perf_counter()
            try:
                return func(*args, **kw)
            finally:
                times[func.__name__].append(time.perf_counter() - start)

        return real(timed, **kwargs)

    st.fragment = fragment


def measure(repeats: int) -> dict:
    from streamlit.testing.v1 import AppTest

    fragments: dict[str, list[float]] = defaultdict(list)
    time_fragments(fragments)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    start = time.perf_counter()
    at.switch_page(PAGE).run()
    first = time.perf_counter() - start
    renders = []
    for _ in range(repeats):
        start = time.perf_counter()
        at.run()
        renders.append(time.perf_counter() - start)
    sliders = {}
    for kind, key, values, lesson in MOVES:
        fragments.clear()
        for value in values[:repeats]:
            getattr(at, kind)(key=key).set_value(value).run()
            if at.exception:
                raise RuntimeError(f"the Learn page failed: {at.exception}")
        sliders[key] = 1000 * statistics.median(fragments[lesson])
    return {
        "first_render_ms": 1000 * first,
        "render_ms": 1000 * statistics.median(renders),
        "slider_ms": sliders,
    }


def markdown(result: dict) -> str:
    slowest = max(result["slider_ms"].values())
    rows = [
        "| target | measured | goal | met |",
        "|---|---|---|---|",
        f"| Learn page render (median; first of the process {result['first_render_ms']:.0f} ms) "
        f"| {result['render_ms']:.0f} ms | < {GOALS_MS['render']} ms "
        f"| {'yes' if result['render_ms'] < GOALS_MS['render'] else 'no'} |",
        f"| slowest Learn slider (its lesson's fragment, median) | {slowest:.0f} ms "
        f"| < {GOALS_MS['slider']} ms | {'yes' if slowest < GOALS_MS['slider'] else 'no'} |",
        "",
        "| slider | server ms per move |",
        "|---|---|",
        *(f"| {key} | {ms:.1f} |" for key, ms in result["slider_ms"].items()),
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learn.json"))
    args = parser.parse_args()
    result = measure(args.repeats)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
