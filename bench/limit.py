"""The distance to the machine's limit: each engine's achieved GFLOP/s against a measured ceiling.

A model's work a frame is counted once at export (export.flops: the matrix work of one 640x480
frame through the whole graph, kept in its manifest). The ceiling is the machine's own: ONNX
Runtime's best time for one large matrix multiply, FP32 (MatMul) and INT8 (MatMulInteger, u8 x s8,
what the INT8 twins run), at the thread count the served models use. An engine's share of the
ceiling says how much room is left: a share near 1 leaves only fewer FLOPs (a smaller input, a
lighter model) or cheaper ones (INT8, BF16) as levers. ``make bench`` writes the table from its
own rows; ``python -m bench.limit [REPOSITORY]`` times each exported model on its own and writes
bench/results/limit.json and the table in docs/performance.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness import ROOT, run_alone
from bench.report import publish
from depthstream.contract import MODELS, Precision
from export.repository import read_manifest

BEGIN, END = "<!-- limit:begin -->", "<!-- limit:end -->"
SIDE = 2048  # a square multiply this large keeps every core's vector units busy
TRIES = 5  # the best of these: other load only ever slows a run


@dataclass(frozen=True)
class Ceiling:
    fp32_gflops: float  # GFLOP/s
    int8_gops: float  # GOP/s (two operations a multiply-add, as the FLOP counter counts)
    threads: int

    def for_precision(self, precision: str) -> float:
        return self.int8_gops if precision == Precision.INT8 else self.fp32_gflops


def _matmul_session(integer: bool, threads: int):
    """A one-node ONNX graph: A[SIDE, SIDE] x B (a constant, as a model's weights are)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from depthstream import runtime

    rng = np.random.default_rng(0)
    if integer:
        weights = numpy_helper.from_array(rng.integers(-127, 128, (SIDE, SIDE), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        weights = numpy_helper.from_array(rng.standard_normal((SIDE, SIDE), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "ceiling",
        [helper.make_tensor_value_info("A", a_type, [SIDE, SIDE])],
        [helper.make_tensor_value_info("Y", y_type, [SIDE, SIDE])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = runtime.session_options(threads)  # as the served models' sessions
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _best_rate(integer: bool, threads: int) -> float:
    from depthstream import runtime

    session = _matmul_session(integer, threads)
    rng = np.random.default_rng(1)
    a = (
        rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
        if integer
        else rng.random((SIDE, SIDE), np.float32)
    )
    feeds = {"A": a}
    session.run(None, feeds, runtime.run_options())  # warm-up: packing, thread pool; as served
    best = float("inf")
    for _ in range(TRIES):
        started = time.perf_counter()
        session.run(None, feeds, runtime.run_options())
        best = min(best, time.perf_counter() - started)
    return 2 * SIDE**3 / best / 1e9


def ceiling(threads: int | None = None) -> Ceiling:
    threads = threads or os.cpu_count() or 1
    return Ceiling(round(_best_rate(False, threads), 1), round(_best_rate(True, threads), 1), threads)


def gflops_of(repository: Path, model: str) -> float | None:
    manifest = read_manifest(repository / model)
    return manifest.gflops if manifest is not None and manifest.gflops > 0 else None


def rows(repository: Path, timed: list[tuple[str, str, float]], top: Ceiling) -> list[dict]:
    """One row per (model, engine, ms a frame): its work, achieved rate and share of the ceiling
    for its precision; a model exported before the count was kept says so."""
    out = []
    for model, engine, ms in timed:
        gflops = gflops_of(repository, model)
        precision = MODELS[model].precision if model in MODELS else Precision.FP32
        limit = top.for_precision(precision)
        achieved = None if gflops is None else gflops / (ms / 1e3)
        out.append(
            {
                "model": model,
                "engine": engine,
                "precision": str(precision),
                "gflops_per_frame": gflops,
                "ms_per_frame": round(ms, 1),
                "achieved_gflops_per_s": None if achieved is None else round(achieved, 1),
                "ceiling_gflops_per_s": limit,
                "share": None if achieved is None else round(achieved / limit, 3),
            }
        )
    return out


def markdown(where: str, top: Ceiling, table: list[dict]) -> str:
    lines = [
        f"Measured by `make bench` (alone: `.venv/bin/python -m bench.limit`) on {where}. Ceiling: "
        f"ONNX Runtime's best {SIDE}x{SIDE} matrix multiply at {top.threads} threads, "
        f"**{top.fp32_gflops:.0f} GFLOP/s FP32** (MatMul) and **{top.int8_gops:.0f} GOP/s INT8** "
        "(MatMulInteger, u8 x s8); a model's work is one 640x480 frame's matrix work through its whole "
        "graph (torch's FLOP counter at export, two a multiply-add).",
        "",
        "| model | engine | work a frame, GFLOP | ms a frame (median) | achieved, GFLOP/s | share of the ceiling |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in table:
        if row["gflops_per_frame"] is None:
            lines.append(
                f"| {row['model']} | {row['engine']} | not counted (exported before the count: "
                f"`make export EXPORT_ARGS=--force`) | {row['ms_per_frame']:.0f} | - | - |"
            )
            continue
        lines.append(
            f"| {row['model']} | {row['engine']} | {row['gflops_per_frame']:.1f} | {row['ms_per_frame']:.0f} "
            f"| {row['achieved_gflops_per_s']:.0f} | {row['share']:.0%} of {row['precision'].upper()}'s "
            f"{row['ceiling_gflops_per_s']:.0f} |"
        )
    return "\n".join(lines)


def write(
    output: Path, where: str, repository: Path, timed, page: Path | None, top: Ceiling | None = None
) -> dict:
    top = top or ceiling()
    table = rows(repository, timed, top)
    report = {"machine": where, "ceiling": top.__dict__, "rows": table}
    publish(output / "limit.json", report, markdown(where, top, table), page, (BEGIN, END))
    return report


def from_bench(results) -> list[tuple[str, str, float]]:
    """(model, engine, ms) from make bench's in-process rows at 640x480."""
    return [
        (r.model, r.approach.removesuffix(" direct"), r.p50_ms)
        for r in results
        if r.approach.endswith(" direct") and r.size == "640x480" and r.concurrency == 1
    ]


def time_alone(repository: Path, frames: int = 5) -> list[tuple[str, str, float]]:
    """Each exported model on the runtime that serves it, in-process, the median of ``frames``."""
    from bench import approaches
    from bench.frames import stream
    from depthstream import engine_choice, runtime
    from depthstream.model_config import ONNX_FILE, VERSION, exported_models, register_repository

    register_repository(repository)  # added models too
    pictures = stream(640, 480, frames)
    timed = []
    for model in exported_models(repository):
        if model not in MODELS:
            continue
        runner = engine_choice.for_model(repository / model, runtime.wanted_providers()).runner
        one = approaches.runtime_way(repository / model / VERSION / ONNX_FILE, runner)
        one(pictures[0])
        ms = []
        for picture in pictures:
            started = time.perf_counter()
            one(picture)
            ms.append((time.perf_counter() - started) * 1e3)
        timed.append((model, approaches.runtime_label(runner).removesuffix(" direct"), statistics.median(ms)))
    return timed


def run(repository: Path, output: Path, where: str, page: Path | None) -> dict:
    top = ceiling()
    return write(output, where, repository, time_alone(repository), page, top)


if __name__ == "__main__":
    sys.exit(run_alone(run, ROOT / "docs" / "performance.md"))
