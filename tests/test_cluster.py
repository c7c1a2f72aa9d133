"""The cluster, rehearsed on one machine: HAProxy (Debian's, as an Ingress would) in front of two
bridge processes, each spreading its streams over the same two embedded tritonservers, and ten
streams through it. Under that load: one bridge is stopped (SIGTERM, as a pod is deleted: it
drains and closes with 1001) and its streams reconnect through the balancer to the other; one
Triton is killed (SIGKILL) and its streams move; it comes back and takes new streams again.

Every frame is counted on the client's side, connection by connection: answered, dropped (in the
bridge's notices), or an error with its seq; the only other outcome is a frame still in transit
when a draining bridge closed its socket (sent after the bridge's last word, never received), and
the test bounds those. The surviving bridge's own accounts (received, dropped) agree with the
clients' at the end. The longest time each stream went without an answer is measured and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.harness import Bridge
from depthstream.contract import DEPTH_ANYTHING_V2_SMALL
from serving.triton import EmbeddedTriton, free_port
from tests.servers import ARTIFACTS, triton_settings
from tests.wire import jpeg

MODEL = DEPTH_ANYTHING_V2_SMALL.name
STREAMS = 10
FPS = 4.0
MAX_GAP_S = 10.0  # no stream goes without an answer longer than this, whatever is killed
FRAME = jpeg(96, 72)


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
    """HAProxy in front of the bridges: WebSockets pinned to one bridge for their life, health
    checks on /readyz, a failed connect dispatched to another bridge."""

    def __init__(self, bridges: list[Bridge], workdir: Path) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            pytest.fail("haproxy is not installed (.ci/run installs Debian's)")
        self.port = free_port()
        servers = "\n".join(
            f"  server bridge{i} 127.0.0.1:{b.port} check" for i, b in enumerate(bridges, start=1)
        )
        config = workdir / "haproxy.cfg"
        config.write_text(
            f"""global
  maxconn 256
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  timeout check 2s
  retries 2
  option redispatch
frontend depthstream
  bind 127.0.0.1:{self.port}
  default_backend bridges
backend bridges
  balance leastconn
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 300ms fall 2 rise 2
{servers}
"""
        )
        self.log = (ARTIFACTS / "haproxy.log").open("w")
        self.process = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.port}/readyz"), 20, "HAProxy served")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@dataclass
class Connection:
    sent: int = 0
    answered: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    errors: set[int] = field(default_factory=set)
    close_code: int | None = None
    accounts: dict | None = None  # the bridge's own, asked for at the end

    @property
    def settled(self) -> int:
        return len(self.answered) + len(self.dropped) + len(self.errors)


@dataclass
class Stream:
    connections: list[Connection] = field(default_factory=list)
    answers_at: list[float] = field(default_factory=list)

    def longest_gap_s(self, start: float, end: float) -> float:
        times = [start, *self.answers_at, end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def gap_across_s(self, moment: float) -> float:
        """From the last answer before ``moment`` to the first after it."""
        before = max((t for t in self.answers_at if t <= moment), default=moment)
        after = min((t for t in self.answers_at if t > moment), default=float("inf"))
        return after - before


async def stream(url: str, record: Stream, stop: asyncio.Event) -> None:
    """A camera: one frame every 1/FPS s on a steady clock; on a close, reconnect (0.3 s). Each
    connection's outcomes come from the project's stream client (client/stream.py)."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    from client.stream import AsyncStreamClient, ServerClosed

    while not stop.is_set():
        connection = Connection()
        record.connections.append(connection)
        try:
            client = await asyncio.wait_for(AsyncStreamClient.connect(url), 5)
        except (TimeoutError, OSError, InvalidHandshake, ServerClosed):
            await asyncio.sleep(0.3)
            continue
        receiver = asyncio.create_task(receive(client, connection, record))
        try:
            while not stop.is_set() and not receiver.done():
                await client.send(FRAME)
                connection.sent += 1
                await asyncio.sleep(1 / FPS)
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
        if not stop.is_set():
            await asyncio.sleep(0.3)


async def receive(client, connection: Connection, record: Stream) -> None:
    """Every outcome of one connection, seq by seq, until it closes (its close code kept)."""
    from client.stream import Answer, Dropped, Error, ServerClosed

    try:
        while True:
            outcome = await client.next_outcome()
            if isinstance(outcome, Answer):
                connection.answered.add(outcome.seq)
                record.answers_at.append(time.monotonic())
            elif isinstance(outcome, Dropped):
                for first, last in outcome.seqs:
                    connection.dropped.update(range(first, last + 1))
            elif isinstance(outcome, Error) and outcome.seq is not None:
                connection.errors.add(outcome.seq)
    except ServerClosed as closed:
        connection.close_code = closed.code


@pytest.fixture
def two_tritons(tiny_repository, tmp_path):
    servers = [
        EmbeddedTriton(
            triton_settings(tiny_repository, tmp_path / name, models=(MODEL,)),
            log_path=ARTIFACTS / f"tritonserver-cluster-{name}.log",
        ).start()
        for name in ("a", "b")
    ]
    yield servers
    for server in servers:
        server.stop()


