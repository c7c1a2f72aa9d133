"""``python -m export``: PyTorch checkpoints -> ONNX with fused preprocessing -> Triton repository.

Each checkpoint gives several served models: quality presets (network input sizes) in FP32,
and INT8 twins where they are faster (see depthstream.contract.MODELS).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

from depthstream.contract import CHECKPOINTS, ModelSpec, Precision, variants_of
from export import configs, quantize
from export.checkpoints import CheckpointError, LoadedCheckpoint, load_checkpoint
from export.graph import FusedDepthModel, make_exportable
from export.images import parity_images, photograph, resized
from export.onnx_export import OPSET, ParityError, check_parity, export
from export.repository import (
    ONNX_FILE,
    VERSION,
    Manifest,
    StagedModel,
    code_fingerprint,
    is_up_to_date,
    weights_fingerprint,
)

log = logging.getLogger("export")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--model",
        choices=[*CHECKPOINTS, "all"],
        default="all",
        help="which checkpoint to export, with its presets (default: all)",
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
    parser.add_argument(
        "--int8",
        choices=["auto", "always", "never"],
        default="auto",
        help="INT8 twins: only where faster than FP32 here (auto), always, or never",
    )
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


class Exporter:
    """Exports the variants of one checkpoint, loading the checkpoint at most once."""

    def __init__(self, checkpoint: ModelSpec, args: argparse.Namespace) -> None:
        self.base = checkpoint
        self.args = args
        self._loaded: LoadedCheckpoint | None = None

    def checkpoint(self) -> LoadedCheckpoint:
        if self._loaded is None:
            self._loaded = load_checkpoint(self.base, self.args.weights, self.args.random_weights)
            make_exportable(self._loaded.model)
        return self._loaded

    def run(self) -> None:
        for spec in variants_of(self.base.name):
            if spec.precision == Precision.INT8 and self.args.int8 == "never":
                continue
            wanted = wanted_manifest(spec, self.args)
            if not self.args.force and is_up_to_date(self.args.output / spec.name, wanted):
                log.info("%s: up to date in %s (use --force to export again)", spec.name, self.args.output)
                continue
            started = time.perf_counter()
            with StagedModel(self.args.output, spec.name) as staged:
                if spec.precision == Precision.INT8:
                    extra = self.quantized(spec, staged)
                    if extra is None:
                        continue  # not committed: StagedModel discards it
                else:
                    extra = self.traced(spec, staged)
                random_weights = self.args.random_weights
                staged.write_config(configs.to_text(configs.onnxruntime_config(spec, random_weights)))
                seconds = round(time.perf_counter() - started, 1)
                staged.write_manifest(
                    dataclasses.replace(
                        wanted, torch=torch.__version__, onnx_opset=OPSET, export_seconds=seconds, **extra
                    )
                )
                final = staged.commit()
            log.info("%s: wrote %s in %.1f s %s", spec.name, final, seconds, extra)
            if random_weights:
                log.warning("%s: RANDOM WEIGHTS: this model's depth is MEANINGLESS (smoke mode)", spec.name)

    def traced(self, spec: ModelSpec, staged: StagedModel) -> dict:
        fused = FusedDepthModel(self.checkpoint().model, spec).eval()
        log.info("%s: exporting ONNX (opset %d, network input %d)", spec.name, OPSET, spec.resize.size)
        export(fused, staged.onnx_path, resized(photograph("astronaut"), 640, 480))
        log.info("%s: checking ONNX Runtime against PyTorch on photographs", spec.name)
        return {"parity_error": check_parity(fused, staged.onnx_path, parity_images())}

    def quantized(self, spec: ModelSpec, staged: StagedModel) -> dict | None:
        fp32_path = self.args.output / spec.fp32_twin / VERSION / ONNX_FILE
        log.info("%s: quantizing %s to INT8", spec.name, fp32_path)
        quantize.quantize(fp32_path, staged.onnx_path)
        error = quantize.error_vs_fp32(fp32_path, staged.onnx_path, parity_images())
        frame = resized(photograph("astronaut"), 640, 480)
        fp32_ms, int8_ms = quantize.median_ms(fp32_path, frame), quantize.median_ms(staged.onnx_path, frame)
        log.info(
            "%s: INT8 %.0f ms vs FP32 %.0f ms at 640x480, error %.2e of range",
            spec.name,
            int8_ms,
            fp32_ms,
            error,
        )
        if self.args.int8 == "auto" and int8_ms >= fp32_ms:
            log.info("%s: INT8 is not faster here; not offered", spec.name)
            shutil.rmtree(self.args.output / spec.name, ignore_errors=True)  # an older, faster-then twin
            return None
        return {"parity_error": error, "fp32_ms": round(fp32_ms, 1), "int8_ms": round(int8_ms, 1)}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    names = list(CHECKPOINTS) if args.model == "all" else [args.model]
    try:
        for name in names:
            Exporter(CHECKPOINTS[name], args).run()
    except (CheckpointError, ParityError, quantize.QuantizationError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
