"""``make soak``: overload against the full stack, with goals (not part of `make test`).

Camera-like clients send frames at a fixed rate whatever the answers, so the bridge's
latest-frame-wins and its turns at Triton are exercised. Three phases, one embedded Triton and
one bridge:

1. alone: one client, to measure what one stream gets (Triton's capacity here) and the model's
   time;
2. crowd: ``--clients`` clients (8) at ``--fps`` (10) for ``--duration-s`` (60);
3. mixed: one client sending the costliest frame the contract accepts (1920x768: the network
   input's ceiling, with the most pixels beyond 2.5:1) and three ordinary ones.

At the end of each phase every client asks the bridge for its accounts (a ``config`` message
with no field), so ``answered + dropped + errors = sent`` is checked exactly, per client.
Goals: answered frames per second >= 90% of one stream alone, no ``timeout``, each answer's
latency <= 3x the model's time while the streams are live (a stream's last frame, sent as its
camera stops, has nothing newer to replace it and waits its turn behind every other stream:
reported beside it), the least-served client >= half the mean, nothing unaccounted; in the
mixed phase the ordinary clients keep their turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.frames import jpegs, stream
from bench.harness import ROOT, Bridge, server_settings
from bench.measure import rss_mb
from depthstream.contract import DEFAULT_MODEL, MODELS
from depthstream.settings import Settings, SettingsError, parse, setting
from serving.triton import EmbeddedTriton

SETTLE_S = 12.0  # after the last frame: longer than the bridge's deadline, so every frame has ended
COSTLY = (768, 1920)  # (height, width): the network's ceiling and most of the pixel limit


@dataclass
class CameraLog:
    """What one camera saw: each answer's latency and timings, and every error by code."""

    sent_at: dict[int, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    answered_seqs: list[int] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    bridge_ms: list[float] = field(
        default_factory=list
    )  # from the bridge's receipt of the frame to its answer
    errors: Counter[str] = field(default_factory=Counter)
    frame_errors: int = 0

    def take(self, outcome) -> None:
        from client.stream import Answer, Error

        if isinstance(outcome, Answer):
            self.latencies.append(time.perf_counter() - self.sent_at[outcome.seq])
            self.answered_seqs.append(outcome.seq)
            self.infer_ms.append(outcome.header["timings_ms"]["infer"])
            self.bridge_ms.append(outcome.header["timings_ms"]["total"])
        elif isinstance(outcome, Error):
            self.errors[outcome.code] += 1
            # a rate-limited frame is also counted in "dropped"
            if outcome.seq is not None and outcome.code != "rate_limited":
                self.frame_errors += 1

    def summary(self, accounts: dict) -> dict:
        sent, answered = len(self.sent_at), len(self.latencies)
        return {
            "sent": sent,
            "received": accounts["received"],
            "answered": answered,
            "dropped": accounts["dropped"],
            "frame_errors": self.frame_errors,
            "errors": dict(self.errors),
            "unaccounted": sent - answered - accounts["dropped"] - self.frame_errors,
            "latencies": self.latencies,
            # without the last frame sent: once the camera stops, nothing newer replaces it, so it
            # waits its turn behind every other stream (up to clients x the model's time)
            "live_latencies": [
                x for x, seq in zip(self.latencies, self.answered_seqs, strict=True) if seq != sent - 1
            ],
            "infer_ms": self.infer_ms,
            "bridge_ms": self.bridge_ms,
        }


async def camera(ws_url: str, model: str, frames: list[bytes], fps: float, duration_s: float) -> dict:
    """One client: send at ``fps`` for ``duration_s``, then settle and read the accounts."""
    from client.stream import AsyncStreamClient

    log = CameraLog()
    stream = await AsyncStreamClient.connect(ws_url)

    async def receive() -> None:
        while True:
            log.take(await stream.next_outcome())

    try:
        await stream.configure(model=model)
        receiver = asyncio.create_task(receive())
        seq, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration_s:
            log.sent_at[seq] = time.perf_counter()
            await stream.send(frames[seq % len(frames)])
            seq += 1
            await asyncio.sleep(max(0.0, start + seq / fps - time.perf_counter()))
        await asyncio.sleep(SETTLE_S)
        await stream.send_config()  # an empty config: the bridge's accounts of this stream
        accounts = await asyncio.wait_for(stream.acks.get(), 30)
        receiver.cancel()
    finally:
        await stream.close()
    return log.summary(accounts)


async def phase(
    ws_url: str, model: str, streams: list[list[bytes]], fps: float, duration_s: float
) -> list[dict]:
    return list(await asyncio.gather(*(camera(ws_url, model, frames, fps, duration_s) for frames in streams)))


def summary(name: str, results: list[dict], duration_s: float) -> dict:
    latencies = np.array([x for r in results for x in r["latencies"]]) * 1e3
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    answered = [r["answered"] for r in results]
    return {
        "phase": name,
        "clients": len(results),
        "sent": sum(r["sent"] for r in results),
        "answered": sum(answered),
        "answered_per_client": answered,
        "answered_fps": round(sum(answered) / duration_s, 2),
        "dropped": sum(r["dropped"] for r in results),
        "errors": dict(errors),
        "unaccounted": sum(abs(r["unaccounted"]) for r in results),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies.size else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies.size else None,
        "max_ms": round(float(latencies.max()), 1) if latencies.size else None,
        "live_max_ms": round(max(x for r in results for x in r["live_latencies"]) * 1e3, 1)
        if any(r["live_latencies"] for r in results)
        else None,
        # the same, from the bridge's receipt of each answered frame: without the time a frame
        # spent in the network and the bridge's socket before the bridge read it
        "bridge_p99_ms": round(float(np.percentile([x for r in results for x in r["bridge_ms"]], 99)), 1)
        if any(r["bridge_ms"] for r in results)
        else None,
        "bridge_max_ms": round(max(x for r in results for x in r["bridge_ms"]), 1)
        if any(r["bridge_ms"] for r in results)
        else None,
        "model_ms": round(statistics.median(x for r in results for x in r["infer_ms"]), 1)
        if any(r["infer_ms"] for r in results)
        else None,
    }


def goals(alone: dict, crowd: dict, mixed: dict, ordinary: list[int], costly: int) -> list[dict]:
    model_ms = alone["model_ms"] or float("nan")
    mean = crowd["answered"] / crowd["clients"]
    rows = [
        (
            "answered frames/s >= 90% of one stream alone",
            crowd["answered_fps"] >= 0.9 * alone["answered_fps"],
            f"{crowd['answered_fps']} vs {alone['answered_fps']} frames/s",
        ),
        (
            "no timeout errors",
            "timeout" not in crowd["errors"] and "timeout" not in mixed["errors"],
            f"crowd {crowd['errors']}, mixed {mixed['errors']}",
        ),
        (
            "each answer of a live stream <= 3x the model's time",
            crowd["live_max_ms"] is not None and crowd["live_max_ms"] <= 3 * model_ms,
            f"max {crowd['live_max_ms']} ms, model {model_ms} ms; counting each stream's last frame, "
            f"sent as its camera stopped (nothing newer replaces it): max {crowd['max_ms']} ms",
        ),
        (
            "every client served: least >= half the mean",
            min(crowd["answered_per_client"]) >= 0.5 * mean,
            f"least {min(crowd['answered_per_client'])}, mean {mean:.1f}",
        ),
        (
            "answered + dropped + errors = sent, per client",
            crowd["unaccounted"] == 0 and mixed["unaccounted"] == 0,
            f"unaccounted: crowd {crowd['unaccounted']}, mixed {mixed['unaccounted']}",
        ),
        (
            "mixed: ordinary clients keep their turns (each >= 90% of the costly client's answers)",
            min(ordinary) >= 0.9 * costly,
            f"ordinary {ordinary}, costly {costly}",
        ),
    ]
    return [{"goal": goal, "met": bool(met), "measured": measured} for goal, met, measured in rows]


async def soak(ws_url: str, model: str, clients: int, fps: float, duration_s: float, bridge_pid: int) -> dict:
    memory = [rss_mb(bridge_pid)]

    async def sample() -> None:
        while True:
            await asyncio.sleep(5)
            memory.append(rss_mb(bridge_pid))

    sampler = asyncio.create_task(sample())
    ordinary = [jpegs(stream(640, 480, 8))]
    picture = stream(640, 480, 1)[0]
    big = cv2.resize(picture, COSTLY[::-1], interpolation=cv2.INTER_LINEAR)
    costly = [jpegs([big], quality=85)]
    alone_s = max(10.0, duration_s / 3)
    alone = summary("alone", await phase(ws_url, model, ordinary, fps, alone_s), alone_s)
    crowd = summary("crowd", await phase(ws_url, model, ordinary * clients, fps, duration_s), duration_s)
    mixed_results = await phase(ws_url, model, costly + ordinary * 3, fps, duration_s / 2)
    mixed = summary("mixed", mixed_results, duration_s / 2)
    sampler.cancel()
    memory.append(rss_mb(bridge_pid))
    ordinary_answers = [r["answered"] for r in mixed_results[1:]]
    return {
        "model": model,
        "fps_per_client": fps,
        "duration_s": duration_s,
        "phases": [alone, crowd, mixed],
        "goals": goals(alone, crowd, mixed, ordinary_answers, mixed_results[0]["answered"]),
        "bridge_rss_mb": {
            "start": round(memory[0], 1),
            "end": round(memory[-1], 1),
            "max": round(max(memory), 1),
        },
    }


@dataclass(frozen=True)
class SoakSettings(Settings):
    ENV_PREFIX = "SOAK_"

    repository: Path = setting(ROOT / "model_repository", help="exported models")
    model: str = setting(DEFAULT_MODEL, help="the model every client streams")
    clients: int = setting(8, help="streams at once")
    fps: float = setting(10.0, help="frames each client sends per second")
    duration_s: float = setting(60.0, help="seconds of each phase")
    output: Path = setting(ROOT / "bench" / "results" / "soak.json")

    def validate(self) -> None:
        self.require_all(
            [
                ("model", self.model in MODELS, f"one of {', '.join(MODELS)}"),
                ("clients", self.clients >= 1, "at least 1"),
                ("fps", self.fps > 0, "positive"),
                ("duration_s", self.duration_s > 0, "positive"),
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    try:
        args = parse(SoakSettings, argv, parser=parser)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["bridge_alive"] and all(g["met"] for g in report["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
