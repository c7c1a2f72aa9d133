"""What goes back to one stream's client, in order: answers, errors and dropped notices.

One lock orders every send: a dropped notice due is taken under it and goes out ahead of the
message being sent, so the client reads outcomes in the order frames were settled and the
running ``dropped`` total never goes back. A client that reads nothing for ``send_timeout_s``
is cut off (SlowClient); nothing is sent after the close.
"""

from __future__ import annotations

import asyncio
import time

from starlette.websockets import WebSocket

from bridge import protocol
from bridge.accounts import StreamAccounts
from bridge.metrics import BridgeMetrics
from bridge.notices import DropNotices, DropReason
from bridge.protocol import ErrorCode


class SlowClient(Exception):
    """The client has not read what we sent for ``send_timeout_s``: it is disconnected."""


class Outbox:
    def __init__(
        self, websocket: WebSocket, send_timeout_s: float, metrics: BridgeMetrics, accounts: StreamAccounts
    ) -> None:
        self.websocket = websocket
        self.accounts = accounts
        self.send_timeout_s = send_timeout_s
        self.metrics = metrics
        self.lock = asyncio.Lock()
        self.closed = False  # by close(): nothing is sent after it
        self.notices = DropNotices()
        self.last_said: dict[str, float] = {}  # a throttled error's key -> when it was last said

    async def send(self, *messages: str | bytes, notice: bool = False) -> None:
        """Send messages back to back (with ``notice``, the dropped notice due first)."""
        async with self.lock:
            if self.closed:
                return
            if notice:
                messages = (*self._notice(), *messages)
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    for message in messages:
                        if isinstance(message, bytes):
                            await self.websocket.send_bytes(message)
                        else:
                            await self.websocket.send_text(message)
            except TimeoutError:
                raise SlowClient(f"client read nothing for {self.send_timeout_s:.0f} s") from None

    async def error(
        self, code: ErrorCode, message: str, seq: int | None = None, refuses_config: bool = False
    ) -> None:
        # dropped notices first: the client reads outcomes in the order frames were settled
        await self.send(protocol.error_message(code, message, seq, refuses_config), notice=True)

    async def say_once_a_second(self, key: str, code: ErrorCode, message: str) -> None:
        """An error for people about the stream (no seq), at most once a second per ``key``:
        what it reports is counted anyway, so a flood does not get one message per item."""
        now = time.monotonic()
        if now - self.last_said.get(key, -float("inf")) >= 1.0:
            self.last_said[key] = now
            await self.error(code, message)

    def count_dropped(self, seq: int, reason: DropReason) -> None:
        self.notices.add(seq, reason)
        self.accounts.dropped += 1
        self.metrics.frames_dropped.inc()

    def _notice(self) -> list[str]:
        """The dropped notice due now (at most one), to go out ahead of an answer."""
        taken = self.notices.take()
        return [] if taken is None else [protocol.dropped_message(*taken, self.accounts.dropped)]

    async def run_notifier(self) -> None:
        """Tell the client about dropped frames, coalesced, until cancelled."""
        while True:
            await self.notices.pending.wait()
            await asyncio.sleep(self.notices.due_in_s())
            await self.send(notice=True)

    async def close(self, code: int) -> None:
        async with self.lock:
            self.closed = True
            await self.websocket.close(code)
