"""Shared test helpers: free ports, photographs, the tiny models."""

from __future__ import annotations

import numpy as np

from depthstream.contract import MODELS, Precision
from export.images import photograph, resized
from serving.triton import free_port  # noqa: F401 (the tests take it from here)

# What the tiny test repository serves (conftest: every preset, INT8 twins kept with --int8
# always): every model of the contract but the BF16 twins, which a kept INT8 twin excludes.
TINY_SERVED = frozenset(name for name, spec in MODELS.items() if spec.precision != Precision.BF16)


def photo(width: int, height: int, name: str = "astronaut") -> np.ndarray:
    """A real photograph (skimage.data) resized to width x height, RGB uint8."""
    return resized(photograph(name), width, height)
