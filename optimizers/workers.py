"""Thread pools for the library's heavy per-tensor work, and the process's memory.

numpy's sorts, partitions and element-wise kernels and zlib's compression release the GIL, so
independent tensors are processed side by side on every core. Jobs never wait on other jobs of
the pool (only their callers wait), so the pool cannot deadlock however many callers share it.
``BACKGROUND`` runs work nobody waits for (it only speeds up later answers) on one thread of its
own, below the answers' threads (``below_answers``), so that it never queues ahead of an
answer's jobs in ``POOL`` nor takes a core from them. ``SPARE`` runs, on one thread at the lowest
priority, work that may use only a core nothing else wants: the gzip sizes of the files already
made while the next ones are converted and run (``delivery.gzip_meanwhile``); at ``BACKGROUND``'s
priority it took a share of those, and every format of ResNet50 came 2-3 s later.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

BACKGROUND_NICE = 10  # a background thread's niceness: about a tenth of a core when contended
SPARE_NICE = 19  # the lowest: a spare thread runs when no other thread wants its core


def below_answers(niceness: int = BACKGROUND_NICE) -> None:
    """Lower the calling thread's priority to ``niceness``, or keep it where the process already
    runs lower (only a privileged process may raise it again) (Linux nices threads one by one,
    and the threads it starts inherit it); elsewhere, nothing."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, max(current, niceness))


POOL = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="optimizers")
BACKGROUND = ThreadPoolExecutor(
    1, thread_name_prefix="optimizers-background", initializer=below_answers
)
SPARE = ThreadPoolExecutor(
    1, thread_name_prefix="optimizers-spare", initializer=below_answers, initargs=(SPARE_NICE,)
)


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def give_back_memory() -> None:
    """Hand the heap freed by a large transient job back to the system, which glibc would
    otherwise keep for this process: converting ResNet50 frees 2.5 GB, timing its six files
    together 0.25 GB (``latency.time_files``)."""
    trim = malloc_trim()
    if trim is not None:
        trim(0)
