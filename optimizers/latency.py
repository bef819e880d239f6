"""How long a LiteRT file takes to run on this CPU: the speed people optimize for.

``time_files(files)`` runs each file with LiteRT's interpreter (XNNPack, as LiteRT enables it by
default) at batch 1 on a fixed random input: a few warm-up invocations, then at least
``MIN_RUNS`` timed ones each and at least ``SECONDS`` of them with one thread (the time
compared), then ``all_core_runs`` and ``SECONDS`` with every core (only their median is
reported). The files take turns, one invocation each, so that other load on the machine slows
them alike and their ratios hold even when the milliseconds do not. It reports the median,
quartiles and 90th percentile of one thread, the median of all cores, and the largest
activation tensor of the file (the interpreter does not expose its arena).

``delivery.time_exports`` times a setting's files with their baseline (the original model's
float32 file) that way, all in one run. ``speed_verdict`` says whether the file is faster,
slower or the same speed: "same speed" when the two one-thread interquartile ranges overlap
(the difference is within the spread of the runs) or the medians differ by less than
``SAME_WITHIN``.

Timings are of this machine's processor (``processor_name``); phones differ, and other load on
the machine inflates them, which is why the median (not the mean) is reported.

>>> file, base = time_files([int8_bytes, float32_bytes])  # doctest: +SKIP
>>> speedup(file, base), speed_verdict(file, base)  # doctest: +SKIP
(1.4, 'faster')
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from optimizers.export.flatbuffer import TFLITE_IDENTIFIER, largest_activation_bytes
from optimizers.export.quiet import quiet
from optimizers.export.running import to_input
from optimizers.workers import give_back_memory

WARMUP_RUNS = 3
MIN_RUNS = 20
SECONDS = 0.25  # per thread count, shared by the files timed together
SAME_WITHIN = 0.05  # medians closer than 5% are "same speed": below run-to-run drift

Verdict = Literal["faster", "slower", "same speed"]


@dataclass(frozen=True)
class Latency:
    """Time of one invocation at batch 1, in milliseconds."""

    median_ms: float  # one thread
    q1_ms: float  # one thread, 25th percentile
    q3_ms: float  # one thread, 75th percentile
    p90_ms: float  # one thread
    threads_ms: float  # median with ``threads`` threads (every core)
    threads: int
    runs: int  # timed invocations with one thread
    activation_bytes: int  # the file's largest activation tensor at batch 1


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), for saying where a time was measured."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "this computer's processor"


def time_files(
    files: Sequence[bytes], min_runs: int = MIN_RUNS, seconds: float = SECONDS
) -> list[Latency]:
    """Batch-1 latencies of the LiteRT ``files``, timed taking turns (see the module docstring).

    Raises ``ValueError`` (one sentence) when one is not a LiteRT file.
    """
    if min_runs < 1:
        raise ValueError(f"min_runs must be at least 1, got {min_runs}")
    if any(bytes(data[4:8]) != TFLITE_IDENTIFIER for data in files):
        raise ValueError("the data is not a LiteRT (.tflite) model")
    one = invocation_times(files, 1, min_runs, seconds)
    n = cores()
    many = invocation_times(files, n, all_core_runs(min_runs), seconds) if n > 1 else one
    give_back_memory()  # the interpreters' heap, freed (ResNet50's six files: 0.25 GB kept)
    return [
        Latency(
            median_ms=float(np.median(a)) * 1e3,
            q1_ms=float(np.percentile(a, 25)) * 1e3,
            q3_ms=float(np.percentile(a, 75)) * 1e3,
            p90_ms=float(np.percentile(a, 90)) * 1e3,
            threads_ms=float(np.median(b)) * 1e3,
            threads=n,
            runs=len(a),
            activation_bytes=largest_activation_bytes(data),
        )
        for data, a, b in zip(files, one, many, strict=True)
    ]


def all_core_runs(min_runs: int) -> int:
    """Timed runs with every core, given ``min_runs`` with one thread: half as many, as only
    their median is shown (on ResNet50 that set took 11 s of the timing's 28 s with as many)."""
    return max(1, min_runs // 2)


def speedup(timed: Latency, baseline: Latency) -> float:
    """How many times faster ``timed`` runs than ``baseline`` (one thread); below 1 is slower."""
    return baseline.median_ms / timed.median_ms


def speed_verdict(timed: Latency, baseline: Latency) -> Verdict:
    """``"same speed"`` when the difference is within the noise (see the module docstring)."""
    overlap = timed.q1_ms <= baseline.q3_ms and baseline.q1_ms <= timed.q3_ms
    ratio = speedup(timed, baseline)
    if overlap or max(ratio, 1 / ratio) < 1 + SAME_WITHIN:
        return "same speed"
    return "faster" if ratio > 1 else "slower"


def latency_to_dict(timed: Latency | None, baseline: Latency | None) -> dict[str, Any]:
    """JSON-able figures of a file's latency and its baseline's, timed in the same run (``None``
    when not timed)."""
    return {
        "latency_ms": None if timed is None else timed.median_ms,
        "latency_q1_ms": None if timed is None else timed.q1_ms,
        "latency_q3_ms": None if timed is None else timed.q3_ms,
        "latency_p90_ms": None if timed is None else timed.p90_ms,
        "latency_threads_ms": None if timed is None else timed.threads_ms,
        "latency_threads": None if timed is None else timed.threads,
        "latency_runs": None if timed is None else timed.runs,
        "baseline_latency_ms": None if baseline is None else baseline.median_ms,
        "baseline_latency_q1_ms": None if baseline is None else baseline.q1_ms,
        "baseline_latency_q3_ms": None if baseline is None else baseline.q3_ms,
        "baseline_latency_threads_ms": None if baseline is None else baseline.threads_ms,
        "speedup": None if timed is None or baseline is None else speedup(timed, baseline),
        "speed_verdict": None
        if timed is None or baseline is None
        else speed_verdict(timed, baseline),
        "speed_words": speed_words(timed, baseline),
        "activation_bytes": None if timed is None else timed.activation_bytes,
    }


def invocation_times(
    files: Sequence[bytes], threads: int, min_runs: int, seconds: float
) -> list[np.ndarray]:
    """Seconds of each timed invocation of each file at batch 1 with ``threads`` threads.

    The files take turns, one invocation each, in alternating order, until each has ``min_runs``
    and ``seconds`` have passed: a burst of load on the machine then falls on all of them alike.
    """
    times: list[list[float]] = [[] for _ in files]
    turns = [(ready(data, threads), taken) for data, taken in zip(files, times, strict=True)]
    start = time.perf_counter()
    while len(times[0]) < min_runs or time.perf_counter() - start < seconds:
        for interpreter, taken in turns:
            t0 = time.perf_counter()
            interpreter.invoke()
            taken.append(time.perf_counter() - t0)
        turns.reverse()  # going first is a few percent slower: each file goes first as often
    return [np.asarray(taken) for taken in times]


def ready(data: bytes, threads: int) -> Any:
    """An interpreter of ``data`` at batch 1 with its fixed input set, warmed up."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet():  # the XNNPack delegate announces itself on stderr
        interpreter = Interpreter(model_content=bytes(data), num_threads=threads)
        for detail in interpreter.get_input_details():
            if int(detail["shape_signature"][0]) == -1:
                interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
        interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], sample_input(detail))
    for _ in range(WARMUP_RUNS):
        interpreter.invoke()
    return interpreter


def sample_input(detail: dict[str, Any]) -> np.ndarray:
    """A fixed input for one input tensor: standard normal values, zeros for integer ids."""
    shape = [int(d) for d in detail["shape"]]
    dtype = np.dtype(detail["dtype"])
    scale, _ = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and not scale:
        return np.zeros(shape, dtype)  # token ids: 0 is valid for any table
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return to_input(x, detail)


def format_time(ms: float | None) -> str:
    """``3.1 µs``/``31 µs``/``4.2 ms``/``1.3 s``: the unit that fits, two or three figures; a dash
    when not timed."""
    if ms is None:
        return "—"
    for unit, value in (("µs", ms * 1e3), ("ms", ms), ("s", ms / 1e3)):
        if value < 999.5 or unit == "s":  # 999.7 µs reads "1.0 ms", not "1000 µs"
            return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def times(r: float, more: str, less: str) -> str:
    """``3.8× more`` for ``r`` = 3.8, ``3.8× less`` for ``r`` = 1 / 3.8."""
    return f"{r:.1f}× {more}" if r >= 1 else f"{1 / r:.1f}× {less}"


def speed_words(timed: Latency | None, baseline: Latency | None) -> str:
    """``3.8× faster``, ``3.8× slower`` or ``same speed`` when the difference is within the noise
    of the runs (``speed_verdict``); a dash when not timed."""
    if timed is None or baseline is None:
        return "—"
    if speed_verdict(timed, baseline) == "same speed":
        return "same speed"
    return times(speedup(timed, baseline), "faster", "slower")
