"""Depth to color: robust, flicker-free normalization and OpenCV colormaps.

Per-frame min-max makes colors jump whenever one pixel changes and turns a flat frame into
NaN. Instead: the 2nd/98th percentiles of the finite values, smoothed over time per stream,
with a floor on the span; NaN/Inf become the far end. Every output is a valid image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from depthstream.contract import DepthKind
from depthstream.render.steady import Alignment

COLORMAPS: dict[str, int | None] = {
    "inferno": cv2.COLORMAP_INFERNO,
    "turbo": cv2.COLORMAP_TURBO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "plasma": cv2.COLORMAP_PLASMA,
    "gray": None,
}
DEFAULT_COLORMAP = "inferno"

LOW_PERCENTILE, HIGH_PERCENTILE = 2.0, 98.0
MIN_SPAN = 1e-6  # a flat frame gets a span this wide instead of a division by zero
SAMPLE_STRIDE = 4  # percentiles of every 4th pixel each way: 16x cheaper, same figures


def depth_range(depth: np.ndarray) -> tuple[float, float] | None:
    """Robust (low, high) of the finite values, or None when nothing is finite."""
    sample = depth[::SAMPLE_STRIDE, ::SAMPLE_STRIDE]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        finite = depth[np.isfinite(depth)]  # tiny images: the stride may skip all finite pixels
        if finite.size == 0:
            return None
    low, high = np.percentile(finite, [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(low), float(high)


@dataclass
class RangeSmoother:
    """Exponential smoothing of the display range, one per stream (connection)."""

    alpha: float = 0.2  # weight of the newest frame: ~5 frames to settle after a scene change
    low: float | None = None
    high: float | None = None

    def update(self, observed: tuple[float, float] | None) -> tuple[float, float]:
        if observed is not None:
            if self.low is None or self.high is None:
                self.low, self.high = observed
            else:
                self.low += self.alpha * (observed[0] - self.low)
                self.high += self.alpha * (observed[1] - self.high)
        if self.low is None or self.high is None:
            return 0.0, 1.0
        return self.low, self.high

    @property
    def range(self) -> tuple[float, float] | None:
        """The (low, high) the last frame was drawn with; None before any."""
        return None if self.low is None or self.high is None else (self.low, self.high)

    def reset(self) -> None:
        self.low = self.high = None


def to_uint8(depth: np.ndarray, low: float, high: float, kind: DepthKind = DepthKind.RELATIVE) -> np.ndarray:
    """Map depth to [0, 255] (saturating), near bright and far dark for either kind: relative
    [low, high] to [0, 255], metric (metres: larger is farther) [low, high] to [255, 0]. NaN and
    Inf map to 0 (the far end)."""
    span = max(high - low, MIN_SPAN)
    far = high if kind.is_distance else low
    if not np.isfinite(depth).all():
        depth = np.nan_to_num(depth, nan=far, posinf=far, neginf=far)
    # below low first: convertScaleAbs takes the absolute value, so without this a pixel beyond the
    # far (relative) end would come back bright instead of saturating at 0
    depth = cv2.max(depth, float(low))  # type: ignore[call-overload]  # a scalar bound: OpenCV's stubs list arrays only
    gray = cv2.convertScaleAbs(depth, alpha=255.0 / span, beta=-low * 255.0 / span)
    return cv2.bitwise_not(gray, dst=gray) if kind.is_distance else gray


def apply_colormap(gray: np.ndarray, colormap: str) -> np.ndarray:
    """A BGR image (OpenCV's order, ready for imencode)."""
    code = COLORMAPS[colormap]
    if code is None:
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return cv2.applyColorMap(gray, code)


def colormap_stops(colormap: str, count: int = 16) -> list[str]:
    """The colormap from far (0) to near (255) as ``count`` CSS colors, for the page's colorbar."""
    ramp = np.linspace(0, 255, count).astype(np.uint8)[None, :]
    bgr = apply_colormap(ramp, colormap)[0]
    return [f"#{r:02x}{g:02x}{b:02x}" for b, g, r in bgr]


class NoFiniteDepth(ValueError):
    """Every depth value is NaN or infinite."""


def colorize(
    depth: np.ndarray,
    colormap: str = DEFAULT_COLORMAP,
    smoother: RangeSmoother | None = None,
    require_finite: bool = False,
    kind: DepthKind = DepthKind.RELATIVE,
    alignment: Alignment | None = None,
) -> np.ndarray:
    """Depth [H, W] float -> BGR uint8 [H, W, 3], near bright and far dark (``kind`` says which
    way the depth runs); pass a smoother to keep colors stable. With an ``alignment`` the depth is
    drawn as its aligned self (the smoother's range is in aligned units) without computing it:
    the range is mapped back instead of every pixel forward.

    Depth with no finite value gives a valid (flat) image, or NoFiniteDepth if required."""
    observed = depth_range(depth)
    if observed is None and require_finite:
        raise NoFiniteDepth("no finite depth value")
    if alignment is not None and observed is not None:
        observed = (alignment.map(observed[0]), alignment.map(observed[1]))
    if smoother is not None:
        low, high = smoother.update(observed)
    else:
        low, high = observed or (0.0, 1.0)
    if alignment is not None:
        low, high = alignment.unmap(low), alignment.unmap(high)
    return apply_colormap(to_uint8(depth, low, high, kind), colormap)
