"""The worst case: the most expensive input the stack accepts, found by search, per model.

``python -m bench.worst_case`` (and a section of ``make bench``). For each checkpoint's model,
one embedded Triton runs a grid of shapes inside the contract's limits (aspect ratios from 1:1
to the thinnest strip, both orientations, from the minimum side to the maximum pixels) over
direct gRPC, timing each the first time the serving process sees it (cold: what a client that
sends a new shape costs) and again (warm). An attacker then sends a new shape with every
request (640x480 with the width one pixel more each time). Peak memory is read in a fresh process per shape that runs the same
model.onnx with the served ONNX Runtime settings (bench.memory_probe). The costliest
shape is then measured again through the bridge (a JPEG over the WebSocket) and as the
largest batch.
Goal: at most 3x the time and 2.5x the peak memory of a warm 640x480 frame, for the first frame
of a shape too.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import tritonclient.grpc as grpcclient

from bench.frames import stream
from bench.harness import ROOT, Bridge, provenance, server_settings
from bench.report import replace_between
from depthstream.contract import (
    CAMERA_CHECKPOINTS,
    CHECKPOINTS,
    MAX_BATCH_SIZE,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    known_models,
    spec_of,
)
from depthstream.model_config import register_repository
from depthstream.request import depth_request
from depthstream.settings import Settings, SettingsError, parse, setting
from serving.triton import EmbeddedTriton

TIME_GOAL, MEMORY_GOAL = 3.0, 2.5
BASELINE = (480, 640)
BEGIN, END = "<!-- worst-case:begin -->", "<!-- worst-case:end -->"


@dataclass
class Cost:
    model: str
    path: str  # "gRPC" or "bridge"
    height: int
    width: int
    batch: int
    network: str  # the network input the contract gives this shape
    ms: float  # per request (median)
    peak_mb: float  # the model process's peak resident memory during the request
    first_ms: float = 0.0  # the first request of this measurement (cold when the shape is new)

    @property
    def shape(self) -> str:
        return f"{self.batch}x{self.width}x{self.height}" if self.batch > 1 else f"{self.width}x{self.height}"


def candidate_shapes(quick: bool) -> list[tuple[int, int]]:
    """(height, width) across aspect ratios and sizes, both orientations, inside the limits."""
    aspects = [1, 2.5, 2.6, 10, MAX_IMAGE_SIDE / MIN_IMAGE_SIDE]
    pixel_counts = [640 * 480, MAX_IMAGE_PIXELS] if quick else [640 * 480, 1920 * 1080, MAX_IMAGE_PIXELS]
    shapes = {BASELINE, (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)}
    for aspect in aspects:
        for pixels in pixel_counts:
            long = min(MAX_IMAGE_SIDE, round(math.sqrt(pixels * aspect)))
            short = max(MIN_IMAGE_SIDE, min(long, pixels // long, round(long / aspect)))
            shapes |= {(short, long), (long, short)}
    return sorted(shapes, key=lambda hw: (hw[0] * hw[1], hw))


def peak_memory_mb(onnx_path: Path, height: int, width: int, batch: int, repeats: int = 1) -> float:
    """Peak resident memory of a fresh process running one request of this shape: the least of
    ``repeats`` processes. The same shape and model measured ~720 or ~955 MB from one process to
    the next (DPT-BEiT at 640x480); the least is the one that repeats, for every shape alike."""
    command = [
        sys.executable,
        "-m",
        "bench.memory_probe",
        str(onnx_path),
        str(height),
        str(width),
        str(batch),
    ]
    peaks = [
        float(
            subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()[-1]
        )
        for _ in range(repeats)
    ]
    return min(peaks)


def image(height: int, width: int) -> np.ndarray:
    """A real photograph at this shape (stretched), so JPEG sizes and depth look like a camera's."""
    picture = stream(640, 480, 1)[0]
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)


def timed_request_ms(client, model: str, pixels: np.ndarray) -> float:
    request = depth_request(pixels)
    start = time.perf_counter()
    client.infer(model, **request)
    return (time.perf_counter() - start) * 1e3


