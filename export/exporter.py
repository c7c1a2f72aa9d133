"""The export of one checkpoint's models (``python -m export`` runs one Exporter a checkpoint):
each FP32 model traced with its fused preprocessing, checked against PyTorch, written into the
repository through a staging directory, timed as served; then its twins judged (export.twins),
the fastest faithful one kept where it beats FP32, every other dropped with its reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from depthstream import engine_choice, runtime
from depthstream import rounds as rounds_of
from depthstream.contract import ModelSpec, Precision, fp32_variants, twins_of
from export import configs, da3, twins
from export.checkpoints import LoadedCheckpoint, load_checkpoint
from export.flops import count_gflops
from export.graph import fused_model, make_exportable
from export.images import parity_images, photograph, resized
from export.onnx_export import OPSET, PIL_PARITY_TOLERANCE, check_parity, export
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
from export.settings import ExportSettings

log = logging.getLogger("export")


def wanted_manifest(spec: ModelSpec, args: ExportSettings) -> Manifest:
    if spec.added:  # --checkpoint: its own source (a hub id or a directory)
        directory = Path(spec.hub_id)
        source = spec.hub_id
        weights = weights_fingerprint(directory) if directory.is_dir() else spec.revision or spec.hub_id
    elif args.random_weights:
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


def speedup(fp32: runtime.Speed, twin: runtime.Speed) -> rounds_of.Ratio:
    """FP32's time over the twin's, per alternating round (one ratio where no rounds are known)."""
    if fp32.runs and len(fp32.runs) == len(twin.runs):
        return rounds_of.ratio(fp32.runs, twin.runs)
    return rounds_of.ratio([fp32.ms], [twin.ms])


def network_input(spec: ModelSpec) -> str:
    return spec.resize.describe()


class Exporter:
    """Exports the variants of one checkpoint, loading the checkpoint at most once: each FP32
    model, then its twins judged against it (export.twins)."""

    def __init__(
        self,
        checkpoint: ModelSpec,
        args: ExportSettings,
        progress: Progress,
        loader: Callable[[], LoadedCheckpoint] | None = None,
    ) -> None:
        self.base = checkpoint
        load = da3.load_checkpoint if checkpoint.model_type == da3.DEPTH_ANYTHING_3 else load_checkpoint
        self.loader = loader or (lambda: load(checkpoint, args.weights, args.random_weights))
        self.args = args
        self.progress = progress
        self.providers = runtime.wanted_providers()
        self.verdicts = twins.Verdicts(args.output, self.providers)
        self.measured_on = ""  # the machine and provider that really ran the timings
        self.twin_machines: dict[str, str] = {}  # each twin timed: the runtime that ran it
        self._loaded: LoadedCheckpoint | None = None

    def checkpoint(self) -> LoadedCheckpoint:
        if self._loaded is None:
            self.progress.step(self.base.name, "loading the checkpoint")
            self._loaded = self.loader()
            make_exportable(self._loaded.model)
        return self._loaded

    def specs(self) -> list[ModelSpec]:
        only = self.args.only
        return [s for s in fp32_variants(self.base) if not only or s.name in only]

    def steps(self) -> int:
        candidates = lambda spec: sum(len(twins.methods(twin)) for twin in self.twin_specs(spec))  # noqa: E731
        return sum(1 + candidates(spec) for spec in self.specs())

    def twin_specs(self, spec: ModelSpec) -> list[ModelSpec]:
        """The candidates built here: no INT8 with ``--int8 never``, no BF16 where it cannot run
        (said once, by main)."""
        if self.args.only:  # the first depth, soon: twins are judged when the rest is exported
            return []
        skipped = set()
        if self.args.int8 == "never":
            skipped.add(Precision.INT8)
        if twins.bf16_unavailable(self.providers):
            skipped.add(Precision.BF16)
        return [twin for twin in twins_of(spec) if twin.precision not in skipped]

    def run(self) -> list[Row]:
        rows = []
        for spec in self.specs():
            rows.append(self.one(spec))
            rows += self.judge_twins(spec)
        return rows

    def one(self, spec: ModelSpec) -> Row:
        model_dir = self.args.output / spec.name
        wanted = wanted_manifest(spec, self.args)
        if not self.args.force and is_up_to_date(model_dir, wanted):
            if not self.args.brief:
                self.progress.finish(spec.name, "up to date (--force exports it again)")
            return self.row(spec, read_manifest(model_dir) or wanted, model_dir, "up to date")
        started = time.perf_counter()
        with StagedModel(self.args.output, spec.name) as staged:
            extra = self.traced(spec, staged)
            self.progress.step(spec.name, "timing a 640x480 frame (ONNX Runtime, OpenVINO)")
            self.measured_on = self.choice(staged.path).speed.machine
            final = self.commit(spec, staged, wanted, started, extra)
        return self.row(spec, read_manifest(final) or wanted, final, "exported")

    def commit(
        self, spec: ModelSpec, staged: StagedModel, wanted: Manifest, started: float, extra: dict
    ) -> Path:
        staged.write_config(configs.to_text(configs.onnxruntime_config(spec, self.args.random_weights)))
        seconds = round(time.perf_counter() - started, 1)
        manifest = dataclasses.replace(
            wanted, torch=torch.__version__, onnx_opset=OPSET, export_seconds=seconds, **extra
        )
        staged.write_manifest(manifest)
        final = staged.commit()
        self.progress.finish(spec.name, f"written in {seconds:.1f} s")
        return final

    def judge_twins(self, fp32: ModelSpec) -> list[Row]:
        """Rows for each twin candidate of ``fp32``: the one kept, and why each other is not."""
        candidates = self.twin_specs(fp32)
        recalled = self.recalled(candidates)
        if recalled is not None:
            return recalled
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            built = [
                self.candidate(spec, method, stack) for spec in candidates for method in twins.methods(spec)
            ]
            faithful = [c for c in built if c.fidelity is not None and c.fidelity.faithful]
            fp32_ms, times, speedups = self.timed_against_fp32(fp32, faithful) if faithful else (0.0, {}, {})
            always = f"{fp32.name}_int8" if self.args.int8 == "always" else None
            timed = twins.with_timing(built, times, speedups)
            kept, why = twins.verdicts(fp32_ms, timed, always)
            rows = [self.settle(c, kept, why, fp32_ms, started) for c in timed]
        if kept is not None:  # one twin per model: a twin of a kind not judged here goes too
            for other in twins_of(fp32):
                if other.name != kept.name and other not in candidates:
                    shutil.rmtree(self.args.output / other.name, ignore_errors=True)
        return rows

    def recalled(self, candidates: list[ModelSpec]) -> list[Row] | None:
        """Rows from earlier verdicts when every candidate was judged on this machine from these
        weights and code already (one kept and up to date, the others dropped): no work."""
        if self.args.force:
            return None
        rows = []
        kinds = [
            twins.Candidate(spec, method=method) for spec in candidates for method in twins.methods(spec)
        ]
        for kind in kinds:
            spec, wanted = kind.spec, wanted_manifest(kind.spec, self.args)
            model_dir = self.args.output / spec.name
            kept = read_manifest(model_dir) if is_up_to_date(model_dir, wanted) else None
            if kept is not None and kept.method == kind.method:
                rows.append(self.row(spec, kept, model_dir, "up to date"))
                continue
            reason = self.verdicts.recalled(kind.label, lambda m, w=wanted: Manifest(**m).same_input(w))
            if reason is None:
                return None
            rows.append(self.dropped_row(kind, wanted, reason, "up to date"))
        for kind, row in zip(kinds, rows, strict=True):
            if row.status == "up to date" and row.ms_here is None:
                # said in --brief too (what make demo uses): a model the page will not offer
                said = row.twin.removeprefix("dropped: ")
                self.progress.finish(kind.label, f"dropped before: {said} ({twins.JUDGE_AGAIN})")
            elif not self.args.brief:
                self.progress.finish(kind.label, "up to date (--force exports it again)")
        return rows

    def candidate(self, spec: ModelSpec, method: str, stack: contextlib.ExitStack) -> twins.Candidate:
        """One twin built in a staging directory and checked against FP32 on photographs."""
        staged = stack.enter_context(StagedModel(self.args.output, spec.name))
        fp32_onnx = self.args.output / spec.fp32_twin / VERSION / ONNX_FILE
        label = twins.Candidate(spec, method=method).label
        if method == twins.STATIC and not twins.static_targets(fp32_onnx):  # else ONNX Runtime takes all
            return twins.Candidate(spec, method=method, unavailable="no network MatMul with constant weights")
        self.progress.step(label, f"building the {spec.precision.upper()} twin")
        twins.build(spec, fp32_onnx, staged.onnx_path, method)
        self.progress.step(label, "checking it against FP32 on photographs")
        fidelity = twins.measure_fidelity(spec, fp32_onnx, staged.onnx_path, parity_images())
        return twins.Candidate(spec, staged, fidelity, method=method)

    def settle(
        self, candidate: twins.Candidate, kept, why: dict[str, str], fp32_ms: float, started: float
    ) -> Row:
        """Commit the kept twin; drop (and remember) every other candidate."""
        spec = candidate.spec
        wanted = wanted_manifest(spec, self.args)
        if kept is not None and candidate.label == kept.label:
            staged = candidate.staged
            # a kept twin was built, judged faithful and timed
            assert staged is not None and candidate.fidelity is not None and candidate.ms is not None
            machine = self.twin_machines.get(candidate.label, self.measured_on)  # the twin's own runtime
            runtime.record_speed(staged.path, self.speed_key(spec), runtime.Speed(candidate.ms, machine))
            extra = {
                "parity_error": candidate.fidelity.max_error,
                "correlation": candidate.fidelity.correlation,
                "fp32_ms": fp32_ms,
                "twin_ms": candidate.ms,
                "gflops": self.fp32_gflops(spec),  # the same graph's work, in other numbers
                "method": candidate.method,
            }
            final = self.commit(spec, staged, wanted, started, extra)
            self.verdicts.forget(candidate.label)
            return self.row(spec, read_manifest(final) or wanted, final, "exported")
        reason = why[candidate.label]
        if kept is None or kept.name != spec.name:  # an older, kept-then twin (not this run's)
            shutil.rmtree(self.args.output / spec.name, ignore_errors=True)
        if candidate.path is not None:  # built and judged: remembered, not judged again for a week
            self.verdicts.remember(candidate.label, dataclasses.asdict(wanted), reason)
        self.progress.finish(candidate.label, f"dropped: {reason}")
        return self.dropped_row(candidate, wanted, reason, "not written")

    def fp32_gflops(self, twin: ModelSpec) -> float:
        fp32 = read_manifest(self.args.output / twin.fp32_twin)
        return fp32.gflops if fp32 is not None else 0.0

    def speed_key(self, spec: ModelSpec) -> str:
        runner = twins.RUNNERS.get(spec.precision, runtime.ONNXRUNTIME)
        return runtime.machine_description(runner.provider(self.providers))

    def dropped_row(self, candidate: twins.Candidate, wanted: Manifest, reason: str, status: str) -> Row:
        spec = candidate.spec
        return Row(
            candidate.label,
            network_input(spec),
            "-",
            None,
            f"dropped: {reason}",
            wanted.random_weights,
            status,
        )

    def choice(self, model_dir: Path) -> engine_choice.Choice:
        """What serves the model here (measured when not judged yet on this machine)."""
        return engine_choice.for_model(model_dir, self.providers, wanted=self.args.engine)

    def speed_here(self, model_dir: Path) -> tuple[float, str]:
        choice = self.choice(model_dir)
        self.measured_on = choice.speed.machine
        return choice.speed.ms, choice.why.split(":")[0]

    def row(self, spec: ModelSpec, manifest: Manifest, model_dir: Path, status: str) -> Row:
        if spec.is_twin:
            parity = f"{manifest.parity_error:.1e} vs FP32"
            how = f" ({manifest.method})" if manifest.method else ""
            twin = f"kept{how}: {manifest.twin_ms:.0f} vs {manifest.fp32_ms:.0f} ms FP32"
        else:
            parity, twin = f"{manifest.parity_error:.1e} vs PyTorch", "-"
        ms, served_by = self.speed_here(model_dir)
        return Row(
            spec.name, network_input(spec), parity, ms, twin, manifest.random_weights, status, served_by
        )

    def traced(self, spec: ModelSpec, staged: StagedModel) -> dict:
        fused = fused_model(self.checkpoint().model, spec)
        self.progress.step(spec.name, f"tracing to ONNX (opset {OPSET}, network input {spec.resize.size})")
        frame = resized(photograph("astronaut"), 640, 480)
        export(fused, staged.onnx_path, frame)
        self.progress.step(spec.name, "checking ONNX Runtime against PyTorch on photographs")
        tolerance = PIL_PARITY_TOLERANCE if spec.resize.pil else None
        parity = check_parity(fused, staged.onnx_path, parity_images(), tolerance)
        return {"parity_error": parity, "gflops": round(count_gflops(fused, frame), 2)}

    def timed_against_fp32(
        self, fp32: ModelSpec, faithful: list[twins.Candidate]
    ) -> tuple[float, dict[str, float], dict[str, rounds_of.Ratio]]:
        """(FP32 ms, each twin's ms, each twin's speed-up over FP32 per round; by label). The verdict comes from all of them timed run for run,
        interleaved: a burst of other load falls on every one alike. The figures come from FP32
        timed on its own, as it is served: its own row's figure and a second one must agree within
        25% (else a third is taken), and the least is kept, since other load only ever slows a run;
        a twin's figure is FP32's times the interleaved ratio."""
        for candidate in faithful:
            self.progress.step(candidate.label, "timing it against FP32, interleaved")
        fp32_dir = self.args.output / fp32.name
        fp32_onnx = fp32_dir / VERSION / ONNX_FILE
        served = self.choice(fp32_dir).runner  # a twin must beat FP32 as it is served here
        fp32_key = runtime.machine_description(served.provider(self.providers))
        built = [(c.path, twins.RUNNERS[c.spec.precision]) for c in faithful if c.path is not None]
        pairs = [(fp32_onnx, served), *built]  # a faithful twin was built: each has its path
        (fp32_i, *twins_i), _ = runtime.compare(pairs, self.providers)
        recorded = runtime.recorded_speed(fp32_dir, fp32_key)
        lone = [] if recorded is None else [recorded.ms]
        lone.append(runtime.measure(fp32_onnx, self.providers, runner=served)[0].ms)
        if len(lone) == 2 and not runtime.agree(*lone):
            log.info("%s: timed at %.0f and %.0f ms: the machine was busy; once more", fp32.name, *lone)
            lone.append(runtime.measure(fp32_onnx, self.providers, runner=served)[0].ms)
        fp32_ms = min(lone)
        self.measured_on = fp32_i.machine
        runtime.record_speed(fp32_dir, fp32_key, runtime.Speed(fp32_ms, fp32_i.machine))
        times = {
            c.label: round(fp32_ms * t.ms / fp32_i.ms, 1) for c, t in zip(faithful, twins_i, strict=True)
        }
        speedups = {c.label: speedup(fp32_i, t) for c, t in zip(faithful, twins_i, strict=True)}
        self.twin_machines = {c.label: t.machine for c, t in zip(faithful, twins_i, strict=True)}
        return fp32_ms, times, speedups

    def refreshed(self, row: Row) -> Row:
        """A row's time as recorded now: judging a twin may have timed its FP32 model again
        after that model's row was made."""
        if row.ms_here is None:
            return row
        return dataclasses.replace(row, ms_here=self.choice(self.args.output / row.model).speed.ms)
