"""The library's thread pools: work nobody waits for runs below the answers, and spare work
only on a core nothing else wants (the lowest priority)."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from optimizers import workers


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="threads are niced one by one on Linux only")
def test_background_and_spare_threads_run_below_the_answers():
    answers = workers.POOL.submit(niceness).result()
    assert workers.BACKGROUND.submit(niceness).result() == max(answers, workers.BACKGROUND_NICE)
    assert workers.SPARE.submit(niceness).result() == workers.SPARE_NICE == 19


@pytest.mark.skipif(sys.platform != "linux", reason="threads are niced one by one on Linux only")
def test_a_thread_already_below_is_not_raised():
    low = max(15, niceness())  # only a privileged process may raise a thread again

    def lowered() -> int:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), low)
        workers.below_answers(workers.BACKGROUND_NICE)
        return niceness()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(lowered).result() == low
