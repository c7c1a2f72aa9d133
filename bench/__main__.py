"""``make bench``: every approach on the same frames, same machine, one run, side by side.

1. the original app's way (PyTorch eager in-process, OpenCV preprocessing, per-frame min-max);
2. ONNX Runtime called directly on the exported model (1 and 2 in alternating rounds);
3. the embedded Triton over gRPC at several concurrencies, with and without dynamic batching;
4. the full stack: WebSocket clients sending JPEG frames to the bridge, 1 and 8 clients;
   the presets and the metric models: ONNX Runtime direct and the full stack, one client;
5. where one frame's milliseconds go, stage by stage, at the fastest model (bench.breakdown);
6. flicker: a still scene's depth frame to frame, steady depth on and off (bench.flicker);
7. the worst case: the costliest input the contract accepts, per model (bench.worst_case);
8. the camera models: Depth Anything 3 beside Depth-Anything-V2 at the same network input, its
   worst case, and Depth Pro's 1536x1536 forward (bench.camera);
9. the headline: the whole stack against the original app's way in alternating rounds
   (bench.versus), and each engine's share of the machine's matrix-multiply ceiling (bench.limit).
Writes bench/results/bench.json, bench.png, versus.json, limit.json, breakdown.json, flicker.json,
worst_case.json, camera.json and the
tables in docs/performance.md (the raw-depth one in docs/protocol.md) and three figures in the
README; ``--quick`` writes under build/bench-quick/ and leaves the docs alone.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from bench import (
    approaches,
    breakdown,
    camera,
    flicker,
    harness,
    headline,
    limit,
    perf_analyzer,
    raw_cost,
    report,
    versus,
    worst_case,
)
from bench.frames import jpegs, stream
from bench.goals import goals
from bench.harness import ROOT, Bridge, provenance, server_settings
from bench.measure import Result, rss_mb
from depthstream import accelerator, engine_choice, engines, runtime
from depthstream.contract import (
    CHECKPOINTS,
    DEFAULT_MODEL,
    METRIC_CHECKPOINTS,
    MODELS,
    Precision,
    accuracy_rank,
)
from depthstream.settings import Settings, SettingsError, parse, setting
from export.repository import ONNX_FILE, VERSION
from serving.triton import EmbeddedTriton

PERFORMANCE_PAGE = ROOT / "docs" / "performance.md"  # the tables' home (README.md: three figures)
PROTOCOL_PAGE = ROOT / "docs" / "protocol.md"  # the raw-depth table
QUICK_OUTPUT = ROOT / "build" / "bench-quick"
PERF_ANALYZER_MIN_WINDOW_MS = 5000  # about 5 requests of the reference model on 2 slow cores


@dataclass(frozen=True)
class BenchSettings(Settings):
    """``make bench``'s settings: flags, then ``BENCH_*`` variables, then defaults."""

    ENV_PREFIX = "BENCH_"

    repository: Path = setting(ROOT / "model_repository", help="exported models")
    frames: int = setting(10, help="frames per in-process measurement")
    duration_s: float = setting(8.0, help="seconds per server measurement")
    concurrency: str = setting("1,2,4,8", help="comma-separated client counts for Triton gRPC")
    output: Path = setting(ROOT / "bench" / "results")
    quick: bool = setting(
        False, help="fewer frames and levels: a smoke run (written under build/, never the docs)"
    )
    no_readme: bool = setting(False, help="do not rewrite the tables in docs/ and the README's figures")

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
        if not self.quick:
            return self
        output = QUICK_OUTPUT if self.output == ROOT / "bench" / "results" else self.output
        return replace(self, frames=3, duration_s=3.0, concurrency="1,4", output=output)

    @property
    def levels(self) -> list[int]:
        return [int(c) for c in self.concurrency.split(",")]


def available(repository: Path) -> list[str]:
    return [n for n in MODELS if (repository / n / VERSION / ONNX_FILE).is_file()]


def perf_analyzer_results(url: str, frame, args: BenchSettings) -> list[Result]:
    """perf_analyzer at each concurrency (skipped, and said so, if its wheel cannot be had)."""
    workdir = ROOT / "build" / "perf_analyzer"
    try:
        binary, env = perf_analyzer.ensure_binary(workdir)
    except (subprocess.CalledProcessError, OSError, StopIteration) as exc:
        print(f"perf_analyzer skipped: {exc}", file=sys.stderr)
        return []
    # a window shorter than a few requests records none ("no valid requests") on a slow machine
    window_ms = max(int(args.duration_s * 1000 / 2), PERF_ANALYZER_MIN_WINDOW_MS)
    results = []
    for name in CHECKPOINTS:
        for level in args.levels:
            try:
                results.append(perf_analyzer.run(binary, env, workdir, url, name, frame, level, window_ms))
            except subprocess.CalledProcessError as exc:  # e.g. no stable window on a busy machine
                said = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
                print(
                    f"perf_analyzer failed for {name} at {level} (its row is left out): {said[0]}",
                    file=sys.stderr,
                )
    return results


