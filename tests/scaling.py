"""How a cost grows with input size, measured so that a loaded machine does not change it.

A wall-clock bound ("under 2 s") passes on an idle machine and fails on a busy CI runner
sharing its cores. What a hostile-input test needs to catch is a cost that grows faster than
the input (quadratic joins, rescans): :func:`growth` times the same work on a small and on a
large input in the same run, each the fastest of a few tries, and returns the ratio. Load
slows both alike, so the ratio stays near the size ratio for linear code and far above it for
quadratic code.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def fastest(work: Callable[[], object], tries: int = 3) -> float:
    """The shortest of ``tries`` timings of ``work()``, in seconds."""
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def growth(small: Callable[[], object], large: Callable[[], object], tries: int = 3) -> float:
    """How many times longer ``large()`` takes than ``small()`` (fastest of ``tries`` each,
    interleaved so that a burst of load hits both)."""
    small_best = large_best = float("inf")
    for _ in range(tries):
        small_best = min(small_best, fastest(small, 1))
        large_best = min(large_best, fastest(large, 1))
    return large_best / max(small_best, 1e-6)
