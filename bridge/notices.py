"""Frames that will not be answered, told to the client so that it never waits for them.

Every frame a client sends ends in exactly one of: a ``depth`` answer, an ``error`` carrying its
``seq``, or a ``dropped`` notice listing it (replaced in the slot by a newer frame, expired
before its turn, over the rate limit, or arriving while the server shuts down). Notices are for
programs and are coalesced: ranges of seq, at most one message per ``NOTICE_INTERVAL_S`` or per
answer, so a client sending far too fast does not get one message per frame.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter

NOTICE_INTERVAL_S = 0.1
MAX_RANGES = 64  # a notice this fragmented goes out at once instead of growing


class DropReason(enum.StrEnum):
    REPLACED = "replaced"  # a newer frame took its place in the slot
    EXPIRED = "expired"  # its turn came too late to answer within the deadline
    RATE_LIMITED = "rate_limited"  # over the stream's frames per second
    SHUTTING_DOWN = "shutting_down"  # the server takes no new work


class DropNotices:
    """Dropped frames not yet told to the client, as sorted, merged ranges of seq."""

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []
        self._reasons: Counter[str] = Counter()
        self._last_sent = -float("inf")
        self.pending = asyncio.Event()  # set while something waits to be told

    def add(self, seq: int, reason: DropReason) -> None:
        if self._ranges and self._ranges[-1][1] + 1 == seq:
            self._ranges[-1][1] = seq
        else:
            self._ranges.append([seq, seq])
        self._reasons[str(reason)] += 1
        self.pending.set()

    def due_in_s(self) -> float:
        """How long the next notice waits: coalescing, unless it is already fragmented."""
        if len(self._ranges) >= MAX_RANGES:
            return 0.0
        return max(0.0, self._last_sent + NOTICE_INTERVAL_S - time.monotonic())

    def take(self) -> tuple[list[list[int]], dict[str, int]] | None:
        """The ranges and counts by reason to tell now (and forget), or None."""
        self.pending.clear()
        if not self._ranges:
            return None
        ranges = merged(self._ranges)
        reasons = dict(self._reasons)
        self._ranges, self._reasons = [], Counter()
        self._last_sent = time.monotonic()
        return ranges, reasons


def merged(ranges: list[list[int]]) -> list[list[int]]:
    """Sorted ranges with touching or overlapping ones joined (drops may come out of order: a
    frame over the rate limit can be refused while an older one is still judged at its turn)."""
    out: list[list[int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return out
