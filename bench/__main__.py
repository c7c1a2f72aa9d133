"""``make bench``: every approach on the same frames, same machine, one run, side by side.

1. the original approach (PyTorch eager in-process, OpenCV preprocessing, per-frame min-max);
2. ONNX Runtime called directly on the exported model;
3. the embedded Triton over gRPC at several concurrencies, with and without dynamic batching;
4. the full stack: WebSocket clients sending JPEG frames to the bridge, 1 and 8 clients;
5. the worst case: the costliest input the contract accepts, per model (bench.worst_case).
Writes bench/results/bench.json, bench.png, worst_case.json and the README's tables.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from bench import approaches, perf_analyzer, raw_cost, report, worst_case
from bench.frames import jpegs, stream
from bench.goals import goals
from bench.harness import ROOT, Bridge, machine, server_settings
from bench.measure import Result, rss_mb
from depthstream.contract import CHECKPOINTS, DEFAULT_MODEL, MODELS, accuracy_rank
from depthstream.settings import Settings, SettingsError, parse, setting
from export.repository import ONNX_FILE, VERSION, read_manifest
from serving.triton import EmbeddedTriton


@dataclass(frozen=True)
class BenchSettings(Settings):
    """``make bench``'s settings: flags, then ``BENCH_*`` variables, then defaults."""

    ENV_PREFIX = "BENCH_"

    repository: Path = setting(ROOT / "model_repository", help="exported models")
    frames: int = setting(10, help="frames per in-process measurement")
    duration_s: float = setting(8.0, help="seconds per server measurement")
    concurrency: str = setting("1,2,4,8", help="comma-separated client counts for Triton gRPC")
    output: Path = setting(ROOT / "bench" / "results")
    quick: bool = setting(False, help="fewer frames and levels: a smoke run")
    no_readme: bool = setting(False, help="do not rewrite the README's tables")

    def validate(self) -> None:
        levels = [c.strip() for c in self.concurrency.split(",")]
        self.require_all(
            [
                ("frames", self.frames >= 1, "at least 1"),
                ("duration_s", self.duration_s > 0, "positive"),
                (
                    "concurrency",
                    all(c.isdigit() and int(c) >= 1 for c in levels),
                    "positive integers, comma-separated",
                ),
            ]
        )

    def effective(self) -> BenchSettings:
        """With --quick: fewer frames, shorter runs, two levels."""
        return replace(self, frames=3, duration_s=3.0, concurrency="1,4", quick=True) if self.quick else self

    @property
    def levels(self) -> list[int]:
        return [int(c) for c in self.concurrency.split(",")]


def available(repository: Path) -> list[str]:
    return [n for n in MODELS if (repository / n / VERSION / ONNX_FILE).is_file()]


def load_network(repository: Path, name: str):
    """The PyTorch model the export used (same source, same random seed in smoke mode)."""
    from export.checkpoints import load_checkpoint

    manifest = read_manifest(repository / name)
    spec = MODELS[name]
    weights = None if manifest.source in ("random", spec.hub_id) else Path(manifest.source)
    return load_checkpoint(spec, weights, manifest.random_weights).model


