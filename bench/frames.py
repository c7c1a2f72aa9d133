"""A stream of real photographs: a slow pan across skimage's pictures, as a camera would see."""

from __future__ import annotations

import cv2
import numpy as np

from export.images import photograph

PICTURES = ("astronaut", "chelsea", "coffee", "rocket")


def stream(width: int, height: int, count: int) -> list[np.ndarray]:
    """``count`` RGB uint8 frames of width x height: each picture panned a few pixels a frame."""
    frames = []
    for i in range(count):
        picture = photograph(PICTURES[i % len(PICTURES)])
        scale = max(width / picture.shape[1], height / picture.shape[0]) * 1.1
        big = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        dx = min(i * 3, big.shape[1] - width)
        frames.append(np.ascontiguousarray(big[:height, dx : dx + width]))
    return frames


def jpegs(frames: list[np.ndarray], quality: int = 80) -> list[bytes]:
    out = []
    for frame in frames:
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        assert ok
        out.append(data.tobytes())
    return out
