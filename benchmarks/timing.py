"""Latency of several callables measured in one process: alternating runs, medians."""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

from octify.tuning import MedianTimer


def median_latencies(functions: Dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> Dict[str, float]:
    """Seconds per call of each function: ``repeats`` rounds, every function once per round in turn, medians
    (:class:`octify.tuning.MedianTimer`, the discipline tuning measures with)."""
    return MedianTimer(repeats, warmup)(functions)


def cpu_busy_fraction(seconds: float = 1.0) -> Optional[float]:
    """Fraction of CPU time not idle over ``seconds`` (Linux ``/proc/stat``), or None elsewhere."""
    def sample() -> Tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    try:
        total_before, idle_before = sample()
        time.sleep(seconds)
        total_after, idle_after = sample()
    except OSError:
        return None
    return 1.0 - (idle_after - idle_before) / max(1, total_after - total_before)


def wait_until_idle(max_seconds: float, threshold: float = 0.1) -> None:
    """Return once the CPUs were idle (below ``threshold`` busy) for two seconds running, or after ``max_seconds``."""
    deadline = time.monotonic() + max_seconds
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        busy = cpu_busy_fraction()
        if busy is None:
            return
        quiet = quiet + 1 if busy < threshold else 0