def perf_analyzer_results(url: str, frame, args: BenchSettings) -> list[Result]:
    """perf_analyzer at each concurrency (skipped, and said so, if its wheel cannot be had)."""
    workdir = ROOT / "build" / "perf_analyzer"
    try:
        binary, env = perf_analyzer.ensure_binary(workdir)
    except (subprocess.CalledProcessError, OSError, StopIteration) as exc:
        print(f"perf_analyzer skipped: {exc}", file=sys.stderr)
        return []
    window_ms = int(args.duration_s * 1000 / 2)
    return [
        perf_analyzer.run(binary, env, workdir, url, name, frame, level, window_ms)
        for name in CHECKPOINTS
        for level in args.levels
    ]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    try:
        args = parse(BenchSettings, argv, prog="python -m bench", description=__doc__).effective()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    models = available(args.repository)
    if not all(name in models for name in CHECKPOINTS):
        print(f"error: {args.repository} lacks exported models; run `make export` first", file=sys.stderr)
        return 2
    presets = [
        n for n in models if n not in CHECKPOINTS and MODELS[n].checkpoint == "depth_anything_v2_small"
    ]
    fastest = sorted(presets, key=lambda n: accuracy_rank(MODELS[n]))[-1] if presets else DEFAULT_MODEL
    sizes = {"640x480": stream(640, 480, args.frames), "1280x720": stream(1280, 720, args.frames)}
    video_frames = stream(640, 480, 3 * args.frames)  # a short video for the direct client
    encoded = {size: jpegs(frames) for size, frames in sizes.items()}
    results: list[Result] = []
    steps = len(CHECKPOINTS) * (2 * len(sizes) + 3 * len(args.levels) + 3) + 2 * len(presets) + 4
    bar = tqdm(total=steps, desc="bench", unit="run")

    def record(result: Result) -> None:
        results.append(result)
        bar.set_postfix_str(f"{result.model} {result.approach[:20]} {result.fps:.2f} fps")
        bar.update()

    # 1 and 2: in-process, one frame at a time
    for name in CHECKPOINTS:
        network = load_network(args.repository, name)
        for frames in sizes.values():
            record(approaches.original_eager(MODELS[name], network, frames))
            record(
                approaches.onnxruntime_direct(
                    MODELS[name], args.repository / name / VERSION / ONNX_FILE, frames
                )
            )
        del network
    for name in presets:
        record(
            approaches.onnxruntime_direct(
                MODELS[name], args.repository / name / VERSION / ONNX_FILE, sizes["640x480"]
            )
        )

    # 3 and 4: servers; the shipped CPU configuration (no dynamic batching) with the full stack,
    # then the production batcher (bounded queue) for comparison
    for batching in (False, True):
        settings = server_settings(args.repository, ROOT / "build" / "bench", dynamic_batching=batching)
        with EmbeddedTriton(settings, log_path=args.output / "tritonserver.log") as triton:
            pid = triton.process.pid
            for name in CHECKPOINTS:
                for level in args.levels:
                    record(
                        approaches.triton_grpc(
                            settings.grpc_url,
                            MODELS[name],
                            sizes["640x480"],
                            level,
                            args.duration_s,
                            pid,
                            batching,
                        )
                    )
            if batching:
                continue
            # the direct client on a video file: one request at a time against batches in flight
            for name in (DEFAULT_MODEL, fastest):
                for batch, in_flight in ((1, 1), (None, 2)):  # one at a time; the client's defaults
                    record(
                        approaches.video_client(
                            settings.grpc_url,
                            MODELS[name],
                            video_frames,
                            ROOT / "build" / "bench" / "video",
                            batch,
                            in_flight,
                            pid,
                        )
                    )
            for result in perf_analyzer_results(settings.grpc_url, sizes["640x480"][0], args):
                record(result)
            bridge = Bridge(settings.grpc_url)
            try:
                for name in [*CHECKPOINTS, *presets]:
                    size_list = ["640x480", "1280x720"] if name in CHECKPOINTS else ["640x480"]
                    for size in size_list:
                        one_client = approaches.full_stack(
                            bridge.ws_url,
                            MODELS[name],
                            encoded[size],
                            size,
                            1,
                            args.duration_s,
                            (pid, bridge.process.pid),
                        )
                        record(asyncio.run(one_client))
                    if name in CHECKPOINTS:
                        before = rss_mb(bridge.process.pid)
                        streams = approaches.full_stack(
                            bridge.ws_url,
                            MODELS[name],
                            encoded["640x480"],
                            "640x480",
                            8,
                            args.duration_s * 2,
                            (pid, bridge.process.pid),
                        )
                        result = asyncio.run(streams)
                        result.extra["bridge_rss_mb"] = [
                            round(before, 1),
                            round(rss_mb(bridge.process.pid), 1),
                        ]
                        result.extra["bridge_rss_growth_mb"] = round(rss_mb(bridge.process.pid) - before, 1)
                        record(result)
            finally:
                bridge.stop()
    bar.close()

    where = machine()
    achieved = goals(results)
    report.write_json(args.output / "bench.json", where, results, achieved)
    report.plot(args.output / "bench.png", where, results)
    table = report.markdown(where, results, achieved)
    (args.output / "bench.md").write_text(table + "\n")
    if not args.no_readme:
        report.update_readme(ROOT / "README.md", table)
    print(table)

    # raw depth on the stream: bytes and the bridge's time per frame (bench/raw_cost.py)
    raw_cost.run(args.repository, args.output, where, None if args.no_readme else ROOT / "README.md")

    # 5: the worst case the contract's limits allow, per model (bench/worst_case.py)
    worst_case.run(
        args.repository,
        args.output,
        ROOT / "build" / "worst-case",
        where,
        args.quick,
        None if args.no_readme else ROOT / "README.md",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
