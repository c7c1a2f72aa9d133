"""Flicker: how much a still scene's depth moves from frame to frame, steady depth on and off.

1. **The mechanism, on sequences built from photographs** (no model): a depth-like field made
   from each photograph (its blurred luminance over a floor-to-ceiling slope), answered per frame
   as a relative model answers it: a random scale (0.8-1.25) and shift (up to 10% of the range),
   noise, a hand in front of the lens for a few frames, then a cut to another photograph. With
   the alignment off, today's output: the raw depth, colours in a smoothed range. Reported: the
   mean frame-to-frame change on static pixels (the displayed value, 0-1, and the raw depth, of
   the clean field's 2nd-98th percentile range), the frames until the output after the cut
   correlates >= 0.99 with that frame's own depth, and the alignment's milliseconds a 640x480 frame.
2. **Through the whole stack**: one photograph sent again and again over the WebSocket with
   exposure jitter (+-15%) and sensor noise, ``steady`` on and off; the frame-to-frame change of
   the raw depth and of the colours. With random weights the depth is meaningless: what is
   measured is the mechanism.

``python -m bench.flicker [REPOSITORY]`` (also part of ``make bench``) writes
bench/results/flicker.json and its table.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.frames import PICTURES, jpegs
from bench.harness import ROOT, Bridge, run_alone, server_settings
from bench.report import publish
from depthstream.render import raw_depth
from depthstream.render.colorize import RangeSmoother, to_uint8
from depthstream.render.steady import DepthAligner
from export.images import photograph, resized

BEGIN, END = "<!-- flicker:begin -->", "<!-- flicker:end -->"
WIDTH, HEIGHT = 640, 480
SCENE_FRAMES, AFTER_CUT = 25, 15  # frames of the first scene, of the second
HAND = range(8, 16)  # the frames a hand covers part of the lens
NOISE = 0.01  # of the range
SETTLE_CORRELATION = 0.99
GOALS = {"less_change": 5.0, "settle_frames": 3, "align_ms": 1.0}
STACK_FRAMES = 20


def depth_field(picture: str) -> np.ndarray:
    """A depth-like field with a photograph's structure: near at the bottom, its regions and edges."""
    gray = cv2.cvtColor(resized(photograph(picture), WIDTH, HEIGHT), cv2.COLOR_RGB2GRAY).astype(np.float32)
    blurred = cv2.GaussianBlur(gray / 255.0, (0, 0), 3)
    slope = np.linspace(0.5, 1.5, HEIGHT, dtype=np.float32)[:, None]
    return (1.0 + slope + blurred).astype(np.float32)


def p2_p98_span(depth: np.ndarray) -> float:
    low, high = np.percentile(depth, [2, 98])
    return float(high - low)


@dataclass
class Sequence:
    frames: list[np.ndarray]  # what the model answers, frame by frame
    clean: list[np.ndarray]  # the scene each frame shows
    hand: np.ndarray  # the pixels the hand covers when it is there
    cut: int  # the first frame of the second scene


