"""The camera a model estimates (its INTRINSICS output), as every client reads it.

A model such as Depth Anything 3 returns, per frame, a 3x3 matrix in pixels of the input image.
Every 3D output (the page's 3D view, measuring, Save 3D, the client's PLY) unprojects the depth
with it: ``X = (u - cx) z / fx``, ``Y = (v - cy) z / fy``. A stream with ``steady`` on smooths
it over frames as the steady depth smooths scale (the field of view of one camera does not
change from frame to frame; the estimate does, a little), and starts again at a scene cut.
"""

from __future__ import annotations

import math

import numpy as np

SMOOTHING = 0.2  # the weight of each new frame's estimate (about five frames to follow a change)


def hfov_deg(fx: float, width: int) -> float:
    """The horizontal field of view a focal length gives on a frame ``width`` pixels wide."""
    return math.degrees(2 * math.atan(width / (2 * fx))) if fx > 0 else float("nan")


def focal_for(hfov: float, width: int) -> float:
    """The focal length, in pixels, of a horizontal field of view in degrees."""
    return width / (2 * math.tan(math.radians(hfov) / 2))


def header(intrinsics: np.ndarray, width: int, height: int, smoothed: bool) -> dict:
    """The depth header's ``camera``: fx, fy, cx, cy in pixels of this frame, both fields of
    view, and whether the values are smoothed over the stream."""
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    return {
        "fx": round(fx, 3),
        "fy": round(fy, 3),
        "cx": round(float(intrinsics[0, 2]), 3),
        "cy": round(float(intrinsics[1, 2]), 3),
        "hfov_deg": round(hfov_deg(fx, width), 2),
        "vfov_deg": round(hfov_deg(fy, height), 2),
        "estimated": True,
        "smoothed": smoothed,
    }


def usable(intrinsics: np.ndarray | None) -> bool:
    """A matrix worth unprojecting with: finite, positive focal lengths."""
    return (
        intrinsics is not None
        and intrinsics.shape == (3, 3)
        and bool(np.isfinite(intrinsics).all())
        and intrinsics[0, 0] > 0
        and intrinsics[1, 1] > 0
    )


class CameraSmoother:
    """One stream's smoothed intrinsics, in units of the frame's size (a frame of another size
    keeps the same field of view)."""

    def __init__(self) -> None:
        self.normalized: np.ndarray | None = None  # fx / W, fy / H, cx / W, cy / H

    def reset(self) -> None:
        self.normalized = None

    def update(self, intrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
        """This frame's estimate blended into the stream's; the smoothed matrix at this size."""
        size = np.array([width, height, width, height], dtype=np.float64)
        now = np.array([intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]]) / size
        if self.normalized is None:
            self.normalized = now
        else:
            self.normalized = (1 - SMOOTHING) * self.normalized + SMOOTHING * now
        fx, fy, cx, cy = self.normalized * size
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)
