"""How long a LiteRT file takes to run on this CPU: the speed people optimize for.

``time_file(data)`` runs the file with LiteRT's interpreter (XNNPack, as LiteRT enables it by
default) at batch 1 on a fixed random input: a few warm-up invocations, then at least
``MIN_RUNS`` timed ones and at least ``SECONDS`` of them, once with one thread and once with
every core. It reports the median and 90th percentile of one thread, the median of all cores,
and the largest activation tensor of the file (the interpreter does not expose its arena).

Timings are of this machine's processor (``processor_name``); phones differ, and other load on
the machine inflates them, which is why the median (not the mean) is reported.

>>> time_file(export.export_bytes(model, "tflite-float32")).median_ms  # doctest: +SKIP
0.41
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from optimizers.export import export_bytes
from optimizers.export.conversion import model_digest
from optimizers.export.flatbuffer import TFLITE_IDENTIFIER, largest_activation_bytes
from optimizers.export.quiet import quiet
from optimizers.export.running import to_input

if TYPE_CHECKING:
    import keras

WARMUP_RUNS = 3
MIN_RUNS = 20
SECONDS = 0.5  # per thread count: about a second per file


@dataclass(frozen=True)
class Latency:
    """Time of one invocation at batch 1, in milliseconds."""

    median_ms: float  # one thread
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


def time_file(data: bytes, min_runs: int = MIN_RUNS, seconds: float = SECONDS) -> Latency:
    """Batch-1 latency of the LiteRT file ``data`` (see the module docstring).

    Raises ``ValueError`` (one sentence) when ``data`` is not a LiteRT file.
    """
    if min_runs < 1:
        raise ValueError(f"min_runs must be at least 1, got {min_runs}")
    if bytes(data[4:8]) != TFLITE_IDENTIFIER:
        raise ValueError("the data is not a LiteRT (.tflite) model")
    one = invocation_times(data, 1, min_runs, seconds)
    n = cores()
    many = invocation_times(data, n, min_runs, seconds) if n > 1 else one
    return Latency(
        median_ms=float(np.median(one)) * 1e3,
        p90_ms=float(np.percentile(one, 90)) * 1e3,
        threads_ms=float(np.median(many)) * 1e3,
        threads=n,
        runs=len(one),
        activation_bytes=largest_activation_bytes(data),
    )


_MODELS: OrderedDict[str, Latency] = OrderedDict()
_MODELS_KEPT = 16
_MODELS_LOCK = threading.Lock()


def model_latency(model: keras.Model) -> Latency:
    """Latency of ``model``'s float32 LiteRT file, timed once per model (by its digest): the
    baseline every optimized file of that model is compared with."""
    key = model_digest(model)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    found = time_file(export_bytes(model, "tflite-float32"))
    with _MODELS_LOCK:
        _MODELS[key] = found
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
    return found


def latency_to_dict(timed: Latency | None, baseline: Latency | None) -> dict[str, Any]:
    """JSON-able figures of a file's latency next to its baseline's (``None`` when not timed)."""
    return {
        "latency_ms": None if timed is None else timed.median_ms,
        "latency_p90_ms": None if timed is None else timed.p90_ms,
        "latency_threads_ms": None if timed is None else timed.threads_ms,
        "latency_threads": None if timed is None else timed.threads,
        "baseline_latency_ms": None if baseline is None else baseline.median_ms,
        "activation_bytes": None if timed is None else timed.activation_bytes,
    }


def invocation_times(data: bytes, threads: int, min_runs: int, seconds: float) -> np.ndarray:
    """Seconds of each timed invocation of ``data`` at batch 1 with ``threads`` threads."""
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
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def sample_input(detail: dict[str, Any]) -> np.ndarray:
    """A fixed input for one input tensor: standard normal values, zeros for integer ids."""
    shape = [int(d) for d in detail["shape"]]
    dtype = np.dtype(detail["dtype"])
    scale, _ = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and not scale:
        return np.zeros(shape, dtype)  # token ids: 0 is valid for any table
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return to_input(x, detail)
