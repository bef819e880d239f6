"""Real browsers against one server: N chromium sessions (one browser, N contexts, each its own
Streamlit session) open Explore on the bundled digits CNN and move the pruning slider, all at
once; each move is timed from the key press to the answer drawn (the sparsity card shows the new
value and no card still says "measuring…"). The server is pinned to the first core and the
browser to the others where the machine has more than one (``taskset``), so that chromium's
own work does not count as the server's. Reports first render, answer p50/p95 and the server's
peak resident memory.

Run: ``python -m bench.load [--sessions 10 20] [--moves 6] [--root OLD_CHECKOUT]``; ``--root``
also serves another checkout of the app (an older commit) in the same run, for a baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.serve import CHROMIUM, CHROMIUM_ARGS, server_pid, streamlit_app

MEASURING = "measuring…"
CARDS_JS = """() => Object.fromEntries([...document.querySelectorAll('[data-testid="stMetric"]')]
    .map(m => [m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() ?? "",
               m.querySelector('[data-testid="stMetricValue"]')?.innerText ?? ""]))"""


async def answered(page, sparsity: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        cards = await page.evaluate(CARDS_JS)
        if cards.get("Sparsity") == sparsity and MEASURING not in cards.values():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no answer for {sparsity}")


async def session(browser, url: str, moves: int) -> tuple[float, list[float]]:
    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(300_000)
    start = time.perf_counter()
    await page.goto(f"{url}/explore")
    await answered(page, "0.0%")
    first_render = time.perf_counter() - start
    slider = page.get_by_test_id("stSlider").first.get_by_role("slider")
    times = []
    for step in range(1, moves + 1):
        await slider.focus()
        start = time.perf_counter()
        await slider.press("ArrowRight")
        await answered(page, f"{5 * step:.1f}%")
        times.append(time.perf_counter() - start)
    await context.close()
    return first_render, times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, sessions: int, moves: int) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        cores = os.sched_getaffinity(0)
        args = list(CHROMIUM_ARGS)
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=args)
        if len(cores) > 1:  # the browser on the cores the server does not use
            for pid in browser_pids():
                os.sched_setaffinity(pid, sorted(cores)[1:])
        results = await asyncio.gather(*(session(browser, url, moves) for _ in range(sessions)))
        await browser.close()
    answers = [t for _, ts in results for t in ts]
    renders = [r for r, _ in results]
    return {
        "sessions": sessions,
        "moves": moves,
        "first_render_p50_s": statistics.median(renders),
        "answer_p50_s": statistics.median(answers),
        "answer_p95_s": percentile(answers, 0.95),
        "slowest_s": max(answers),
    }


def browser_pids() -> list[int]:
    """Chromium's processes (pinning needs every one of them)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            program = (proc / "cmdline").read_text().split("\0")[0]
            if proc.name.isdigit() and Path(program).name == "chromium":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_rows(session_counts: list[int], moves: int, root: Path | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in session_counts:  # a fresh server for each count: no answer cached before
            with streamlit_app(Path(tmp) / f"server-{n}.log", root=root) as url:
                pid = server_pid(url)
                cores = os.sched_getaffinity(0)
                if len(cores) > 1:
                    os.sched_setaffinity(pid, [min(cores)])
                row = asyncio.run(run(url, n, moves))
                row["server_peak_mb"] = peak_mb(pid)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--moves", type=int, default=6)
    parser.add_argument("--root", type=Path, help="also serve this checkout, as the baseline")
    args = parser.parse_args()
    for root in [None, args.root] if args.root else [None]:
        for row in load_rows(args.sessions, args.moves, root):
            print(json.dumps({"app": str(root or "this checkout")} | row))


if __name__ == "__main__":
    main()
