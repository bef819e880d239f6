"""A real-size upload in a real browser: ResNet50 (``weights=None``) and 16 images, uploaded
through the Model page's uploaders, then slider moves on the Explore page timed from the key
press to the answer drawn: the first stage (the sparsity card shows the new value) and the
whole answer (agreement and gzip cards measured); then the Download page, timed to its first
file offered, every format offered and the report offered, with the server's peak resident
memory. Run as ``python -m bench.browser [--pause S] [--timeline FILE] [ROOT]`` (``ROOT``:
an older checkout served instead, the baseline of the same run; ``S``: seconds on Explore after
the last move, as a user reading the answer spends them, before opening Download; ``FILE``:
the server's timeline, ``bench/timeline/sitecustomize.py``, whose calls from the click on
Download to the first file offered are printed; ``make bench`` runs this row too) or ``python
-m bench.browser samples [--pause S] [ROOT]`` (a sample's Download page, opened ``S`` seconds
after Explore's cards show the answer). Needs Debian's chromium
(``make chromium``).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.load import ANSWERED_JS, peak_mb
from bench.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, server_pid, streamlit_app

# Checked in the page every 20 ms, as ``ANSWERED_JS`` is: how many format buttons there are and
# how many of them are enabled (a file offered). A format made only when asked has a "Make"
# button instead, not counted.
OFFERED_JS = """() => {
    const buttons = [...document.querySelectorAll('button')]
        .filter(b => /Download (\\.keras|.+\\.tflite)/.test(b.innerText));
    return [buttons.length, buttons.filter(b => !b.disabled).length];
}"""


# When a click reaches the page (its first one from now).
RECEIVED_JS = """() => document.addEventListener(
    'click', () => { window.clickedAt = Date.now(); }, {capture: true, once: true})"""


def wait(page, script: str, arg=None, seconds: float = 300) -> None:
    page.wait_for_function(script, arg=arg, polling=20, timeout=seconds * 1000)


def answered(page, sparsity: str | None, measured: bool, seconds: float = 300) -> None:
    """Wait until the sparsity card shows ``sparsity`` (``None``: any) and, when ``measured``,
    no card is still measuring."""
    wait(page, ANSWERED_JS, [sparsity, measured], seconds)


def browser_row(
    arch: str = "ResNet50",
    images: int = 16,
    moves: int = 6,
    root: Path | None = None,
    pause: float = 0.0,
    timeline: Path | None = None,
) -> dict:
    """The real-size upload's row; ``root`` serves another checkout of the app (an older
    commit, to compare in the same run); ``pause``: seconds the user reads Explore's last
    answer before opening Download (a model is converted ahead once the sliders rest);
    ``timeline``: a file for the server's timeline (``timeline_env``), the Download click and
    its first file offered marked in it."""
    import keras
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, arch)(weights=None)
        model_path = folder / f"{arch.lower()}.keras"
        model.save(model_path)
        data_path = folder / f"{arch.lower()}_data.npz"
        rng = np.random.default_rng(0)
        np.savez(data_path, x=rng.random((images, *model.input_shape[1:]), np.float32))
        if timeline is not None:
            timeline.write_text("")  # this run's calls alone
        env = timeline_env(timeline)
        with streamlit_app(folder / "server.log", env, root=root) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(600_000)
            page.goto(url)
            page.get_by_role("radio", name="Upload a model").click()
            inputs = page.locator("input[type=file]")
            inputs.nth(1).wait_for(state="attached")  # the model's uploader comes after the click
            start = time.perf_counter()
            inputs.nth(0).set_input_files(str(model_path))
            inputs.nth(1).set_input_files(str(data_path))
            page.get_by_text(f"evaluation data: {data_path.name}").wait_for()
            loaded = time.perf_counter() - start
            page.get_by_role("link", name="Explore").click()
            answered(page, "0.0%", measured=True)
            first, full = [], []
            slider = page.get_by_test_id("stSlider").locator("input[type=range]").first
            for step in range(1, moves + 1):
                slider.focus()
                start = time.perf_counter()
                slider.press("ArrowRight")
                answered(page, f"{5 * step:.1f}%", measured=False)
                first.append(time.perf_counter() - start)
                answered(page, f"{5 * step:.1f}%", measured=True)
                full.append(time.perf_counter() - start)
            time.sleep(pause)
            download = download_times(page, server_pid(url), timeline)
            errors = page.get_by_test_id("stException").count()
            peak = peak_mb(server_pid(url))
            browser.close()
    return {
        "model": arch,
        "images": images,
        "pause_s": pause,
        "load_s": loaded,
        "first_s": statistics.median(first),
        "full_s": statistics.median(full),
        "slowest_s": max(full),
        **download,
        "server_peak_mb": peak,
        "exceptions": errors,
    }


def timeline_env(timeline: Path | None) -> dict[str, str]:
    """The server's environment for a timeline in ``timeline`` (none: nothing added)."""
    if timeline is None:
        return {}
    folder = str(ROOT / "bench" / "timeline")  # its sitecustomize.py
    paths = [folder, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths), "BENCH_TIMELINE": str(timeline)}


