"""The approaches compared: each runs a frame stream and returns a Result."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.measure import Result, cpu_seconds, summarize, tree_cpu_seconds
from depthstream import rounds as rounds_of
from depthstream.contract import ModelSpec
from depthstream.request import depth_request

SELF = os.getpid()


def cpu_now(*servers: int) -> float:
    """CPU seconds of this process (not its children) plus the servers' whole process trees."""
    return cpu_seconds([SELF]) + tree_cpu_seconds(*servers)


def _size(frames: list[np.ndarray]) -> str:
    return f"{frames[0].shape[1]}x{frames[0].shape[0]}"


ORIGINAL = "the original app's way: PyTorch eager"
FULL_STACK = "full stack: WebSocket -> bridge -> Triton"


def original_way(spec: ModelSpec, network) -> Callable[[np.ndarray], np.ndarray]:
    """One frame the original app's way (the single-process app that ran PyTorch per frame in
    its web server): PyTorch eager in-process, OpenCV preprocessing, per-frame min-max."""
    import torch
    import torch.nn.functional as F

    mean, std = np.array(spec.mean, np.float32), np.array(spec.std, np.float32)
    out = spec.output_resize

    def one(rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        net_h, net_w = spec.resize.network_size(height, width)
        x = cv2.resize(rgb.astype(np.float32) / 255.0, (net_w, net_h), interpolation=cv2.INTER_CUBIC)
        pixels = torch.from_numpy(((x - mean) / std).transpose(2, 0, 1).copy())[None]
        with torch.inference_mode():
            depth = network(pixel_values=pixels).predicted_depth[:, None]
            depth = F.interpolate(
                depth, (height, width), mode=out.interpolation.value, align_corners=out.align_corners
            )[0, 0].numpy()
        gray = ((depth - depth.min()) / (depth.max() - depth.min()) * 255).astype(np.uint8)
        return cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO)

    return one


def runtime_label(runner) -> str:
    """A runtime's rows: "ONNX Runtime direct", "OpenVINO FP32 direct", "OpenVINO BF16 direct"."""
    if runner.engine == "openvino":
        return f"OpenVINO {runner.precision.upper().replace('F32', 'FP32')} direct"
    return "ONNX Runtime direct"


def runtime_way(onnx_path: Path, runner=None) -> Callable[[np.ndarray], np.ndarray]:
    """One frame through one runtime on the exported model, in-process, with the settings and the
    execution provider the served model uses (depthstream.runtime: the session and run options as
    served; a GPU where there is one): the floor for this model on this machine, so the stack's
    rows measure the stack's own cost. ``runner``: ONNX Runtime (default) or OpenVINO FP32/BF16."""
    from depthstream import runtime

    runner = runner or runtime.ONNXRUNTIME
    threads = os.cpu_count() or 1
    session, warning = runtime.open_session(onnx_path, runtime.wanted_providers(), threads, runner=runner)
    if warning:
        print(f"bench: {warning}")
    return lambda rgb: runtime.infer(session, rgb[None])


def stack_way(stream, model: str) -> Callable[[bytes], object]:
    """One JPEG frame through the whole stack on an open client.stream.StreamClient: sent to the
    bridge, answered with its colorized depth; anything but an answer ends the run."""
    from bench.breakdown import answer_of

    stream.configure(model=model)

    def one(jpeg: bytes) -> object:
        stream.send(jpeg)
        return answer_of(stream.next_outcome())

    return one


@dataclass(frozen=True)
class Way:
    """One contender of a side-by-side run: its row's label, the model, the call that does one
    frame, the frames it takes (the same photographs for all: RGB arrays or their JPEGs), and the
    processes whose CPU time it spends besides this one."""

    label: str
    model: str
    one: Callable
    frames: Sequence
    servers: tuple[int, ...] = ()


def side_by_side(ways: list[Way], size: str, rounds: int) -> list[Result]:
    """The ways in alternating rounds (depthstream.rounds: a warm-up each, then every round runs
    each way once, in turn, on the round's frame), so the order of the blocks and a burst of other
    load cannot move one way's figure against another's. The first way is the reference: every
    other row carries ``vs_reference``, the median of the per-round ratios of its time to the
    reference's (> 1: faster), with their spread and the number of rounds."""
    cpu = [0.0] * len(ways)
    times: list[list[float]] = [[] for _ in ways]

    def contender(k: int, way: Way) -> Callable[[], object]:
        served = itertools.count()

        def run() -> object:
            frame = way.frames[next(served) % len(way.frames)]
            before = cpu_now(*way.servers)  # /proc read outside the timed call
            started = time.perf_counter()
            try:
                return way.one(frame)
            finally:
                times[k].append((time.perf_counter() - started) * 1e3)
                cpu[k] += cpu_now(*way.servers) - before

        return run

    contenders = [contender(k, way) for k, way in enumerate(ways)]
    for run in contenders:  # the warm-up serves frame 0: every round k serves frame k + 1
        run()
    cpu[:] = [0.0] * len(ways)
    for runs in times:
        runs.clear()
    rounds_of.alternate(contenders, rounds, warm_up=False)  # its order; the times: each call's own
    results = []
    for way, ms, spent in zip(ways, times, cpu, strict=True):
        extra: dict = {"rounds": rounds, "alternating": [w.label for w in ways]}
        if way is not ways[0]:
            extra["vs_reference"] = {"of": ways[0].label, **rounds_of.ratio(times[0], ms).as_dict()}
        seconds = sum(ms) / 1e3
        results.append(
            summarize(way.label, way.model, size, 1, [t / 1e3 for t in ms], seconds, spent, **extra)
        )
    return results


