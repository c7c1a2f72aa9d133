"""Where one frame's milliseconds go, stage by stage: 640x480 at the fastest model served.

Four ways to the same model, interleaved frame by frame in one run (a burst of other load falls
on all of them alike): the serving runtime in-process with the served settings (the model alone); tritonclient over gRPC to the embedded Triton (what Triton and gRPC add); and a WebSocket
client through two real bridges, one passing the frame's tensors through system shared memory (as
``make demo`` runs it) and one over plain gRPC (what the shared memory buys). Triton's own
statistics, read around each request, split its side into queue, compute input (the request's
tensor into the Python backend), compute infer (the backend's stub: ONNX Runtime and its copies)
and compute output; the bridge's ``timings_ms`` split its side. Every figure is the median over
the frames. ``python -m bench.breakdown [REPOSITORY]`` writes bench/results/breakdown.json and
prints the table; ``make bench`` also writes it into docs/performance.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tritonclient.grpc as grpcclient

from bench.frames import jpegs, stream
from bench.harness import ROOT, Bridge, run_alone, server_settings
from bench.report import publish
from depthstream import engine_choice, runtime
from depthstream.contract import MODELS, OUTPUT_NAME
from depthstream.model_config import ONNX_FILE, VERSION
from depthstream.request import depth_request
from serving.triton import EmbeddedTriton

BEGIN, END = "<!-- breakdown:begin -->", "<!-- breakdown:end -->"
FRAMES = 30
WARM_UP = 3
SETTLE_S = 0.05  # between two paths: work one left behind (freeing, logging) must not fall on the next
# The stack's goals at the fastest model: its own time a frame over the runtime alone, and its
# paced share of the runtime alone's frames/s (why these replace "<= 5 ms": docs/performance.md).
ADDED_MS_GOAL = 8.0
PACED_SHARE_GOAL = 0.85


def fastest_model(repository: Path) -> str:
    """The fastest model exported: the smallest network input, INT8 before FP32."""
    exported = [n for n in MODELS if (repository / n / VERSION / ONNX_FILE).is_file()]
    return min(exported, key=lambda n: (MODELS[n].resize.size, MODELS[n].precision == "fp32"))


RUN_MS = "depthstream_model_run_ms_total"  # the runtime's own time inside the Python backend


def triton_split(before, after) -> dict[str, float]:
    """One request's time inside Triton, by stage, from two snapshots (Triton's statistics, the
    backend's ONNX Runtime time) taken around it (ms)."""
    (stats_before, run_before), (stats_after, run_after) = before, after
    split = {"onnxruntime": run_after - run_before}
    for stage in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        done = getattr(stats_after, stage).count - getattr(stats_before, stage).count
        spent = getattr(stats_after, stage).ns - getattr(stats_before, stage).ns
        split[stage] = spent / max(done, 1) / 1e6
    return split


TRANSPORTS = {"shared_memory": "shared memory", "plain_grpc": "plain gRPC"}  # the bridge's two ways


class Paths:
    """The ways to the model, each timed on the same frame."""

    def __init__(
        self, repository: Path, model: str, triton: EmbeddedTriton, bridges: dict[str, Bridge]
    ) -> None:
        from client.stream import StreamClient

        self.model = model
        self.server = triton
        onnx = repository / model / VERSION / ONNX_FILE
        providers = runtime.wanted_providers()
        self.runner = engine_choice.for_model(repository / model, providers).runner  # as served
        self.session, _ = runtime.open_session(onnx, providers, os.cpu_count() or 1, runner=self.runner)
        self.grpc = grpcclient.InferenceServerClient(triton.settings.grpc_url)
        self.exits = contextlib.ExitStack()
        self.streams = {}
        for transport, bridge in bridges.items():
            stream = self.exits.enter_context(StreamClient.connect(bridge.ws_url))
            stream.configure(model=model)
            self.streams[transport] = stream

    def stats(self):
        stats = self.grpc.get_inference_statistics(self.model).model_stats[0].inference_stats
        return stats, self.server.metric(RUN_MS, model=self.model)

    def direct(self, rgb: np.ndarray) -> dict[str, float]:
        start = time.perf_counter()
        runtime.infer(self.session, rgb[None])
        return {"infer": (time.perf_counter() - start) * 1e3}

    def triton(self, rgb: np.ndarray) -> dict[str, float]:
        before = self.stats()
        start = time.perf_counter()
        self.grpc.infer(self.model, **depth_request(rgb[None])).as_numpy(OUTPUT_NAME)
        round_trip = (time.perf_counter() - start) * 1e3
        return {"round_trip": round_trip, **triton_split(before, self.stats())}

    def full_stack(self, transport: str, jpeg: bytes) -> dict[str, float]:
        stream = self.streams[transport]
        before = self.stats()
        start = time.perf_counter()
        stream.send(jpeg)
        answer = answer_of(stream.next_outcome())
        round_trip = (time.perf_counter() - start) * 1e3
        return {"round_trip": round_trip, **answer.header["timings_ms"], **triton_split(before, self.stats())}

    def bytes_per_frame(self, output: str, jpeg: bytes) -> int:
        """What the bridge sends back for one frame asking for ``output``: its header and binaries."""
        stream = self.streams["shared_memory"]
        stream.configure(output=output)
        stream.send(jpeg)
        answer = answer_of(stream.next_outcome())
        stream.configure(output="color")
        return len(json.dumps(answer.header).encode()) + sum(len(b) for b in answer.binaries)

    def close(self) -> None:
        self.exits.close()
        self.grpc.close()


