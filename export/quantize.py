"""INT8: ONNX Runtime dynamic quantization of the exported model, kept only where it pays.

Only MatMul is quantized (the ViT's attention and MLP, most of the compute); the convolutions
of the DPT head stay FP32, where ConvInteger is slower than FP32 on CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from export.onnx_export import relative_error, run_onnx

# INT8 changes the numbers; refuse a quantized model that is off by more than this fraction of
# the FP32 model's depth range (real and random weights measured 1-3%).
INT8_TOLERANCE = 0.1


class QuantizationError(Exception):
    pass


def quantize(fp32_path: Path, int8_path: Path) -> None:
    quantize_dynamic(
        str(fp32_path), str(int8_path), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
    )


def error_vs_fp32(fp32_path: Path, int8_path: Path, images: list[np.ndarray]) -> float:
    fp32, int8 = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32_path, int8_path)
    )
    worst = 0.0
    for image in images:
        worst = max(worst, relative_error(run_onnx(int8, image[None]), run_onnx(fp32, image[None])))
    if worst > INT8_TOLERANCE:
        raise QuantizationError(
            f"INT8 differs from FP32 by {worst:.1%} of the range (limit {INT8_TOLERANCE:.0%})"
        )
    return worst
