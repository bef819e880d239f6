"""The converter's one long call, run in a helper process.

LiteRT's converter does its work (MLIR, on the frozen graph) in one C++ call that holds
Python's GIL throughout: on ResNet50 1.95 s in which no other thread of the app ran (a thread
ticking every millisecond saw that gap), so every session's answer and page waited for it.
Here that call (``wrapped_convert``, which the converter looks up at each conversion) is sent,
as the bytes it takes, to a helper process and its bytes come back; the app's threads run
meanwhile, a crash of the converter ends the helper, not the app, and the memory the call holds
is the helper's, given back when it ends. A helper serves one model's conversions (``ready``:
started ahead, it imports TensorFlow while the model is traced and frozen here), at
background priority, one graph at a time. Graphs under ``APART_FROM_BYTES`` convert in this
process.
``python -m optimizers.export.apart`` is the helper.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from optimizers.workers import BACKGROUND_NICE

# Smaller graphs (a million float32 weights) convert in this process: their call holds the GIL
# for a fraction of a second, less than starting the helper takes (3 s to import TensorFlow).
APART_FROM_BYTES = 4_000_000
_HEADER = struct.Struct("<Q")
_LOCK = threading.Lock()  # one request at a time, and one helper
_helper: subprocess.Popen[bytes] | None = None
_kept = 0  # ``ready`` blocks open: the helper stays for their conversions
_in_process: Callable[..., bytes] | None = None  # the converter's own call, once installed


def write(stream: IO[bytes], *parts: bytes) -> None:
    for part in parts:
        stream.write(_HEADER.pack(len(part)))
        stream.write(part)
    stream.flush()


def read(stream: IO[bytes]) -> bytes:
    """One part ``write`` sent; ``EOFError`` when the stream ends first."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (n,) = _HEADER.unpack(header)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _running() -> subprocess.Popen[bytes]:
    """The helper, started if it is not running (call with ``_LOCK`` held)."""
    global _helper
    if _helper is None or _helper.poll() is not None:
        _helper = subprocess.Popen(
            [sys.executable, "-m", "optimizers.export.apart"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            cwd=Path(__file__).resolve().parents[2],
            preexec_fn=lambda: os.nice(BACKGROUND_NICE),
        )
    return _helper


@contextlib.contextmanager
def ready(graph_bytes: int) -> Iterator[None]:
    """Meanwhile, a helper for a graph of ``graph_bytes`` (none under ``APART_FROM_BYTES``):
    started now, so that it imports TensorFlow while the model is traced and frozen, and ended
    afterwards, which gives its memory back (ResNet50's conversion: 1.75 GB at its peak)."""
    global _kept
    if graph_bytes < APART_FROM_BYTES:
        yield
        return
    with _LOCK:
        _running()
        _kept += 1
    try:
        yield
    finally:
        with _LOCK:
            _kept -= 1
            if not _kept:
                _stop()


def _stop() -> None:
    """End the helper (call with ``_LOCK`` held), without waiting for it: TensorFlow takes about
    a second to exit."""
    global _helper
    if _helper is None:
        return
    helper, _helper = _helper, None
    try:
        if helper.stdin is not None:
            helper.stdin.close()  # the helper's signal to exit
    except OSError:
        helper.kill()
    threading.Thread(target=helper.wait, daemon=True).start()  # reaped when it has exited


def wrapped_convert(
    model_flags: bytes, converter_flags: bytes, input_data: bytes, debug_info: bytes | None
) -> bytes:
    """What ``wrap_converter.wrapped_convert`` returns for these arguments, from the helper
    (from this process for a graph under ``APART_FROM_BYTES``). Raises ``RuntimeError`` with
    the converter's message when it fails, or when the helper ends without an answer (a crash
    of the converter, which the app survives)."""
    if len(input_data) < APART_FROM_BYTES and _in_process is not None:
        return _in_process(model_flags, converter_flags, input_data, debug_info)
    with _LOCK:
        helper = _running()
        requests, answers = helper.stdin, helper.stdout
        assert requests is not None and answers is not None
        try:
            debug = b"" if debug_info is None else b"+" + debug_info
            write(requests, model_flags, converter_flags, input_data, debug)
            status, answer = read(answers), read(answers)
        except (OSError, EOFError):
            _stop()
            raise RuntimeError(
                "the converter's process ended without an answer (it ran out of memory or crashed)"
            ) from None
        finally:
            if not _kept:  # a call outside ``ready``: its helper ends with it
                _stop()
    if status != b"ok":
        raise RuntimeError(answer.decode("utf-8", "replace"))
    return answer


def install() -> None:
    """Send every large conversion's long call to the helper (idempotent). Without the
    converter's hook (another TensorFlow), conversions stay in this process."""
    global _in_process
    try:
        from tensorflow.compiler.mlir.lite.python import wrap_converter
    except ImportError:
        return
    found = getattr(wrap_converter, "wrapped_convert", None)
    if found is not None and found is not wrapped_convert:
        _in_process, wrap_converter.wrapped_convert = found, wrapped_convert


def main() -> None:
    """The helper: answer requests from stdin until it closes."""
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever TensorFlow prints must not mix with the answers
    from tensorflow.compiler.mlir.lite.python import wrap_converter

    while True:
        try:
            args = [read(requests) for _ in range(4)]
        except EOFError:
            return
        *flags, debug = args
        try:
            file = wrap_converter.wrapped_convert(*flags, debug[1:] if debug else None)
            write(answers, b"ok", file)
        except Exception as e:  # the converter's refusal, in its own words
            write(answers, b"no", str(e).encode())


if __name__ == "__main__":
    main()
