"""Query Triton directly over gRPC: ``python -m client photo.jpg --model depth_anything_v2_small``.

An example for users who talk to Triton themselves: it sends the raw RGB pixels (preprocessing
is inside the model), writes a colorized PNG and a 16-bit PNG of the depth at the photo's own
size (a photo beyond the model contract's limits is first scaled down to fit, and its depth
comes back at that size), and prints the round trip and the server's own compute time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from bridge.colorize import COLORMAPS, DEFAULT_COLORMAP, colorize, to_uint16
from depthstream.contract import (
    DEFAULT_MODEL,
    INPUT_DTYPE,
    INPUT_NAME,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MODELS,
    OUTPUT_NAME,
)


def infer(
    client: grpcclient.InferenceServerClient, model: str, rgb: np.ndarray, timeout_s: float = 30.0
) -> np.ndarray:
    """One RGB uint8 [H, W, 3] image in, depth float32 [H, W] out."""
    batch = np.ascontiguousarray(rgb[None])
    request = grpcclient.InferInput(INPUT_NAME, list(batch.shape), INPUT_DTYPE)
    request.set_data_from_numpy(batch)
    result = client.infer(
        model, [request], outputs=[grpcclient.InferRequestedOutput(OUTPUT_NAME)], client_timeout=timeout_s
    )
    return result.as_numpy(OUTPUT_NAME)[0]


def server_compute_ms(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, float]:
    """(successful requests, total compute ns) from Triton's statistics for this model."""
    stats = client.get_inference_statistics(model).model_stats[0].inference_stats
    compute = stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
    return stats.success.count, compute


def fit_to_contract(rgb: np.ndarray) -> np.ndarray:
    """Scale a photo larger than the contract allows (a side, the pixels) down to fit, keeping
    its aspect: Triton refuses larger images, and the network sees at most 518x1288 anyway."""
    height, width = rgb.shape[:2]
    scale = min(1.0, MAX_IMAGE_SIDE / max(height, width), (MAX_IMAGE_PIXELS / (height * width)) ** 0.5)
    if scale >= 1.0:
        return rgb
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    print(f"note: {width}x{height} is beyond the model contract's limits; sending it at {size[0]}x{size[1]}")
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__)
    parser.add_argument("image", type=Path, help="a JPEG, PNG or WebP file")
    parser.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL)
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    parser.add_argument("--colormap", choices=list(COLORMAPS), default=DEFAULT_COLORMAP)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: beside the image")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rgb = cv2.imread(str(args.image), cv2.IMREAD_COLOR_RGB)
    if rgb is None:
        print(f"error: cannot read {args.image} as an image", file=sys.stderr)
        return 2
    rgb = fit_to_contract(rgb)
    out_dir = args.output_dir or args.image.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    client = grpcclient.InferenceServerClient(args.url)
    try:
        before = server_compute_ms(client, args.model)
        started = time.perf_counter()
        depth = infer(client, args.model, rgb)
        round_trip_ms = (time.perf_counter() - started) * 1e3
        after = server_compute_ms(client, args.model)
    except InferenceServerException as exc:
        print(f"error: Triton at {args.url}: {exc.message()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    color_path = out_dir / f"{args.image.stem}.{args.model}.png"
    raw_path = out_dir / f"{args.image.stem}.{args.model}.depth16.png"
    cv2.imwrite(str(color_path), colorize(depth, args.colormap))
    cv2.imwrite(str(raw_path), to_uint16(depth))
    server_ms = (after[1] - before[1]) / 1e6 if after[0] > before[0] else float("nan")
    print(
        f"{args.model}: {rgb.shape[1]}x{rgb.shape[0]} -> depth {depth.shape[1]}x{depth.shape[0]}, "
        f"round trip {round_trip_ms:.1f} ms, server compute {server_ms:.1f} ms"
    )
    print(f"wrote {color_path} and {raw_path} (16-bit, min-max scaled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
