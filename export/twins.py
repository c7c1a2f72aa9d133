"""Reduced-precision twins: at most one per model, the fastest faithful one on this machine.

Three candidates, built from the FP32 model's own model.onnx:

- ``*_int8`` (dynamic): ONNX Runtime dynamic quantization of the MatMuls (the ViT's attention and
  MLP, most of the compute); the DPT head's convolutions stay FP32, where ConvInteger is slower on
  CPU. Each activation's scale is computed at run time.
- ``*_int8`` (static QDQ): ONNX Runtime static quantization in QDQ form, calibrated on
  photographs at several sizes: per-channel INT8 weights, UINT8 activations with fixed scales
  (no scale computed per run), the network's MatMuls with a constant operand; the convolutions,
  the fused preprocessing and the resize back stay FP32 (``static_targets`` says why).
- ``*_bf16``: the same graph on OpenVINO with the network in BF16 and the fused pre/post
  processing kept in FP32 (``depthstream.engines.stays_fp32``); only where OpenVINO's CPU plugin
  runs BF16 (a BF16 matrix engine: AMX or AVX512-BF16). The exported graph run wholly in BF16
  was measured broken (correlation 0.964), the bare network faithful (0.9999), on a Xeon with AMX.

A candidate is faithful when, on photographs, its depth correlates >= ``MIN_CORRELATION`` with
its FP32 model's (run by ONNX Runtime, the reference) and differs by at most ``MAX_ERROR`` of the
range. The twin kept is the fastest faithful candidate that is faster than its FP32 model as
served here by at least ``MIN_GAIN`` and by more than its spread (the lower quartile of the
per-round ratios above 1), all timed in alternating rounds: a user should not trade fidelity for
noise. Every other candidate is dropped with one line saying why,
and the export goes on. A verdict is remembered beside the models for a week on this machine
(``.dropped-<name>[-<method>].json``), so the next run does not build and time it again.
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
from depthstream import rounds as rounds_of
from depthstream.contract import INPUT_NAME, ModelSpec, Precision
from export.repository import StagedModel

MIN_CORRELATION = 0.999
MIN_GAIN = 0.10  # a twin must be at least this much faster than FP32 (the median per-round ratio)
MAX_ERROR = 5e-2  # of the FP32 model's depth range (the metric INT8 twins measured 3.35e-2)
VERDICT_TTL_S = 7 * 24 * 3600  # a dropped twin is judged again after a week
JUDGE_AGAIN = "judged again in a week; now: make export EXPORT_ARGS=--force"
RUNNERS = {Precision.INT8: runtime.ONNXRUNTIME, Precision.BF16: runtime.OPENVINO_BF16}
DYNAMIC, STATIC = "dynamic", "static QDQ"  # the two ways an INT8 candidate is made
# photographs the fidelity judgement does not use (export.images.parity_images), at four sizes
CALIBRATION = (("rocket", 640, 480), ("cat", 480, 640), ("clock", 800, 600), ("gravel", 320, 240))
NETWORK_PREFIX = "/network/"  # the fused graphs' network nodes (export.fused: self.network)


def methods(spec: ModelSpec) -> list[str]:
    """The ways a candidate of this precision is made: INT8 dynamic and static; BF16 one way."""
    return [DYNAMIC, STATIC] if spec.precision == Precision.INT8 else [""]


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
    method: str = ""  # INT8: DYNAMIC or STATIC
    speedup: rounds_of.Ratio | None = None  # FP32's time over its own, per round

    @property
    def name(self) -> str:
        """The name it is served under, whichever way it was made."""
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.spec.name} ({self.method})" if self.method else self.spec.name

    @property
    def fast_enough(self) -> bool:
        """Faster than FP32 by at least MIN_GAIN, and by more than the spread of the rounds."""
        return self.speedup is not None and self.speedup.median >= 1 + MIN_GAIN and self.speedup.low > 1

    @property
    def path(self) -> Path | None:
        return None if self.staged is None else self.staged.onnx_path


def verdicts(
    fp32_ms: float, candidates: list[Candidate], always: str | None = None
) -> tuple[Candidate | None, dict[str, str]]:
    """(the twin to keep or None, why each other candidate is dropped, by its label). ``always``:
    a twin's name kept when faithful even if not faster (``--int8 always``, for tests)."""
    why: dict[str, str] = {}
    contenders = []
    for candidate in candidates:
        if candidate.speedup is None and candidate.ms:  # timed without rounds: its one ratio
            candidate = dataclasses.replace(candidate, speedup=rounds_of.ratio([fp32_ms], [candidate.ms]))
        if candidate.unavailable:
            why[candidate.label] = candidate.unavailable
        elif candidate.fidelity is None or not candidate.fidelity.faithful:
            why[candidate.label] = (
                f"not faithful: {candidate.fidelity} (needs >= {MIN_CORRELATION}, <= {MAX_ERROR:.0e})"
            )
        elif candidate.name != always and not candidate.fast_enough:
            shown = "?" if candidate.ms is None else f"{candidate.ms:.0f}"
            measured = "" if candidate.speedup is None else f"; {candidate.speedup.describe()} FP32's speed"
            why[candidate.label] = (
                f"not faster here by {MIN_GAIN:.0%} and its spread ({shown} vs {fp32_ms:.0f} ms FP32{measured})"
            )
        else:
            contenders.append(candidate)
    if not contenders:
        return None, why
    forced = [c for c in contenders if c.name == always]
    kept = min(forced or contenders, key=lambda c: c.ms or 0.0)
    for other in contenders:
        if other is not kept:
            why[other.label] = f"the faster twin here is {kept.label} ({kept.ms:.0f} vs {other.ms:.0f} ms)"
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


