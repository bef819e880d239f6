"""The converter's one long call, run in a helper process.

LiteRT's converter does its work (MLIR, on the frozen graph) in one C++ call that holds
Python's GIL throughout: on ResNet50 1.95 s in which no other thread of the app ran (a thread
ticking every millisecond saw that gap), so every session's answer and page waited for it.
Here that call (``wrapped_convert``, which the converter looks up at each conversion) is sent,
as the bytes it takes, to a helper process and its bytes come back, with the errors the
converter collected when it fails (the converter reads them to retry, ``install``); the app's
threads run meanwhile, a crash of the converter ends the helper, not the app, and the memory the
call holds is the helper's, given back when it ends. A helper serves one model's conversions
(``ready``: started ahead, it loads the converter while the model is traced and frozen here), at
background priority, one graph at a time. Models under ``APART_FROM_PARAMETERS``, and the
SavedModel path (its graph is a folder, not bytes), convert in this process.
``python -m optimizers.export.apart`` is the helper.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType
from typing import IO, TypeVar

from optimizers.workers import BACKGROUND_NICE

# Smaller models convert in this process: their call holds the GIL for a fraction of a second,
# less than starting the helper takes (0.4 s to load the converter, ``converter_calls``).
APART_FROM_PARAMETERS = 1_000_000
_HEADER = struct.Struct("<Q")
_LOCK = threading.Lock()  # one request at a time, and one helper
_helper: subprocess.Popen[bytes] | None = None
_kept = 0  # ``ready`` blocks open: their conversions go to the helper
_errors: list[bytes] = []  # what the converter collected in the helper on its last failure
_handed_over: list[threading.Event] = []  # set when a graph goes to the helper (``alongside``)
_HANDED_LOCK = threading.Lock()  # guards ``_handed_over``; ``_LOCK`` is held through a conversion
# The converter's own calls, once ``install`` replaced them.
_in_process: Callable[..., bytes] | None = None
_in_process_errors: Callable[[], list[bytes]] | None = None


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
    """The helper, started if it is not running (call with ``_LOCK`` held). ``OSError`` when
    no process can be started."""
    global _helper
    if _helper is None or _helper.poll() is not None:
        _helper = subprocess.Popen(
            [sys.executable, "-m", "optimizers.export.apart"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            cwd=Path(__file__).resolve().parents[2],
        )
    return _helper


@contextlib.contextmanager
def ready(parameters: int) -> Iterator[None]:
    """Meanwhile, the conversions of a model of ``parameters`` weights go to a helper (none
    under ``APART_FROM_PARAMETERS``): started now, so that it loads the converter while the model
    is traced and frozen, and ended afterwards, which gives its memory back (ResNet50's
    conversion: 1.63 GB at its peak, measured when the helper imported all of TensorFlow)."""
    global _kept
    if parameters < APART_FROM_PARAMETERS:
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


T = TypeVar("T")


@contextlib.contextmanager
def alongside(parameters: int, work: Callable[[], T]) -> Iterator[Future[T]]:
    """``work()`` run in a thread of its own while a model of ``parameters`` weights converts
    in the block: once a graph goes to the helper, whose call leaves this process's GIL free,
    or when the block ends if none does; at once for a model converted in process. Beside the
    tracing and freezing before that call, which hold the GIL, a copy of ResNet50 (1.7 s) made
    them a second slower. The future holds its result or its error."""
    future: Future[T] = Future()
    go = threading.Event()

    def run() -> None:
        go.wait()
        try:
            future.set_result(work())
        except BaseException as e:  # the caller's to raise, from ``result()``
            future.set_exception(e)

    if parameters < APART_FROM_PARAMETERS:
        go.set()
    with _HANDED_LOCK:
        _handed_over.append(go)
    try:
        threading.Thread(target=run, daemon=True, name="alongside").start()
        yield future
    finally:
        go.set()
        with _HANDED_LOCK:
            _handed_over.remove(go)


def _stop() -> None:
    """End the helper (call with ``_LOCK`` held), without waiting for it to exit."""
    global _helper
    if _helper is None:
        return
    helper, _helper = _helper, None
    for pipe in (helper.stdin, helper.stdout):  # a closed stdin is the helper's signal to exit
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            helper.kill()
    threading.Thread(target=helper.wait, daemon=True).start()  # reaped when it has exited


def wrapped_convert(
    model_flags: bytes, converter_flags: bytes, input_data: bytes | None, debug_info: bytes | None
) -> bytes:
    """What ``wrap_converter.wrapped_convert`` returns for these arguments: from the helper
    inside ``ready``, else from this process. Raises ``RuntimeError`` with the converter's
    message when it fails (its collected errors kept for ``collected_errors``), or when the
    helper ends without an answer (a crash of the converter, which the app survives); ``OSError``
    when no helper can be started."""
    global _errors
    if input_data is None or not _kept:
        assert _in_process is not None, "install() first"
        return _in_process(model_flags, converter_flags, input_data, debug_info)
    with _LOCK:
        helper = _running()
        requests, answers = helper.stdin, helper.stdout
        assert requests is not None and answers is not None
        try:
            debug = b"" if debug_info is None else b"+" + debug_info
            write(requests, model_flags, converter_flags, input_data, debug)
            with _HANDED_LOCK:
                for go in _handed_over:
                    go.set()
            status, answer = read(answers), read(answers)
            if status != b"ok":
                _errors = [read(answers) for _ in range(int(read(answers)))]
        except (OSError, EOFError):
            _stop()
            raise RuntimeError(
                "the converter's process ended without an answer (it ran out of memory or crashed)"
            ) from None
        except BaseException:  # an answer left half read would answer the next request
            _stop()
            raise
    if status != b"ok":
        raise RuntimeError(answer.decode("utf-8", "replace"))
    return answer


def collected_errors() -> list[bytes]:
    """What ``wrap_converter.wrapped_retrieve_collected_errors`` returns: the errors the
    converter collected in this process and, after a failure in the helper, there; cleared, as
    the converter's own are."""
    global _errors
    assert _in_process_errors is not None, "install() first"
    with _LOCK:
        found, _errors = _errors, []
    return [*_in_process_errors(), *found]


