"""Work the pages ask for and a background thread does: the Download page's conversions.

A ``Job`` is one file to convert and verify, or one setting's files to time; ``Conversions``
runs them one at a time and forgets what no session still wants. The results go into the caches
of ``ui.services``, which decides what to ask for. A job that only prepares later work (a
large model converted ahead) waits until the Explore page has not answered, in any session,
for ``QUIET_SECONDS`` (``answering``), and the jobs behind it go first meanwhile: on two cores,
converting ResNet50 beside a slider's answers made each 2.3 s instead of 1.35 s. While several
users move sliders without a pause, it waits, and that model's Download page converts it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from optimizers.workers import below_answers

log = logging.getLogger(__name__)
OWNER_SECONDS = 30.0  # a session that has not asked for a while (a closed tab) no longer wants
QUIET_SECONDS = 2.0  # work that may wait starts once no answer has been made for this long
_answers = threading.Lock()
_answering = 0  # answers being made now, in every session
_last_answer = float("-inf")  # when the last one ended (time.monotonic)


@contextlib.contextmanager
def answering() -> Iterator[None]:
    """Mark an answer being made (a run of the Explore page's sliders), so that work which may
    wait does not start meanwhile. A context manager, or a decorator of the run."""
    global _answering, _last_answer
    with _answers:
        _answering += 1
    try:
        yield
    finally:
        with _answers:
            _answering -= 1
            _last_answer = time.monotonic()


def quiet_in() -> float:
    """Seconds until no answer will have been made for ``QUIET_SECONDS`` (0: already)."""
    with _answers:
        if _answering:
            return QUIET_SECONDS
        return max(0.0, _last_answer + QUIET_SECONDS - time.monotonic())


@dataclass
class Job:
    """One file to convert and verify, or one setting's files to time; ``status`` is what the
    page shows while it waits."""

    make: Callable[[], object]
    rank: tuple[int, int]  # (stage, position): files before timing, in the order asked
    status: str
    owners: dict[str, float]  # session -> when it last asked
    running: bool = False
    waits: bool = False  # it only prepares later work: it waits for a quiet moment


class Conversions:
    """A queue of ``Job`` run by one thread per process: a real-size model's conversion holds
    gigabytes while it runs, so two never run at once, and each is freed before the next. A
    result goes into its cache, shared by every session. Each session's newest request replaces
    its previous one, so a job that no session still wants (a setting left behind) is dropped
    before it starts."""

    def __init__(self) -> None:
        self._jobs: dict[Hashable, Job] = {}
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self.finished = 0  # jobs done so far; ``wait`` follows it
        self._done = threading.Condition()

    def ask(self, owner: str, wanted: dict[Hashable, Job]) -> dict[Hashable, str]:
        """Queue ``wanted`` (key -> job) for ``owner``, forget what it asked for before; the
        status of each wanted key."""
        now = time.monotonic()
        with self._ready:
            for key, job in list(self._jobs.items()):
                if key not in wanted:
                    job.owners.pop(owner, None)
                job.owners = {o: t for o, t in job.owners.items() if now - t < OWNER_SECONDS}
                if not job.owners and not job.running:
                    del self._jobs[key]
            for key, job in wanted.items():
                found = self._jobs.setdefault(key, job)
                found.owners[owner] = now
                found.rank = min(found.rank, job.rank)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True, name="convert")
                self._thread.start()
            self._ready.notify()
            return {
                key: self._jobs[key].status if self._jobs[key].running else "queued"
                for key in wanted
            }

    def _work(self) -> None:
        below_answers()  # a slider's answer comes before a file
        while True:
            with self._ready:
                waiting = [k for k, j in self._jobs.items() if not j.running]
                if not waiting:
                    self._ready.wait()
                    continue
                delay = quiet_in()
                free = [k for k in waiting if not (delay and self._jobs[k].waits)]
                if not free:  # a newer job may come meanwhile and go first
                    self._ready.wait(delay)
                    continue
                key = min(free, key=lambda k: self._jobs[k].rank)  # ties: first asked
                job = self._jobs[key]
                job.running = True
            try:
                job.make()
            except Exception:  # make() keeps its own refusals; never let the worker die
                log.exception("background job %s failed", key)
            with self._ready:
                del self._jobs[key]
            with self._done:
                self.finished += 1
                self._done.notify_all()

    def wait(self, seen: int, seconds: float) -> None:
        """Return once a job ends after ``finished`` read ``seen``, or after ``seconds``: a
        page that follows its files draws each as soon as it is made."""
        with self._done:
            self._done.wait_for(lambda: self.finished != seen, seconds)
