"""``make soak``: 8 camera-like clients for 60 s against the full stack (not part of `make test`).

Each client sends frames at a fixed rate whatever the answers (as a camera does), so the
bridge's latest-frame-wins is exercised. Reports frames sent, answered, dropped and errors,
p50/p99 latency of answered frames, and the bridge's memory at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.__main__ import ROOT, Bridge, server_settings
from bench.frames import jpegs, stream
from bench.measure import rss_mb
from bridge.contract import DEFAULT_MODEL, MODELS
from bridge.embedded_triton import EmbeddedTriton


async def camera(ws_url: str, model: str, frames: list[bytes], fps: float, duration_s: float) -> dict:
    import websockets

    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    last_dropped = 0
    async with websockets.connect(ws_url, max_size=None, compression=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "config", "model": model}))

        async def send() -> None:
            seq, start = 0, time.perf_counter()
            while time.perf_counter() - start < duration_s:
                sent_at[seq] = time.perf_counter()
                await ws.send(frames[seq % len(frames)])
                seq += 1
                await asyncio.sleep(max(0.0, start + seq / fps - time.perf_counter()))

        async def receive() -> None:
            nonlocal last_dropped
            async for message in ws:
                if isinstance(message, bytes):
                    continue
                body = json.loads(message)
                if body["type"] == "depth":
                    latencies.append(time.perf_counter() - sent_at[body["seq"]])
                    last_dropped = body["dropped"]
                elif body["type"] == "error":
                    errors[body["code"]] += 1

        receiver = asyncio.create_task(receive())
        await send()
        await asyncio.sleep(3)  # answers still in flight
        receiver.cancel()
    return {
        "sent": len(sent_at),
        "answered": len(latencies),
        "dropped": last_dropped,
        "errors": dict(errors),
        "latencies": latencies,
    }


async def soak(ws_url: str, model: str, clients: int, fps: float, duration_s: float, bridge_pid: int) -> dict:
    frames = jpegs(stream(640, 480, 8))
    memory = [rss_mb(bridge_pid)]

    async def sample() -> None:
        while True:
            await asyncio.sleep(5)
            memory.append(rss_mb(bridge_pid))

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(camera(ws_url, model, frames, fps, duration_s) for _ in range(clients)))
    sampler.cancel()
    memory.append(rss_mb(bridge_pid))
    latencies = np.array([x for r in results for x in r["latencies"]]) * 1e3
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    return {
        "model": model,
        "clients": clients,
        "fps_per_client": fps,
        "duration_s": duration_s,
        "sent": sum(r["sent"] for r in results),
        "answered": sum(r["answered"] for r in results),
        "dropped": sum(r["dropped"] for r in results),
        "errors": dict(errors),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies.size else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies.size else None,
        "bridge_rss_mb": {
            "start": round(memory[0], 1),
            "end": round(memory[-1], 1),
            "max": round(max(memory), 1),
            "every_5_s": [round(m, 1) for m in memory],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--fps", type=float, default=10.0, help="frames each client sends per second")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    settings = server_settings(args.repository, ROOT / "build" / "soak")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with EmbeddedTriton(settings, log_path=args.output.with_suffix(".tritonserver.log")):
        bridge = Bridge(settings.grpc_url)
        try:
            report = asyncio.run(
                soak(bridge.ws_url, args.model, args.clients, args.fps, args.duration_s, bridge.process.pid)
            )
            report["bridge_alive"] = bridge.process.poll() is None
        finally:
            bridge.stop()
    accounted = report["answered"] + report["dropped"] + sum(report["errors"].values())
    report["unaccounted"] = report["sent"] - accounted
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["bridge_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
