"""Which runtime serves a model on this machine: ONNX Runtime or OpenVINO, chosen by measurement.

Judged at export on the exporting machine and again wherever the machine differs (its CPU with
the flags that matter, the thread count, both runtimes' versions): the two run the same
model.onnx, timed interleaved (a busy minute falls on both alike), and OpenVINO replaces ONNX
Runtime only when it is at least ``MIN_GAIN`` faster. ONNX Runtime is the incumbent: its cold
shapes, memory and cancellation are what the project's ceilings were measured on, so a gain
within the machines' noise (OpenVINO measured 1.04x on the AVX2-only EPYC) changes nothing.
OpenVINO must first give ONNX Runtime's answer on the speed frame (the same shape, within
``AGREEMENT`` of the range): seen otherwise, OpenVINO 2026.4's CPU plugin returned an empty depth
for Depth Anything 3's graph at one thread and failed to allocate at two.
The verdict is recorded beside the model (``engine.json``), so a restart does not time it again;
an operator can force either runtime (``--engine`` / ``TRITON_ENGINE``; ``python -m export --engine``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from depthstream import accelerator, engines, model_config, runtime
from depthstream.contract import Precision
from depthstream.engines import Engine

log = logging.getLogger(__name__)

CHOICE_FILE = "engine.json"
MIN_GAIN = 0.10  # OpenVINO must take at most 90% of ONNX Runtime's time to serve a model
NO_OPENVINO = "OpenVINO is not installed: ONNX Runtime serves every model"


@dataclass(frozen=True)
class Choice:
    runner: runtime.Runner
    speed: runtime.Speed  # of the chosen runner, here
    why: str  # one line: what was measured, or what was forced


def machine_key(threads: int | None) -> str:
    """What a verdict depends on: this CPU (with its matrix flags), the threads, both runtimes."""
    import onnxruntime as ort

    return (
        f"{os.cpu_count()} x {accelerator.cpu_identity()}, {threads or os.cpu_count()} threads, "
        f"onnxruntime {ort.__version__}, openvino {engines.openvino_version()}"
    )


def read_verdicts(model_dir: Path) -> dict[str, dict]:
    try:
        verdicts = json.loads((model_dir / CHOICE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def recorded_engine(model_dir: Path, threads: int | None) -> Engine | None:
    verdict = read_verdicts(model_dir).get(machine_key(threads))
    try:
        return Engine(verdict["engine"]) if isinstance(verdict, dict) else None
    except (KeyError, ValueError):
        return None


def record_verdict(model_dir: Path, threads: int | None, verdict: dict) -> bool:
    verdicts = read_verdicts(model_dir)
    verdicts[machine_key(threads)] = verdict
    return runtime.write_atomically(
        model_dir / CHOICE_FILE, json.dumps(verdicts, indent=2, sort_keys=True) + "\n"
    )


def openvino_wins(onnxruntime_ms: float, openvino_ms: float) -> bool:
    return openvino_ms <= (1 - MIN_GAIN) * onnxruntime_ms


def judge(model_dir: Path, providers: list[str], threads: int | None) -> Choice:
    """Time both runtimes on the model, interleaved, record both speeds and the verdict."""
    from depthstream.model_config import ONNX_FILE, VERSION

    onnx = model_dir / VERSION / ONNX_FILE
    try:
        disagreement = openvino_disagrees(onnx, providers, threads)
    except RuntimeError as exc:  # OpenVINO could not compile or run this graph
        return cannot_run_openvino(model_dir, providers, threads, exc)
    if disagreement is not None:
        return cannot_run_openvino(model_dir, providers, threads, RuntimeError(disagreement))
    log.info("%s: timing ONNX Runtime against OpenVINO, interleaved", model_dir.name)
    try:
        (ort_speed, ov_speed), _ = runtime.compare(
            [(onnx, runtime.ONNXRUNTIME), (onnx, runtime.OPENVINO_F32)], providers, threads
        )
    except RuntimeError as exc:  # OpenVINO could not compile or run this graph: ONNX Runtime serves it
        return cannot_run_openvino(model_dir, providers, threads, exc)
    for runner, speed in ((runtime.ONNXRUNTIME, ort_speed), (runtime.OPENVINO_F32, ov_speed)):
        key = runtime.machine_description(runner.provider(providers), threads)
        runtime.record_speed(model_dir, key, speed)
    wins = openvino_wins(ort_speed.ms, ov_speed.ms)
    verdict = {
        "engine": str(Engine.OPENVINO if wins else Engine.ONNXRUNTIME),
        "onnxruntime_ms": ort_speed.ms,
        "openvino_ms": ov_speed.ms,
        "judged_at": time.time(),
    }
    if not record_verdict(model_dir, threads, verdict):
        log.warning("%s: read-only, its runtime verdict is not recorded (judged again next start)", model_dir)
    figures = f"OpenVINO {ov_speed.ms:.0f} ms, ONNX Runtime {ort_speed.ms:.0f} ms"
    if wins:
        return Choice(runtime.OPENVINO_F32, ov_speed, f"OpenVINO: {figures}")
    return Choice(
        runtime.ONNXRUNTIME, ort_speed, f"ONNX Runtime: {figures} (OpenVINO must be {MIN_GAIN:.0%} faster)"
    )


AGREEMENT = 1e-3  # of ONNX Runtime's depth range: the two runtimes measured 1e-6..1e-4 apart


def openvino_disagrees(onnx: Path, providers: list[str], threads: int | None) -> str | None:
    """Why OpenVINO's depth on the speed frame is not ONNX Runtime's, or None when it is."""
    import numpy as np

    frame = runtime.speed_frame()[None]
    threads = threads or os.cpu_count() or 1
    answers = []
    for runner in (runtime.ONNXRUNTIME, runtime.OPENVINO_F32):
        session, _ = runtime.open_session(onnx, providers, threads, runner=runner)
        answers.append(runtime.infer(session, frame))
    expected, got = answers
    if got.shape != expected.shape:
        return f"its depth is shaped {list(got.shape)}, ONNX Runtime's {list(expected.shape)}"
    span = max(float(np.ptp(expected)), 1e-12)
    difference = float(np.nanmax(np.abs(got - expected))) / span if np.isfinite(got).all() else float("inf")
    if difference > AGREEMENT:
        return f"its depth differs from ONNX Runtime's by {difference:.1e} of the range"
    return None


def cannot_run_openvino(model_dir: Path, providers: list[str], threads: int | None, exc: Exception) -> Choice:
    """The verdict where OpenVINO fails on a model or answers otherwise (seen: Depth Anything 3's
    graph, whose resize matrices OpenVINO 2026.4's CPU plugin sizes at hundreds of GB at two
    threads, and answers with an empty depth at one): recorded, with why."""
    reason = next((line for line in reversed(str(exc).splitlines()) if line.strip()), type(exc).__name__)
    speed = runtime.speed_here(model_dir, providers, threads)
    verdict = {
        "engine": str(Engine.ONNXRUNTIME),
        "onnxruntime_ms": speed.ms,
        "openvino_failed": reason[:300],
        "judged_at": time.time(),
    }
    record_verdict(model_dir, threads, verdict)
    log.warning("%s: OpenVINO cannot run it (%s): ONNX Runtime serves it", model_dir.name, reason[:200])
    return Choice(runtime.ONNXRUNTIME, speed, f"ONNX Runtime: OpenVINO cannot run it ({reason[:120]})")


def for_model(
    model_dir: Path, providers: list[str], threads: int | None = None, wanted: str = "auto"
) -> Choice:
    """The runner for one served model: an INT8 twin stays on ONNX Runtime (its quantized graph
    ran slower on OpenVINO, 862 against 556 ms on a Xeon with AMX), a BF16 twin is OpenVINO's, any other model gets the
    measured or forced choice."""
    precision = model_config.precision_of(model_dir)
    if precision == Precision.BF16:
        if engines.openvino_version() is None:
            raise RuntimeError(f"{model_dir.name} is a BF16 twin: OpenVINO runs it, and it is not installed")
        speed = runtime.speed_here(model_dir, providers, threads, runtime.OPENVINO_BF16)
        return Choice(runtime.OPENVINO_BF16, speed, "OpenVINO BF16: a BF16 twin")
    if precision == Precision.INT8:
        wanted = str(Engine.ONNXRUNTIME)
    return choose(model_dir, providers, threads, wanted)


def choose(model_dir: Path, providers: list[str], threads: int | None = None, wanted: str = "auto") -> Choice:
    """The runner that serves ``model_dir`` here, with its speed and why.

    A GPU provider stays on ONNX Runtime; ``wanted`` forces one (``auto``: the recorded verdict
    for this machine, or a new one measured now)."""
    if wanted not in engines.ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {', '.join(engines.ENGINE_CHOICES)}, not {wanted!r}")
    on_gpu = providers[0] != accelerator.CPU
    if wanted == Engine.OPENVINO and not on_gpu:
        if engines.openvino_version() is None:
            raise RuntimeError(
                "the engine openvino was asked for, but OpenVINO is not installed (make setup)"
            )
        return Choice(
            runtime.OPENVINO_F32,
            runtime.speed_here(model_dir, providers, threads, runtime.OPENVINO_F32),
            "OpenVINO: forced",
        )
    if wanted == Engine.ONNXRUNTIME or on_gpu or engines.openvino_version() is None:
        why = "forced" if wanted == Engine.ONNXRUNTIME else ("a GPU provider" if on_gpu else NO_OPENVINO)
        return Choice(
            runtime.ONNXRUNTIME, runtime.speed_here(model_dir, providers, threads), f"ONNX Runtime: {why}"
        )
    recorded = recorded_engine(model_dir, threads)
    if recorded is None:
        return judge(model_dir, providers, threads)
    runner = runtime.OPENVINO_F32 if recorded == Engine.OPENVINO else runtime.ONNXRUNTIME
    name = "OpenVINO" if recorded == Engine.OPENVINO else "ONNX Runtime"
    return Choice(
        runner, runtime.speed_here(model_dir, providers, threads, runner), f"{name}: judged before here"
    )
