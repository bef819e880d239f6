"""The Download page's background queue: one job at a time, in the order asked, files before
timing, shared by sessions, a job no session still wants is dropped before it starts, and work
that only prepares later work waits for a quiet moment."""

from __future__ import annotations

import threading
import time

from ui import background
from ui.background import Conversions, Job


def until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_jobs_run_one_at_a_time_in_the_order_asked_files_before_timing() -> None:
    queue, ran, gate = Conversions(), [], threading.Event()
    running = []

    def job(name: str, rank: tuple[int, int]) -> Job:
        def make() -> None:
            running.append(name)
            assert len(running) == 1  # never two at once
            gate.wait(5)
            ran.append(name)
            running.remove(name)

        return Job(make, rank, f"making {name}", {})

    first = queue.ask("a", {"first": job("first", (0, 0))})
    assert first == {"first": "queued"} or first == {"first": "making first"}
    until(lambda: running == ["first"])
    statuses = queue.ask(
        "a",
        {
            "first": job("first", (0, 0)),
            "timing": job("timing", (1, 0)),
            "third": job("third", (0, 2)),
            "second": job("second", (0, 1)),
        },
    )
    assert statuses["first"] == "making first" and statuses["second"] == "queued"
    gate.set()
    until(lambda: len(ran) == 4)
    assert ran == ["first", "second", "third", "timing"]


def test_a_newer_request_drops_what_the_session_no_longer_wants() -> None:
    queue, ran, gate = Conversions(), [], threading.Event()

    def job(name: str) -> Job:
        def make() -> None:
            gate.wait(5)
            ran.append(name)

        return Job(make, (0, 0), name, {})

    queue.ask("a", {"busy": job("busy")})
    until(lambda: queue.ask("a", {"busy": job("busy")})["busy"] == "busy")
    queue.ask("a", {"busy": job("busy"), "old": job("old")})
    queue.ask("b", {"shared": job("shared")})
    queue.ask("a", {"new": job("new"), "shared": job("shared")})  # "a" moved on: "old" goes
    gate.set()
    until(lambda: len(ran) == 3)
    assert sorted(ran) == ["busy", "new", "shared"]  # the running job finishes; "old" never runs


def test_a_page_waiting_for_files_wakes_when_a_job_ends_not_at_its_timeout() -> None:
    queue, gate = Conversions(), threading.Event()
    seen = queue.finished
    queue.ask("a", {"file": Job(lambda: gate.wait(5), (0, 0), "making", {})})
    start = time.monotonic()
    queue.wait(seen, 0.2)  # the job is still running: the wait ends at its timeout
    assert time.monotonic() - start >= 0.19 and queue.finished == seen
    threading.Timer(0.05, gate.set).start()
    start = time.monotonic()
    queue.wait(seen, 30)
    assert queue.finished == seen + 1 and time.monotonic() - start < 10


def test_work_that_may_wait_starts_once_no_answer_has_been_made_for_a_moment(
    monkeypatch,
) -> None:
    monkeypatch.setattr(background, "QUIET_SECONDS", 0.3)
    queue, started = Conversions(), []
    with background.answering():
        warm = Job(lambda: started.append(time.monotonic()), (2, 0), "", {}, waits=True)
        queue.ask("a", {"warm": warm})
        time.sleep(0.5)
        assert started == []  # an answer is being made
        small = Job(lambda: started.append("small"), (2, 1), "", {})  # another, not waiting
        queue.ask("b", {"small": small})
        until(lambda: started == ["small"])  # the jobs behind a waiting one go first
    ended = time.monotonic()
    until(lambda: len(started) == 2)
    assert started[1] - ended >= 0.29  # a quiet moment after the last answer