PACED_IN_FLIGHT = 2  # the page's MAX_IN_FLIGHT (web/capture.js): the bridge always has a next frame
PACED_BLOCK_S = 4.0
PACED_BLOCKS = 2  # per path, alternating: a slow spell falls on both


def answer_of(outcome):
    """This bench sends one frame at a time and expects its depth: anything else ends it."""
    from client.stream import Answer

    if not isinstance(outcome, Answer):
        raise RuntimeError(f"the bridge did not answer a frame: {outcome}")
    return outcome


def paced_stream(stream, jpegs: list[bytes], seconds: float) -> tuple[int, float]:
    """(answers, seconds between the first and the last) for a client paced as the page is: a
    new frame as soon as fewer than PACED_IN_FLIGHT are unsettled, for ``seconds``. Timed from
    the first answer, not the first send: a stream's rate, without the one latency it starts with."""
    from client.stream import Answer

    books = stream.accounts  # what each message settles: an answer, a frame's error, a drop
    answers: list[float] = []
    deadline = time.perf_counter() + seconds
    while True:
        while books.pending < PACED_IN_FLIGHT and time.perf_counter() < deadline:
            stream.send(jpegs[books.sent % len(jpegs)])
        if books.pending == 0:
            return len(answers) - 1, answers[-1] - answers[0]
        if isinstance(stream.next_outcome(), Answer):
            answers.append(time.perf_counter())


def paced_rates(paths: Paths, frames: list[np.ndarray]) -> dict[str, float]:
    """Frames per second, the model alone back to back in-process beside the full stack (shared
    memory) with the page's pacing, in alternating blocks."""
    encoded = jpegs(frames)
    counted = {"direct": [0, 0.0], "full_stack_paced": [0, 0.0]}
    for _ in range(PACED_BLOCKS):
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < PACED_BLOCK_S:
            runtime.infer(paths.session, frames[done % len(frames)][None])
            done += 1
        counted["direct"][0] += done
        counted["direct"][1] += time.perf_counter() - start
        time.sleep(SETTLE_S)
        answers, seconds = paced_stream(paths.streams["shared_memory"], encoded, PACED_BLOCK_S)
        counted["full_stack_paced"][0] += answers
        counted["full_stack_paced"][1] += seconds
        time.sleep(SETTLE_S)
    return {path: n / seconds for path, (n, seconds) in counted.items()}


# what each view asks for: the 2D view a colorized JPEG; the 3D view its points; before the
# points output, the 3D view asked for both the JPEG and every pixel's raw depth
VIEW_OUTPUTS = {"2D view": "color", "3D view": "points", "3D view before (JPEG and full raw depth)": "both"}
BYTES_3D_GOAL = 200_000


def bytes_per_view(paths: Paths, frame: np.ndarray) -> dict[str, int]:
    jpeg = jpegs([frame])[0]
    return {view: paths.bytes_per_frame(output, jpeg) for view, output in VIEW_OUTPUTS.items()}


def check_transports(bridges: dict[str, Bridge]) -> None:
    """Each bridge passes frames the way its column says (its regions, on its /metrics), or the
    comparison would be of one transport with itself."""
    for transport, bridge in bridges.items():
        regions = bridge.metric("depthstream_shared_memory_regions")
        if (regions > 0) != (transport == "shared_memory"):
            raise RuntimeError(
                f"the {TRANSPORTS[transport]} bridge holds {regions:.0f} shared-memory regions"
            )


def client_encode_ms(rgb: np.ndarray) -> dict[str, float]:
    start = time.perf_counter()
    cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return {"encode": (time.perf_counter() - start) * 1e3}


GRPC_STAGE = "gRPC both ways and tritonclient (plain: 921,600 B in, 1,228,800 B out; shared memory: names, and the bridge's copies)"


