"""Shared test helpers: free ports, photographs, the tiny models."""

from __future__ import annotations

import socket

import numpy as np

from export.images import photograph, resized


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def photo(width: int, height: int, name: str = "astronaut") -> np.ndarray:
    """A real photograph (skimage.data) resized to width x height, RGB uint8."""
    return resized(photograph(name), width, height)