def measure_grpc(
    client, onnx_path: Path, model: str, height: int, width: int, batch: int, repeats: int
) -> Cost:
    """The first request timed on its own (cold, if the server never saw this shape), then
    ``repeats`` more (warm, their median)."""
    pixels = np.ascontiguousarray(np.stack([image(height, width)] * batch))
    first = timed_request_ms(client, model, pixels)
    times = [timed_request_ms(client, model, pixels) for _ in range(repeats)]
    net = spec_of(model).resize.network_size(height, width)
    memory = peak_memory_mb(onnx_path, height, width, batch, repeats)
    return Cost(
        model, "gRPC", height, width, batch, f"{net[1]}x{net[0]}", statistics.median(times), memory, first
    )


def measure_cold(client, onnx_path: Path, model: str, height: int, width: int, count: int = 3) -> Cost:
    """The first-time cost of a shape, steadier than one request: ``count`` shapes never seen,
    the costliest's neighbours (width one pixel less each time: the same network input), one
    request each, the median. Peak memory as for the shape itself (a fresh process is cold)."""
    widths = (
        [width - 1 - i for i in range(count)]
        if width > MIN_IMAGE_SIDE + count
        else [width + 1 + i for i in range(count)]
    )
    times = [timed_request_ms(client, model, image(height, w)[None].copy()) for w in widths]
    net = spec_of(model).resize.network_size(height, width)
    memory = peak_memory_mb(onnx_path, height, width, 1, 1)
    median = statistics.median(times)
    return Cost(model, "gRPC", height, width, 1, f"{net[1]}x{net[0]}", median, memory, median)


def measure_new_shapes(client, model: str, count: int) -> Cost:
    """An attacker's stream: 640x480 with the width one pixel more on every request, so each
    request is a shape the server has never seen; the median time of ``count`` of them."""
    height, width = BASELINE
    times = [timed_request_ms(client, model, image(height, width + 1 + i)[None].copy()) for i in range(count)]
    net = spec_of(model).resize.network_size(height, width + 1)
    return Cost(
        model, "gRPC", height, width + 1, 1, f"{net[1]}x{net[0]}", statistics.median(times), 0.0, max(times)
    )


async def _bridge_round_trips(ws_url: str, model: str, data: bytes, repeats: int) -> list[float]:
    from client.stream import Answer, AsyncStreamClient

    times = []
    stream = await AsyncStreamClient.connect(ws_url)
    try:
        await stream.configure(model=model)
        for i in range(repeats + 1):
            start = time.perf_counter()
            await stream.send(data)
            outcome = await stream.next_outcome()
            if not isinstance(outcome, Answer):
                raise RuntimeError(f"the bridge answered {outcome}")
            if i:  # the first is the warm-up
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        await stream.close()
    return times


def measure_bridge(ws_url: str, onnx_path: Path, model: str, height: int, width: int, repeats: int) -> Cost:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image(height, width), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    assert ok
    times = asyncio.run(_bridge_round_trips(ws_url, model, data.tobytes(), repeats))
    net = spec_of(model).resize.network_size(height, width)
    memory = peak_memory_mb(onnx_path, height, width, 1, repeats)  # the model's process: as over gRPC
    return Cost(model, "bridge", height, width, 1, f"{net[1]}x{net[0]}", statistics.median(times), memory)


def scan_grid(client, onnx_path: Path, model: str, quick: bool, progress=None) -> list[Cost]:
    """One measurement per candidate shape; each is new to the server when first sent."""
    grid = []
    for height, width in candidate_shapes(quick):
        grid.append(measure_grpc(client, onnx_path, model, height, width, 1, 1))
        if progress:
            progress(grid[-1])
    return grid


def costliest(client, onnx_path: Path, model: str, grid: list[Cost], by, repeats: int) -> Cost:
    """One measurement each ranks the grid; the top three are measured again, with repeats."""
    top = sorted(grid, key=by)[-3:]
    return max((measure_grpc(client, onnx_path, model, c.height, c.width, 1, repeats) for c in top), key=by)


