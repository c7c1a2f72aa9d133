"""``python -m export``: PyTorch checkpoints -> ONNX with fused preprocessing -> Triton repository.

Each checkpoint gives several served models: quality presets (network input sizes) in FP32,
and for each at most one reduced-precision twin (INT8 or BF16), the fastest faithful one where
it is faster here (export.twins).
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from depthstream import engine_choice, engines, runtime
from depthstream.contract import EXPORTABLE, variants_of
from depthstream.settings import SettingsError
from export import added, report, twins
from export.checkpoints import CheckpointError
from export.exporter import Exporter
from export.onnx_export import ParityError
from export.report import Progress, Row
from export.repository import (
    ONNX_FILE,
    VERSION,
)
from export.settings import ExportSettings, parse_settings

log = logging.getLogger("export")


def first_model(checkpoints: list[str]) -> str:
    """The quickest to export and serve of these checkpoints' models: relative depth before
    metres (a camera's scene, whatever its size), then the smallest network input."""
    candidates = [spec for name in checkpoints for spec in variants_of(name) if not spec.is_twin]
    return min(candidates, key=lambda s: (s.depth != "relative", s.resize.size)).name


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_settings(argv, description=__doc__)
    except SettingsError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    report.quiet_third_parties(args.verbose)
    if args.listing or args.remove or args.checkpoint:
        return catalog_command(args)
    names = args.checkpoints
    if args.first:
        args = dataclasses.replace(args, only=(first_model(names),))
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


def catalog_command(args: ExportSettings) -> int:
    """--list, --remove NAME or --checkpoint ID_OR_DIR: the repository as a catalog."""
    try:
        if args.remove:
            removed = added.remove(args.output, args.remove)
            print(f"export: removed {', '.join(removed)} from {args.output}")
        if args.checkpoint:
            progress = Progress(0)
            spec, rows = added.export_checkpoint(args, progress)
            print(f"\n{report.render(rows)}\n")
            print(
                f"export: {spec.name} added from {spec.hub_id}: {spec.depth_meaning['kind']} depth "
                f"({spec.depth_meaning['units']}), network input {spec.resize.describe()}. "
                f"A running Triton loads it at its next start (make demo loads new models itself)."
            )
    except (CheckpointError, ParityError) as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        print(f"export: {args.output} is as it was", file=sys.stderr)
        return 2
    if args.listing:
        print(added.listing(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
