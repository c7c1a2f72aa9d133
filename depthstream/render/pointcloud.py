"""Depth to a coloured point cloud: pinhole back-projection, a binary PLY and its intrinsics.

The camera is a pinhole with square pixels: ``fx = fy = (width / 2) / tan(hfov / 2)`` from the
horizontal field of view the user states, and the principal point exactly at the image centre,
``cx = (width - 1) / 2``, ``cy = (height - 1) / 2`` (pixel ``u`` covers ``[u - 0.5, u + 0.5]``).
A pixel ``(u, v)`` at depth ``z`` goes to the OpenCV camera frame (x right, y down, z forward):
``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``.

A model that estimates its camera (INTRINSICS, depthstream/render/camera.py) is unprojected with
its estimate instead, unless the user pins a field of view.

A metric model's depth is ``z`` in metres, a scaled one's (Depth Anything 3) ``z`` up to one
unknown scale. A relative model's (inverse depth, no scale) is mapped
to relative units as the page's 3D view maps it, ``z = 1 / (1/FAR + t (1/NEAR - 1/FAR))`` with
``t`` the frame's inverse depth scaled to [0, 1]: a shape, not a measurement (the JSON says so).
The page (web/geometry.js) and the direct client both follow this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from depthstream.contract import DepthKind

# A webcam's horizontal field of view when nothing better is known: the Logitech C920, the most
# common USB webcam, has 78 degrees diagonal, 70.4 horizontal at 16:9; laptop cameras are 60-75.
DEFAULT_HFOV_DEG = 70.0
MIN_HFOV_DEG, MAX_HFOV_DEG = 20.0, 150.0
RELATIVE_NEAR, RELATIVE_FAR = 1.0, 5.0  # the relative units a relative model's shape spans


def intrinsics(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> dict[str, float]:
    """fx, fy, cx, cy in pixels for a ``width`` x ``height`` image and a horizontal field of view."""
    if not MIN_HFOV_DEG <= hfov_deg <= MAX_HFOV_DEG:
        raise ValueError(
            f"a horizontal field of view of {hfov_deg} degrees: use {MIN_HFOV_DEG:g} to {MAX_HFOV_DEG:g}"
        )
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return {"fx": focal, "fy": focal, "cx": (width - 1) / 2, "cy": (height - 1) / 2}


def distances(depth: np.ndarray, kind: DepthKind) -> np.ndarray:
    """Each pixel's z: metres for a metric model, relative units for a relative one."""
    z = depth.astype(np.float64)
    if kind.is_distance:  # metres, or distance up to scale: z as it is
        return z
    finite = z[np.isfinite(z)]  # one broken pixel must not flatten the rest
    if finite.size == 0:
        return np.full_like(z, np.nan)
    low, high = float(finite.min()), float(finite.max())
    t = (z - low) / (high - low) if high > low else np.zeros_like(z)
    return 1 / (1 / RELATIVE_FAR + t * (1 / RELATIVE_NEAR - 1 / RELATIVE_FAR))


def back_project(z: np.ndarray, camera: dict[str, float]) -> np.ndarray:
    """[H, W] distances -> [H, W, 3] points (x, y, z) in the OpenCV camera frame."""
    height, width = z.shape
    v, u = np.mgrid[0:height, 0:width]
    x = (u - camera["cx"]) * z / camera["fx"]
    y = (v - camera["cy"]) * z / camera["fy"]
    return np.stack([x, y, z], axis=-1)


def point_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


PLY_VERTEX = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)


def write_ply(path: Path, points: np.ndarray, rgb: np.ndarray) -> int:
    """A binary little-endian PLY of the finite points, coloured (float32 x y z, uchar r g b).
    Returns the number of points written."""
    keep = np.isfinite(points).all(axis=-1)
    vertices = np.empty(int(keep.sum()), PLY_VERTEX)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[..., axis][keep]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[..., channel][keep]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment depthstream point cloud, OpenCV camera frame\n"
        f"element vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(vertices.tobytes())
    return len(vertices)


UNITS = {
    DepthKind.METRIC: "m",
    DepthKind.SCALED: "depth up to one unknown scale (the model's units, not metres)",
    DepthKind.RELATIVE: f"relative (a shape: {RELATIVE_NEAR:g} to {RELATIVE_FAR:g}, not metres)",
}


def camera_json(
    model: str,
    kind: DepthKind,
    width: int,
    height: int,
    hfov_deg: float,
    estimated: np.ndarray | None = None,
    **about,
) -> dict:
    """What a PLY's sidecar says: the intrinsics it was back-projected with (the model's
    estimate where given, else the stated field of view's), and its units."""
    if estimated is not None:
        camera = {key: float(estimated[row, col]) for key, (row, col) in CAMERA_ENTRIES.items()}
        hfov_deg = round(math.degrees(2 * math.atan(width / (2 * camera["fx"]))), 3)
        source = "estimated by the model"
    else:
        camera, source = intrinsics(width, height, hfov_deg), "stated field of view"
    return {
        **camera,
        "width": width,
        "height": height,
        "hfov_deg": hfov_deg,
        "intrinsics_source": source,
        "model": model,
        "depth": str(kind),
        "units": UNITS[kind],
        "axes": "OpenCV camera: x right, y down, z forward",
        **about,
    }


CAMERA_ENTRIES = {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2)}


def write_cloud(
    stem: Path,
    depth: np.ndarray,
    rgb: np.ndarray,
    model: str,
    kind: DepthKind,
    hfov_deg: float,
    estimated: np.ndarray | None = None,
    **about,
) -> int:
    """``stem``.ply and ``stem``.json for one frame (``stem`` may hold dots: ``photo.model``); the
    number of points. Non-finite depth is left out of the cloud. ``estimated``: the model's
    intrinsics, used instead of ``hfov_deg``."""
    height, width = depth.shape
    camera = camera_json(model, kind, width, height, hfov_deg, estimated, **about)
    count = write_ply(stem.parent / f"{stem.name}.ply", back_project(distances(depth, kind), camera), rgb)
    (stem.parent / f"{stem.name}.json").write_text(json.dumps({**camera, "points": count}, indent=2) + "\n")
    return count
