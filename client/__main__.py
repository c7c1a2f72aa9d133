"""Query Triton directly over gRPC: ``python -m client photo.jpg --model depth_anything_v2_small``.

An example for users who talk to Triton themselves: it sends the raw RGB pixels (preprocessing
is inside the model), writes a colorized PNG and a 16-bit PNG of the depth at the photo's own
size (a photo beyond the model contract's limits is first scaled down to fit, and its depth
comes back at that size), and prints the round trip and the server's own compute time.

Given a video file or a folder of images instead, it writes a depth video (or a folder of depth
images), side by side with the input with ``--side-by-side``, the raw depth of every frame with
``--raw-dir``, a coloured point cloud of every frame with ``--ply`` (binary PLY and the
intrinsics as JSON: metres for a metric model), with batches and several requests in flight (client/frames.py), a progress bar
and a final line with frames per second. A video's depth holds still: each frame aligned to the
video and one range for all of it (``--per-frame``: each frame as the model answers it).
"""

from __future__ import annotations

import asyncio
import sys
import time

import cv2
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import frames
from client.settings import ClientSettings, parse_settings
from depthstream import model_config
from depthstream.contract import INTRINSICS_NAME, OUTPUT_NAME, register, spec_of
from depthstream.render import camera as cameras
from depthstream.render import pointcloud, raw_depth
from depthstream.render.colorize import colorize
from depthstream.request import depth_request
from depthstream.settings import SettingsError


def infer(
    client: grpcclient.InferenceServerClient, model: str, rgb: np.ndarray, timeout_s: float = 30.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """One RGB uint8 [H, W, 3] image in; depth float32 [H, W] out, and the camera (3x3, in the
    image's pixels) from a model that estimates it (INTRINSICS), else None."""
    camera = spec_of(model).intrinsics
    result = client.infer(model, **depth_request(rgb[None], intrinsics=camera), client_timeout=timeout_s)
    return result.as_numpy(OUTPUT_NAME)[0], result.as_numpy(INTRINSICS_NAME)[0] if camera else None


def server_compute_ms(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, float]:
    """(successful requests, total compute ns) from Triton's statistics for this model."""
    stats = client.get_inference_statistics(model).model_stats[0].inference_stats
    compute = stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
    return stats.success.count, compute


def learn_model(url: str, model: str) -> str | None:
    """Read what the served model is from its config (the repository is the catalog: an added
    model's depth kind is there), and say so when it carries random weights (a smoke export),
    as the page and make demo do. Returns what stands in the way, or None."""
    try:
        client = grpcclient.InferenceServerClient(url)
        try:
            config = client.get_model_config(model).config
        finally:
            client.close()
    except InferenceServerException as exc:
        return f"Triton at {url}: {exc.message()} (python -m export --list says what the repository serves)"
    try:
        register(model_config.spec_of(config))
    except ValueError as exc:
        return f"{model} is served, but its config says nothing usable: {exc}"
    if model_config.is_random_weights(config):
        print(
            f"warning: {model} has RANDOM WEIGHTS (a smoke export): its depth is meaningless", file=sys.stderr
        )
    return None


def fit_to_contract(rgb: np.ndarray) -> np.ndarray:
    """A photo larger than the contract allows, scaled down to fit (with a note saying so)."""
    fitted = frames.fit_to_contract(rgb)
    if fitted.shape != rgb.shape:
        print(
            f"note: {rgb.shape[1]}x{rgb.shape[0]} is beyond the model contract's limits; "
            f"sending it at {fitted.shape[1]}x{fitted.shape[0]}"
        )
    return fitted


def run_many(args: ClientSettings) -> int:
    """A video or a folder of images: many frames, in batches, several requests in flight."""
    suffix = ".mp4" if frames.is_video(args.image) else ""
    source = args.image.resolve()  # `.` has no name to build on
    output = args.output or source.with_name(f"{source.name}.{args.model}{suffix}")
    job = frames.Job(
        args.image,
        output,
        args.model,
        args.url,
        args.colormap,
        args.side_by_side,
        args.raw_dir,
        args.batch,
        args.in_flight,
        ply_dir=args.ply,
        hfov_deg=args.hfov,
        steady=not args.per_frame,
    )
    try:
        outcome = asyncio.run(frames.run(job))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InferenceServerException as exc:
        print(f"error: Triton at {args.url}: {exc.message()}", file=sys.stderr)
        return 1
    raw = f", raw depth in {args.raw_dir}" if args.raw_dir else ""
    raw += f", point clouds in {args.ply}" if args.ply else ""
    print(
        f"{outcome.frames} frames in {outcome.seconds:.1f} s: {outcome.fps:.2f} frames/s "
        f"({args.model}, batches of {outcome.batch}, {outcome.in_flight} in flight) -> {output}{raw}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_settings(argv, description=__doc__)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.image.exists():
        print(f"error: {args.image} does not exist", file=sys.stderr)
        return 2
    problem = learn_model(args.url, args.model)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.image.is_dir() or frames.is_video(args.image):
        return run_many(args)
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
        depth, intrinsics = infer(client, args.model, rgb)
        round_trip_ms = (time.perf_counter() - started) * 1e3
        after = server_compute_ms(client, args.model)
    except InferenceServerException as exc:
        print(f"error: Triton at {args.url}: {exc.message()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    color_path = out_dir / f"{args.image.stem}.{args.model}.png"
    raw_path = out_dir / f"{args.image.stem}.{args.model}.depth16.png"
    kind = spec_of(args.model).depth
    cv2.imwrite(str(color_path), colorize(depth, args.colormap, kind=kind))
    raw_depth.write_png16(raw_path, depth, kind, model=args.model)
    if args.ply is not None:
        args.ply.mkdir(parents=True, exist_ok=True)
        stem = args.ply / f"{args.image.stem}.{args.model}"
        # --hfov pins the field of view; an estimate that is not finite is not used
        estimate = intrinsics if args.hfov is None and cameras.usable(intrinsics) else None
        hfov = args.hfov or pointcloud.DEFAULT_HFOV_DEG
        pointcloud.write_cloud(stem, depth, rgb, args.model, kind, hfov, estimate, frame=args.image.name)
        print(f"wrote {stem}.ply and {stem}.json (the intrinsics; units: {kind.units})")
    if intrinsics is not None:
        fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
        hfov_estimated = cameras.hfov_deg(float(fx), rgb.shape[1])
        print(
            f"camera (estimated by {args.model}): fx {fx:.1f}, fy {fy:.1f}, cx {cx:.1f}, cy {cy:.1f} px, "
            f"horizontal field of view {hfov_estimated:.1f} deg"
        )
    server_ms = (after[1] - before[1]) / 1e6 if after[0] > before[0] else float("nan")
    print(
        f"{args.model}: {rgb.shape[1]}x{rgb.shape[0]} -> depth {depth.shape[1]}x{depth.shape[0]}, "
        f"round trip {round_trip_ms:.1f} ms, server compute {server_ms:.1f} ms"
    )
    print(f"wrote {color_path} and {raw_path} (16-bit; min, max and the mapping in its text chunks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
