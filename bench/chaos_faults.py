"""The faults ``make chaos`` runs, one at a time on a seeded schedule.

Each returns its record: ``kind``, ``target``, ``at_s`` (when it struck), ``back_s`` (when the
victim was back: restarted and ready, resumed, reloaded, or the hostile client gone) and what it
measured on the way. The schedule then times the recovery: until every camera is answered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos_cluster import MAX_CONNECTIONS, Cluster
from bench.cluster import SERVED_BY, Balancer, Connection, Stream, receive

DOWN_S = (2.0, 5.0)  # how long a killed process stays dead
FROZEN_S = (4.0, 10.0)  # how long a frozen one stays stopped
UNLOADED_S = (2.0, 4.0)  # how long a model is away between its unload and its load
FLOOD_S = 8.0
SLOW_LORIS_CONNECTIONS = 30
BURST_BEYOND = 10  # connections beyond the bridges' limits


@dataclass
class Chaos:
    """What every fault may touch: the cluster, the cameras' books, the fault clients' books."""

    cluster: Cluster
    cameras: list[Stream]
    rng: random.Random
    frame: bytes  # a camera frame (the hostile clients send it too)
    request_timeout_s: float
    extra: list[Connection] = field(default_factory=list)  # the flood's and the non-reader's

    @property
    def url(self) -> str:
        assert self.cluster.balancer is not None
        return self.cluster.balancer.ws_url

    @property
    def balancer(self) -> Balancer:
        assert self.cluster.balancer is not None
        return self.cluster.balancer

    def now_s(self) -> float:
        return self.cluster.now_s()


def record(kind: str, target: str, at_s: float, back_s: float, **measured) -> dict:
    return {"kind": kind, "target": target, "at_s": round(at_s, 2), "back_s": round(back_s, 2), **measured}


# --- processes -----------------------------------------------------------------------------------
async def kill_and_restart(chaos: Chaos, kind: str, kill, restart, name) -> dict:
    """SIGKILL process ``i`` of its pair, leave it dead for DOWN_S, start it again."""
    i = chaos.rng.randrange(2)
    at = chaos.now_s()
    await asyncio.to_thread(kill, i)
    await asyncio.sleep(chaos.rng.uniform(*DOWN_S))
    await asyncio.to_thread(restart, i)
    return record(kind, name(i), at, chaos.now_s())


async def kill_triton(chaos: Chaos) -> dict:
    c = chaos.cluster
    return await kill_and_restart(chaos, "SIGKILL triton", c.kill_triton, c.restart_triton, c.triton_name)


async def freeze_triton(chaos: Chaos) -> dict:
    """SIGSTOP a Triton and its stubs: the bridges' deadlines must answer their clients meanwhile
    (a dropped or failed frame is an answer too: the client hears it)."""
    i = chaos.rng.randrange(2)
    process = chaos.cluster.tritons[i].process
    assert process is not None
    frozen_s = chaos.rng.uniform(*FROZEN_S)
    at = chaos.now_s()
    start = time.monotonic()
    chaos.cluster.freeze(-process.pid)
    await asyncio.sleep(frozen_s)
    chaos.cluster.thaw(-process.pid)
    end = time.monotonic()
    # the longest any camera went without hearing about its frames while Triton was frozen
    silent = max(longest_silence(camera.settled_at, start, end) for camera in chaos.cameras)
    return record(
        "SIGSTOP/SIGCONT triton",
        chaos.cluster.triton_name(i),
        at,
        chaos.now_s(),
        frozen_s=round(frozen_s, 1),
        longest_silence_s=round(silent, 2),
        silence_goal_s=chaos.request_timeout_s + 2,
    )


def longest_silence(times: list[float], start: float, end: float) -> float:
    inside = [t for t in times if start < t < end]
    marks = [start, *inside, end]
    return max(b - a for a, b in zip(marks, marks[1:], strict=False))


async def kill_bridge(chaos: Chaos) -> dict:
    c = chaos.cluster
    return await kill_and_restart(chaos, "SIGKILL bridge", c.kill_bridge, c.restart_bridge, c.bridge_name)


async def freeze_bridge(chaos: Chaos) -> dict:
    """SIGSTOP a bridge: HAProxy's checks take it out of rotation; its clients wait (the page's
    window stops their frames) and are answered again once it resumes."""
    i = chaos.rng.randrange(2)
    name = chaos.cluster.bridge_name(i)
    pid = chaos.cluster.bridges[i].process.pid
    frozen_s = chaos.rng.uniform(*FROZEN_S)
    at = chaos.now_s()
    start = time.monotonic()
    chaos.cluster.freeze(pid)
    out_of_rotation_s = None
    while time.monotonic() - start < frozen_s:
        if out_of_rotation_s is None:
            states = await asyncio.to_thread(chaos.balancer.server_states)
            if states.get(name, "").startswith("DOWN"):
                out_of_rotation_s = round(time.monotonic() - start, 2)
        await asyncio.sleep(0.1)
    chaos.cluster.thaw(pid)
    balancer = chaos.balancer
    return record(
        "SIGSTOP/SIGCONT bridge",
        name,
        at,
        chaos.now_s(),
        frozen_s=round(frozen_s, 1),
        out_of_rotation_s=out_of_rotation_s,
        # FALL checks that fail, each within an interval and its timeout
        out_of_rotation_goal_s=round(  # and the stats page polled every 0.1 s
            balancer.FALL * (balancer.CHECK_INTERVAL_S + balancer.CHECK_TIMEOUT_S)
            + balancer.CHECK_INTERVAL_S,
            2,
        ),
    )


# --- models --------------------------------------------------------------------------------------
async def reload_model(chaos: Chaos) -> dict:
    i = chaos.rng.randrange(2)
    model = chaos.rng.choice(chaos.cluster.models)
    at = chaos.now_s()
    unloaded = await asyncio.to_thread(chaos.cluster.triton_admin, i, model, "unload")
    await asyncio.sleep(chaos.rng.uniform(*UNLOADED_S))
    loaded = await asyncio.to_thread(chaos.cluster.triton_admin, i, model, "load")
    return record(
        "model unloaded and reloaded",
        f"{chaos.cluster.triton_name(i)}/{model}",
        at,
        chaos.now_s(),
        unload_error=unloaded,
        load_error=loaded,
    )


def lock(paths: list[Path]) -> bool:
    """Make ``paths`` unwritable: chmod a-w, and for root (whom chmod does not stop) the
    immutable attribute where the filesystem has it. Whether a write now fails."""
    for path in paths:
        subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True)
    probe = paths[0] / ".chaos-probe"
    try:
        probe.write_text("")
    except OSError:
        return True
    probe.unlink()
    return False


def unlock(paths: list[Path]) -> None:
    for path in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)


async def reload_unwritable(chaos: Chaos) -> dict:
    """The model's directory in the served repository (and its compiled cache) made unwritable,
    then the model unloaded and loaded again: Triton only reads, so the load must succeed."""
    i = chaos.rng.randrange(2)
    model = chaos.rng.choice(chaos.cluster.models)
    served = chaos.cluster.tritons[i].served_repository
    paths = [p for p in (served / model, served.parent / "compiled" / model) if p.exists()]
    at = chaos.now_s()
    unwritable = await asyncio.to_thread(lock, paths)
    try:
        unloaded = await asyncio.to_thread(chaos.cluster.triton_admin, i, model, "unload")
        loaded = await asyncio.to_thread(chaos.cluster.triton_admin, i, model, "load")
    finally:
        await asyncio.to_thread(unlock, paths)
    if loaded:  # refused while locked: loaded again now that it is writable (recovery counts it)
        await asyncio.to_thread(chaos.cluster.triton_admin, i, model, "load")
    return record(
        "reload, repository unwritable",
        f"{chaos.cluster.triton_name(i)}/{model}",
        at,
        chaos.now_s(),
        unwritable=unwritable,
        unload_error=unloaded,
        load_error=loaded,
    )


# --- hostile clients -----------------------------------------------------------------------------
async def stop_reading(chaos: Chaos) -> dict:
    """A client asks for large answers (color and raw depth) and never reads them: the bridge
    must cut it off after its send timeout (counted in depthstream_slow_clients)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from client.stream import AsyncStreamClient, config_message

    at = chaos.now_s()
    ws = await connect(chaos.url, max_queue=1, max_size=None, compression=None)  # reads 1 message, no more
    connection = Connection(bridge=ws.response.headers.get(SERVED_BY, "") if ws.response else "")
    chaos.extra.append(connection)
    hello = await ws.recv()
    await ws.send(config_message(output="both"))
    client = AsyncStreamClient(ws, json.loads(hello))
    before = await asyncio.to_thread(slow_clients, chaos)
    start = time.monotonic()
    try:  # until the bridges count a slow client (HAProxy takes what it sends meanwhile)
        while time.monotonic() - start < 40 and await asyncio.to_thread(slow_clients, chaos) == before:
            for _ in range(10):
                connection.sent_at[connection.sent] = time.monotonic()
                connection.sent += 1  # counted first: a send that times out has reached the socket
                await asyncio.wait_for(client.send(chaos.frame), 5)
                await asyncio.sleep(0.1)
    except (ConnectionClosed, TimeoutError, OSError):
        pass
    cut_after = time.monotonic() - start
    counted = await asyncio.to_thread(slow_clients, chaos) - before
    await ws.close()  # what it had not read is lost: the bridge cut it off, and counted that
    connection.closed_at = time.monotonic()
    return record(
        "client stops reading",
        connection.bridge,
        at,
        chaos.now_s(),
        sent=connection.sent,
        cut_off_after_s=round(cut_after, 1),
        slow_clients_counted=counted,
    )


