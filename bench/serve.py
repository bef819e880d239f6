"""The app served as a user runs it (``streamlit run app.py``) on a free local port, for the
real-browser tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (`make chromium`); never Playwright's own
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_app(
    log: Path,
    env: dict[str, str] | None = None,
    seconds: float = 120,
    root: Path | None = None,
    cores: set[int] | None = None,
) -> Iterator[str]:
    """Serve the app of ``root`` (this checkout) with its output in ``log`` (and ``env`` added
    to this environment), on ``cores`` only if given (every thread it ever starts); yields its
    address once it answers its health check, and stops it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true"]
    command += [f"--server.port={port}", "--server.address=127.0.0.1"]
    command += ["--server.fileWatcherType=none", "--browser.gatherUsageStats=false"]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command,
            cwd=root or ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
            preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + seconds
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {server.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"streamlit did not answer at {url} in {seconds} s"
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def server_pid(url: str) -> int:
    """The process of the app that ``streamlit_app`` serves at ``url`` (found by its port)."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"--server.port={port}" in (proc / "cmdline").read_text():
                return int(proc.name)
        except OSError:
            continue
    raise LookupError(f"no app is serving {url}")