def search_model(client, onnx_path: Path, model: str, ws_url: str, quick: bool, progress=None) -> dict:
    """The grid over direct gRPC, then the costliest shape through the bridge and as the largest
    batch, each against 640x480 the same way. The order matters: cold figures need new shapes."""
    repeats = 1 if quick else 3
    grid = scan_grid(client, onnx_path, model, quick, progress)
    # the cold ranking, then the costliest's first-time cost again, on neighbours never seen
    # (one request is noisy)
    ranked = max(grid, key=lambda c: c.first_ms)
    worst_cold = measure_cold(client, onnx_path, model, ranked.height, ranked.width, 1 if quick else 3)
    base_cold = next(c for c in grid if (c.height, c.width) == BASELINE)
    attacker = measure_new_shapes(client, model, 5 if quick else 10)
    base = measure_grpc(client, onnx_path, model, *BASELINE, 1, repeats)  # the baseline, warm
    worst_time = costliest(client, onnx_path, model, grid, lambda c: c.ms, repeats)
    worst_memory = costliest(client, onnx_path, model, grid, lambda c: c.peak_mb, repeats)
    shape = (worst_time.height, worst_time.width)
    batch = measure_grpc(client, onnx_path, model, *shape, MAX_BATCH_SIZE, repeats)
    bridge_base = measure_bridge(ws_url, onnx_path, model, *BASELINE, repeats + 1)
    bridge_worst = measure_bridge(ws_url, onnx_path, model, *shape, repeats + 1)
    return {
        "grid": [asdict(c) for c in grid],
        "rows": [
            _row("gRPC, 640x480 the first time", base_cold, base, cold=True),
            _row("gRPC, costliest shape the first time (median of 3 new)", worst_cold, base, cold=True),
            _row("gRPC, a new shape every request (median)", attacker, base, memory=False),
            _row("gRPC, costliest time (warm)", worst_time, base),
            _row("gRPC, costliest memory", worst_memory, base),
            _row(f"gRPC, batch of {MAX_BATCH_SIZE} (per image)", batch, base, per=MAX_BATCH_SIZE),
            _row("bridge, costliest", bridge_worst, bridge_base),
        ],
    }


def worst_case_models(repository: Path) -> tuple[str, ...]:
    """The curated reference models, the camera models served, then each checkpoint added with
    ``--checkpoint`` (its full network size; the repository is the catalog)."""
    register_repository(repository)
    added = [
        name
        for name, spec in known_models().items()
        if spec.added and spec.name == spec.checkpoint and (repository / name / "1" / "model.onnx").is_file()
    ]
    camera = [name for name in CAMERA_CHECKPOINTS if (repository / name / "1" / "model.onnx").is_file()]
    return (*CHECKPOINTS, *camera, *sorted(added))


def search(
    triton: EmbeddedTriton,
    repository: Path,
    ws_url: str,
    quick: bool,
    progress=None,
    models=tuple(CHECKPOINTS),
) -> dict:
    """Every model asked (the curated reference models by default), one after the other."""
    with grpcclient.InferenceServerClient(triton.settings.grpc_url) as client:
        return {
            "models": {
                model: search_model(
                    client, repository / model / "1" / "model.onnx", model, ws_url, quick, progress
                )
                for model in models
            }
        }


def _row(label: str, cost: Cost, base: Cost, per: int = 1, cold: bool = False, memory: bool = True) -> dict:
    """Against a warm 640x480 frame. ``cold``: the cost's first request (a shape never seen);
    the peak memory is always a fresh process's, so always cold. ``memory``: False where the row
    has no memory of its own (the attacker's shapes are 640x480's, measured in its row)."""
    ms = cost.first_ms if cold else cost.ms
    time_ratio = ms / per / base.ms
    memory_ratio = cost.peak_mb / base.peak_mb if memory else None
    return {
        "case": label,
        "shape": cost.shape,
        "network": cost.network,
        "ms": round(ms, 1),
        "base_ms": round(base.ms, 1),
        "time_ratio": round(time_ratio, 2),
        "peak_mb": round(cost.peak_mb) if memory else None,
        "base_peak_mb": round(base.peak_mb),
        "memory_ratio": None if memory_ratio is None else round(memory_ratio, 2),
        "met": time_ratio <= TIME_GOAL and (memory_ratio is None or memory_ratio <= MEMORY_GOAL),
    }


