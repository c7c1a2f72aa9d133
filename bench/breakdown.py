"""Where one frame's milliseconds go, stage by stage: 640x480 at the fastest model served.

Three ways to the same model, interleaved frame by frame in one run (a burst of other load falls
on all three alike): ONNX Runtime in-process with the served session settings (the model alone);
tritonclient over gRPC to the embedded Triton (what Triton and gRPC add); a WebSocket client
through a real bridge (what the bridge and the WebSocket add). Triton's own statistics, read
around each request, split its side into queue, compute input (the request's tensor into the
Python backend), compute infer (the backend's stub: ONNX Runtime and its copies) and compute
output; the bridge's ``timings_ms`` split its side. Every figure is the median over the frames.

``python -m bench.breakdown [REPOSITORY]`` writes bench/results/breakdown.json and prints the
table; ``make bench`` also writes it into the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import tritonclient.grpc as grpcclient

from bench.frames import jpegs, stream
from bench.harness import ROOT, Bridge, run_alone, server_settings
from bench.report import publish
from depthstream import runtime
from depthstream.contract import MODELS, OUTPUT_NAME
from depthstream.model_config import ONNX_FILE, VERSION
from depthstream.request import depth_request
from serving.triton import EmbeddedTriton

BEGIN, END = "<!-- breakdown:begin -->", "<!-- breakdown:end -->"
FRAMES = 30
WARM_UP = 3
SETTLE_S = 0.05  # between two paths: work one left behind (freeing, logging) must not fall on the next
ADDED_MS_GOAL = 5.0  # the stack's own cost per frame over ONNX Runtime direct (issue: stack overhead)


def fastest_model(repository: Path) -> str:
    """The fastest model exported: the smallest network input, INT8 before FP32."""
    exported = [n for n in MODELS if (repository / n / VERSION / ONNX_FILE).is_file()]
    return min(exported, key=lambda n: (MODELS[n].resize.size, MODELS[n].precision == "fp32"))


RUN_MS = "depthstream_model_run_ms_total"  # ONNX Runtime's own time inside the Python backend


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


class Paths:
    """The three ways to the model, each timed on the same frame."""

    def __init__(self, repository: Path, model: str, triton: EmbeddedTriton, bridge: Bridge) -> None:
        from websockets.sync.client import connect

        self.model = model
        self.server = triton
        onnx = repository / model / VERSION / ONNX_FILE
        self.session, _ = runtime.open_session(onnx, runtime.wanted_providers(), os.cpu_count() or 1)
        self.grpc = grpcclient.InferenceServerClient(triton.settings.grpc_url)
        self.exits = contextlib.ExitStack()
        self.ws = self.exits.enter_context(connect(bridge.ws_url, max_size=None, compression=None))
        self.ws.recv()  # hello
        self.ws.send(json.dumps({"type": "config", "model": model}))
        while json.loads(self.ws.recv())["type"] != "config":
            pass

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

    def full_stack(self, jpeg: bytes) -> dict[str, float]:
        before = self.stats()
        start = time.perf_counter()
        self.ws.send(jpeg)
        header = json.loads(self.ws.recv())
        while header["type"] != "depth":  # a notice or an error: this bench sends one at a time
            if header["type"] == "error":
                raise RuntimeError(f"the bridge refused a frame: {header['message']}")
            header = json.loads(self.ws.recv())
        self.ws.recv()  # the JPEG
        round_trip = (time.perf_counter() - start) * 1e3
        return {"round_trip": round_trip, **header["timings_ms"], **triton_split(before, self.stats())}

    def close(self) -> None:
        self.exits.close()
        self.grpc.close()


def client_encode_ms(rgb: np.ndarray) -> dict[str, float]:
    start = time.perf_counter()
    cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return {"encode": (time.perf_counter() - start) * 1e3}


def stages_of(stack: dict[str, float]) -> dict[str, float]:
    """One full-stack frame, stage by stage (ms): what each one adds. Every figure comes from
    that frame's own request (the bridge's timings, Triton's statistics around it)."""
    inside = stack["queue"] + stack["compute_input"] + stack["compute_infer"] + stack["compute_output"]
    known = sum(stack.get(k, 0.0) for k in ("decode", "infer", "colorize", "encode", "raw"))
    return {
        "WebSocket both ways, and the client's receive": stack["round_trip"] - stack["total"],
        "bridge: JPEG decode": stack["decode"],
        "bridge: waiting for its turn, sending, notices": stack["total"] - known,
        "gRPC both ways (921,600 B in, 1,228,800 B out) and tritonclient": stack["infer"] - stack["success"],
        "Triton: request handling outside the model": stack["success"] - inside,
        "Triton: queue": stack["queue"],
        "Triton: input into the Python backend (compute input)": stack["compute_input"],
        "Python backend: its stub, copies and calls around ONNX Runtime": stack["compute_infer"]
        - stack["onnxruntime"],
        "ONNX Runtime: the model, inside the backend": stack["onnxruntime"],
        "Triton: output out of the backend (compute output)": stack["compute_output"],
        "bridge: colorize": stack["colorize"],
        "bridge: JPEG encode": stack["encode"],
    }