def build(candidate: ModelSpec, fp32_onnx: Path, target: Path, method: str = DYNAMIC) -> None:
    """Write the candidate's model.onnx: quantized (INT8, ``method``), or the FP32 graph itself
    (BF16: the precision is OpenVINO's, chosen when it compiles)."""
    if candidate.precision == Precision.INT8:
        if method == STATIC:
            quantize_static_qdq(fp32_onnx, target)
            return
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(fp32_onnx), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
        )
        return
    try:
        os.link(fp32_onnx, target)  # no second copy of the weights
    except OSError:
        shutil.copyfile(fp32_onnx, target)


def calibration_frames() -> list[np.ndarray]:
    """Photographs at the sizes a stream brings (landscape, portrait, larger, smaller)."""
    from export.images import photograph, resized

    return [resized(photograph(name), width, height) for name, width, height in CALIBRATION]


def static_targets(fp32_onnx: Path) -> list[str]:
    """The nodes the static twin quantizes: the network's MatMuls whose second operand is a
    constant (its weights). Left in FP32: attention's products of two activations, the fused
    pre/post processing (outside the network), and the convolutions. With the convolutions in,
    Depth-Anything-V2-Small measured both slower and unfaithful on an AVX2 CPU (1.11x FP32 and
    correlation 0.9989 for the neck's; 0.9982 with the output layers too), against 1.16x and 0.9995
    for the MatMuls alone (AMD EPYC, 2 cores, 2026-12-07)."""
    import onnx

    graph = onnx.load(str(fp32_onnx), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    return [
        node.name
        for node in graph.node
        if node.name.startswith(NETWORK_PREFIX) and node.op_type == "MatMul" and node.input[1] in constants
    ]


def quantize_static_qdq(fp32_onnx: Path, target: Path) -> None:
    """ONNX Runtime static quantization, QDQ form, calibrated on photographs (MinMax)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Photographs(CalibrationDataReader):
        def __init__(self) -> None:
            self.frames = iter(calibration_frames())

        def get_next(self) -> dict | None:
            frame = next(self.frames, None)
            return None if frame is None else {INPUT_NAME: frame[None]}

    quantize_static(
        str(fp32_onnx),
        str(target),
        Photographs(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=static_targets(fp32_onnx),  # never empty: empty would mean every node
        extra_options={"MatMulConstBOnly": True},
    )


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

    def marker(self, label: str) -> Path:
        """``name`` or ``name (method)``: .dropped-name.json, .dropped-name-static-qdq.json"""
        slug = label.replace(" (", "-").rstrip(")").replace(" ", "-").lower()
        return self.output / f".dropped-{slug}.json"

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


def with_timing(
    candidates: list[Candidate], times: dict[str, float], speedups: dict[str, rounds_of.Ratio]
) -> list[Candidate]:
    """The candidates with their times and speed-ups over FP32, by label."""
    return [dataclasses.replace(c, ms=times.get(c.label), speedup=speedups.get(c.label)) for c in candidates]
