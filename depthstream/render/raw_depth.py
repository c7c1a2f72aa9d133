"""The depth values themselves on the stream: 16-bit, with the numbers that map them back.

Encoding ``uint16le``: the frame's depth (the model's relative inverse depth, or a metric
model's metres, at the frame's size; ``units`` says which), scaled linearly from [min, max] to [0, 65535], rounded, row-major, little-endian: 2 bytes
a pixel, read with numpy alone (docs/protocol.md, "Raw depth"). ``depth = min + q * (max - min) / 65535``,
to within half a step. Chosen over a 16-bit PNG or zlib for what it costs the bridge: a copy,
not a compression (measured in docs/protocol.md).
"""

from __future__ import annotations

import json

import numpy as np

from depthstream.contract import DepthKind
from depthstream.render.colorize import NoFiniteDepth

ENCODING = "uint16le"
LEVELS = 65535


def quantize(
    depth: np.ndarray, kind: DepthKind = DepthKind.RELATIVE, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, dict]:
    """(uint16 [H, W] little-endian, header fields) for an [H, W] float depth, over its own
    [min, max] or ``value_range`` (values beyond it saturate: one range for a whole video).
    Non-finite pixels (a broken model) become the far end: ``min`` for relative inverse depth,
    ``max`` for metres; a depth with no finite value at all is NoFiniteDepth."""
    finite = np.isfinite(depth)
    values = depth[finite]
    if values.size == 0:
        raise NoFiniteDepth("no finite depth value")
    low, high = value_range or (float(values.min()), float(values.max()))
    span = high - low
    scale = LEVELS / span if span > 0 else 0.0
    far = high if kind.is_distance else low
    # in float64: float32 arithmetic drifts past half a step near the top of the range
    scaled = (np.where(finite, depth, far).astype(np.float64) - low) * scale
    quantized = np.rint(scaled).clip(0, LEVELS).astype("<u2")
    height, width = depth.shape
    return quantized, {"encoding": ENCODING, "width": width, "height": height, "min": low, "max": high}


def encode(depth: np.ndarray, kind: DepthKind = DepthKind.RELATIVE) -> tuple[bytes, dict]:
    """(payload, header fields): what the stream sends (see quantize), with what the values mean
    (``units``: ``m`` for a metric model's metres, else ``relative``)."""
    quantized, header = quantize(depth, kind)
    return quantized.tobytes(), {**header, "units": kind.units}


def decode(payload: bytes, header: dict) -> np.ndarray:
    """What a client does (docs/protocol.md's example): the float depth back from the message."""
    q = np.frombuffer(payload, "<u2").reshape(header["height"], header["width"])
    return header["min"] + q.astype(np.float64) * ((header["max"] - header["min"]) / LEVELS)


# --- the same 16-bit depth in a PNG file: the page's Save raw depth, the client, the video client
PNG_MAPPING = "depth = min + q * (max - min) / 65535"


def write_png16(
    path,
    depth: np.ndarray,
    kind: DepthKind = DepthKind.RELATIVE,
    value_range: tuple[float, float] | None = None,
    **about,
) -> dict:
    """A 16-bit grayscale PNG of ``depth`` (quantize) whose text chunks carry what maps it back
    (``depthstream.min``, ``depthstream.max``, ``depthstream.mapping``, ``depthstream.units``, and
    ``about``'s keys as ``depthstream.<key>``), as the page's Save raw depth writes it. Returns the
    header fields."""
    from PIL import Image, PngImagePlugin  # Pillow: only the tools write files, not the bridge

    quantized, header = quantize(depth, kind, value_range)
    info = PngImagePlugin.PngInfo()
    texts = {
        "min": repr(header["min"]),
        "max": repr(header["max"]),
        "mapping": PNG_MAPPING,
        "units": kind.units,
        **about,
    }
    for key, value in texts.items():
        info.add_text(f"depthstream.{key}", value if isinstance(value, str) else json.dumps(value))
    Image.fromarray(quantized.astype(np.uint16)).save(path, pnginfo=info)
    return header


def read_png16(path) -> np.ndarray:
    """The float depth back from a PNG written by ``write_png16`` (or the page's Save raw depth)."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.text  # type: ignore[attr-defined]  # a PNG's text chunks (PIL's PngImageFile)
        low, high = float(text["depthstream.min"]), float(text["depthstream.max"])
        q = np.asarray(image, dtype=np.uint16)
    return low + q.astype(np.float64) * ((high - low) / LEVELS)
