"""The cluster on one machine, shared by its rehearsal (tests/test_cluster.py) and ``make chaos``
(bench/chaos.py): HAProxy in front of bridge processes, and camera-like clients that keep the
books of every frame they send, connection by connection.

A camera sends one frame every 1/fps s on a steady clock, reads every outcome (client/stream.py)
and, when its connection ends, reconnects through the balancer with new books. With ``window``
it sends only while fewer than that many of its frames are unsettled, as the page does: a frame
it skips is never sent, so a connection that dies can have lost at most ``window`` frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from serving.triton import free_port

SERVED_BY = "X-Depthstream-Bridge"  # HAProxy names the bridge a connection went to


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Balancer:
    """HAProxy (Debian's, as an Ingress would be) in front of the bridges: WebSockets pinned to
    one bridge for their life, health checks on /readyz every ``CHECK_INTERVAL_S``, a failed
    connect dispatched to another bridge, a request's headers due within ``HEADERS_TIMEOUT_S``
    (a slow-loris connection is cut), and a stats page (CSV) to read each bridge's state."""

    CHECK_INTERVAL_S = 0.3
    CHECK_TIMEOUT_S = 1.0
    FALL = 2  # failed checks before a bridge is out of rotation
    HEADERS_TIMEOUT_S = 5

    def __init__(self, ports: list[int], workdir: Path, log: Path) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise RuntimeError(
                "haproxy is not installed (.ci/run installs Debian's: apt-get install haproxy)"
            )
        self.port = free_port()
        self.stats_port = free_port()
        servers = "\n".join(
            f"  server bridge{i} 127.0.0.1:{port} check" for i, port in enumerate(ports, start=1)
        )
        config = workdir / "haproxy.cfg"
        config.write_text(
            f"""global
  maxconn 512
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  timeout http-request {self.HEADERS_TIMEOUT_S}s
  timeout check {self.CHECK_TIMEOUT_S:g}s
  retries 2
  option redispatch
frontend depthstream
  bind 127.0.0.1:{self.port}
  default_backend bridges
  http-response set-header {SERVED_BY} %[srv_name]
backend bridges
  balance leastconn
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter {int(self.CHECK_INTERVAL_S * 1000)}ms fall {self.FALL} rise 2
{servers}
listen stats
  bind 127.0.0.1:{self.stats_port}
  stats enable
  stats uri /stats
"""
        )
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.port}/readyz"), 20, "HAProxy served")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def server_states(self) -> dict[str, str]:
        """Each bridge's state as HAProxy sees it now (UP, DOWN, ...)."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=2) as response:
            rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
            return {row["svname"]: row["status"] for row in rows if row["pxname"] == "bridges"}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


@dataclass
class Connection:
    """One connection's books: what it sent, and what became of each seq."""

    opened_at: float = field(default_factory=time.monotonic)
    bridge: str = ""  # the bridge HAProxy chose (its SERVED_BY header)
    sent: int = 0
    sent_at: dict[int, float] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    errors: set[int] = field(default_factory=set)
    close_code: int | None = None
    closed_at: float | None = None
    accounts: dict | None = None  # the bridge's own, asked for at the end

    @property
    def settled(self) -> int:
        return len(self.answered) + len(self.dropped) + len(self.errors)

    @property
    def unsettled(self) -> set[int]:
        return set(range(self.sent)) - self.answered - self.dropped - self.errors


@dataclass
class Stream:
    """A camera's connections, and when each answer came with its latency."""

    connections: list[Connection] = field(default_factory=list)
    answers_at: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    settled_at: list[float] = field(default_factory=list)  # any outcome: answer, drop or error

    def longest_gap_s(self, start: float, end: float) -> float:
        times = [start, *self.answers_at, end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def gap_across_s(self, moment: float) -> float:
        """From the last answer before ``moment`` to the first after it."""
        before = max((t for t in self.answers_at if t <= moment), default=moment)
        return self.first_answer_after(moment) - before

    def first_answer_after(self, moment: float) -> float:
        return min((t for t in reversed(self.answers_at) if t > moment), default=float("inf"))


@dataclass(frozen=True)
class Camera:
    """What a camera sends: one frame, at ``fps``, with these stream settings."""

    frame: bytes
    fps: float
    config: dict = field(default_factory=dict)  # model, steady, output: as `config` takes them
    window: int | None = None  # at most this many frames unsettled (None: send whatever)


async def stream(url: str, camera: Camera, record: Stream, stop: asyncio.Event) -> None:
    """A camera until ``stop``: on a close, reconnect (0.3 s) with a new connection's books."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    from client.stream import AsyncStreamClient, ServerClosed

    while not stop.is_set():
        connection = Connection()
        record.connections.append(connection)
        try:
            client = await asyncio.wait_for(AsyncStreamClient.connect(url), 5)
            connection.opened_at = time.monotonic()  # once the bridge took it: in that bridge's life
            connection.bridge = client.ws.response.headers.get(SERVED_BY, "")
            if camera.config:
                await asyncio.wait_for(client.configure(**camera.config), 10)
        except (TimeoutError, OSError, InvalidHandshake, ServerClosed, ConnectionClosed):
            connection.closed_at = time.monotonic()
            await asyncio.sleep(0.3)
            continue
        receiver = asyncio.create_task(receive(client, connection, record))
        try:
            await send_frames(client, camera, connection, receiver, stop)
            if not receiver.done():  # the last answers land, then the bridge's accounts
                deadline = time.monotonic() + 20
                while connection.settled < connection.sent and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                await client.send_config()
                connection.accounts = await asyncio.wait_for(client.acks.get(), 10)
        except ConnectionClosed as closed:  # a send found it closed, maybe before the receiver did
            if connection.close_code is None and closed.rcvd is not None:
                connection.close_code = closed.rcvd.code
        except (TimeoutError, OSError, ServerClosed):
            pass  # the bridge went away: its close code is in the receiver's record
        finally:
            with contextlib.suppress(TimeoutError):  # the receiver reads the close, if it comes
                await asyncio.wait_for(asyncio.shield(receiver), 1)
            receiver.cancel()
            with contextlib.suppress(Exception):
                await client.close()
            connection.closed_at = time.monotonic()
        if not stop.is_set():
            await asyncio.sleep(0.3)


async def send_frames(client, camera: Camera, connection: Connection, receiver: asyncio.Task, stop) -> None:
    period = 1 / camera.fps
    next_at = time.monotonic()
    while not stop.is_set() and not receiver.done():
        if camera.window is None or connection.sent - connection.settled < camera.window:
            connection.sent_at[connection.sent] = time.monotonic()
            await client.send(camera.frame)
            connection.sent += 1
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def receive(client, connection: Connection, record: Stream) -> None:
    """Every outcome of one connection, seq by seq, until it closes (its close code kept)."""
    from client.stream import Answer, Dropped, Error, ServerClosed

    try:
        while True:
            outcome = await client.next_outcome()
            record.settled_at.append(time.monotonic())
            if isinstance(outcome, Answer):
                connection.answered.add(outcome.seq)
                now = time.monotonic()
                record.answers_at.append(now)
                record.latencies_s.append(now - connection.sent_at.get(outcome.seq, now))
            elif isinstance(outcome, Dropped):
                for first, last in outcome.seqs:
                    connection.dropped.update(range(first, last + 1))
            elif isinstance(outcome, Error) and outcome.seq is not None:
                connection.errors.add(outcome.seq)
    except ServerClosed as closed:
        connection.close_code = closed.code