def sequence(seed: int = 0) -> Sequence:
    rng = np.random.default_rng(seed)
    first, second = depth_field(PICTURES[0]), depth_field(PICTURES[1])
    hand = np.zeros((HEIGHT, WIDTH), bool)
    hand[HEIGHT // 3 :, : WIDTH // 3] = True  # a fifth of the frame, from the bottom left
    frames, clean = [], []
    for k in range(SCENE_FRAMES + AFTER_CUT):
        scene = first if k < SCENE_FRAMES else second
        span = p2_p98_span(scene)
        frame = rng.uniform(0.8, 1.25) * scene + rng.uniform(-0.1, 0.1) * span
        frame += rng.normal(0, NOISE * span, scene.shape)
        if k in HAND:
            frame[hand] = frame.max() * 1.1  # near: brighter than anything in the scene
        frames.append(frame.astype(np.float32))
        clean.append(scene)
    return Sequence(frames, clean, hand, SCENE_FRAMES)


def displayed(depth: np.ndarray, smoother: RangeSmoother) -> np.ndarray:
    """What the colormap receives, 0 to 1: the depth in the stream's smoothed range (as drawn)."""
    low, high = smoother.update((float(np.percentile(depth, 2)), float(np.percentile(depth, 98))))
    return to_uint8(depth, low, high).astype(np.float32) / 255.0


def play(seq: Sequence, steady: bool) -> dict:
    """The sequence through today's drawing, with or without the alignment."""
    aligner, smoother = DepthAligner(), RangeSmoother()
    shown, depths, align_ms = [], [], []
    for frame in seq.frames:
        depth = frame
        if steady:
            # timed: what the bridge does (it applies the fit to the ranges it draws with, not to
            # each pixel); the aligned pixels are computed after, for the raw-depth figure
            start = time.perf_counter()
            alignment = aligner.fit(frame)
            align_ms.append((time.perf_counter() - start) * 1e3)
            depth = alignment.scale * frame + alignment.shift
            if alignment.restarted:
                smoother.reset()  # as the bridge does (bridge/rendering.py)
        shown.append(displayed(depth, smoother))
        depths.append(depth)
    static = ~seq.hand
    pairs = [(k - 1, k) for k in range(1, len(seq.frames)) if k != seq.cut]
    span = p2_p98_span(seq.clean[0])
    shown_change = [float(np.abs(shown[b] - shown[a])[static].mean()) for a, b in pairs]
    raw_change = [float(np.abs(depths[b] - depths[a])[static].mean()) / span for a, b in pairs]
    settle = None
    for k in range(seq.cut, len(seq.frames)):
        correlation = np.corrcoef(shown[k].ravel(), seq.frames[k].ravel())[0, 1]
        if correlation >= SETTLE_CORRELATION:
            settle = k - seq.cut
            break
    return {
        "shown_change": statistics.fmean(shown_change),
        "raw_change": statistics.fmean(raw_change),
        "settle_frames": settle,
        "align_ms_median": statistics.median(align_ms) if align_ms else None,
        "align_ms_max": max(align_ms) if align_ms else None,
    }


def mechanism() -> dict:
    return {"off": play(sequence(), steady=False), "on": play(sequence(), steady=True)}


def jittered(picture: str, count: int, seed: int = 0) -> list[bytes]:
    """One photograph, again and again: exposure +-15% and sensor noise, as a still camera sends it."""
    rng = np.random.default_rng(seed)
    base = resized(photograph(picture), WIDTH, HEIGHT).astype(np.float32)
    frames = []
    for _ in range(count):
        frame = base * rng.uniform(0.85, 1.15) + rng.normal(0, 3.0, base.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return jpegs(frames)


def through_stack(ws_url: str, model: str, steady: bool, frames: list[bytes]) -> dict:
    from client.stream import Answer, StreamClient

    with StreamClient.connect(ws_url) as stream:
        stream.configure(model=model, output="both", steady=steady)
        raws, colours, align_ms = [], [], []
        for jpeg in frames:
            stream.send(jpeg)
            outcome = stream.next_outcome()
            if not isinstance(outcome, Answer):
                raise RuntimeError(f"the bridge did not answer a frame: {outcome}")
            assert outcome.raw is not None and outcome.jpeg is not None
            raws.append(raw_depth.decode(outcome.raw, outcome.header["raw"]))
            colours.append(
                cv2.imdecode(np.frombuffer(outcome.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
            )
            if "align" in outcome.header["timings_ms"]:
                align_ms.append(outcome.header["timings_ms"]["align"])
    span = p2_p98_span(raws[0])
    return {
        "raw_change": statistics.fmean(
            float(np.abs(b - a).mean()) / span for a, b in zip(raws, raws[1:], strict=False)
        ),
        "colour_change": statistics.fmean(
            float(np.abs(b - a).mean()) / 255 for a, b in zip(colours, colours[1:], strict=False)
        ),
        "align_ms_median": statistics.median(align_ms) if align_ms else None,
    }


def stack(repository: Path, output: Path) -> dict:
    from bench.breakdown import fastest_model
    from depthstream import model_config
    from serving.triton import EmbeddedTriton

    model = fastest_model(repository)
    config = model_config.parse((repository / model / model_config.CONFIG_FILE).read_text())
    frames = jittered(PICTURES[2], STACK_FRAMES)
    settings = server_settings(repository, ROOT / "build" / "flicker")
    with EmbeddedTriton(settings, log_path=output / "tritonserver-flicker.log"):
        bridge = Bridge(settings.grpc_url, shm_key=settings.shm_key)
        try:
            results = {
                name: through_stack(bridge.ws_url, model, name == "on", frames) for name in ("off", "on")
            }
        finally:
            bridge.stop()
    return {"model": model, "random_weights": model_config.is_random_weights(config), **results}


def verdicts(found: dict) -> dict:
    off, on = found["off"], found["on"]
    ratio = off["shown_change"] / max(on["shown_change"], 1e-12)
    return {
        "less_change": {"value": ratio, "met": ratio >= GOALS["less_change"]},
        "settle_frames": {
            "value": on["settle_frames"],
            "met": on["settle_frames"] is not None and on["settle_frames"] <= GOALS["settle_frames"],
        },
        "align_ms": {"value": on["align_ms_median"], "met": on["align_ms_median"] <= GOALS["align_ms"]},
    }


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def settle_text(frames: int | None) -> str:
    if frames is None:
        return "never"
    return "at the cut" if frames == 0 else f"{frames} frame{'s' * (frames != 1)} after it"


def markdown(where: str, found: dict, goals: dict, through: dict | None) -> str:
    off, on = found["off"], found["on"]
    lines = [
        f"Flicker, measured by `make bench` (`python -m bench.flicker`) on {where}.",
        "",
        f"The mechanism, on {SCENE_FRAMES + AFTER_CUT} frames of 640x480 built from two photographs "
        "(a random scale and shift per frame, noise, a hand over a fifth of the lens for "
        f"{len(HAND)} frames, a cut at frame {SCENE_FRAMES}):",
        "",
        "| steady depth | change a frame, displayed (0-1) | change a frame, raw depth | frames to settle after the cut | align ms a frame (median, max) |",
        "| --- | --- | --- | --- | --- |",
        f"| off (each frame as answered, colours in a smoothed range) | {off['shown_change']:.4f} | "
        f"{off['raw_change']:.4f} | {settle_text(off['settle_frames'])} | - |",
        f"| on (the default) | {on['shown_change']:.4f} | {on['raw_change']:.4f} | "
        f"{settle_text(on['settle_frames'])} | {on['align_ms_median']:.2f}, {on['align_ms_max']:.2f} |",
        "",
        "| goal | target | measured | verdict |",
        "| --- | --- | --- | --- |",
        f"| less frame-to-frame change of the displayed value on static pixels | >= {GOALS['less_change']:g}x | "
        f"{goals['less_change']['value']:.1f}x | {verdict(goals['less_change']['met'])} |",
        f"| after a cut, the output correlates >= {SETTLE_CORRELATION} with the frame's own depth | "
        f"within {GOALS['settle_frames']} frames | {settle_text(goals['settle_frames']['value'])} | "
        f"{verdict(goals['settle_frames']['met'])} |",
        f"| the alignment's cost, 640x480 | <= {GOALS['align_ms']:g} ms | {goals['align_ms']['value']:.2f} ms | "
        f"{verdict(goals['align_ms']['met'])} |",
    ]
    if through is not None:
        weights = (
            "random weights: the depth is meaningless, and what the alignment cannot take out (a "
            "response to the light that is no scale and shift) stays; the mechanism is what is measured"
            if through["random_weights"]
            else "real weights"
        )
        lines += [
            "",
            f"Through the whole stack ({through['model']}, {weights}), one photograph sent {STACK_FRAMES} "
            f"times with exposure jitter (+-15%) and sensor noise, on {where}:",
            "",
            "| steady | change a frame, raw depth (of its range) | change a frame, colours (0-1) | align ms (median) |",
            "| --- | --- | --- | --- |",
        ]
        for name in ("off", "on"):
            row = through[name]
            ms = "-" if row["align_ms_median"] is None else f"{row['align_ms_median']:.2f}"
            lines.append(f"| {name} | {row['raw_change']:.4f} | {row['colour_change']:.4f} | {ms} |")
    return "\n".join(lines)


def run(repository: Path, output: Path, where: str, readme: Path | None, with_stack: bool = True) -> dict:
    found = mechanism()
    goals = verdicts(found)
    through = stack(repository, output) if with_stack else None
    report = {"measured_on": where, "mechanism": found, "goals": goals, "through_stack": through}
    publish(output / "flicker.json", report, markdown(where, found, goals, through), readme, (BEGIN, END))
    return report


if __name__ == "__main__":
    sys.exit(run_alone(run, None))
