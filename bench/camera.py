"""The camera models' cost (``python -m bench.camera``; ``make bench`` runs it too).

- Depth Anything 3 Small beside Depth-Anything-V2-Small at the same network input (378x504 for a
  640x480 frame: DA3's long side 504, DA-V2's short side 378), both full-size architectures
  exported with their fused pre- and post-processing, timed by ONNX Runtime in alternating rounds
  on the same frame: the median of the per-round ratios, its spread and the number of rounds.
- DA3's worst case: its costliest accepted input (1440x1440: the most pixels the contract takes,
  square, so the network sees its ceiling 504x504) against a 640x480 frame, alternating.
- Depth Pro (``apple/DepthPro-hf``'s architecture, random weights): one 1536x1536 forward in
  PyTorch eager (its ONNX graph passes 2 GB; ONNX Runtime was not timed), the figure the bridge's
  deadline is compared with (a model slower than ``request_timeout_s`` is not offered).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.harness import ROOT, provenance
from bench.report import publish
from depthstream import runtime
from depthstream.contract import DEPTH_ANYTHING_3_SMALL, DEPTH_ANYTHING_V2_SMALL
from depthstream.rounds import alternate
from depthstream.rounds import ratio as per_round_ratio
from export.images import photograph, resized
from export.onnx_export import export

BEGIN, END = "<!-- camera:begin -->", "<!-- camera:end -->"
ROUNDS = 12
WORST_INPUT = (1440, 1440)  # 2,073,600 pixels: MAX_IMAGE_PIXELS, square


def _graph(name: str, directory: Path) -> Path:
    """A full-size random-weight graph of one contender, exported as the export does it."""
    from export import da3
    from export.architectures import random_weights_model
    from export.graph import fused_model, make_exportable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "da3":
            network, spec = da3.random_network(da3.package_config(da3.PRESET)), DEPTH_ANYTHING_3_SMALL
        else:  # DA-V2 at the lower bound 378: 378x504 for 640x480, DA3's network input
            spec = dataclasses.replace(
                DEPTH_ANYTHING_V2_SMALL, resize=dataclasses.replace(DEPTH_ANYTHING_V2_SMALL.resize, size=378)
            )
            network = random_weights_model(spec)
        path = directory / f"{name}.onnx"
        export(fused_model(make_exportable(network), spec), path, resized(photograph("astronaut"), 640, 480))
    return path


def alternating(sessions: list, frames: list[np.ndarray], rounds: int = ROUNDS) -> list[list[float]]:
    """Milliseconds of each (session, frame) contender in alternating rounds (depthstream.rounds)."""
    runs = [
        functools.partial(runtime.infer, session, frame[None])
        for session, frame in zip(sessions, frames, strict=True)
    ]
    return alternate(runs, rounds)


def ratio(numerator: list[float], denominator: list[float]) -> dict:
    """The median of the per-round ratios, its spread (interquartile) and the rounds."""
    return per_round_ratio(numerator, denominator).as_dict()


def depth_pro_seconds() -> float:
    """One 1536x1536 forward of Depth Pro's full-size architecture (ViT-L/16 encoders for
    patches, image and field of view), PyTorch eager, this machine's threads."""
    from transformers import DepthProConfig, DepthProForDepthEstimation

    vit_large = {
        "model_type": "dinov2",
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "patch_size": 16,
        "image_size": 384,
    }
    config = DepthProConfig(
        use_fov_model=True,
        image_model_config=vit_large,
        patch_model_config=vit_large,
        fov_model_config=vit_large,
    )
    model = DepthProForDepthEstimation(config).eval()
    pixels = torch.zeros(1, 3, 1536, 1536)
    with torch.no_grad():
        started = time.perf_counter()
        model(pixel_values=pixels)
        return time.perf_counter() - started


def markdown(where: str, report: dict) -> str:
    same, worst = report["da3_vs_da_v2"], report["da3_worst_case"]
    lines = [
        f"Measured on {where} (`python -m bench.camera`: full-size architectures, random weights; "
        f"ONNX Runtime, {same['rounds']} alternating rounds after a warm-up each; median of the "
        "per-round ratios, interquartile range in brackets; ms: the median round; Depth Pro: one "
        "forward of its architecture in PyTorch eager, not its served ONNX graph).",
        "",
        "| measurement | ms | time ratio |",
        "| --- | --- | --- |",
        f"| Depth-Anything-V2-Small @378 (378x504), 640x480 frame | {report['da_v2_ms']:.0f} | 1 |",
        f"| Depth-Anything-3-Small (378x504), 640x480 frame | {report['da3_ms']:.0f} | "
        f"{same['median']:.2f} [{same['iqr'][0]:.2f}-{same['iqr'][1]:.2f}] |",
        f"| Depth-Anything-3-Small, its worst case {WORST_INPUT[0]}x{WORST_INPUT[1]} (504x504) | "
        f"{report['da3_worst_ms']:.0f} | {worst['median']:.2f} [{worst['iqr'][0]:.2f}-{worst['iqr'][1]:.2f}] of its 640x480 |",
    ]
    if report.get("depth_pro_s") is not None:
        lines.append(
            f"| Depth Pro (1536x1536), PyTorch eager, one frame | {report['depth_pro_s'] * 1e3:.0f} | - |"
        )
    return "\n".join(lines)


def run(output: Path, where: str, readme: Path | None, depth_pro: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        paths = [_graph("da_v2", directory), _graph("da3", directory)]
        threads = os.cpu_count() or 1  # as the served models run
        sessions = [runtime.open_session(path, ["CPUExecutionProvider"], threads)[0] for path in paths]
        frame = resized(photograph("astronaut"), 640, 480)
        large = resized(photograph("astronaut"), *WORST_INPUT)
        da_v2, da3, da3_large = alternating([sessions[0], sessions[1], sessions[1]], [frame, frame, large])
    report = {
        "machine": where,
        "frame": "640x480",
        "da_v2_ms": round(statistics.median(da_v2), 1),
        "da3_ms": round(statistics.median(da3), 1),
        "da3_worst_ms": round(statistics.median(da3_large), 1),
        "da3_vs_da_v2": ratio(da3, da_v2),
        "da3_worst_case": ratio(da3_large, da3),
        "depth_pro_s": round(depth_pro_seconds(), 1) if depth_pro else None,
    }
    publish(output / "camera.json", report, markdown(where, report), readme, (BEGIN, END))
    return report


if __name__ == "__main__":
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    run(out, provenance(), ROOT / "docs" / "performance.md", depth_pro="--no-depth-pro" not in sys.argv)