def slow_clients(chaos: Chaos) -> int:
    counts = [chaos.cluster.bridge_counts(i) for i in range(2)]
    return int(sum(c["slow_clients"] for c in counts if c))


async def flood(chaos: Chaos) -> dict:
    """A client sends frames as fast as the connection takes them: every one is accounted
    (answered, or dropped as over the rate limit or replaced) and nobody else starves."""
    from client.stream import AsyncStreamClient

    at = chaos.now_s()
    client = await AsyncStreamClient.connect(chaos.url)
    connection = Connection(bridge=client.ws.response.headers.get(SERVED_BY, ""))
    chaos.extra.append(connection)
    receiver = asyncio.create_task(receive(client, connection, Stream()))
    start = time.monotonic()
    while time.monotonic() - start < FLOOD_S and not receiver.done():
        connection.sent_at[connection.sent] = time.monotonic()
        await client.send(chaos.frame)
        connection.sent += 1
        await asyncio.sleep(0)  # the cameras in this process get their turn too
    deadline = time.monotonic() + chaos.request_timeout_s + 10
    while connection.settled < connection.sent and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    with contextlib.suppress(Exception):  # the accounts, unless the connection is gone
        await client.send_config()
        connection.accounts = await asyncio.wait_for(client.acks.get(), 10)
    receiver.cancel()
    with contextlib.suppress(Exception):
        await client.close()
    connection.closed_at = time.monotonic()
    return record(
        "client floods",
        connection.bridge,
        at,
        chaos.now_s(),
        sent=connection.sent,
        per_s=round(connection.sent / FLOOD_S),
        answered=len(connection.answered),
        dropped=len(connection.dropped),
    )