def stages_of(stack: dict[str, float]) -> dict[str, float]:
    """One full-stack frame, stage by stage (ms): what each one adds. Every figure comes from
    that frame's own request (the bridge's timings, Triton's statistics around it)."""
    inside = stack["queue"] + stack["compute_input"] + stack["compute_infer"] + stack["compute_output"]
    known = sum(stack.get(k, 0.0) for k in ("decode", "infer", "colorize", "encode", "raw"))
    return {
        "WebSocket both ways, and the client's receive": stack["round_trip"] - stack["total"],
        "bridge: JPEG decode": stack["decode"],
        "bridge: waiting for its turn, sending, notices": stack["total"] - known,
        GRPC_STAGE: stack["infer"] - stack["success"],
        "Triton: request handling outside the model": stack["success"] - inside,
        "Triton: queue": stack["queue"],
        "Triton: input into the Python backend (compute input)": stack["compute_input"],
        "Python backend: its stub, copies and calls around ONNX Runtime": stack["compute_infer"]
        - stack["onnxruntime"],
        "the runtime (ONNX Runtime or OpenVINO): the model, inside the backend": stack["onnxruntime"],
        "Triton: output out of the backend (compute output)": stack["compute_output"],
        "bridge: colorize": stack["colorize"],
        "bridge: JPEG encode": stack["encode"],
    }


def measure(paths: Paths, frames: list[np.ndarray]) -> dict:
    """Each path once per frame, the order rotated frame by frame (no path always runs right
    after another's leftovers), a pause between them; medians (per stage: of each frame's own)."""
    encoded = jpegs(frames)
    stacks = [(f"full_stack_{t}", functools.partial(paths.full_stack, t)) for t in paths.streams]
    runs: dict[str, list[dict]] = {}
    for i, (rgb, jpeg) in enumerate(zip(frames, encoded, strict=True)):
        ways: list[tuple[str, Callable[[Any], dict[str, float]], Any]] = [
            ("direct", paths.direct, rgb),
            ("triton", paths.triton, rgb),
            *((path, way, jpeg) for path, way in stacks),
            ("client_encode", client_encode_ms, rgb),
        ]
        for path, way, data in ways[i % len(ways) :] + ways[: i % len(ways)]:
            time.sleep(SETTLE_S)
            measured = way(data)
            if i >= WARM_UP:
                runs.setdefault(path, []).append(measured)
    for path, _ in stacks:
        transport = path.removeprefix("full_stack_")
        runs[f"stages_{transport}"] = [stages_of(stack) for stack in runs[path]]
        # the stack's own time: the round trip less that very frame's model run (a run of the
        # model varies by more than the stack costs, so frames are not compared with other frames)
        runs[f"own_{transport}"] = [{"ms": s["round_trip"] - s["onnxruntime"]} for s in runs[path]]
    return {path: {k: float(np.median([r[k] for r in rows])) for k in rows[0]} for path, rows in runs.items()}


def stages(m: dict) -> list[tuple[str, dict[str, float]]]:
    """The full stack's frame, stage by stage, from the client's encode to its receive: for
    each stage, its median through each of the bridge's transports."""
    encode = m["client_encode"]["encode"]
    rows = [("client: JPEG encode of the frame (OpenCV, quality 80)", dict.fromkeys(TRANSPORTS, encode))]
    for stage in m["stages_shared_memory"]:
        rows.append((stage, {t: m[f"stages_{t}"][stage] for t in TRANSPORTS}))
    return rows


def summary(m: dict[str, dict[str, float]]) -> dict[str, float]:
    direct, grpc = m["direct"]["infer"], m["triton"]["round_trip"]
    stack, plain = m["full_stack_shared_memory"]["round_trip"], m["full_stack_plain_grpc"]["round_trip"]
    return {
        "direct_ms": direct,
        "triton_grpc_ms": grpc,
        "full_stack_ms": stack,
        "full_stack_plain_grpc_ms": plain,
        "triton_added_ms": grpc - direct,
        "stack_added_ms": stack - direct,
        "stack_plain_grpc_added_ms": plain - direct,
        "stack_share_of_direct": direct / stack,
        # with the client's encode: a frame costs it before the round trip starts
        "own_ms": m["own_shared_memory"]["ms"] + m["client_encode"]["encode"],
        "own_plain_grpc_ms": m["own_plain_grpc"]["ms"] + m["client_encode"]["encode"],
        "shared_memory_saves_ms": m["own_plain_grpc"]["ms"] - m["own_shared_memory"]["ms"],
    }


