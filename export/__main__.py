"""``python -m export``: PyTorch checkpoints -> ONNX with fused preprocessing -> Triton repository.

Each checkpoint gives several served models: quality presets (network input sizes) in FP32,
and INT8 twins where they are faster (see depthstream.contract.MODELS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

from depthstream import engine_choice, engines, runtime
from depthstream.contract import EXPORTABLE, ModelSpec, Precision, variants_of
from export import configs, quantize, report
from export.checkpoints import CheckpointError, LoadedCheckpoint, load_checkpoint
from export.graph import FusedDepthModel, make_exportable
from export.images import parity_images, photograph, resized
from export.onnx_export import OPSET, ParityError, check_parity, export
from export.report import Progress, Row
from export.repository import (
    ONNX_FILE,
    VERSION,
    Manifest,
    StagedModel,
    code_fingerprint,
    is_up_to_date,
    read_manifest,
    weights_fingerprint,
)

log = logging.getLogger("export")
VERDICT_TTL_S = 7 * 24 * 3600  # a dropped INT8 twin is judged again after a week
JUDGE_AGAIN = "judged again in a week; now: make export EXPORT_ARGS=--force"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
        help="INT8 twins: only where faster than FP32 here (auto), always, or never",
    )
    parser.add_argument(
        "--engine",
        choices=engines.ENGINE_CHOICES,
        default="auto",
        help="what serves each FP32 model: the faster here, measured (auto), onnxruntime or openvino",
    )
    parser.add_argument(
        "--brief", action="store_true", help="one line instead of the table when every model is up to date"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' own logs (quantizer, tracer, ONNX Runtime)",
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


def network_input(spec: ModelSpec) -> str:
    if spec.resize.keep_aspect:
        return f"{spec.resize.size} (sides <= {spec.resize.max_side})"
    return f"{spec.resize.size}x{spec.resize.size}"


class Exporter:
    """Exports the variants of one checkpoint, loading the checkpoint at most once."""

    def __init__(self, checkpoint: ModelSpec, args: argparse.Namespace, progress: Progress) -> None:
        self.base = checkpoint
        self.args = args
        self.progress = progress
        self.providers = runtime.wanted_providers()
        self.measured_on = ""  # the machine and provider that really ran the timings
        self._loaded: LoadedCheckpoint | None = None

    def checkpoint(self) -> LoadedCheckpoint:
        if self._loaded is None:
            self.progress.step(self.base.name, "loading the checkpoint")
            self._loaded = load_checkpoint(self.base, self.args.weights, self.args.random_weights)
            make_exportable(self._loaded.model)
        return self._loaded

    def specs(self) -> list[ModelSpec]:
        return [
            spec
            for spec in variants_of(self.base.name)
            if not (spec.precision == Precision.INT8 and self.args.int8 == "never")
        ]

    def run(self) -> list[Row]:
        return [self.one(spec) for spec in self.specs()]

    def one(self, spec: ModelSpec) -> Row:
        model_dir = self.args.output / spec.name
        wanted = wanted_manifest(spec, self.args)
        if not self.args.force and is_up_to_date(model_dir, wanted):
            if not self.args.brief:
                self.progress.finish(spec.name, "up to date (--force exports it again)")
            return self.row(spec, read_manifest(model_dir) or wanted, model_dir, "up to date")
        dropped = None if self.args.force else self.dropped_before(spec, wanted)
        if dropped is not None:  # judged on this machine from these weights and code already
            # said in --brief too (what make demo uses): a model the page will not offer
            self.progress.finish(spec.name, f"INT8 dropped before: {dropped} ({JUDGE_AGAIN})")
            return self.dropped_row(spec, wanted, dropped, "up to date")
        started = time.perf_counter()
        with StagedModel(self.args.output, spec.name) as staged:
            if spec.precision == Precision.INT8:
                extra = self.quantized(spec, staged)
                if isinstance(extra, str):  # not faster: not committed, StagedModel discards it
                    self.progress.finish(spec.name, f"INT8 dropped: {extra} ({JUDGE_AGAIN})")
                    self.remember_drop(spec, wanted, extra)
                    return self.dropped_row(spec, wanted, extra, "not written")
            else:
                extra = self.traced(spec, staged)
            if spec.precision != Precision.INT8:  # an INT8 twin was timed as it was judged
                self.progress.step(spec.name, "timing a 640x480 frame (ONNX Runtime, OpenVINO)")
                self.measured_on = self.choice(staged.path).speed.machine
            staged.write_config(configs.to_text(configs.onnxruntime_config(spec, self.args.random_weights)))
            seconds = round(time.perf_counter() - started, 1)
            manifest = dataclasses.replace(
                wanted, torch=torch.__version__, onnx_opset=OPSET, export_seconds=seconds, **extra
            )
            staged.write_manifest(manifest)
            final = staged.commit()
        self.drop_marker(spec).unlink(missing_ok=True)
        self.progress.finish(spec.name, f"written in {seconds:.1f} s")
        return self.row(spec, manifest, final, "exported")

    # An INT8 twin that is not faster is not written; a marker beside the models remembers the
    # verdict (for these weights, this code, this machine), so that the next run does not
    # quantize and time it again. Dot-named: Triton and the serving side never see it.
    def drop_marker(self, spec: ModelSpec) -> Path:
        return self.args.output / f".dropped-{spec.name}.json"

    def remember_drop(self, spec: ModelSpec, wanted: Manifest, reason: str) -> None:
        verdict = {
            "manifest": dataclasses.asdict(wanted),
            "machine": self.machine_key(),
            "reason": reason,
            "judged_at": time.time(),
        }
        self.drop_marker(spec).write_text(json.dumps(verdict, indent=2) + "\n")

    def dropped_before(self, spec: ModelSpec, wanted: Manifest) -> str | None:
        if spec.precision != Precision.INT8 or self.args.int8 != "auto":
            return None
        try:
            verdict = json.loads(self.drop_marker(spec).read_text())
            # judged again on another machine (or settings), from other weights or code, or
            # once the verdict is a week old: one unlucky timing does not decide for good
            same = (
                Manifest(**verdict["manifest"]).same_input(wanted)
                and verdict["machine"] == self.machine_key()
                and time.time() - float(verdict["judged_at"]) < VERDICT_TTL_S
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return str(verdict["reason"]) if same else None

    def dropped_row(self, spec: ModelSpec, wanted: Manifest, reason: str, status: str) -> Row:
        return Row(
            spec.name, network_input(spec), "-", None, f"dropped: {reason}", wanted.random_weights, status
        )

    def machine_key(self) -> str:
        return runtime.machine_description(self.providers[0])

    def choice(self, model_dir: Path) -> engine_choice.Choice:
        """What serves the model here (measured when not judged yet on this machine)."""
        return engine_choice.for_model(model_dir, self.providers, wanted=self.args.engine)

    def speed_here(self, model_dir: Path) -> tuple[float, str]:
        choice = self.choice(model_dir)
        self.measured_on = choice.speed.machine
        return choice.speed.ms, choice.why.split(":")[0]

    def row(self, spec: ModelSpec, manifest: Manifest, model_dir: Path, status: str) -> Row:
        if spec.precision == Precision.INT8:
            parity = f"{manifest.parity_error:.1e} vs FP32"
            int8 = f"kept: {manifest.int8_ms:.0f} vs {manifest.fp32_ms:.0f} ms FP32"
        else:
            parity, int8 = f"{manifest.parity_error:.1e} vs PyTorch", "-"
        ms, served_by = self.speed_here(model_dir)
        return Row(
            spec.name, network_input(spec), parity, ms, int8, manifest.random_weights, status, served_by
        )

    def traced(self, spec: ModelSpec, staged: StagedModel) -> dict:
        fused = FusedDepthModel(self.checkpoint().model, spec).eval()
        self.progress.step(spec.name, f"tracing to ONNX (opset {OPSET}, network input {spec.resize.size})")
        export(fused, staged.onnx_path, resized(photograph("astronaut"), 640, 480))
        self.progress.step(spec.name, "checking ONNX Runtime against PyTorch on photographs")
        return {"parity_error": check_parity(fused, staged.onnx_path, parity_images())}

    def quantized(self, spec: ModelSpec, staged: StagedModel) -> dict | str:
        """The manifest's INT8 fields, or why the INT8 twin is not offered."""
        fp32_path = self.args.output / spec.fp32_twin / VERSION / ONNX_FILE
        self.progress.step(spec.name, "quantizing to INT8")
        quantize.quantize(fp32_path, staged.onnx_path)
        self.progress.step(spec.name, "checking INT8 against FP32")
        error = quantize.error_vs_fp32(fp32_path, staged.onnx_path, parity_images())
        self.progress.step(spec.name, "timing INT8 against FP32, interleaved")
        fp32_ms, int8_ms, faster = self.timed_against_fp32(spec, staged.onnx_path)
        if self.args.int8 == "auto" and not faster:
            shutil.rmtree(self.args.output / spec.name, ignore_errors=True)  # an older, faster-then twin
            return f"not faster here ({int8_ms:.0f} vs {fp32_ms:.0f} ms FP32)"
        speed = runtime.Speed(int8_ms, self.measured_on or self.machine_key())
        runtime.record_speed(staged.path, self.machine_key(), speed)
        return {"parity_error": error, "fp32_ms": fp32_ms, "int8_ms": int8_ms}

    def timed_against_fp32(self, spec: ModelSpec, int8_path: Path) -> tuple[float, float, bool]:
        """(FP32 ms, INT8 ms, INT8 faster). The verdict comes from the two timed run for run,
        interleaved: a burst of other load falls on both alike. The figures come from FP32 timed
        on its own, as it is served: its own row's figure and a second one must agree within 25%
        (else a third is taken), and the least is kept, since other load only ever slows a run;
        INT8's figure is FP32's times the interleaved ratio."""
        fp32_dir = self.args.output / spec.fp32_twin
        fp32_onnx = fp32_dir / VERSION / ONNX_FILE
        served = self.choice(fp32_dir).runner  # the twin must beat FP32 as it is served here
        fp32_key = runtime.machine_description(served.provider(self.providers))
        (fp32_i, int8_i), _ = runtime.compare([(fp32_onnx, served), int8_path], self.providers)
        recorded = runtime.recorded_speed(fp32_dir, fp32_key)
        lone = [] if recorded is None else [recorded.ms]
        lone.append(runtime.measure(fp32_onnx, self.providers, runner=served)[0].ms)
        if len(lone) == 2 and not runtime.agree(*lone):
            log.info("%s: timed at %.0f and %.0f ms: the machine was busy; once more", spec.fp32_twin, *lone)
            lone.append(runtime.measure(fp32_onnx, self.providers, runner=served)[0].ms)
        fp32_ms = min(lone)
        self.measured_on = fp32_i.machine
        runtime.record_speed(fp32_dir, fp32_key, runtime.Speed(fp32_ms, fp32_i.machine))
        return fp32_ms, round(fp32_ms * int8_i.ms / fp32_i.ms, 1), int8_i.ms < fp32_i.ms

    def refreshed(self, row: Row) -> Row:
        """A row's time as recorded now: judging an INT8 twin may have timed its FP32 model
        again after that model's row was made."""
        if row.ms_here is None:
            return row
        return dataclasses.replace(row, ms_here=self.choice(self.args.output / row.model).speed.ms)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report.quiet_third_parties(args.verbose)
    names = list(EXPORTABLE) if args.model == "all" else [args.model]
    if args.random_weights:
        print("export: RANDOM WEIGHTS (smoke mode): the real architectures, MEANINGLESS depth")
    if engines.openvino_version() is None:
        print(f"export: {engine_choice.NO_OPENVINO} (make setup installs it)")
    progress = Progress(0)
    exporters = [Exporter(EXPORTABLE[name], args, progress) for name in names]
    progress.total = sum(len(exporter.specs()) for exporter in exporters)
    rows: list[Row] = []
    try:
        for exporter in exporters:
            rows += [exporter.refreshed(row) for row in exporter.run()]
    except (CheckpointError, ParityError, quantize.QuantizationError) as exc:
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
