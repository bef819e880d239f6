"""Silence TensorFlow and LiteRT while they convert and run: their C++ code prints to stderr."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any


def silence_fd(fd: int) -> int:
    """Point ``fd`` at /dev/null; returns a duplicate of the old one to restore (-1: untouched)."""
    try:
        saved = os.dup(fd)
    except OSError:
        return -1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return -1
    return saved


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_saved_stderr = -1
_saved_levels: list[tuple[Any, int]] = []


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence TensorFlow's Python warnings and the C++ converter's stderr lines meanwhile.

    The converter and interpreter print from C++ straight to file descriptor 2, so that is
    pointed at /dev/null, and the ``tensorflow`` and ``absl`` loggers are raised to ERROR, for
    the duration: once for nested and concurrent callers, restored when the last one leaves.
    """
    global _quiet_depth, _saved_stderr
    import logging

    with _QUIET_LOCK:
        if _quiet_depth == 0:
            _saved_stderr = silence_fd(2)
            _saved_levels[:] = [
                (logger, logger.level)
                for logger in (logging.getLogger("tensorflow"), logging.getLogger("absl"))
            ]
            for logger, _ in _saved_levels:
                logger.setLevel(logging.ERROR)
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                for logger, level in _saved_levels:
                    logger.setLevel(level)
                if _saved_stderr >= 0:
                    os.dup2(_saved_stderr, 2)
                    os.close(_saved_stderr)
                    _saved_stderr = -1
