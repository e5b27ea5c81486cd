"""Latency of several callables measured in one process: alternating runs, medians."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict


def median_latencies(functions: Dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> Dict[str, float]:
    """Seconds per call of each function: ``repeats`` rounds, every function once per round in turn.

    Alternating within a round exposes all of them to the same background load; the median
    over rounds ignores the rounds a neighbour's burst spoiled.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    samples: Dict[str, list] = {name: [] for name in functions}
    for round_index in range(repeats):
        order = list(functions.items())
        if round_index % 2:  # alternate who goes first
            order.reverse()
        for name, function in order:
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