def test_ten_streams_through_a_balancer_survive_a_bridge_and_a_triton_going_away(two_tritons, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    urls = ",".join(server.settings.grpc_url for server in two_tritons)
    bridges = [
        Bridge(urls, "--request-timeout-s", "3", log=ARTIFACTS / f"bridge-cluster-{i}.log") for i in (1, 2)
    ]
    balancer = Balancer(bridges, tmp_path)
    try:
        records, events = asyncio.run(rehearse(balancer, bridges, two_tritons))
    finally:
        balancer.stop()
        for bridge in bridges:
            bridge.stop()
    report(records, events)


async def rehearse(balancer: Balancer, bridges: list[Bridge], tritons: list[EmbeddedTriton]):
    stop = asyncio.Event()
    records = [Stream() for _ in range(STREAMS)]
    started = time.monotonic()
    tasks = [asyncio.create_task(stream(balancer.ws_url, record, stop)) for record in records]
    events: dict[str, float] = {"start": started}
    await asyncio.sleep(6)

    events["bridge stopped"] = time.monotonic()
    await asyncio.to_thread(bridges[0].stop)  # SIGTERM: drains, closes 1001
    await asyncio.sleep(6)

    dead = tritons[0]
    events["triton killed"] = time.monotonic()
    os.killpg(dead.process.pid, signal.SIGKILL)
    await asyncio.to_thread(dead.process.wait)
    up = f'depthstream_endpoint_up{{endpoint="{dead.settings.grpc_url}"}}'
    await asyncio.to_thread(wait_for, lambda: bridges[1].metric(up) == 0, 10, "the bridge saw the Triton go")
    await asyncio.sleep(6)

    events["triton back"] = time.monotonic()
    back = EmbeddedTriton(dead.settings, log_path=ARTIFACTS / "tritonserver-cluster-a.log")
    await asyncio.to_thread(back.start)
    tritons[0] = back  # the fixture stops it
    before = await asyncio.to_thread(inferences, back)
    newcomers = [Stream() for _ in range(4)]  # new streams go to the endpoint with the fewest
    await asyncio.to_thread(
        wait_for, lambda: bridges[1].metric(up) == 1, 30, "the bridge's probe found it back"
    )
    events["seen back after"] = time.monotonic() - events["triton back"]
    tasks += [asyncio.create_task(stream(balancer.ws_url, record, stop)) for record in newcomers]
    await asyncio.sleep(6)
    events["taken back"] = await asyncio.to_thread(inferences, back) - before
    events["end"] = time.monotonic()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    events["survivor_received"] = bridges[1].metric("depthstream_frames_received_total")
    return records + newcomers, events


def inferences(server: EmbeddedTriton) -> int:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.settings.grpc_url) as client:
        return client.get_inference_statistics(MODEL).model_stats[0].inference_stats.success.count


def report(records: list[Stream], events: dict[str, float]) -> None:
    start, end = events["start"], events["end"]
    lines, in_transit, survivor_sent = [], 0, 0
    for i, record in enumerate(records):
        for connection in record.connections:
            if connection.sent == 0:
                continue
            unsettled = connection.sent - connection.settled
            if connection.accounts is not None:  # open to the end (the surviving bridge): its accounts too
                assert unsettled == 0, f"stream {i}: {unsettled} frames with no outcome"
                assert connection.accounts["received"] == connection.sent
                assert connection.accounts["dropped"] == len(connection.dropped)
                survivor_sent += connection.sent
            else:  # closed by the draining bridge: only the last frames sent may be lost in transit
                assert connection.close_code == 1001, f"stream {i}: closed with {connection.close_code}"
                settled = connection.answered | connection.dropped | connection.errors
                lost = set(range(connection.sent)) - settled
                assert len(lost) <= 2 and all(seq > max(settled, default=-1) for seq in lost), lost
                in_transit += len(lost)
        if i < STREAMS:  # the newcomers came late: their gaps are not the rehearsal's
            gap = record.longest_gap_s(start + 2, end)
            lines.append(f"stream {i}: {len(record.connections)} connections, longest gap {gap:.1f} s")
            assert gap <= MAX_GAP_S, lines[-1]
    for event in ("bridge stopped", "triton killed"):
        gaps = sorted(record.gap_across_s(events[event]) for record in records[:STREAMS])
        lines.append(f"{event}: longest gap across it {gaps[-1]:.2f} s, median {gaps[len(gaps) // 2]:.2f} s")
    totals = {"sent": 0, "answered": 0, "dropped": 0, "errors": 0, "in transit": in_transit}
    for connection in (c for record in records for c in record.connections):
        totals["sent"] += connection.sent
        totals["answered"] += len(connection.answered)
        totals["dropped"] += len(connection.dropped)
        totals["errors"] += len(connection.errors)
    lines.append(f"accounts over all streams: {totals}")
    print("\n".join(lines))
    print(f"frames in transit when the draining bridge closed: {in_transit}; events {events}")
    assert totals["sent"] == totals["answered"] + totals["dropped"] + totals["errors"] + in_transit
    assert in_transit <= STREAMS * 2
    assert events["survivor_received"] == survivor_sent, "the surviving bridge counted other frames"
    assert events["taken back"] > 0, "the Triton that came back took no new stream's frames"
