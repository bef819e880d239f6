"""The library's thread pools: work nobody waits for runs below the answers, and spare work
only on a core nothing else wants (the lowest priority)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from optimizers import workers


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="threads are niced one by one on Linux only")
def test_background_and_spare_threads_run_below_the_answers():
    answers = workers.POOL.submit(niceness).result()
    assert workers.BACKGROUND.submit(niceness).result() == max(answers, workers.BACKGROUND_NICE)
    assert workers.SPARE.submit(niceness).result() == workers.SPARE_NICE == 19
