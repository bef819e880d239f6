"""Thread pools for the library's heavy per-tensor work.

numpy's sorts, partitions and element-wise kernels and zlib's compression release the GIL, so
independent tensors are processed side by side on every core. Jobs never wait on other jobs of
the pool (only their callers wait), so the pool cannot deadlock however many callers share it.
``BACKGROUND`` runs work nobody waits for (it only speeds up later answers) on one thread of its
own, so that it never queues ahead of an answer's jobs in ``POOL``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

POOL = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="optimizers")
BACKGROUND = ThreadPoolExecutor(1, thread_name_prefix="optimizers-background")