@dataclass
class Plan:
    """What one run measures: the models found, the frames, and where each result goes."""

    args: BenchSettings
    presets: list[str]
    metric: list[str]  # the metric models exported here (FP32): ONNX Runtime direct and one client
    fastest: str
    sizes: dict[str, list]
    video_frames: list
    encoded: dict[str, list[bytes]]
    results: list[Result] = field(default_factory=list)
    paired: list[Result] = field(default_factory=list)  # bench.versus: the headline's rounds
    bar: tqdm | None = None

    @classmethod
    def of(cls, args: BenchSettings, models: list[str]) -> Plan:
        presets = [
            n for n in models if n not in CHECKPOINTS and MODELS[n].checkpoint == "depth_anything_v2_small"
        ]
        sizes = {"640x480": stream(640, 480, args.frames), "1280x720": stream(1280, 720, args.frames)}
        return cls(
            args=args,
            presets=presets,
            metric=[n for n in models if n in METRIC_CHECKPOINTS],
            fastest=sorted(presets, key=lambda n: accuracy_rank(MODELS[n]))[-1] if presets else DEFAULT_MODEL,
            sizes=sizes,
            video_frames=stream(640, 480, 3 * args.frames),  # a short video for the direct client
            encoded={size: jpegs(frames) for size, frames in sizes.items()},
        )

    @property
    def steps(self) -> int:
        direct = sum(len(runners_compared(self, name)) for name in CHECKPOINTS)
        per_checkpoint = len(self.sizes) + 3 * len(self.args.levels) + 3
        others = sum(1 + len(runners_compared(self, name)) for name in [*self.presets, *self.metric])
        return len(CHECKPOINTS) * per_checkpoint + direct * len(self.sizes) + others + 4

    def onnx(self, name: str) -> Path:
        return self.args.repository / name / VERSION / ONNX_FILE

    def record_all(self, results: list[Result]) -> None:
        for result in results:
            self.record(result)

    def record(self, result: Result) -> None:
        self.results.append(result)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{result.model} {result.approach[:20]} {result.fps:.2f} fps")
            self.bar.update()


def runners_compared(plan: Plan, name: str) -> list:
    """The runtimes side by side for one model: ONNX Runtime, OpenVINO FP32 and, where the CPU
    runs it, OpenVINO BF16, on an FP32 model; a twin on the runtime that serves it."""
    spec = MODELS[name]
    if spec.precision == Precision.INT8:
        return [runtime.ONNXRUNTIME]
    if spec.precision == Precision.BF16:
        return [runtime.OPENVINO_BF16]
    if engines.openvino_version() is None or runtime.wanted_providers()[0] != accelerator.CPU:
        return [runtime.ONNXRUNTIME]
    bf16 = [runtime.OPENVINO_BF16] if engines.bf16_capable() else []
    return [runtime.ONNXRUNTIME, runtime.OPENVINO_F32, *bf16]


def measure_in_process(plan: Plan) -> None:
    """1 and 2: the original app's way and each runtime direct, one frame at a time, in
    alternating rounds on the same frames."""
    rounds = plan.args.frames
    for name in CHECKPOINTS:
        network = harness.load_network(plan.args.repository, name)
        for size, frames in plan.sizes.items():
            original = approaches.Way(
                approaches.ORIGINAL, name, approaches.original_way(MODELS[name], network), frames
            )
            plan.record_all(
                approaches.side_by_side([original, *runtime_ways(plan, name, frames)], size, rounds)
            )
        del network
    for name in [*plan.presets, *plan.metric]:
        frames = plan.sizes["640x480"]
        plan.record_all(approaches.side_by_side(runtime_ways(plan, name, frames), "640x480", rounds))


def runtime_ways(plan: Plan, name: str, frames: list) -> list[approaches.Way]:
    return [
        approaches.Way(
            approaches.runtime_label(runner), name, approaches.runtime_way(plan.onnx(name), runner), frames
        )
        for runner in runners_compared(plan, name)
    ]


def served_label(plan: Plan, name: str) -> str:
    """The in-process row of the runtime that serves ``name`` here (as the served config says)."""
    choice = engine_choice.for_model(plan.args.repository / name, runtime.wanted_providers())
    return approaches.runtime_label(choice.runner)


def measure_triton_grpc(plan: Plan, url: str, pid: int, batching: bool) -> None:
    """3: tritonclient over gRPC at each concurrency."""
    for name in CHECKPOINTS:
        for level in plan.args.levels:
            plan.record(
                approaches.triton_grpc(
                    url, MODELS[name], plan.sizes["640x480"], level, plan.args.duration_s, pid, batching
                )
            )


def measure_video_client(plan: Plan, url: str, pid: int) -> None:
    """The direct client on a video file: one request at a time against batches in flight."""
    for name in (DEFAULT_MODEL, plan.fastest):
        for batch, in_flight in ((1, 1), (None, 2)):  # one at a time; the client's defaults
            workdir = ROOT / "build" / "bench" / "video"
            plan.record(
                approaches.video_client(url, MODELS[name], plan.video_frames, workdir, batch, in_flight, pid)
            )


