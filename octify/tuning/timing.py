"""Timing in one process: alternating rounds, medians; the probes a timer is asked to time.

A *timer* is any callable ``timer(functions) -> seconds``: it takes ``{probe: function}`` and returns
``{probe: seconds per call}``. :class:`MedianTimer` is the real one; tests pass a fake that reads
costs from a table, so that every choice is deterministic.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Mapping, Tuple

Timer = Callable[[Mapping[Hashable, Callable[[], object]]], Dict[Hashable, float]]


@dataclass(frozen=True)
class LayerProbe:
    """One operation of the optimized network (a convolution, with what ``for_inference`` fused into it, or an
    operation between layers) when its group runs at ``alpha`` (0: the original layer), on its recorded inputs."""

    group: str
    layer: str
    alpha: float

    def key(self) -> str:
        return f"layer {self.group} {self.layer} {self.alpha:g}"


@dataclass(frozen=True)
class ModelProbe:
    """A whole network: the original (``schedule`` empty) or the conversion with ``schedule`` (name -> alpha)."""

    schedule: Tuple[Tuple[str, float], ...] = ()

    def key(self) -> str:
        return "model " + " ".join(f"{name}={alpha:g}" for name, alpha in self.schedule)


class MedianTimer:
    """Seconds per call: ``warmup`` calls each, then ``repeats`` rounds that call every function once, the order
    reversed every other round; the median over rounds. Alternating exposes every function to the same background
    load, and the median ignores the rounds a neighbour's burst spoiled."""

    def __init__(self, repeats: int = 7, warmup: int = 2, clock: Callable[[], float] = time.perf_counter) -> None:
        if repeats < 1 or warmup < 0:
            raise ValueError(f"repeats must be at least 1 and warmup at least 0, got {repeats} and {warmup}")
        self.repeats, self.warmup, self.clock = repeats, warmup, clock

    def __call__(self, functions: Mapping[Hashable, Callable[[], object]]) -> Dict[Hashable, float]:
        for function in functions.values():
            for _ in range(self.warmup):
                function()
        samples: Dict[Hashable, list] = {key: [] for key in functions}
        for round_index in range(self.repeats):
            order = list(functions.items())
            if round_index % 2:
                order.reverse()
            for key, function in order:
                start = self.clock()
                function()
                samples[key].append(self.clock() - start)
        return {key: statistics.median(values) for key, values in samples.items()}