def measure(paths: Paths, frames: list[np.ndarray]) -> dict:
    """Each path once per frame, the order rotated frame by frame (no path always runs right
    after another's leftovers), a pause between them; medians (per stage: of each frame's own)."""
    encoded = jpegs(frames)
    runs: dict[str, list[dict]] = {"direct": [], "triton": [], "full_stack": [], "client_encode": []}
    for i, (rgb, jpeg) in enumerate(zip(frames, encoded, strict=True)):
        ways = [
            ("direct", paths.direct, rgb),
            ("triton", paths.triton, rgb),
            ("full_stack", paths.full_stack, jpeg),
            ("client_encode", client_encode_ms, rgb),
        ]
        for path, way, data in ways[i % len(ways) :] + ways[: i % len(ways)]:
            time.sleep(SETTLE_S)
            measured = way(data)
            if i >= WARM_UP:
                runs[path].append(measured)
    runs["stages"] = [stages_of(stack) for stack in runs["full_stack"]]
    return {path: {k: float(np.median([r[k] for r in rows])) for k in rows[0]} for path, rows in runs.items()}


def stages(m: dict) -> list[tuple[str, float]]:
    """The full stack's frame, stage by stage, from the client's encode to its receive."""
    return [
        ("client: JPEG encode of the frame (OpenCV, quality 80)", m["client_encode"]["encode"]),
        *m["stages"].items(),
    ]


def summary(m: dict[str, dict[str, float]]) -> dict[str, float]:
    direct, grpc, stack = m["direct"]["infer"], m["triton"]["round_trip"], m["full_stack"]["round_trip"]
    return {
        "direct_ms": direct,
        "triton_grpc_ms": grpc,
        "full_stack_ms": stack,
        "triton_added_ms": grpc - direct,
        "stack_added_ms": stack - direct,
        "stack_share_of_direct": direct / stack,
    }


def markdown(
    where: str, model: str, rows: list[tuple[str, float]], totals: dict, random_weights: bool
) -> str:
    met = "met" if totals["stack_added_ms"] <= ADDED_MS_GOAL else "**missed**"
    lines = [
        f"One 640x480 frame at `{model}` (the fastest model exported), measured by `make bench` on {where}: "
        f"the three ways to the model interleaved frame by frame, medians of {FRAMES - WARM_UP} frames"
        + (" (random weights: the speed is the real architecture's)" if random_weights else "")
        + ".",
        "",
        "| stage | ms |",
        "| --- | --- |",
        *(f"| {name} | {ms:.1f} |" for name, ms in rows),
        "",
        f"Model alone {totals['direct_ms']:.1f} ms; Triton over gRPC {totals['triton_grpc_ms']:.1f} ms "
        f"(+{totals['triton_added_ms']:.1f}); the full stack {totals['full_stack_ms']:.1f} ms "
        f"(+{totals['stack_added_ms']:.1f}, {totals['stack_share_of_direct']:.0%} of the model's frame rate "
        f"one frame at a time). Goal, at most +{ADDED_MS_GOAL:.0f} ms: {met}.",
    ]
    return "\n".join(lines)


def run(repository: Path, output: Path, where: str, readme: Path | None) -> dict:
    from depthstream import model_config

    model = fastest_model(repository)
    frames = stream(640, 480, FRAMES)
    settings = server_settings(repository, ROOT / "build" / "breakdown")
    with EmbeddedTriton(settings, log_path=output / "tritonserver-breakdown.log") as triton:
        bridge = Bridge(settings.grpc_url)
        paths = Paths(repository, model, triton, bridge)
        try:
            medians = measure(paths, frames)
        finally:
            paths.close()
            bridge.stop()
    rows, totals = stages(medians), summary(medians)
    config = model_config.parse((repository / model / model_config.CONFIG_FILE).read_text())
    random_weights = model_config.is_random_weights(config)
    report = {"machine": where, "model": model, "medians_ms": medians, "stages_ms": dict(rows), **totals}
    table = markdown(where, model, rows, totals, random_weights)
    publish(output / "breakdown.json", report, table, readme, (BEGIN, END))
    return report


if __name__ == "__main__":
    sys.exit(run_alone(run, None))
