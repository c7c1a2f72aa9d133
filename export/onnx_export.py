"""Trace the fused graph to ONNX with dynamic N, H, W, check it, and prove it matches PyTorch."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from depthstream.contract import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

OPSET = 18
# Largest accepted difference between ONNX Runtime and PyTorch, as a fraction of the range of
# PyTorch's output. Correct exports measure ~1e-5..1e-4; a baked-in size is 5-30% off.
PARITY_TOLERANCE = 2e-3
# With Pillow's resampling (an added checkpoint) the image is rounded to uint8 between passes, as
# Pillow does: a last-bit difference between two runtimes flips a pixel at a rounding tie by one
# level, which a tiny random network amplifies (3e-3 seen). The bound against the pipeline.
PIL_PARITY_TOLERANCE = 1e-2


class ParityError(Exception):
    """The exported ONNX does not compute what the PyTorch model computes."""


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |a - b| as a fraction of the reference's range (guarded for flat references)."""
    span = float(reference.max() - reference.min())
    return float(np.abs(actual - reference).max()) / max(span, 1e-12)


def export(fused: torch.nn.Module, path: Path, trace_image: np.ndarray) -> None:
    """Trace with the TorchScript exporter: it keeps the shape arithmetic symbolic."""
    sample = torch.from_numpy(trace_image[None])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter warnings, checked by parity
        torch.onnx.export(
            fused,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N", 1: "H", 2: "W"}, OUTPUT_NAME: {0: "N", 1: "H", 2: "W"}},
        )
    onnx.checker.check_model(str(path), full_check=True)


def run_onnx(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def check_parity(
    fused: torch.nn.Module, path: Path, images: list[np.ndarray], tolerance: float | None = None
) -> float:
    """Run ONNX Runtime and PyTorch on each image; raise ParityError past the tolerance
    (``PARITY_TOLERANCE`` unless another is given)."""
    tolerance = PARITY_TOLERANCE if tolerance is None else tolerance
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for image in images:
        batch = image[None]
        with torch.no_grad():
            reference = fused(torch.from_numpy(batch)).numpy()
        actual = run_onnx(session, batch)
        if actual.shape != reference.shape:
            raise ParityError(f"ONNX output shape {actual.shape} != PyTorch {reference.shape}")
        error = relative_error(actual, reference)
        log.info("parity at %dx%d: %.2e of range", image.shape[1], image.shape[0], error)
        if not np.isfinite(actual).all() or error > tolerance:
            raise ParityError(
                f"ONNX Runtime differs from PyTorch by {error:.2e} of the range at "
                f"{image.shape[1]}x{image.shape[0]} (tolerance {tolerance:.0e}); refusing to write"
            )
        worst = max(worst, error)
    return worst
