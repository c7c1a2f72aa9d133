"""The bridge's own work on one frame, measured on the machine it runs on.

What the page's "~N fps" and the default model add to a model's own time before any frame has
been streamed: decoding a 640x480 JPEG, colorizing its depth and encoding the answer, as the
per-frame path does them (bridge.images, depthstream.render.colorize), timed here at start-up
instead of assumed. Live traffic then replaces it with what frames really spend outside the
model (bridge.observed).
"""

from __future__ import annotations

import functools
import statistics
import time

import numpy as np

from bridge import images
from depthstream.render.colorize import RangeSmoother, colorize

ROUNDS = 5
JPEG_QUALITY = 80


def _frame(height: int = 480, width: int = 640) -> tuple[bytes, np.ndarray]:
    """A 640x480 camera-like JPEG and a depth-like map of the same size (content does not
    change the cost much; smooth gradients with noise, as a room gives)."""
    rng = np.random.default_rng(0)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    depth = (rows * 0.7 + cols * 0.3 + rng.normal(0, 0.02, (height, width))).astype(np.float32)
    rgb = np.clip(np.stack([depth, 1 - depth, depth * depth], axis=-1) * 255, 0, 255).astype(np.uint8)
    return images.encode_jpeg(rgb, JPEG_QUALITY), depth


@functools.lru_cache(maxsize=1)
def own_work_ms() -> float:
    """The median over ``ROUNDS`` of decode + colorize + encode of one 640x480 frame, here."""
    jpeg, depth = _frame()
    smoother = RangeSmoother()
    times = []
    for _ in range(ROUNDS + 1):  # the first warms OpenCV's code paths up, and is not counted
        start = time.perf_counter()
        images.decode(jpeg, 640 * 480)
        images.encode_jpeg(colorize(depth, smoother=smoother), JPEG_QUALITY)
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times[1:]), 1)
