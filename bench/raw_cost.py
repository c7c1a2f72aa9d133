"""What raw depth costs on the stream, per 640x480 frame: bytes on the wire and the bridge's time
to encode them, for the encoding the bridge uses (``uint16le``) against the ones it could have
used (zlib over the same bytes, a 16-bit PNG), beside the default colorized JPEG.

``python -m bench.raw_cost`` (also part of ``make bench``) writes bench/results/raw_cost.json and
the table in docs/protocol.md. The depth is the reference model's on a real photograph (its random weights
in smoke mode: a noisier map, which compresses worse than a real one).
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from bench.frames import stream
from bench.harness import ROOT, run_alone
from bench.report import publish
from bridge import images
from depthstream import model_config, runtime
from depthstream.contract import DEFAULT_MODEL
from depthstream.model_config import CONFIG_FILE, ONNX_FILE, VERSION
from depthstream.render import raw_depth
from depthstream.render.colorize import RangeSmoother, colorize

BEGIN, END = "<!-- raw-depth:begin -->", "<!-- raw-depth:end -->"
REPEATS = 20


def reference_depth(repository: Path) -> np.ndarray:
    (frame,) = stream(640, 480, 1)
    onnx = repository / DEFAULT_MODEL / VERSION / ONNX_FILE
    session, _ = runtime.open_session(onnx, runtime.wanted_providers(), os.cpu_count() or 1)
    return runtime.infer(session, frame[None])[0]


def median_ms(work) -> tuple[float, bytes]:
    times, out = [], b""
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = work()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), out


def encodings(depth: np.ndarray) -> dict:
    def jpeg() -> bytes:
        return images.encode_jpeg(colorize(depth, "inferno", RangeSmoother()), 80)

    def uint16le() -> bytes:
        return raw_depth.encode(depth)[0]

    def zlib_1() -> bytes:
        return zlib.compress(raw_depth.encode(depth)[0], 1)

    def png16() -> bytes:
        ok, data = cv2.imencode(".png", raw_depth.quantize(depth)[0], [cv2.IMWRITE_PNG_COMPRESSION, 1])
        assert ok
        return data.tobytes()

    rows = {}
    for name, work in (
        ("colorized JPEG (the default)", jpeg),
        ("raw uint16le (sent)", uint16le),
        ("raw, zlib level 1", zlib_1),
        ("raw, 16-bit PNG", png16),
    ):
        ms, data = median_ms(work)
        rows[name] = {"bytes": len(data), "ms": round(ms, 2)}
    return rows


def markdown(where: str, rows: dict, random_weights: bool) -> str:
    content = (
        "the reference model's depth of a photograph, with random weights (smoke mode: a noisy map "
        "that compresses worse than a real one; the raw size does not depend on it)"
        if random_weights
        else "the reference model's depth of a photograph"
    )
    lines = [
        f"Raw depth per 640x480 frame, measured by `make bench` on {where}: bytes on the wire, and the "
        f"bridge's time to encode them (median of {REPEATS}; `raw` in `timings_ms`), on {content}.",
        "",
        "| encoding | bytes per frame | bridge ms per frame |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {row['bytes']:,} | {row['ms']:.2f} |" for name, row in rows.items()]
    return "\n".join(lines)


def run(repository: Path, output: Path, where: str, readme: Path | None) -> dict:
    rows = encodings(reference_depth(repository))
    config = model_config.parse((repository / DEFAULT_MODEL / CONFIG_FILE).read_text())
    random_weights = model_config.is_random_weights(config)
    report = {"machine": where, "frame": "640x480", "random_weights": random_weights, "encodings": rows}
    publish(output / "raw_cost.json", report, markdown(where, rows, random_weights), readme, (BEGIN, END))
    return report


if __name__ == "__main__":
    sys.exit(run_alone(run, ROOT / "docs" / "protocol.md"))
