"""How many requests each Triton endpoint gets at once, and in what order streams take turns.

Under overload, frames must wait in the bridge, where latest-frame-wins replaces a stale frame
with a fresh one, not in Triton's queue, where a frame keeps its place after its deadline and
runs even when nobody will read the answer. So each endpoint admits at most ``capacity``
requests at a time (sized from the model's instances), and streams wait for a turn in arrival
order: every stream holds at most one place in the line, so each gets its turn in rotation.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class InFlightLimit:
    """A first-come, first-served counting limit whose capacity can change while in use."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def set_capacity(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._wake()

    async def acquire(self) -> None:
        if self.in_flight < self.capacity and not self._waiters:
            self.in_flight += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # granted just as the waiter went away: pass the turn on
            elif turn in self._waiters:
                self._waiters.remove(turn)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def release_after(self, delay_s: float) -> None:
        """Release once ``delay_s`` has passed: Triton is most likely still busy until then."""
        asyncio.get_running_loop().call_later(delay_s, self.release)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.capacity:
            turn = self._waiters.popleft()
            if not turn.done():
                self.in_flight += 1
                turn.set_result(None)


class RateLimiter:
    """Token bucket: ``rate`` frames per second on average, bursts up to one second's worth (and
    at least one frame: below 1 frame/s a bucket capped at the rate would never grant one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.tokens = self.burst
        self.updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
