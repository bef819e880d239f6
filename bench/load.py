"""Real browsers against one server: N chromium sessions (one browser, N contexts, each its own
Streamlit session) open Explore on the bundled digits CNN and, once every page is open, move the
pruning slider, all at once. Each move is timed twice: from the key press to the answer drawn
(the sparsity card shows the new value and no card still says "measuring…", checked inside the
page), and on the wire (the browser's own timestamps, from the frame carrying the new value to
the answer's last frame: the server's part). Where the machine has more than one core, the
server runs on the first and the browser, every renderer included, on the others, from their
start, so that the N pages' drawing is not counted as the server's. Reports first render, both
answer times at p50/p95 and the server's peak resident memory. With ``--think S`` each user
reads each answer for about ``S`` seconds (0.5 to 1.5 times, drawn per move) before moving
again, as a class does; without it they move as soon as the answer is drawn.

Run: ``python -m bench.load [--sessions 10 20] [--moves 6] [--think S] [--root OLD]``, or
``python -m bench.load --cost`` for what one move costs chromium and the server in CPU, and
the messages it sends the page; ``--root`` also serves another checkout of the app (an older
commit) in the same run, for a baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.serve import CHROMIUM, CHROMIUM_ARGS, server_pid, streamlit_app

# True once the sparsity card shows ``sparsity`` (any value: ``null``) and, when ``measured``,
# no card still says "measuring…"; checked in the page itself every 20 ms (no round trip per check: pages polled
# from here every 10 ms, with Playwright's locators, kept chromium and the driver so busy that
# they, not the app, set the answer time).
ANSWERED_JS = """([sparsity, measured]) => {
    const cards = Object.fromEntries([...document.querySelectorAll('[data-testid="stMetric"]')]
        .map(m => [m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() ?? "",
                   m.querySelector('[data-testid="stMetricValue"]')?.innerText ?? ""]));
    return (sparsity === null ? "Sparsity" in cards : cards["Sparsity"] === sparsity)
        && !(measured && Object.values(cards).includes("measuring…"));
}"""


async def answered(page, sparsity: str, seconds: float = 120) -> None:
    await page.wait_for_function(
        ANSWERED_JS, arg=[sparsity, True], polling=20, timeout=seconds * 1000
    )


async def explore_page(browser, url: str):
    """A fresh context's page on Explore with its first answer drawn (ten pages opening at once
    on one core take minutes); its pruning slider, and the seconds to that first answer."""
    page = await (await browser.new_context(viewport={"width": 1440, "height": 1000})).new_page()
    page.set_default_timeout(300_000)
    start = time.perf_counter()
    await page.goto(f"{url}/explore")
    await answered(page, "0.0%", seconds=600)
    slider = page.get_by_test_id("stSlider").first.get_by_role("slider")
    return page, slider, time.perf_counter() - start


async def session(
    browser, url: str, moves: int, opened: asyncio.Barrier, think: float = 0.0, seed: int = 0
) -> tuple[float, list[float], list[float]]:
    """First render, then, once every session's page is open (``opened``), per move: seconds
    to the answer drawn, and seconds on the wire (the browser's own timestamps, from the frame
    carrying the new value to the answer's last frame: the server's part, without the
    browser's drawing). Before each move the user reads for ``think`` seconds times a factor
    from 0.5 to 1.5 (drawn with ``seed``)."""
    rng = random.Random(seed)
    page, slider, first_render = await explore_page(browser, url)
    await opened.wait()  # no move is timed beside another page's first drawing
    frames: list[tuple[str, float]] = []
    cdp = await page.context.new_cdp_session(page)
    for kind in ("Sent", "Received"):
        cdp.on(
            f"Network.webSocketFrame{kind}", lambda e, k=kind: frames.append((k, e["timestamp"]))
        )
    await cdp.send("Network.enable")
    drawn, wire = [], []
    for step in range(1, moves + 1):
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))
        await slider.focus()
        start = time.perf_counter()
        frames.clear()
        await slider.press("ArrowRight")
        await answered(page, f"{5 * step:.1f}%")
        drawn.append(time.perf_counter() - start)
        await asyncio.sleep(0.3)  # the answer's last frames (the run's end) follow its drawing
        sent = [t for k, t in frames if k == "Sent"]
        wire.append(max(t for k, t in frames if k == "Received") - min(sent))
    await page.context.close()
    return first_render, drawn, wire


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, sessions: int, moves: int, think: float = 0.0) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        opened = asyncio.Barrier(sessions)
        results = await asyncio.gather(
            *(session(browser, url, moves, opened, think, seed) for seed in range(sessions))
        )
        await browser.close()
    answers = [t for _, ts, _ in results for t in ts]
    wire = [t for _, _, ts in results for t in ts]
    renders = [r for r, _, _ in results]
    return {
        "sessions": sessions,
        "moves": moves,
        "think_s": think,
        "first_render_p50_s": statistics.median(renders),
        "answer_p50_s": statistics.median(answers),
        "answer_p95_s": percentile(answers, 0.95),
        "slowest_s": max(answers),
        "wire_p50_s": statistics.median(wire),
        "wire_p95_s": percentile(wire, 0.95),
    }


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pids: list[int]) -> float:
    """User and system time of these processes so far (the ones gone count nothing)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def chromium_pids() -> list[int]:
    """Every chromium process, renderers included (they rewrite their command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and "/chromium" in (proc / "cmdline").read_text().split()[0]:
                found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found


async def move_cost(url: str, server: int, moves: int) -> dict:
    """One session alone: per slider move, seconds of CPU that chromium (every process) and the
    server spend, from the key press to 1 s after the answer is drawn, and the messages the
    server sends the page (each one a redraw of its elements)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page, slider, _ = await explore_page(browser, url)
        received = []
        cdp = await page.context.new_cdp_session(page)
        cdp.on("Network.webSocketFrameReceived", lambda frame: received.append(frame))
        await cdp.send("Network.enable")
        costs = []
        for step in range(1, moves + 1):
            await slider.focus()
            before = cpu_seconds(chromium_pids()), cpu_seconds([server])
            received.clear()
            await slider.press("ArrowRight")
            await answered(page, f"{5 * step:.1f}%")
            await asyncio.sleep(1)
            costs.append(
                (
                    cpu_seconds(chromium_pids()) - before[0],
                    cpu_seconds([server]) - before[1],
                    len(received),
                )
            )
        await browser.close()
    return {
        "moves": moves,
        "chromium_cpu_per_move_s": statistics.median(c for c, _, _ in costs),
        "server_cpu_per_move_s": statistics.median(s for _, s, _ in costs),
        "messages_per_move": statistics.median(m for _, _, m in costs),
    }


def load_rows(
    session_counts: list[int], moves: int, root: Path | None = None, think: float = 0.0
) -> list[dict]:
    """One row per count of sessions. Where the machine has more than one core, the server
    runs on the first and the browser (started by this process, which it inherits from) on
    the others: every thread and every renderer of each, from their start."""
    rows = []
    cores = sorted(os.sched_getaffinity(0))
    server_cores = set(cores[:1]) if len(cores) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        for n in session_counts:  # a fresh server for each count: no answer cached before
            log = Path(tmp) / f"server-{n}.log"
            with streamlit_app(log, root=root, cores=server_cores) as url:
                pid = server_pid(url)
                if server_cores:
                    os.sched_setaffinity(0, cores[1:])
                try:
                    row = asyncio.run(run(url, n, moves, think))
                finally:
                    os.sched_setaffinity(0, cores)
                row["server_peak_mb"] = peak_mb(pid)
                rows.append(row)
    return rows


def cost_row(moves: int, root: Path | None) -> dict:
    """``move_cost`` of one session on its own server (``root``: another checkout's)."""
    with tempfile.TemporaryDirectory() as tmp:
        with streamlit_app(Path(tmp) / "server.log", root=root) as url:
            return asyncio.run(move_cost(url, server_pid(url), moves))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--moves", type=int, default=6)
    parser.add_argument(
        "--think", type=float, default=0.0, metavar="S", help="seconds each user reads an answer"
    )
    parser.add_argument("--root", type=Path, help="also serve this checkout, as the baseline")
    parser.add_argument(
        "--cost",
        action="store_true",
        help="only what one move costs chromium and the server in CPU, and its messages",
    )
    args = parser.parse_args()
    for root in [None, args.root] if args.root else [None]:
        rows = (
            [cost_row(args.moves, root)]
            if args.cost
            else load_rows(args.sessions, args.moves, root, args.think)
        )
        for row in rows:
            print(json.dumps({"app": str(root or "this checkout")} | row))


if __name__ == "__main__":
    main()