async def slow_loris(chaos: Chaos) -> dict:
    """Connections that start a handshake and never finish it, a header line now and then:
    the balancer cuts each within its headers timeout."""
    at = chaos.now_s()
    start = time.monotonic()

    async def one() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", chaos.balancer.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        try:
            while time.monotonic() - start < 4 * chaos.balancer.HEADERS_TIMEOUT_S:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(4096), 1.0) == b"":
                        return time.monotonic() - start
        except ConnectionError:
            return time.monotonic() - start
        finally:
            writer.close()
        return float("inf")

    closed = await asyncio.gather(*(one() for _ in range(SLOW_LORIS_CONNECTIONS)))
    return record(
        "slow-loris handshakes",
        "balancer",
        at,
        chaos.now_s(),
        connections=len(closed),
        longest_open_s=round(max(closed), 1),
        open_goal_s=chaos.balancer.HEADERS_TIMEOUT_S + 1.5,
    )


async def burst(chaos: Chaos) -> dict:
    """More connections at once than the bridges take: each is either served or refused with
    `busy` (1013), and the bridges counted every refusal."""
    from client.stream import AsyncStreamClient, ServerClosed

    counts = await asyncio.to_thread(lambda: [chaos.cluster.bridge_counts(i) for i in range(2)])
    if any(c is None for c in counts):
        return record("connection burst", "bridges", chaos.now_s(), chaos.now_s(), skipped="a bridge is down")
    busy_before = sum(c["refused_busy"] for c in counts if c)
    free = sum(MAX_CONNECTIONS - c["connections"] for c in counts if c)
    attempts = int(free) + BURST_BEYOND
    at = chaos.now_s()
    results = await asyncio.gather(
        *(AsyncStreamClient.connect(chaos.url) for _ in range(attempts)), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, AsyncStreamClient)]
    refused = [r for r in results if isinstance(r, ServerClosed)]
    other = [repr(r) for r in results if not isinstance(r, AsyncStreamClient | ServerClosed)]
    await asyncio.sleep(1)
    for client in accepted:
        with contextlib.suppress(Exception):
            await client.close()
    after = await asyncio.to_thread(lambda: [chaos.cluster.bridge_counts(i) for i in range(2)])
    busy_counted = sum(c["refused_busy"] for c in after if c) - busy_before
    return record(
        "connection burst",
        "bridges",
        at,
        chaos.now_s(),
        attempts=attempts,
        accepted=len(accepted),
        refused=len(refused),
        other=other[:3],
        refusals_counted=int(busy_counted),
    )


FAULTS = {
    "kill_triton": kill_triton,
    "freeze_triton": freeze_triton,
    "kill_bridge": kill_bridge,
    "freeze_bridge": freeze_bridge,
    "reload_model": reload_model,
    "reload_unwritable": reload_unwritable,
    "stop_reading": stop_reading,
    "flood": flood,
    "slow_loris": slow_loris,
    "burst": burst,
}
# the recovery goal after each kind's ``back_s``: a killed process 5 s, a frozen one 10 s; the
# others leave every process running, so their clients are expected back as fast as a kill's
RECOVERY_GOAL_S = {kind: 10.0 if kind.startswith("freeze") else 5.0 for kind in FAULTS}