def paced_summary(rates: dict[str, float]) -> dict[str, float]:
    return {
        "direct_fps": rates["direct"],
        "full_stack_paced_fps": rates["full_stack_paced"],
        "paced_share_of_direct": rates["full_stack_paced"] / rates["direct"],
    }


def markdown(
    where: str, model: str, rows: list[tuple[str, dict[str, float]]], totals: dict, random_weights: bool
) -> str:
    met = "met" if totals["own_ms"] <= ADDED_MS_GOAL else "**missed**"
    paced_met = "met" if totals["paced_share_of_direct"] >= PACED_SHARE_GOAL else "**missed**"
    lines = [
        f"One 640x480 frame at `{model}` (the fastest model exported), measured by `make bench` on {where}: "
        f"the four ways to the model interleaved frame by frame, medians of {FRAMES - WARM_UP} frames"
        + (" (random weights: the speed is the real architecture's)" if random_weights else "")
        + ". The bridge's two transports to a Triton on its host, side by side: shared memory "
        "(the default) and plain gRPC (where Triton is on another host).",
        "",
        f"| stage | ms, {TRANSPORTS['shared_memory']} | ms, {TRANSPORTS['plain_grpc']} |",
        "| --- | --- | --- |",
        *(f"| {name} | {ms['shared_memory']:.1f} | {ms['plain_grpc']:.1f} |" for name, ms in rows),
        "",
        f"The stack's own time per frame (the client's encode, and the round trip less that frame's "
        f"ONNX Runtime run inside Triton): **{totals['own_ms']:.1f} ms through shared memory, {totals['own_plain_grpc_ms']:.1f} ms "
        f"over plain gRPC**; shared memory saves {totals['shared_memory_saves_ms']:.1f} ms a frame. "
        f"Goal, at most +{ADDED_MS_GOAL:.0f} ms: {met}. Round trips beside the model alone in-process "
        f"({totals['direct_ms']:.1f} ms): Triton over gRPC {totals['triton_grpc_ms']:.1f} ms, the full "
        f"stack {totals['full_stack_ms']:.1f} ms through shared memory and "
        f"{totals['full_stack_plain_grpc_ms']:.1f} ms over plain gRPC (a model run varies by more than "
        f"the stack costs, so these differences are noisier than the stages).",
        "",
        f"Paced as the page paces (a new frame as soon as fewer than {PACED_IN_FLIGHT} are unanswered), "
        f"the full stack delivered **{totals['full_stack_paced_fps']:.2f} frames/s**, "
        f"{totals['paced_share_of_direct']:.0%} of the model alone back to back in-process "
        f"({totals['direct_fps']:.2f} frames/s; alternating {PACED_BLOCKS} x {PACED_BLOCK_S:.0f} s blocks each). "
        f"Goal, at least {PACED_SHARE_GOAL:.0%}: {paced_met}.",
        "",
        "Bytes the bridge sends back per 640x480 frame (header and binaries): "
        + "; ".join(f"{view} {size:,} B" for view, size in totals["bytes_per_frame"].items())
        + f". Goal for the 3D view, at most {BYTES_3D_GOAL // 1000} KB: "
        + ("met." if totals["bytes_per_frame"]["3D view"] <= BYTES_3D_GOAL else "**missed**."),
    ]
    return "\n".join(lines)


def run(repository: Path, output: Path, where: str, readme: Path | None) -> dict:
    from depthstream import model_config

    model = fastest_model(repository)
    frames = stream(640, 480, FRAMES)
    settings = server_settings(repository, ROOT / "build" / "breakdown")
    with EmbeddedTriton(settings, log_path=output / "tritonserver-breakdown.log") as triton:
        bridges = {
            "shared_memory": Bridge(settings.grpc_url, shm_key=settings.shm_key),
            "plain_grpc": Bridge(settings.grpc_url, "--triton-shm", "off"),
        }
        paths = Paths(repository, model, triton, bridges)
        try:
            medians = measure(paths, frames)
            check_transports(bridges)
            rates = paced_rates(paths, frames)
            sizes = bytes_per_view(paths, frames[0])
        finally:
            paths.close()
            for bridge in bridges.values():
                bridge.stop()
    rows = stages(medians)
    totals: dict[str, Any] = {**summary(medians), **paced_summary(rates)}
    totals["bytes_per_frame"] = sizes
    config = model_config.parse((repository / model / model_config.CONFIG_FILE).read_text())
    random_weights = model_config.is_random_weights(config)
    report = {"machine": where, "model": model, "medians_ms": medians, "stages_ms": dict(rows), **totals}
    table = markdown(where, model, rows, totals, random_weights)
    publish(output / "breakdown.json", report, table, readme, (BEGIN, END))
    return report


if __name__ == "__main__":
    sys.exit(run_alone(run, None))