def measure_full_stack(plan: Plan, url: str, triton_pid: int, shm_key: str) -> None:
    """4: WebSocket clients through a real bridge (as make demo runs it: frames through shared
    memory): the reference models against the original app's way; one client per other model and
    size, eight per reference model."""
    bridge = Bridge(url, shm_key=shm_key)
    pids = (triton_pid, bridge.process.pid)
    duration_s = plan.args.duration_s
    try:
        served = versus.served_here(plan.args.repository)  # as python -m bench.versus alone
        paired = versus.measure(
            plan.args.repository, served, plan.sizes["640x480"], bridge.ws_url, pids, plan.args.frames
        )
        plan.paired = paired
        for result in paired:
            if result.approach == approaches.FULL_STACK:
                result.extra["runtime"] = served_label(plan, result.model)  # what the goals compare it with
                plan.record(result)  # the original's row: measure_in_process's, beside the runtimes
        done = {name for names in served.values() for name in names}  # measured in the rounds
        for name in [*CHECKPOINTS, *plan.presets, *plan.metric]:
            sizes = ["1280x720"] if name in CHECKPOINTS else [] if name in done else ["640x480"]
            for size in sizes:
                one_client = approaches.full_stack(
                    bridge.ws_url, MODELS[name], plan.encoded[size], size, 1, duration_s, pids
                )
                result = asyncio.run(one_client)
                result.extra["runtime"] = served_label(plan, name)  # what the goals compare it with
                plan.record(result)
            if name in CHECKPOINTS:
                before = rss_mb(bridge.process.pid)
                streams = approaches.full_stack(
                    bridge.ws_url, MODELS[name], plan.encoded["640x480"], "640x480", 8, duration_s * 2, pids
                )
                result = asyncio.run(streams)
                after = rss_mb(bridge.process.pid)
                result.extra["bridge_rss_mb"] = [round(before, 1), round(after, 1)]
                result.extra["bridge_rss_growth_mb"] = round(after - before, 1)
                plan.record(result)
    finally:
        bridge.stop()


def measure_servers(plan: Plan) -> None:
    """3 and 4: the shipped CPU configuration (no dynamic batching) with every client, then the
    production batcher (bounded queue) over gRPC for comparison."""
    args = plan.args
    for batching in (False, True):
        settings = server_settings(args.repository, ROOT / "build" / "bench", dynamic_batching=batching)
        with EmbeddedTriton(settings, log_path=args.output / "tritonserver.log") as triton:
            assert triton.process is not None  # started
            pid = triton.process.pid
            measure_triton_grpc(plan, settings.grpc_url, pid, batching)
            if batching:
                continue
            measure_video_client(plan, settings.grpc_url, pid)
            for result in perf_analyzer_results(settings.grpc_url, plan.sizes["640x480"][0], args):
                plan.record(result)
            measure_full_stack(plan, settings.grpc_url, pid, settings.shm_key)


def write_reports(args: BenchSettings, results: list[Result], paired: list[Result]) -> None:
    """bench.json, bench.png, bench.md the table in docs/performance.md, versus.json (the headline's
    alternating rounds); then the raw-depth and worst-case runs."""
    where = provenance()  # the machine, the date and the commit, in every table
    achieved = goals(results)
    report.write_json(args.output / "bench.json", where, results, achieved)
    report.plot(args.output / "bench.png", where, results)
    table = report.markdown(where, results, achieved)
    (args.output / "bench.md").write_text(table + "\n")
    # the docs' tables, never from a smoke run (--quick writes under build/ only)
    performance = None if args.no_readme or args.quick else PERFORMANCE_PAGE
    if performance is not None:
        report.update_readme(performance, table)
    print(table)
    versus.write(args.output, where, paired, performance)  # the headline: alternating rounds
    # each engine's achieved GFLOP/s against the machine's matrix-multiply ceiling (bench/limit.py)
    limit.write(args.output, where, args.repository, limit.from_bench(results), performance)
    # raw depth on the stream: bytes and the bridge's time per frame (bench/raw_cost.py)
    raw_cost.run(args.repository, args.output, where, performance and PROTOCOL_PAGE)
    # where one frame's milliseconds go, stage by stage, at the fastest model (bench/breakdown.py)
    breakdown.run(args.repository, args.output, where, performance)
    # flicker, steady depth on and off: the mechanism and through the stack (bench/flicker.py)
    flicker.run(args.repository, args.output, where, performance)
    # 5: the worst case the contract's limits allow, per model (bench/worst_case.py)
    worst_case.run(
        args.repository, args.output, ROOT / "build" / "worst-case", where, args.quick, performance
    )
    # the camera models: DA3 beside DA-V2 at the same network input, its worst case, Depth Pro
    camera.run(args.output, where, performance, depth_pro=not args.quick)
    if performance is not None:
        headline.write(args.output, ROOT / "README.md")  # the headline, from the tables above


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
    plan = Plan.of(args, models)
    with tqdm(total=plan.steps, desc="bench", unit="run") as plan.bar:
        measure_in_process(plan)
        measure_servers(plan)
    write_reports(args, plan.results, plan.paired)
    return 0


if __name__ == "__main__":
    sys.exit(main())