def install() -> None:
    """Send the long call of a model's conversions inside ``ready`` to the helper, and read
    the errors it collected there as the converter's own (idempotent). Without the converter's
    hooks (another TensorFlow), conversions stay in this process."""
    global _in_process, _in_process_errors
    try:
        from tensorflow.compiler.mlir.lite.python import wrap_converter
    except ImportError:
        return
    convert = getattr(wrap_converter, "wrapped_convert", None)
    errors = getattr(wrap_converter, "wrapped_retrieve_collected_errors", None)
    if convert is None or errors is None or convert is wrapped_convert:
        return
    _in_process, _in_process_errors = convert, errors
    wrap_converter.wrapped_convert = wrapped_convert
    wrap_converter.wrapped_retrieve_collected_errors = collected_errors


def converter_calls() -> tuple[Callable[..., bytes], Callable[[], list[bytes]]]:
    """The helper's ``wrapped_convert`` and ``wrapped_retrieve_collected_errors``: the
    converter's two native modules loaded from TensorFlow's folder alone, in 0.4 s, as
    ``wrap_converter`` calls them; where this TensorFlow lays them out otherwise, through
    ``wrap_converter``, which imports the whole ``tensorflow`` package first (4.5 s of a core,
    which ResNet50's conversion waited for once its freezing became faster)."""
    try:
        api = native("compiler/mlir/lite/python/_pywrap_converter_api")
        library = native("compiler/mlir/quantization/tensorflow/python/pywrap_function_lib")
        native_convert, errors = api.Convert, api.RetrieveCollectedErrors
        functions = library.PyFunctionLibrary

        def convert(model: bytes, flags: bytes, graph: bytes, debug: bytes | None) -> bytes:
            return native_convert(model, flags, graph, False, debug, functions())

        return convert, errors
    except (ImportError, OSError, AttributeError):
        from tensorflow.compiler.mlir.lite.python import wrap_converter

        return wrap_converter.wrapped_convert, wrap_converter.wrapped_retrieve_collected_errors


def native(path: str) -> ModuleType:
    """The extension module at ``path`` (no suffix) in TensorFlow's folder, loaded without
    importing the ``tensorflow`` package; ``ImportError`` when it is not there."""
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or spec.origin is None:
        raise ImportError("TensorFlow is not installed")
    stem = Path(spec.origin).parent / path
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        file = stem.with_name(stem.name + suffix)
        if file.is_file():
            loader = importlib.machinery.ExtensionFileLoader(stem.name, str(file))
            module = importlib.util.module_from_spec(
                importlib.util.spec_from_file_location(stem.name, file, loader=loader)
            )
            loader.exec_module(module)
            return module
    raise ImportError(f"no {stem.name} in {stem.parent}")


def main() -> None:
    """The helper: answer requests from stdin until it closes."""
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever TensorFlow prints must not mix with the answers
    with contextlib.suppress(OSError):  # below the app's answers, as its conversions are
        os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICE)
    convert, retrieve_errors = converter_calls()
    while True:
        try:
            args = [read(requests) for _ in range(4)]
        except EOFError:
            return
        *flags, debug = args
        retrieve_errors()  # from this call on, as in process
        try:
            file = convert(*flags, debug[1:] if debug else None)
            write(answers, b"ok", file)
        except Exception as e:  # the converter's refusal, in its own words, and its errors
            errors = [bytes(x) for x in retrieve_errors()]
            message = str(e).encode("utf-8", "replace")
            write(answers, b"no", message, str(len(errors)).encode(), *errors)


if __name__ == "__main__":
    main()