async def _triton_grpc(
    url: str,
    spec: ModelSpec,
    frames: list[np.ndarray],
    concurrency: int,
    duration_s: float,
    server_pid: int,
    label: str,
) -> Result:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)

    async def infer(rgb: np.ndarray) -> None:
        await client.infer(spec.name, **depth_request(rgb[None]))

    from tritonclient.utils import InferenceServerException

    await infer(frames[0])
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + duration_s

    async def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                await infer(frames[i % len(frames)])
            except InferenceServerException as exc:  # e.g. the bounded queue's rejection
                errors.append(exc.message() or str(exc))
                continue
            finally:
                i += 1
            latencies.append(time.perf_counter() - t0)

    cpu0, start = cpu_now(server_pid), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    seconds = time.perf_counter() - start
    cpu = cpu_now(server_pid) - cpu0
    await client.close()
    return summarize(
        label,
        spec.name,
        _size(frames),
        concurrency,
        latencies,
        seconds,
        cpu,
        errors=len(errors),
        first_error=errors[0] if errors else None,
    )


def triton_grpc(
    url: str,
    spec: ModelSpec,
    frames: list[np.ndarray],
    concurrency: int,
    duration_s: float,
    server_pid: int,
    dynamic_batching: bool,
) -> Result:
    label = f"Triton gRPC ({'production batcher' if dynamic_batching else 'shipped CPU config'})"
    return asyncio.run(_triton_grpc(url, spec, frames, concurrency, duration_s, server_pid, label))


async def full_stack(
    ws_url: str,
    spec: ModelSpec,
    jpegs: list[bytes],
    size: str,
    clients: int,
    duration_s: float,
    pids: tuple[int, ...],
) -> Result:
    from client.stream import Answer, AsyncStreamClient

    latencies: list[float] = []
    bridge_ms: list[float] = []
    errors = 0

    async def client(offset: int) -> None:
        nonlocal errors
        stream = await AsyncStreamClient.connect(ws_url)
        try:
            await stream.configure(model=spec.name)
            i = offset
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await stream.send(jpegs[i % len(jpegs)])
                outcome = await stream.next_outcome()
                if not isinstance(outcome, Answer):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                timings = outcome.header["timings_ms"]
                bridge_ms.append(timings["decode"] + timings["colorize"] + timings["encode"])
                i += 1
        finally:
            await stream.close()

    deadline = time.perf_counter() + 2.0  # warm-up: one client, ~2 s
    await client(0)
    latencies.clear()
    bridge_ms.clear()
    deadline = time.perf_counter() + duration_s
    cpu0, start = cpu_now(*pids), time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    seconds = time.perf_counter() - start
    cpu = cpu_now(*pids) - cpu0
    bridge = np.array(bridge_ms) if bridge_ms else np.array([np.nan])
    return summarize(
        FULL_STACK,
        spec.name,
        size,
        clients,
        latencies,
        seconds,
        cpu,
        errors=errors,
        bridge_ms_p50=round(float(np.median(bridge)), 2),
        bridge_ms_p95=round(float(np.percentile(bridge, 95)), 2),
    )


def video_client(
    url: str,
    spec: ModelSpec,
    frames: list[np.ndarray],
    workdir: Path,
    batch: int | None,
    in_flight: int,
    server_pid: int,
) -> Result:
    """The direct client on a video file (client/frames.py): decoding, colorizing and writing the
    depth video included, as a user runs it; one request at a time, or batches with several in flight."""
    import cv2

    from client import frames as many

    workdir.mkdir(parents=True, exist_ok=True)
    video = workdir / f"{_size(frames)}.mp4"
    if not video.exists():
        writer = cv2.VideoWriter(
            str(video), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (frames[0].shape[1], frames[0].shape[0])
        )
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
    job = many.Job(
        video, workdir / f"{spec.name}.depth.mp4", spec.name, url, "inferno", batch=batch, in_flight=in_flight
    )
    cpu0 = cpu_now(server_pid)
    outcome = asyncio.run(many.run(job, quiet=True))
    label = (
        "direct client, video: one at a time"
        if batch == in_flight == 1
        else (f"direct client, video: batches of {outcome.batch}, {in_flight} in flight")
    )
    per_frame = [outcome.seconds / max(outcome.frames, 1)] * outcome.frames  # throughput, not latency
    return summarize(
        label, spec.name, _size(frames), in_flight, per_frame, outcome.seconds, cpu_now(server_pid) - cpu0
    )