def mark(timeline: Path | None, what: str) -> None:
    """Note ``what`` happens now in the server's timeline (the same clock, appended)."""
    if timeline is not None:
        with open(timeline, "a") as log:
            log.write(f"{time.time():.3f} bench ! {what}\n")


def first_file_steps(timeline: Path) -> str:
    """The timeline's calls from the Download click to the first file offered, one line each:
    seconds after the click, thread, call (and its seconds on exit)."""
    lines = [line.split(" ", 2) for line in timeline.read_text().splitlines()]
    start = next(float(t) for t, _, what in lines if what == "! click Download")
    end = next(float(t) for t, _, what in lines if what == "! first file offered")
    return "\n".join(
        f"{float(t) - start:7.2f} {thread:24} {what}"
        for t, thread, what in lines
        if start <= float(t) <= end
    )


def download_times(page, server: int | None = None, timeline: Path | None = None) -> dict:
    """Seconds from opening the Download page to its first file offered (a download button
    enabled; also counted from the click reaching the page), to every format offered (every
    download button enabled: ResNet50 refuses none), and to the report offered (every file
    timed too); then, where a format is made only when asked (ResNet50's full-integer int8),
    from the click on its "Make" button to its file offered, with the ``server`` process's
    peak memory before that click."""
    start = time.perf_counter()
    # The page notes when the click reaches it: chromium takes it (and this script) only once
    # it is done drawing, right after Explore's answer a second or more later.
    page.evaluate(RECEIVED_JS)
    mark(timeline, "click Download")
    page.get_by_role("link", name="Download").click()
    wait(page, f"() => ({OFFERED_JS})()[1] > 0 && (window.offeredAt = Date.now())", seconds=900)
    first = time.perf_counter() - start
    mark(timeline, "first file offered")
    received = page.evaluate("() => (window.offeredAt - window.clickedAt) / 1000")
    every = f"() => {{ const [n, on] = ({OFFERED_JS})(); return n > 0 && on === n; }}"
    wait(page, every, seconds=900)  # ResNet50: no format refused
    every = time.perf_counter() - start
    print(json.dumps({"download_first_file_s": first, "download_every_format_s": every}))
    page.get_by_role("button", name="Download report").wait_for(timeout=900_000)
    times = {
        "download_first_file_s": first,
        "download_first_file_from_click_in_page_s": received,
        "download_every_format_s": every,
        "download_report_s": time.perf_counter() - start,
    }
    make = page.locator("button", has_text="Make ")
    if make.count():
        if server is not None:
            times["server_peak_before_asking_mb"] = peak_mb(server)
        name = make.first.inner_text().split("Make ", 1)[1]
        start = time.perf_counter()
        make.first.click()
        offered = f"""() => [...document.querySelectorAll('button')]
            .some(b => b.innerText.includes({json.dumps("Download " + name)}) && !b.disabled)"""
        wait(page, offered, seconds=900)
        times["download_asked_file_s"] = time.perf_counter() - start
    return times


def sample_download_row(
    query: str = "sample=digits_cnn&sparsity=0.5&clusters=16&bits=4",
    repeats: int = 3,
    root: Path | None = None,
    pause: float = 0.0,
) -> dict:
    """The Download page of a bundled sample, timed as ``download_times`` times it, each repeat
    on a fresh server (nothing converted before), ``pause`` seconds after the Explore page's
    cards show its answer (chromium draws its charts for a second or so after them, and takes
    a click only then); ``root`` serves another checkout of the app (an older commit, to
    compare in the same run)."""
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(repeats):
            with streamlit_app(Path(tmp) / f"server-{i}.log", root=root) as url:
                page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
                page.set_default_timeout(600_000)
                page.goto(f"{url}/explore?{query}")
                answered(page, None, measured=True)
                time.sleep(pause)
                rows.append(download_times(page))
                page.context.close()
        browser.close()
    medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"query": query, "pause_s": pause} | medians


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", metavar="[samples] [ROOT]")
    parser.add_argument("--pause", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--timeline", type=Path, metavar="FILE")
    args = parser.parse_args()
    samples = args.what[:1] == ["samples"]
    roots = args.what[samples:]
    if len(roots) > 1 or (samples and args.timeline):
        parser.error("give [samples] [ROOT], and --timeline for the ResNet50 row only")
    root = Path(roots[0]) if roots else None
    if samples:
        print(json.dumps(sample_download_row(root=root, pause=args.pause)))
    else:
        row = browser_row(root=root, pause=args.pause, timeline=args.timeline)
        if args.timeline:
            print(first_file_steps(args.timeline))
        print(json.dumps(row))
