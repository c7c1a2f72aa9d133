"""Real photographs for tracing and parity checks (scikit-image ships them)."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data


def photograph(name: str = "astronaut") -> np.ndarray:
    """An RGB uint8 photograph from skimage.data (astronaut, chelsea, coffee, rocket, ...)."""
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def parity_images() -> list[np.ndarray]:
    """Sizes that catch a traced size baked into the graph: landscape, portrait, odd, tiny."""
    return [
        resized(photograph("chelsea"), 640, 480),
        resized(photograph("astronaut"), 360, 500),
        resized(photograph("coffee"), 31, 17),
    ]
