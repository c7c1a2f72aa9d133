"""A stream's incoming frames: numbered, paced, and one slot where the latest frame wins.

Every frame gets a seq in arrival order. A frame over the rate limit (``max_fps``), or one that
arrives while the server drains, is dropped; a frame still waiting in the slot is replaced by a
newer one. Every drop is counted and told to the client (bridge/notices.py): nothing a client
sent disappears unaccounted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bridge.admission import RateLimiter
from bridge.metrics import BridgeMetrics
from bridge.notices import DropReason
from bridge.outbox import Outbox
from bridge.protocol import ErrorCode


@dataclass(frozen=True)
class Frame:
    seq: int
    data: bytes
    received_at: float  # time.perf_counter(): for the timings and the deadline


class FrameIntake:
    def __init__(self, max_fps: float, outbox: Outbox, metrics: BridgeMetrics) -> None:
        self.max_fps = max_fps
        self.outbox = outbox
        self.metrics = metrics
        self.limiter = RateLimiter(max_fps)
        self.accounts = outbox.accounts  # the stream's one set of books
        self.pending: Frame | None = None
        self._arrived = asyncio.Event()  # set when a frame is put in the slot
        self.draining = False

    async def offer(self, data: bytes) -> None:
        """Put a frame in the slot; a frame still waiting there is replaced and counted.

        Frames over the rate limit, or arriving while the server shuts down, are dropped and
        counted too (the client hears why, at most once a second)."""
        seq = self.accounts.received
        self.accounts.received += 1
        self.metrics.frames_in.inc()
        if self.draining:
            self.outbox.count_dropped(seq, DropReason.SHUTTING_DOWN)  # the server takes no new work
            return
        if not self.limiter.allow():
            self.outbox.count_dropped(seq, DropReason.RATE_LIMITED)
            self.metrics.frames_rate_limited.inc()
            # for people, about the stream: the frame itself is in a dropped notice
            await self.outbox.say_once_a_second(
                "frames",
                ErrorCode.RATE_LIMITED,
                f"more than {self.max_fps:g} frames per second: extra frames are dropped "
                "(counted in 'dropped')",
            )
            return
        if self.pending is not None:
            self.outbox.count_dropped(self.pending.seq, DropReason.REPLACED)
        self.pending = Frame(seq, data, time.perf_counter())
        self._arrived.set()

    @property
    def waiting(self) -> bool:
        """Whether a frame waits in the slot."""
        return self.pending is not None

    async def arrival(self) -> None:
        """Return once a frame waits in the slot (at once when one does)."""
        while self.pending is None:
            self._arrived.clear()
            await self._arrived.wait()

    def take(self) -> Frame | None:
        """The frame in the slot, which is left empty."""
        frame, self.pending = self.pending, None
        return frame

    def stop(self) -> None:
        """The server drains: no new frames; the one waiting is dropped, and counted."""
        self.draining = True
        frame = self.take()
        if frame is not None:
            self.outbox.count_dropped(frame.seq, DropReason.SHUTTING_DOWN)
