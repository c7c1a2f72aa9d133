"""What a stream draws from a frame's depth: the colorized JPEG, the raw depth, or both.

Each stream has one :class:`StreamRenderer`: the alignment of its relative depth to the stream
(depthstream/render/steady.py: scale and shift per frame, so that a still scene holds still), its
colour range (smoothed over the stream's frames), both started again in frame order on a model
switch or a new scene, and the drawing itself, run in a worker thread by the session. The drawing functions live in ``depthstream.render``; this module only applies
them to one stream's requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bridge import images
from bridge.errors import BadOutput
from bridge.protocol import OUTPUTS, POINTS_STEP
from depthstream.contract import DepthKind, spec_of
from depthstream.render import camera as cameras
from depthstream.render import raw_depth
from depthstream.render.colorize import NoFiniteDepth, RangeSmoother, colorize
from depthstream.render.steady import Alignment, DepthAligner


@dataclass(frozen=True)
class RenderRequest:
    """What a frame is processed with: the stream's choices when its turn began."""

    model: str
    colormap: str
    output: str
    steady: bool = True  # align relative depth to the stream
    scene: int = 0  # counts the client's new_scene requests: a new one starts the alignment again


@dataclass
class _Drawing:
    """What ``render`` fills in as it goes, for one frame (returned frozen, as ``Rendered``)."""

    display_range: tuple[float, float] | None = None
    raw: dict | None = None
    alignment: dict | None = None
    camera: dict | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rendered:
    """One frame drawn: its binary messages in the protocol's order, and what the depth header
    says of them: the colorized JPEG's display range (near, far ends of the colorbar, in the
    model's units), the raw depth's header, the alignment, the camera, and the drawing's own
    timings (align, colorize, encode, raw)."""

    binaries: tuple[bytes, ...]
    display_range: tuple[float, float] | None = None
    raw: dict | None = None
    alignment: dict | None = None  # scale, shift, residual, restarted; None: not aligned
    camera: dict | None = None  # the estimated intrinsics (camera.header); None: not estimated
    timings_ms: dict[str, float] = field(default_factory=dict)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class StreamRenderer:
    """One stream's drawing: its depth alignment, its smoothed colour range, and ``render``."""

    def __init__(self, jpeg_quality: int) -> None:
        self.jpeg_quality = jpeg_quality
        self.smoother = RangeSmoother()
        self.aligner = DepthAligner()
        self.camera = cameras.CameraSmoother()
        self.drawn: tuple[str, int, bool] | None = None  # the (model, scene, steady) of the last frame

    def render(
        self, depth: np.ndarray, request: RenderRequest, intrinsics: np.ndarray | None = None
    ) -> Rendered:
        """The frame drawn as ``request`` asks; refuses NaN/Inf-only output with BadOutput.
        ``intrinsics``: the camera the model estimated."""
        if (request.model, request.scene, request.steady) != self.drawn:
            # another model (another depth scale), a new scene, alignment turned on or off: start
            # again, here in frame order (a frame of the old model may still be drawing)
            self.smoother.reset()
            self.aligner.reset()
            self.camera.reset()
            self.drawn = (request.model, request.scene, request.steady)
        rendered = _Drawing()
        timings = rendered.timings_ms
        alignment = None
        kind = spec_of(request.model).depth
        if request.steady and kind is not DepthKind.METRIC:  # metres stay as they are
            alignment = self._align(depth, rendered, timings, scale_only=kind is DepthKind.SCALED)
        if intrinsics is not None:
            rendered.camera = self._camera(intrinsics, depth.shape, request.steady, rendered)
        binaries: list[bytes] = []
        try:
            if "jpeg" in OUTPUTS[request.output]:
                binaries.append(self._jpeg(depth, request, rendered, timings, alignment))
            if raw_depth.ENCODING in OUTPUTS[request.output]:
                binaries.append(self._raw(depth, request, rendered, timings, alignment))
        except NoFiniteDepth:  # colorize and the raw encoding both refuse an all-NaN/Inf depth
            raise BadOutput("the model returned no finite depth for this frame") from None
        return Rendered(tuple(binaries), **vars(rendered))

    def _camera(self, intrinsics: np.ndarray, shape: tuple, steady: bool, rendered: _Drawing) -> dict | None:
        """The header's camera: this frame's estimate, or with steady on the stream's smoothed
        one (started again at a scene cut, as the alignment is); None for an unusable one."""
        if not cameras.usable(intrinsics):
            return None
        height, width = shape[:2]
        if steady:
            intrinsics = self.camera.update(intrinsics, width, height)
        return cameras.header(intrinsics, width, height, smoothed=steady)

    def _align(
        self, depth: np.ndarray, rendered: _Drawing, timings: dict[str, float], scale_only: bool = False
    ) -> Alignment | None:
        """The frame's alignment (applied by the drawing to its ranges, not to each pixel)."""
        start = time.perf_counter()
        alignment = self.aligner.fit(depth, scale_only)
        if alignment.restarted:
            self.smoother.reset()  # a new scene: its own colour range at once, not after ~5 frames
            self.camera.reset()  # ... and its own camera
        rendered.alignment = alignment.header()
        timings["align"] = _ms_since(start)
        return None if alignment.restarted else alignment  # restarted: the frame as it is

    def _jpeg(
        self,
        depth: np.ndarray,
        request: RenderRequest,
        rendered: _Drawing,
        timings: dict[str, float],
        alignment: Alignment | None,
    ) -> bytes:
        start = time.perf_counter()
        kind = spec_of(request.model).depth
        bgr = colorize(
            depth, request.colormap, self.smoother, require_finite=True, kind=kind, alignment=alignment
        )
        rendered.display_range = self.smoother.range
        timings["colorize"] = _ms_since(start)
        start = time.perf_counter()
        encoded = images.encode_jpeg(bgr, self.jpeg_quality)
        timings["encode"] = _ms_since(start)
        return encoded

    def _raw(
        self,
        depth: np.ndarray,
        request: RenderRequest,
        rendered: _Drawing,
        timings: dict[str, float],
        alignment: Alignment | None,
    ) -> bytes:
        start = time.perf_counter()
        step = POINTS_STEP if request.output == "points" else 1
        payload, rendered.raw = raw_depth.encode(depth[::step, ::step], spec_of(request.model).depth)
        if alignment is not None:  # the same values, read as the aligned depth (scale > 0 keeps their order)
            rendered.raw["min"] = alignment.map(rendered.raw["min"])
            rendered.raw["max"] = alignment.map(rendered.raw["max"])
        if step > 1:  # grid cell (i, j) is the frame's pixel (step i, step j)
            rendered.raw["step"] = step
        timings["raw"] = _ms_since(start)
        return payload
