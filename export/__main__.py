"""``python -m export``: PyTorch checkpoints -> ONNX with fused preprocessing -> Triton repository.

Each checkpoint gives several served models: quality presets (network input sizes) in FP32,
and for each at most one reduced-precision twin (INT8 or BF16), the fastest faithful one where
it is faster here (export.twins).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from depthstream import engine_choice, engines, runtime
from depthstream.contract import EXPORTABLE, MODELS, variants_of
from export import report, twins
from export.checkpoints import CheckpointError
from export.exporter import Exporter
from export.onnx_export import ParityError
from export.report import Progress, Row
from export.repository import (
    ONNX_FILE,
    VERSION,
)

log = logging.getLogger("export")


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "--model",
        choices=[*EXPORTABLE, "all"],
        default="all",
        help="which checkpoint to export, with its presets (default: all: relative and metric)",
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
        help="the INT8 candidate twin: judged with the others (auto), kept when faithful (always), or never built",
    )
    parser.add_argument(
        "--engine",
        choices=engines.ENGINE_CHOICES,
        default="auto",
        help="what serves each FP32 model: the faster here, measured (auto), onnxruntime or openvino",
    )
    parser.add_argument(
        "--only",
        type=lambda text: frozenset(name.strip() for name in text.split(",") if name.strip()),
        default=frozenset(),
        metavar="NAME[,NAME]",
        help="only these models of the checkpoints asked, without their twins (make demo's first "
        "depth: the rest follows)",
    )
    parser.add_argument(
        "--first",
        action="store_true",
        help="only the fastest model of the checkpoints asked (relative depth first), without twins: "
        "what make demo serves at once, the rest following",
    )
    parser.add_argument(
        "--brief", action="store_true", help="one line instead of the table when every model is up to date"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' own logs (quantizer, tracer, ONNX Runtime)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = arguments()
    args = parser.parse_args(argv)
    if args.weights is not None and args.model == "all":
        parser.error("--weights DIR holds one checkpoint: name it with --model")
    if args.weights is not None and args.random_weights:
        parser.error("--weights and --random-weights exclude each other")
    unknown = sorted(args.only - {spec.name for spec in MODELS.values() if not spec.is_twin})
    if unknown:
        parser.error(f"--only takes models of the contract (not twins); not {', '.join(unknown)}")
    return args


def first_model(checkpoints: list[str]) -> str:
    """The quickest to export and serve of these checkpoints' models: relative depth before
    metres (a camera's scene, whatever its size), then the smallest network input."""
    candidates = [spec for name in checkpoints for spec in variants_of(name) if not spec.is_twin]
    return min(candidates, key=lambda s: (s.depth != "relative", s.resize.size)).name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report.quiet_third_parties(args.verbose)
    names = list(EXPORTABLE) if args.model == "all" else [args.model]
    if args.first:
        args.only = frozenset({first_model(names)})
    if args.random_weights:
        print("export: RANDOM WEIGHTS (smoke mode): the real architectures, MEANINGLESS depth")
    if engines.openvino_version() is None:
        print(f"export: {engine_choice.NO_OPENVINO} (make setup installs it)")
    progress = Progress(0)
    exporters = [Exporter(EXPORTABLE[name], args, progress) for name in names]
    exporters = [exporter for exporter in exporters if exporter.specs()]  # --only may leave some out
    no_bf16 = twins.bf16_unavailable(exporters[0].providers)
    if no_bf16:
        print(f"export: no BF16 twins: {no_bf16}")
    progress.total = sum(exporter.steps() for exporter in exporters)
    rows: list[Row] = []
    try:
        for exporter in exporters:
            rows += [exporter.refreshed(row) for row in exporter.run()]
    except (CheckpointError, ParityError) as exc:
        print(f"\nexport: error: {exc}", file=sys.stderr)
        return 2
    if args.brief and all(row.status == "up to date" for row in rows):
        print(f"export: {len(rows)} models up to date in {args.output} (without --brief: the table)")
        return 0
    machine = next((e.measured_on for e in exporters if e.measured_on), "this machine")
    print(
        f"\n{report.render(rows)}\n\nEach model is in {args.output}/<model>/ (config.pbtxt, {VERSION}/{ONNX_FILE}, "
        f"{runtime.SPEED_FILE}). ms/frame: the model alone on one 640x480 frame, as served, on {machine}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
