"""PIL's resampling in the graph: what the transformers image processors do to an image.

The processors of DPT, Depth Anything and GLPN resize the uint8 image with Pillow. Pillow's
``Image.resize`` (libImaging/Resample.c) is not OpenCV's cubic: its filters (bicubic a = -0.5,
triangle, Lanczos-3, box) are stretched by the scale when shrinking (antialiased), each output
pixel's weights are normalized over the input pixels they reach (no replicated edge), and it
runs the horizontal pass, then the vertical one, rounding to uint8 after each. Written here as
two matrix products whose weights are computed from the traced sizes, so the exported graph
resamples every input size as Pillow would (ONNX's own antialiased Resize has no uint8 passes).
"""

from __future__ import annotations

import math

import torch
from torch.onnx.operators import shape_as_tensor

from depthstream.contract import Interpolation

PIL_CUBIC_A = -0.5


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    s = x.abs()
    a = PIL_CUBIC_A
    near = ((a + 2) * s - (a + 3)) * s * s + 1
    far = (((s - 5) * s + 8) * s - 4) * a
    return torch.where(s < 1, near, torch.where(s < 2, far, torch.zeros_like(s)))


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(1 - x.abs(), min=0)


def _box(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x <= 0.5)).to(x.dtype)


def _sinc(x: torch.Tensor) -> torch.Tensor:
    safe = torch.where(x == 0, torch.ones_like(x), x) * math.pi
    return torch.where(x == 0, torch.ones_like(x), torch.sin(safe) / safe)


def _lanczos(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 3, _sinc(x) * _sinc(x / 3), torch.zeros_like(x))


FILTERS = {
    Interpolation.BICUBIC: _bicubic,
    Interpolation.BILINEAR: _triangle,
    Interpolation.LANCZOS: _lanczos,
    Interpolation.BOX: _box,
}


def weights(in_len: torch.Tensor, out_len: torch.Tensor, interpolation: Interpolation) -> torch.Tensor:
    """[out_len, in_len] float64: Pillow's precompute_coeffs for one axis, as a dense matrix."""
    in_f = in_len.to(torch.float64)
    scale = in_f / out_len.to(torch.float64)
    filter_scale = torch.clamp(scale, min=1.0)  # stretched when shrinking: the antialiasing
    # 0-d traced sizes: torch.arange takes them at run time (its stubs want a number)
    centre = (torch.arange(out_len, dtype=torch.float64) + 0.5) * scale  # type: ignore[call-overload]
    source = torch.arange(in_len, dtype=torch.float64) + 0.5  # type: ignore[call-overload]
    taps = FILTERS[interpolation]((source[None, :] - centre[:, None]) / filter_scale)
    total = taps.sum(dim=1, keepdim=True)
    return taps / torch.where(total == 0, torch.ones_like(total), total)


def _to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    # Pillow's clip8: round half up, then clamp to 0..255
    return torch.clamp(torch.floor(x + 0.5), 0.0, 255.0)


def resize(pixels: torch.Tensor, height, width, interpolation: Interpolation) -> torch.Tensor:
    """[N, C, H, W] float in 0..255 -> [N, C, height, width], as Pillow resizes a uint8 image."""
    shape = shape_as_tensor(pixels)
    out_h, out_w = torch.as_tensor(height), torch.as_tensor(width)
    across = weights(shape[3], out_w, interpolation).to(torch.float32)
    pixels = _to_uint8_levels(torch.matmul(pixels, across.transpose(0, 1)))
    down = weights(shape[2], out_h, interpolation).to(torch.float32)
    return _to_uint8_levels(torch.matmul(down, pixels))
