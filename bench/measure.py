"""Latency statistics, CPU time of process trees, and memory, from /proc."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    approach: str
    model: str
    size: str
    concurrency: int
    frames: int
    seconds: float
    fps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_ms_per_frame: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(
    approach: str,
    model: str,
    size: str,
    concurrency: int,
    latencies_s: list[float],
    seconds: float,
    cpu_s: float,
    **extra,
) -> Result:
    ms = np.array(latencies_s) * 1e3
    frames = len(latencies_s)
    p50, p95, p99 = (float(np.percentile(ms, q)) if frames else float("nan") for q in (50, 95, 99))
    return Result(
        approach,
        model,
        size,
        concurrency,
        frames,
        round(seconds, 2),
        round(frames / seconds, 2) if seconds > 0 else 0.0,
        round(p50, 1),
        round(p95, 1),
        round(p99, 1),
        round(cpu_s * 1e3 / max(frames, 1), 1),
        extra,
    )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def process_tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        stack.extend(_children(current))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (threads included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def tree_cpu_seconds(*roots: int) -> float:
    return cpu_seconds([pid for root in roots for pid in process_tree(root)])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
