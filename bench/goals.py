"""The goals `make bench` checks, each measured side by side in one run: one small function per
goal, each returning its rows ({goal, measured, met}); ``goals`` gives them all, in order."""

from __future__ import annotations

from bench.measure import Result
from depthstream import accelerator
from depthstream.contract import CHECKPOINTS, MODELS

SIZE = "640x480"
# The full stack against the original app's way (PyTorch eager per frame in its web server), from
# alternating rounds: each FP32 name >= 1.1x; the fastest faithful full-resolution
# Depth-Anything-V2-Small (its twin, where one is kept) >= 2.5x where the CPU has a BF16 matrix
# engine, >= 1.5x elsewhere.
FP32_GOAL, BF16_FASTEST_GOAL, PLAIN_FASTEST_GOAL = 1.1, 2.5, 1.5
FASTEST_OF = "depth_anything_v2_small"


def find(results: list[Result], approach: str, model: str, concurrency: int = 1) -> Result | None:
    return next(
        (
            r
            for r in results
            if r.approach.startswith(approach)
            and r.model == model
            and r.size == SIZE
            and r.concurrency == concurrency
        ),
        None,
    )


def row(goal: str, measured: str, met: bool) -> dict:
    return {"goal": goal, "measured": measured, "met": met}


def served_direct(results: list[Result], full: Result) -> Result | None:
    """The in-process row of the runtime that served a full-stack row (ONNX Runtime or OpenVINO)."""
    return find(results, full.extra.get("runtime", "ONNX Runtime direct"), full.model)


def stack_against_the_model(results: list[Result]) -> list[dict]:
    """Per model measured both ways (the reference models, the presets, the metric models): the
    full stack (one client) >= 90% of the runtime that serves it, called directly."""
    out = []
    for name in MODELS:
        full = find(results, "full stack", name)
        direct = full and served_direct(results, full)
        if direct and full:
            ratio = full.fps / direct.fps
            out.append(
                row(
                    f"{name}: full stack (1 client) >= 90% of {direct.approach}",
                    f"{ratio:.0%} ({full.fps:.2f} vs {direct.fps:.2f} fps)",
                    ratio >= 0.9,
                )
            )
    return out


def stack_against_the_original(results: list[Result], bf16_engine: bool | None = None) -> list[dict]:
    """Each reference model's full stack against the original app's way on the same frames, and
    the fastest faithful full-resolution twin of Depth-Anything-V2-Small (the goals above)."""
    bf16_engine = accelerator.has_bf16_engine() if bf16_engine is None else bf16_engine
    out = []
    for name in CHECKPOINTS:
        eager, full = find(results, "the original app's way", name), find(results, "full stack", name)
        if not (eager and full):
            continue
        out.append(_against_the_original(f"{name}: full stack", full, eager, FP32_GOAL))
        if name == FASTEST_OF:
            twins = [
                r
                for r in one_client_full_stack(results)
                if MODELS[r.model].fp32_twin == name and r.model != name
            ]
            fastest = max([full, *twins], key=lambda r: speed_up(r, eager)[0])
            goal = BF16_FASTEST_GOAL if bf16_engine else PLAIN_FASTEST_GOAL
            label = f"fastest faithful full-resolution {name} ({fastest.model}): full stack"
            out.append(_against_the_original(label, fastest, eager, goal))
    return out


def speed_up(full: Result, eager: Result) -> tuple[float, str]:
    """(how many times faster than the original app's way, how it was measured): the median of
    the per-round ratios where the two alternated, else the ratio of frames per second."""
    paired = full.extra.get("vs_reference")
    if paired and paired.get("of") == eager.approach:
        low, high = paired["iqr"]
        return paired["median"], f"median of {paired['rounds']} alternating rounds, IQR {low:.2f}-{high:.2f}"
    return full.fps / eager.fps, f"{full.fps:.2f} vs {eager.fps:.2f} fps, measured apart"


def _against_the_original(label: str, full: Result, eager: Result, goal: float) -> dict:
    ratio, how = speed_up(full, eager)
    return row(f"{label} >= {goal}x the original app's way", f"{ratio:.2f}x ({how})", ratio >= goal)


def one_client_full_stack(results: list[Result]) -> list[Result]:
    return [
        r for r in results if r.approach.startswith("full stack") and r.size == SIZE and r.concurrency == 1
    ]


def bridge_work(results: list[Result]) -> list[dict]:
    # the rows timed in alternating rounds (bench.versus) carry no bridge split: the others do
    bridge = [r.extra["bridge_ms_p50"] for r in one_client_full_stack(results) if "bridge_ms_p50" in r.extra]
    if not bridge:
        return []
    worst = max(bridge)
    return [
        row(
            "bridge's own work (decode + colorize + encode) <= 5 ms per 640x480 frame",
            f"p50 {worst:.1f} ms (worst model)",
            worst <= 5,
        )
    ]


def fastest_preset(results: list[Result]) -> list[dict]:
    candidates = [
        r for r in one_client_full_stack(results) if MODELS[r.model].checkpoint == "depth_anything_v2_small"
    ]
    fastest = max(candidates, key=lambda r: r.fps, default=None)
    if fastest is None:
        return []
    return [
        row(
            "fastest Depth-Anything-V2 preset >= 8 frames/s end to end",
            f"{fastest.fps:.2f} fps ({fastest.model})",
            fastest.fps >= 8,
        )
    ]


def video_client(results: list[Result]) -> list[dict]:
    """The video client's pipelining pays where the client's own work (decode, colorize, write)
    is a visible share of a frame: the fastest preset; the reference model's row is as is."""
    video = [r for r in results if r.approach.startswith("direct client, video: batches")]
    fastest = max(video, key=lambda r: r.fps, default=None)
    alone = fastest and find(results, "direct client, video: one at a time", fastest.model)
    if not (fastest and alone):
        return []
    return [
        row(
            f"{fastest.model}: video client (its defaults) >= 1.05x one request at a time",
            f"{fastest.fps / alone.fps:.2f}x ({fastest.fps:.2f} vs {alone.fps:.2f} fps)",
            fastest.fps >= 1.05 * alone.fps,
        )
    ]


def many_clients(results: list[Result]) -> list[dict]:
    """8 clients: latest frame wins, so each waits at most for the 8 streams' turns."""
    out = []
    for r in results:
        if r.approach.startswith("full stack") and r.concurrency == 8:
            growth = r.extra.get("bridge_rss_growth_mb", float("nan"))
            single = find(results, "full stack", r.model)
            bound = 2 * r.concurrency * single.p50_ms if single else float("inf")
            out.append(
                row(
                    f"{r.model}: 8 clients, p99 bounded and bridge memory flat",
                    f"p99 {r.p99_ms:.0f} ms (bound {bound:.0f}), RSS +{growth:.1f} MB",
                    r.p99_ms <= bound and growth < 50,
                )
            )
    return out


GOALS = (stack_against_the_model, bridge_work, fastest_preset, video_client, many_clients)


def goals(results: list[Result], bf16_engine: bool | None = None) -> list[dict]:
    """Every goal's rows; ``bf16_engine``: whether the measuring CPU has one (default: this one)."""
    original = stack_against_the_original(results, bf16_engine)
    first, *rest = GOALS
    return [*first(results), *original, *(goal_row for goal in rest for goal_row in goal(results))]
