"""A timeline of the app's server, for ``python -m bench.browser --timeline FILE``.

Put on the server's ``PYTHONPATH`` with ``BENCH_TIMELINE`` naming a file, this logs the entry
and exit of the library's long calls in the Streamlit server (not in the converter's helper),
one line each: ``time.time()``, the thread, ``>`` or ``<`` and the call, and on exit its
seconds and the server's resident memory then. It wraps each function where the app looks it
up, once those modules are imported. It stands alone (no import from ``bench``): the server
may be an older checkout's.
"""

import importlib
import os
import sys
import threading
import time

CALLS = (  # module, function: where the app's code looks each one up
    ("optimizers.explore", "optimize"),
    ("optimizers.explore", "measure"),
    ("optimizers.delivery", "verify"),  # in ``optimizers.explore`` before 2026-12-07
    ("optimizers.delivery", "time_exports"),
    ("optimizers.explore", "verify"),
    ("optimizers.explore", "time_exports"),
    ("optimizers.evaluate", "predict"),
    ("optimizers.evaluate", "evaluation_clone"),
    ("optimizers.export", "warm"),
    ("optimizers.export", "run_tflite"),
    ("optimizers.export.conversion", "convert"),
    ("optimizers.export.conversion", "check_float_file"),
    ("optimizers.export.conversion", "kernel_placements"),
    ("optimizers.export.conversion", "model_digest"),
    ("optimizers.export.conversion", "rewritten"),
    ("optimizers.export.apart", "wrapped_convert"),
)


def rss_mb() -> int:
    """This process's resident memory now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


def start(path: str) -> None:
    log = open(path, "a", buffering=1)  # open for the server's life
    lock = threading.Lock()

    def write(text: str) -> None:
        thread = threading.current_thread().name[:24].replace(" ", "_")
        with lock:
            log.write(f"{time.time():.3f} {thread} {text}\n")

    def wrapped(name: str, function):
        def call(*args, **kwargs):
            begun = time.time()
            write(f"> {name}")
            try:
                return function(*args, **kwargs)
            finally:
                write(f"< {name} {time.time() - begun:.3f} {rss_mb()} MB")

        return call

    def install() -> None:
        while "ui.services" not in sys.modules:  # the first page imports the library
            time.sleep(0.05)
        for module, function in CALLS:
            try:
                found = importlib.import_module(module)
                setattr(found, function, wrapped(f"{module}.{function}", getattr(found, function)))
            except (ImportError, AttributeError):  # an older checkout without it
                write(f"! {module}.{function} not found")
        write("! installed")

    threading.Thread(target=install, daemon=True, name="timeline").start()


if os.environ.get("BENCH_TIMELINE") and b"streamlit" in open("/proc/self/cmdline", "rb").read():
    start(os.environ["BENCH_TIMELINE"])
