"""Reduced-precision twins: at most one per model, the fastest faithful one on this machine.

Two kinds of candidate, built from the FP32 model's own model.onnx:

- ``*_int8``: ONNX Runtime dynamic quantization of the MatMuls (the ViT's attention and MLP, most
  of the compute); the DPT head's convolutions stay FP32, where ConvInteger is slower on CPU.
- ``*_bf16``: the same graph on OpenVINO with the network in BF16 and the fused pre/post
  processing kept in FP32 (``depthstream.engines.stays_fp32``); only where OpenVINO's CPU plugin
  runs BF16 (a BF16 matrix engine: AMX or AVX512-BF16). The exported graph run wholly in BF16
  was measured broken (correlation 0.964), the bare network faithful (0.9999), on a Xeon with AMX.

A candidate is faithful when, on photographs, its depth correlates >= ``MIN_CORRELATION`` with
its FP32 model's (run by ONNX Runtime, the reference) and differs by at most ``MAX_ERROR`` of the
range. The twin kept is the fastest faithful candidate that is faster than its FP32 model as
served here, all timed interleaved; every other candidate is dropped with one line saying why,
and the export goes on. A verdict is remembered beside the models for a week on this machine
(``.dropped-<name>.json``), so the next run does not build and time it again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depthstream import accelerator, engine_choice, engines, runtime
from depthstream.contract import ModelSpec, Precision
from export.repository import StagedModel

MIN_CORRELATION = 0.999
MAX_ERROR = 5e-2  # of the FP32 model's depth range (the metric INT8 twins measured 3.35e-2)
VERDICT_TTL_S = 7 * 24 * 3600  # a dropped twin is judged again after a week
JUDGE_AGAIN = "judged again in a week; now: make export EXPORT_ARGS=--force"
RUNNERS = {Precision.INT8: runtime.ONNXRUNTIME, Precision.BF16: runtime.OPENVINO_BF16}


@dataclass(frozen=True)
class Fidelity:
    correlation: float  # the worst over the photographs
    max_error: float  # the worst max |twin - fp32| over the photographs, as a fraction of range

    @property
    def faithful(self) -> bool:
        return self.correlation >= MIN_CORRELATION and self.max_error <= MAX_ERROR

    def __str__(self) -> str:
        return f"correlation {self.correlation:.4f}, max {self.max_error:.1e} of range"


def fidelity(twin: list[np.ndarray], fp32: list[np.ndarray]) -> Fidelity:
    """How close a twin's depths are to its FP32 model's, image by image (the worst of each)."""
    correlations, errors = [], []
    for a, b in zip(twin, fp32, strict=True):
        a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        span = max(float(b.max() - b.min()), 1e-12)
        errors.append(float(np.abs(a - b).max()) / span)
        flat = a.std() < 1e-12 or b.std() < 1e-12
        correlations.append(float(np.allclose(a, b)) if flat else float(np.corrcoef(a, b)[0, 1]))
    return Fidelity(min(correlations), max(errors))


@dataclass(frozen=True)
class Candidate:
    spec: ModelSpec
    staged: StagedModel | None = None  # where it was built; None when it cannot be built here
    fidelity: Fidelity | None = None
    ms: float | None = None  # at 640x480, from the interleaved timing against FP32
    unavailable: str = ""  # why it could not be built

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def path(self) -> Path | None:
        return None if self.staged is None else self.staged.onnx_path


def verdicts(
    fp32_ms: float, candidates: list[Candidate], always: str | None = None
) -> tuple[Candidate | None, dict[str, str]]:
    """(the twin to keep or None, why each other candidate is dropped). ``always``: a twin kept
    when faithful even if not faster (``--int8 always``, for tests)."""
    why: dict[str, str] = {}
    contenders = []
    for candidate in candidates:
        if candidate.unavailable:
            why[candidate.name] = candidate.unavailable
        elif candidate.fidelity is None or not candidate.fidelity.faithful:
            why[candidate.name] = (
                f"not faithful: {candidate.fidelity} (needs >= {MIN_CORRELATION}, <= {MAX_ERROR:.0e})"
            )
        elif candidate.name != always and (candidate.ms is None or candidate.ms >= fp32_ms):
            shown = "?" if candidate.ms is None else f"{candidate.ms:.0f}"
            why[candidate.name] = f"not faster here ({shown} vs {fp32_ms:.0f} ms FP32)"
        else:
            contenders.append(candidate)
    if not contenders:
        return None, why
    forced = [c for c in contenders if c.name == always]
    kept = forced[0] if forced else min(contenders, key=lambda c: c.ms or 0.0)
    for other in contenders:
        if other is not kept:
            why[other.name] = f"the faster twin here is {kept.name} ({kept.ms:.0f} vs {other.ms:.0f} ms)"
    return kept, why


def bf16_unavailable(providers: list[str]) -> str:
    """Why no BF16 twin is built here, or "" where one can be."""
    if providers[0] != accelerator.CPU:
        return "a GPU runs the FP32 graph (TensorRT FP16 where asked)"
    if engines.openvino_version() is None:
        return "OpenVINO is not installed"
    if not engines.bf16_capable():
        return f"no BF16 matrix engine on this CPU ({accelerator.cpu_identity()})"
    return ""


def build(candidate: ModelSpec, fp32_onnx: Path, target: Path) -> None:
    """Write the candidate's model.onnx: quantized (INT8), or the FP32 graph itself (BF16: the
    precision is OpenVINO's, chosen when it compiles)."""
    if candidate.precision == Precision.INT8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(fp32_onnx), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
        )
        return
    try:
        os.link(fp32_onnx, target)  # no second copy of the weights
    except OSError:
        shutil.copyfile(fp32_onnx, target)


def measure_fidelity(
    candidate: ModelSpec, fp32_onnx: Path, twin_onnx: Path, images: list[np.ndarray]
) -> Fidelity:
    threads = os.cpu_count() or 1
    reference, _ = runtime.open_session(fp32_onnx, [accelerator.CPU], threads)
    twin, _ = runtime.open_session(twin_onnx, [accelerator.CPU], threads, runner=RUNNERS[candidate.precision])
    return fidelity(
        [runtime.infer(twin, image[None]) for image in images],
        [runtime.infer(reference, image[None]) for image in images],
    )


class Verdicts:
    """The remembered verdicts on dropped twins, beside the models (dot-named: Triton and the
    serving side never see them)."""

    def __init__(self, output: Path, providers: list[str]) -> None:
        self.output = output
        self.machine = f"{engine_choice.machine_key(None)}, {providers[0]}"

    def marker(self, name: str) -> Path:
        return self.output / f".dropped-{name}.json"

    def remember(self, name: str, manifest: dict, reason: str) -> None:
        verdict = {"manifest": manifest, "machine": self.machine, "reason": reason, "judged_at": time.time()}
        self.marker(name).write_text(json.dumps(verdict, indent=2) + "\n")

    def forget(self, name: str) -> None:
        self.marker(name).unlink(missing_ok=True)

    def recalled(self, name: str, same_input) -> str | None:
        """The reason a twin was dropped, if judged on this machine from the same input
        (``same_input(manifest dict)``) less than a week ago."""
        try:
            verdict = json.loads(self.marker(name).read_text())
            same = (
                same_input(verdict["manifest"])
                and verdict["machine"] == self.machine
                and time.time() - float(verdict["judged_at"]) < VERDICT_TTL_S
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return str(verdict["reason"]) if same else None


def with_ms(candidates: list[Candidate], times: dict[str, float]) -> list[Candidate]:
    return [dataclasses.replace(c, ms=times.get(c.name)) for c in candidates]
