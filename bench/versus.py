"""The headline: the whole stack against the original app's way, in alternating rounds.

The original app ran PyTorch eager per frame inside its web server. Each reference model (and
its full-resolution reduced-precision twins, where the export kept one) goes through the whole
stack, one WebSocket client sending 640x480 JPEGs to a real bridge beside an embedded Triton;
each round runs the original app's way once and every served name once, in turn, on the same
frame (depthstream.rounds), so a burst of other load or the order of the blocks cannot move the
ratio. The figure is the median of the per-round ratios, with its interquartile range and the
number of rounds. ``make bench`` runs it with the other approaches (the rows feed its table and
goals); ``python -m bench.versus [REPOSITORY]`` runs it alone and writes bench/results/versus.json
and its table in docs/performance.md, which the README's headline reads.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from bench import approaches
from bench.frames import jpegs, stream
from bench.harness import ROOT, Bridge, load_network, run_alone, server_settings
from bench.measure import Result
from bench.report import publish
from depthstream.contract import CHECKPOINTS, MODELS
from depthstream.model_config import ONNX_FILE, VERSION
from serving.triton import EmbeddedTriton

BEGIN, END = "<!-- versus:begin -->", "<!-- versus:end -->"
SIZE = "640x480"
ROUNDS = 12
RESULTS = "versus.json"


def measure(
    repository: Path,
    served: dict[str, list[str]],
    frames: list,
    ws_url: str,
    pids: tuple[int, ...],
    rounds: int,
) -> list[Result]:
    """For each reference model (``served``: its served names), the original app's way and each
    name through the stack, alternating on the same frames: the original's row first, then each
    name's row with its ``vs_reference``."""
    from client.stream import StreamClient

    encoded = jpegs(frames)
    results: list[Result] = []
    for checkpoint, names in served.items():
        network = load_network(repository, checkpoint)
        original = approaches.original_way(MODELS[checkpoint], network)
        ways = [approaches.Way(approaches.ORIGINAL, checkpoint, original, frames)]
        with contextlib.ExitStack() as streams:
            for name in names:
                one = approaches.stack_way(streams.enter_context(StreamClient.connect(ws_url)), name)
                ways.append(approaches.Way(approaches.FULL_STACK, name, one, encoded, pids))
            results += approaches.side_by_side(ways, SIZE, rounds)
        del network, original
    return results


def report_of(where: str, results: list[Result]) -> dict:
    return {"machine": where, "size": SIZE, "results": [r.as_dict() for r in results]}


def markdown(report: dict) -> str:
    lines = [
        f"Measured by `make bench` (alone: `.venv/bin/python -m bench.versus`) on {report['machine']}: "
        f"one client, {report['size']} JPEG frames, the original app's way (PyTorch eager per frame "
        "in its web server, in-process) and each served name through the whole stack, run in turn "
        "on the same frame in every round, after a warm-up each.",
        "",
        "| served model | through the stack, ms (median) | the original app's way, ms | speed-up: median of per-round ratios | interquartile range | rounds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    originals = {r["model"]: r for r in report["results"] if r["approach"] == approaches.ORIGINAL}
    for row in report["results"]:
        paired = row["extra"].get("vs_reference")
        if row["approach"] != approaches.FULL_STACK or not paired:
            continue
        checkpoint = MODELS[row["model"]].fp32_twin or row["model"]
        original = originals.get(checkpoint, {"p50_ms": float("nan")})
        low, high = paired["iqr"]
        lines.append(
            f"| {row['model']} | {row['p50_ms']:.0f} | {original['p50_ms']:.0f} | "
            f"**{paired['median']:.2f}x** | {low:.2f}-{high:.2f} | {paired['rounds']} |"
        )
    return "\n".join(lines)


def write(output: Path, where: str, results: list[Result], readme: Path | None) -> dict:
    report = report_of(where, results)
    publish(output / RESULTS, report, markdown(report), readme, (BEGIN, END))
    return report


def load(output: Path) -> dict | None:
    path = output / RESULTS
    return json.loads(path.read_text()) if path.is_file() else None


def served_here(repository: Path) -> dict[str, list[str]]:
    """Each reference model exported here, with its full-resolution twins exported here."""
    exported = [n for n in MODELS if (repository / n / VERSION / ONNX_FILE).is_file()]
    return {
        checkpoint: [
            checkpoint,
            *(n for n in exported if n != checkpoint and MODELS[n].fp32_twin == checkpoint),
        ]
        for checkpoint in CHECKPOINTS
        if checkpoint in exported
    }


def run(repository: Path, output: Path, where: str, readme: Path | None, rounds: int = ROUNDS) -> dict:
    settings = server_settings(repository, ROOT / "build" / "versus")
    with EmbeddedTriton(settings, log_path=output / "tritonserver-versus.log") as triton:
        assert triton.process is not None  # started
        bridge = Bridge(settings.grpc_url, shm_key=settings.shm_key)
        try:
            pids = (triton.process.pid, bridge.process.pid)
            frames = stream(640, 480, rounds + 1)
            results = measure(repository, served_here(repository), frames, bridge.ws_url, pids, rounds)
        finally:
            bridge.stop()
    return write(output, where, results, readme)


if __name__ == "__main__":
    sys.exit(run_alone(run, ROOT / "docs" / "performance.md"))