def markdown(machine: str, report: dict) -> str:
    lines = [
        f"Worst case, measured by `make bench` on {machine}: the costliest of "
        f"{len(next(iter(report['models'].values()))['grid'])} shapes inside the limits, against a "
        f"warm 640x480 frame sent the same way. Goal: <= {TIME_GOAL:g}x the time, <= {MEMORY_GOAL:g}x the "
        "peak memory of the process running the model (the least of three fresh processes per "
        "shape, of one for the grid's ranking), for the first request of a shape the server never "
        "saw too (cold: every grid shape is new to the serving process when first sent; the "
        "attacker sends a new shape with every request). A batch runs "
        "one image at a time: its time is per image, its memory that of the whole request.",
        "",
        "| model | case | input (WxH) | network input | ms | ratio | peak MB | ratio | goal met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, entry in report["models"].items():
        for row in entry["rows"]:
            memory = (
                "- | -"
                if row["memory_ratio"] is None
                else f"{row['peak_mb']} (640x480: {row['base_peak_mb']}) | {row['memory_ratio']:.2f}x"
            )
            lines.append(
                f"| {model} | {row['case']} | {row['shape']} | {row['network']} | {row['ms']:.0f} "
                f"(640x480: {row['base_ms']:.0f}) | {row['time_ratio']:.2f}x | {memory} | "
                f"{'yes' if row['met'] else 'no'} |"
            )
    return "\n".join(lines)


def run(
    repository: Path, output: Path, workdir: Path, machine: str, quick: bool, readme: Path | None
) -> dict:

    models = worst_case_models(repository)
    settings = server_settings(repository, workdir, models=models)
    with EmbeddedTriton(settings, log_path=output / "tritonserver-worst-case.log") as triton:
        bridge = Bridge(settings.grpc_url)
        try:
            report = search(
                triton,
                repository,
                bridge.ws_url,
                quick,
                models=models,
                progress=lambda c: print(
                    f"  {c.model} {c.shape}: {c.ms:.0f} ms, {c.peak_mb:.0f} MB", flush=True
                ),
            )
        finally:
            bridge.stop()
    report["machine"] = machine
    report["goal"] = {"time_ratio": TIME_GOAL, "memory_ratio": MEMORY_GOAL}
    (output / "worst_case.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(machine, report)
    (output / "worst_case.md").write_text(table + "\n")
    if readme is not None:
        replace_between(readme, BEGIN, END, table)
    print(table)
    return report


@dataclass(frozen=True)
class WorstCaseSettings(Settings):
    ENV_PREFIX = "WORST_CASE_"

    repository: Path = setting(ROOT / "model_repository", help="exported models")
    output: Path = setting(ROOT / "bench" / "results", help="where worst_case.json and its table go")
    quick: bool = setting(False, help="a coarser grid, one repeat: a smoke run (never written to the docs)")
    no_readme: bool = setting(False, help="do not rewrite the table in docs/performance.md")


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(WorstCaseSettings, argv, prog="python -m bench.worst_case", description=__doc__)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = [m for m in CHECKPOINTS if not (args.repository / m / "1" / "model.onnx").is_file()]
    if missing:
        print(
            f"error: {args.repository} lacks {', '.join(missing)}; run `make export` first", file=sys.stderr
        )
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    report = run(
        args.repository,
        args.output,
        ROOT / "build" / "worst-case",
        provenance(),
        args.quick,
        None if args.no_readme or args.quick else ROOT / "docs" / "performance.md",
    )
    return 0 if all(row["met"] for entry in report["models"].values() for row in entry["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
