"""Shared test helpers: free ports, photographs, the tiny models."""

from __future__ import annotations

import numpy as np

from export.images import photograph, resized
from serving.triton import free_port  # noqa: F401 (the tests take it from here)


def photo(width: int, height: int, name: str = "astronaut") -> np.ndarray:
    """A real photograph (skimage.data) resized to width x height, RGB uint8."""
    return resized(photograph(name), width, height)
