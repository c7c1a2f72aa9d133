"""Trace the fused graph to ONNX with dynamic N, H, W, check it, and prove it matches PyTorch."""

from __future__ import annotations

import logging
import typing
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from depthstream.contract import INPUT_NAME, INTRINSICS_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

OPSET = 18
# Largest accepted difference between ONNX Runtime and PyTorch, as a fraction of the range of
# PyTorch's output. Correct exports measure ~1e-5..1e-4; a baked-in size is 5-30% off.
PARITY_TOLERANCE = 2e-3
# With Pillow's resampling (an added checkpoint) the image is rounded to uint8 between passes, as
# Pillow does: a last-bit difference between two runtimes flips a pixel at a rounding tie by one
# level, which a tiny random network amplifies (3e-3 seen). The bound against the pipeline.
PIL_PARITY_TOLERANCE = 1e-2
# INTRINSICS (a model that estimates its camera): relative to the focal length
INTRINSICS_TOLERANCE = 1e-3


class ParityError(Exception):
    """The exported ONNX does not compute what the PyTorch model computes."""


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |a - b| as a fraction of the reference's range (guarded for flat references)."""
    span = float(reference.max() - reference.min())
    return float(np.abs(actual - reference).max()) / max(span, 1e-12)


def output_names(fused: torch.nn.Module) -> list[str]:
    """DEPTH, and INTRINSICS where the model estimates its camera (its spec says)."""
    return list(typing.cast(Any, fused).spec.output_names)  # every fused model has a spec


def export(fused: torch.nn.Module, path: Path, trace_image: np.ndarray) -> None:
    """Trace with the TorchScript exporter: it keeps the shape arithmetic symbolic."""
    sample = torch.from_numpy(trace_image[None])
    names = output_names(fused)
    dynamic = {INPUT_NAME: {0: "N", 1: "H", 2: "W"}, OUTPUT_NAME: {0: "N", 1: "H", 2: "W"}}
    if INTRINSICS_NAME in names:
        dynamic[INTRINSICS_NAME] = {0: "N"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter warnings, checked by parity
        torch.onnx.export(
            fused,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic,
        )
    onnx.checker.check_model(str(path), full_check=True)


def run_onnx(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def reference_outputs(fused: torch.nn.Module, batch: np.ndarray) -> list[np.ndarray]:
    """PyTorch's outputs, in output_names' order."""
    with torch.no_grad():
        out = fused(torch.from_numpy(batch))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def intrinsics_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |a - b| as a fraction of the largest focal length."""
    return float(np.abs(actual - reference).max()) / max(float(np.abs(reference).max()), 1e-12)


def check_parity(
    fused: torch.nn.Module, path: Path, images: list[np.ndarray], tolerance: float | None = None
) -> float:
    """Run ONNX Runtime and PyTorch on each image; raise ParityError past the tolerance
    (``PARITY_TOLERANCE`` unless another is given; INTRINSICS within INTRINSICS_TOLERANCE)."""
    tolerance = PARITY_TOLERANCE if tolerance is None else tolerance
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = output_names(fused)
    worst = 0.0
    for image in images:
        batch = image[None]
        reference = reference_outputs(fused, batch)
        actual = session.run(names, {INPUT_NAME: batch})
        where = f"{image.shape[1]}x{image.shape[0]}"
        for name, got, want in zip(names, actual, reference, strict=True):
            if got.shape != want.shape:
                raise ParityError(f"ONNX {name} shape {got.shape} != PyTorch {want.shape} at {where}")
            if not np.isfinite(got).all():
                raise ParityError(f"ONNX Runtime's {name} is not finite at {where}; refusing to write")
        error = relative_error(actual[0], reference[0])
        log.info("parity at %s: %.2e of range", where, error)
        if error > tolerance:
            raise ParityError(
                f"ONNX Runtime differs from PyTorch by {error:.2e} of the range at "
                f"{where} (tolerance {tolerance:.0e}); refusing to write"
            )
        if len(names) > 1:
            camera = intrinsics_error(actual[1], reference[1])
            if camera > INTRINSICS_TOLERANCE:
                raise ParityError(
                    f"ONNX Runtime's {INTRINSICS_NAME} differs from PyTorch's by {camera:.2e} of the "
                    f"focal length at {where} (tolerance {INTRINSICS_TOLERANCE:.0e}); refusing to write"
                )
        worst = max(worst, error)
    return worst
