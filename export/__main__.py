"""``python -m export``: PyTorch checkpoints -> ONNX with fused preprocessing -> Triton repository."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from bridge.contract import MODELS, ModelSpec
from export import configs
from export.checkpoints import CheckpointError, load_checkpoint
from export.graph import FusedDepthModel, make_exportable
from export.images import parity_images, photograph, resized
from export.onnx_export import OPSET, ParityError, check_parity, export
from export.repository import Manifest, StagedModel, code_fingerprint, is_up_to_date, weights_fingerprint

log = logging.getLogger("export")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--model", choices=[*MODELS, "all"], default="all", help="which model to export (default: all)"
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="DIR",
        help="local checkpoint directory (save_pretrained layout), for one --model",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="smoke mode: real architectures with random weights, MEANINGLESS output",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("model_repository"),
        metavar="DIR",
        help="Triton model repository to write (default: model_repository)",
    )
    parser.add_argument("--force", action="store_true", help="re-export models that are up to date")
    args = parser.parse_args(argv)
    if args.weights is not None and args.model == "all":
        parser.error("--weights DIR holds one checkpoint: name it with --model")
    if args.weights is not None and args.random_weights:
        parser.error("--weights and --random-weights exclude each other")
    return args


def wanted_manifest(spec: ModelSpec, args: argparse.Namespace) -> Manifest:
    if args.random_weights:
        source = weights = "random"
    elif args.weights is not None:
        source = str(args.weights.resolve())
        weights = weights_fingerprint(args.weights) if args.weights.is_dir() else "missing"
    else:
        source = weights = spec.hub_id
    return Manifest(
        model=spec.name,
        source=source,
        weights=weights,
        random_weights=args.random_weights,
        code=code_fingerprint(),
    )


def export_model(spec: ModelSpec, args: argparse.Namespace) -> None:
    wanted = wanted_manifest(spec, args)
    if not args.force and is_up_to_date(args.output / spec.name, wanted):
        log.info("%s: up to date in %s (use --force to export again)", spec.name, args.output)
        return
    started = time.perf_counter()
    checkpoint = load_checkpoint(spec, args.weights, args.random_weights)
    fused = FusedDepthModel(make_exportable(checkpoint.model), spec).eval()
    with StagedModel(args.output, spec.name) as staged:
        log.info("%s: exporting ONNX (opset %d)", spec.name, OPSET)
        export(fused, staged.onnx_path, resized(photograph("astronaut"), 640, 480))
        log.info("%s: checking ONNX Runtime against PyTorch on photographs", spec.name)
        error = check_parity(fused, staged.onnx_path, parity_images())
        production = configs.onnxruntime_config(spec, checkpoint.random_weights)
        staged.write_config(configs.to_text(production))
        seconds = time.perf_counter() - started
        staged.write_manifest(
            Manifest(
                **{
                    **wanted.__dict__,
                    "torch": torch.__version__,
                    "onnx_opset": OPSET,
                    "parity_error": error,
                    "export_seconds": round(seconds, 1),
                }
            )
        )
        final = staged.commit()
    log.info("%s: wrote %s in %.1f s (max parity error %.1e of range)", spec.name, final, seconds, error)
    if checkpoint.random_weights:
        log.warning("%s: RANDOM WEIGHTS: this model's depth is MEANINGLESS (smoke mode)", spec.name)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    names = list(MODELS) if args.model == "all" else [args.model]
    try:
        for name in names:
            export_model(MODELS[name], args)
    except (CheckpointError, ParityError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
