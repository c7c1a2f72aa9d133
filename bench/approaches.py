"""The approaches compared: each runs a frame stream and returns a Result."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import cv2
import numpy as np

from bench.measure import Result, cpu_seconds, summarize, tree_cpu_seconds
from depthstream.contract import ModelSpec
from depthstream.request import depth_request

SELF = os.getpid()


def cpu_now(*servers: int) -> float:
    """CPU seconds of this process (not its children) plus the servers' whole process trees."""
    return cpu_seconds([SELF]) + tree_cpu_seconds(*servers)


def _size(frames: list[np.ndarray]) -> str:
    return f"{frames[0].shape[1]}x{frames[0].shape[0]}"


def original_eager(spec: ModelSpec, network, frames: list[np.ndarray]) -> Result:
    """The original app: PyTorch eager in-process, OpenCV preprocessing, per-frame min-max."""
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

    one(frames[0])  # warm-up
    return _timed("original: PyTorch eager", spec.name, frames, one)


def runtime_label(runner) -> str:
    """A runtime's rows: "ONNX Runtime direct", "OpenVINO FP32 direct", "OpenVINO BF16 direct"."""
    if runner.engine == "openvino":
        return f"OpenVINO {runner.precision.upper().replace('F32', 'FP32')} direct"
    return "ONNX Runtime direct"


def runtime_direct(spec: ModelSpec, onnx_path: Path, frames: list[np.ndarray], runner=None) -> Result:
    """One runtime on the exported model, in-process, with the settings and the execution
    provider the served model uses (depthstream.runtime: the session and run options as served;
    a GPU where there is one): the floor for this model on this machine, so the stack's rows
    measure the stack's own cost. ``runner``: ONNX Runtime (default) or OpenVINO FP32/BF16."""
    from depthstream import runtime

    runner = runner or runtime.ONNXRUNTIME
    threads = os.cpu_count() or 1
    session, warning = runtime.open_session(onnx_path, runtime.wanted_providers(), threads, runner=runner)
    if warning:
        print(f"bench: {warning}")

    def one(rgb: np.ndarray) -> np.ndarray:
        return runtime.infer(session, rgb[None])

    one(frames[0])
    return _timed(runtime_label(runner), spec.name, frames, one)


def _timed(approach: str, model: str, frames: list[np.ndarray], one) -> Result:
    latencies = []
    cpu0, start = cpu_now(), time.perf_counter()
    for frame in frames:
        t0 = time.perf_counter()
        one(frame)
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    return summarize(approach, model, _size(frames), 1, latencies, seconds, cpu_now() - cpu0)


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
        "full stack: WebSocket -> bridge -> Triton",
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
