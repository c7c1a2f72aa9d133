"""Alternating rounds: how every ratio this project publishes or decides by is measured.

Contenders timed in blocks (all of A, then all of B) are at the mercy of the machine's
neighbours: a burst of other load during one block moves the ratio, and the order of the blocks
does too. In alternating rounds each round runs every contender once, in turn, after one warm-up
each, so a burst falls on all of them alike; the ratio reported is the median of the per-round
ratios, with its interquartile spread and the number of rounds, so a reader sees how much it
moved. Used by the engine choice and the twin judgement (depthstream.runtime.interleaved_ms) and
by the bench (bench.camera); it imports nothing of theirs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ratio:
    """``a / b`` over rounds: the median of the per-round ratios, its interquartile range."""

    median: float
    low: float  # 25th percentile of the per-round ratios
    high: float  # 75th percentile
    rounds: int

    def as_dict(self) -> dict:
        return {
            "median": round(self.median, 3),
            "iqr": [round(self.low, 3), round(self.high, 3)],
            "rounds": self.rounds,
        }

    def describe(self) -> str:
        return f"{self.median:.2f}x [{self.low:.2f}-{self.high:.2f}, {self.rounds} rounds]"


def alternate(
    contenders: Sequence[Callable[[], object]], rounds: int, warm_up: bool = True
) -> list[list[float]]:
    """Each contender's milliseconds, one list per contender, from ``rounds`` rounds that run
    every contender once in turn (after a warm-up run each, not timed)."""
    if warm_up:
        for run in contenders:
            run()
    times: list[list[float]] = [[] for _ in contenders]
    for _ in range(rounds):
        for run, runs in zip(contenders, times, strict=True):
            started = time.perf_counter()
            run()
            runs.append((time.perf_counter() - started) * 1e3)
    return times


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Ratio:
    """The per-round ratio of two contenders' times from the same rounds."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("two contenders' times from the same rounds, at least one")
    per_round = [a / b for a, b in zip(numerator, denominator, strict=True)]
    low, high = np.percentile(per_round, [25, 75])
    return Ratio(statistics.median(per_round), float(low), float(high), len(per_round))
