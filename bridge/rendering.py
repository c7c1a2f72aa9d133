"""What a stream draws from a frame's depth: the colorized JPEG, the raw depth, or both.

Each stream has one :class:`StreamRenderer`: its colour range (smoothed over the stream's frames,
started again on a model switch, in frame order) and the drawing itself, run in a worker thread
by the session. The drawing functions live in ``depthstream.render``; this module only applies
them to one stream's requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bridge import images
from bridge.protocol import OUTPUTS, POINTS_STEP, ErrorCode
from depthstream.contract import MODELS
from depthstream.render import raw_depth
from depthstream.render.colorize import NoFiniteDepth, RangeSmoother, colorize


@dataclass(frozen=True)
class Request:
    """What a frame is processed with: the stream's choices when its turn began."""

    model: str
    colormap: str
    output: str


@dataclass
class Rendered:
    """What a frame's depth header says of its binaries: the colorized JPEG's display range
    (near, far ends of the colorbar, in the model's units) and the raw depth's header."""

    display_range: tuple[float, float] | None = None
    raw: dict | None = None


class RenderError(Exception):
    """The model's output cannot be drawn (no finite depth): that frame's error."""

    code = ErrorCode.BAD_OUTPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class StreamRenderer:
    """One stream's drawing: its smoothed colour range, and ``render``."""

    def __init__(self, jpeg_quality: int) -> None:
        self.jpeg_quality = jpeg_quality
        self.smoother = RangeSmoother()
        self.smoothed_model: str | None = None  # the model the smoother's range belongs to

    def render(
        self, depth: np.ndarray, request: Request, timings: dict[str, float]
    ) -> tuple[list[bytes], Rendered]:
        """(binary messages in the protocol's order, what the header says of them); refuses
        NaN/Inf-only output with RenderError."""
        if request.model != self.smoothed_model:  # another model, another depth scale: start again
            self.smoother.reset()  # here, in frame order: a frame of the old model may still be drawing
            self.smoothed_model = request.model
        binaries: list[bytes] = []
        rendered = Rendered()
        try:
            if "jpeg" in OUTPUTS[request.output]:
                binaries.append(self._jpeg(depth, request, rendered, timings))
            if raw_depth.ENCODING in OUTPUTS[request.output]:
                binaries.append(self._raw(depth, request, rendered, timings))
        except NoFiniteDepth:  # colorize and the raw encoding both refuse an all-NaN/Inf depth
            raise RenderError("the model returned no finite depth for this frame") from None
        return binaries, rendered

    def _jpeg(
        self, depth: np.ndarray, request: Request, rendered: Rendered, timings: dict[str, float]
    ) -> bytes:
        start = time.perf_counter()
        kind = MODELS[request.model].depth
        bgr = colorize(depth, request.colormap, self.smoother, require_finite=True, kind=kind)
        rendered.display_range = self.smoother.range
        timings["colorize"] = _ms_since(start)
        start = time.perf_counter()
        encoded = images.encode_jpeg(bgr, self.jpeg_quality)
        timings["encode"] = _ms_since(start)
        return encoded

    def _raw(
        self, depth: np.ndarray, request: Request, rendered: Rendered, timings: dict[str, float]
    ) -> bytes:
        start = time.perf_counter()
        step = POINTS_STEP if request.output == "points" else 1
        payload, rendered.raw = raw_depth.encode(depth[::step, ::step], MODELS[request.model].depth)
        if step > 1:  # grid cell (i, j) is the frame's pixel (step i, step j)
            rendered.raw["step"] = step
        timings["raw"] = _ms_since(start)
        return payload
