"""A stream's books, in one place: every frame received, every frame dropped (and told), every
control message refused. The intake counts what comes in, the outbox what is dropped, the session
what it refuses; the ``config`` acknowledgement and each answer's header report them, and the
bridge's Prometheus counters count the same events for all streams together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StreamAccounts:
    received: int = 0  # frames so far: the next frame's seq
    dropped: int = 0  # frames that will not be answered, each told in a dropped notice
    controls_refused: int = 0  # control messages over the stream's ceiling
