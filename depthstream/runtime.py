"""How every served model runs in ONNX Runtime, and how fast it runs on this machine.

One place for the session settings (the embedded Triton, the export's timings and the
benchmark all use them), the execution providers with their fallback, and the speed record
that each exported model keeps per machine (``speed.json`` beside ``config.pbtxt``): the bridge
picks the page's default model from it.

ONNX Runtime is imported inside the functions: the bridge imports this package without it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depthstream import accelerator, engines
from depthstream import rounds as rounds_of
from depthstream.contract import INPUT_NAME, MAX_BATCH_SIZE, MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, OUTPUT_NAME
from depthstream.engines import Engine, InferencePrecision

log = logging.getLogger(__name__)

SPEED_FILE = "speed.json"
SPEED_FRAME = (480, 640)  # height, width: the frame every speed is measured on
SPEED_ROUNDS = 8  # timed runs of each model (after one warm-up)
AGREEMENT = 0.25  # one model timed twice in one export: further apart than this, time it again


# What changes a timing besides the machine: part of every speed record's key, so a figure taken
# under other session settings is never served (bump it when the settings below change).
SESSION_SETTINGS = "cpu arena, no memory pattern, arena shrunk after each run"


def session_options(threads: int):
    """ONNX Runtime's settings for every served model (the benchmark measures with these too).

    Chosen by measurement (the cold-shapes issue, DA-V2-S, 2 cores; bench's cold worst case
    repeats it): with no CPU arena and the memory pattern on (the old settings), the first run at
    every new input shape paid 2-3x a warm one: the pattern is planned per shape on that first
    run, and each of its allocations went to the system. With the arena on and the pattern off, a
    new shape costs what a known one does; shrinking the arena after every run (``run_options``)
    gives its memory back, so the peak stays that of the request in hand, not the largest seen."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    return options


_RUN_OPTIONS = None


def run_options():
    """Per-run settings for every served run: the CPU arena shrinks back after each run (a
    per-run option: every place that runs a served session must pass it; use ``infer``)."""
    global _RUN_OPTIONS
    if _RUN_OPTIONS is None:
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        _RUN_OPTIONS = options
    return _RUN_OPTIONS


def infer(session, batch: np.ndarray) -> np.ndarray:
    """One served run: uint8 [N, H, W, 3] -> depth [N, H, W], with the served run options."""
    return infer_outputs(session, batch, [OUTPUT_NAME])[0]


def infer_outputs(session, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """One served run of these outputs (DEPTH, and INTRINSICS where the model has it)."""
    return session.run(names, {INPUT_NAME: batch}, run_options())


def provider_options(provider: str, cache_dir: Path) -> dict:
    """Options that keep a GPU provider's cost per new input shape bounded (not measured here:
    the machines this was built on have no GPU)."""
    if provider == accelerator.CUDA:
        # heuristic convolution algorithms: no exhaustive search for every new frame size; the
        # arena grows by what is asked, not in powers of two
        return {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}
    if provider == accelerator.TENSORRT:
        # one engine for the contract's whole range of shapes, built once and cached: without a
        # profile, TensorRT builds a new engine for every new frame size
        low, high = MIN_IMAGE_SIDE, MAX_IMAGE_SIDE
        return {
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_profile_min_shapes": f"{INPUT_NAME}:1x{low}x{low}x3",
            "trt_profile_opt_shapes": f"{INPUT_NAME}:1x{SPEED_FRAME[0]}x{SPEED_FRAME[1]}x3",
            "trt_profile_max_shapes": f"{INPUT_NAME}:{MAX_BATCH_SIZE}x{high}x{high}x3",
        }
    return {}


def wanted_providers(device: str = "auto") -> list[str]:
    import onnxruntime as ort

    return accelerator.providers_for(device, ort.get_available_providers(), accelerator.tensorrt_present())


def _preload_gpu_libraries(providers: list[str]) -> None:
    """onnxruntime-gpu finds pip's CUDA and cuDNN libraries only once they are loaded."""
    import onnxruntime as ort

    if providers[0] != accelerator.CPU and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - a missing library shows as the fallback below
            log.debug("preloading the CUDA libraries failed: %s", exc)


def fallback_warning(path: Path | str, wanted: list[str], running: list[str], why: list[str]) -> str | None:
    """The warning to give when the first provider asked for is not the one that runs."""
    if running[:1] == wanted[:1]:
        return None
    reason = "; ".join(why) or (
        "ONNX Runtime's messages above say why: a missing CUDA/cuDNN/TensorRT library or a driver too old"
    )
    return (
        f"{wanted[0]} could not start, running on {running[0] if running else 'nothing'} instead "
        f"(much slower): {reason}. `make setup` installs ONNX Runtime's GPU build where nvidia-smi "
        "lists a GPU"
    )


@dataclass(frozen=True)
class Runner:
    """What runs a served model: the engine, and OpenVINO's precision (ONNX Runtime runs the
    graph's own types)."""

    engine: Engine = Engine.ONNXRUNTIME
    precision: InferencePrecision = InferencePrecision.F32

    def provider(self, providers: list[str]) -> str:
        """The first provider asked for, as speed records name it."""
        if self.engine == Engine.OPENVINO:
            return f"{engines.OPENVINO_PREFIX} {self.precision}"
        return providers[0]


ONNXRUNTIME = Runner()
OPENVINO_F32 = Runner(Engine.OPENVINO)
OPENVINO_BF16 = Runner(Engine.OPENVINO, InferencePrecision.BF16)


def open_session(
    path: Path | str,
    providers: list[str],
    threads: int,
    cache_dir: Path | None = None,
    runner: Runner = ONNXRUNTIME,
):
    """(session, warning or None): a session on the best of ``providers`` that starts, or on
    OpenVINO's CPU plugin when the runner says so (``cache_dir``: its compiled models)."""
    if runner.engine == Engine.OPENVINO:
        return engines.OpenVinoSession(path, threads, runner.precision, cache_dir), None
    import onnxruntime as ort

    _preload_gpu_libraries(providers)
    # TensorRT's engines: never beside the exported model (the repository may be read-only)
    cache = cache_dir or Path(tempfile.gettempdir()) / "depthstream-trt-cache"
    options = [provider_options(provider, cache) for provider in providers]
    with warnings.catch_warnings(record=True) as caught:  # "not in available provider names"
        warnings.simplefilter("always")
        session = ort.InferenceSession(
            str(path), session_options(threads), providers=providers, provider_options=options
        )
    why = [str(warning.message) for warning in caught]
    return session, fallback_warning(path, providers, session.get_providers(), why)


def machine_description(provider: str, threads: int | None = None) -> str:
    """Who measured a speed, and how: a record measured elsewhere (or otherwise) is stale here.
    The CPU is named with its matrix flags (AMX, AVX512-BF16, VNNI): one model name covers
    Xeons with and without AMX."""
    device = f"{os.cpu_count()} x {accelerator.cpu_identity()}, {threads or os.cpu_count()} threads"
    if engines.is_openvino(provider):
        return f"{device}, {provider}, openvino {engines.openvino_version()}, {engines.OPENVINO_SETTINGS}"
    import onnxruntime as ort

    if provider != accelerator.CPU:
        device += f", {', '.join(accelerator.gpu_names()) or 'no GPU listed'}"
    return f"{device}, {provider}, onnxruntime {ort.__version__}, {SESSION_SETTINGS}"


def interleaved_ms(sessions: list, frame: np.ndarray, rounds: int = SPEED_ROUNDS) -> list[list[float]]:
    """Each session's run times, taken in rounds that run every session once in turn: a burst
    of other load on the machine falls on every candidate alike, not on one block of runs."""
    batch = frame[None]
    return rounds_of.alternate([functools.partial(infer, session, batch) for session in sessions], rounds)


def robust_ms(times: list[float]) -> float:
    """The lower quartile of run times. Other load only ever makes a run slower, so the low runs
    are the model's own time: a burst over up to three quarters of the runs leaves this where it
    was, where the median moves once it covers half (the minimum is steadier still, but one lucky
    run would decide)."""
    return float(np.percentile(times, 25))


def agree(a_ms: float, b_ms: float) -> bool:
    return abs(a_ms - b_ms) <= AGREEMENT * min(a_ms, b_ms)


@dataclass(frozen=True)
class Speed:
    ms: float  # median milliseconds per 640x480 frame, the model alone, as served here
    machine: str  # machine_description() of where it was measured
    runs: tuple[float, ...] = field(default=(), compare=False)  # per round, where timed in rounds


def speed_frame() -> np.ndarray:
    """A deterministic 640x480 RGB frame (the speed does not depend on the content)."""
    height, width = SPEED_FRAME
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    gray = ((rows + cols) / 2).astype(np.uint8)
    return np.stack([gray, np.flipud(gray), np.fliplr(gray)], axis=-1)


def measure(
    onnx_path: Path, providers: list[str], threads: int | None = None, runner: Runner = ONNXRUNTIME
) -> tuple[Speed, str | None]:
    """(this model's speed here, the fallback warning if any), with the served settings."""
    speeds, warning = compare([(onnx_path, runner)], providers, threads)
    return speeds[0], warning


def compare(
    candidates: list[Path] | list[tuple[Path, Runner]], providers: list[str], threads: int | None = None
) -> tuple[list[Speed], str | None]:
    """Several models' (or one model's on several runners) speeds here, timed interleaved (an
    INT8 twin against its FP32 model, OpenVINO against ONNX Runtime: a burst of other load cannot
    favour one of them), and the first fallback warning if any."""
    threads = threads or os.cpu_count() or 1
    pairs = [item if isinstance(item, tuple) else (item, ONNXRUNTIME) for item in candidates]
    opened = [open_session(path, providers, threads, runner=runner) for path, runner in pairs]
    sessions = [session for session, _ in opened]
    warning = next((w for _, w in opened if w), None)
    times = interleaved_ms(sessions, speed_frame())
    return [
        Speed(
            round(robust_ms(runs), 1), machine_description(session.get_providers()[0], threads), tuple(runs)
        )
        for session, runs in zip(sessions, times, strict=True)
    ], warning


def speed_here(
    model_dir: Path, providers: list[str], threads: int | None = None, runner: Runner = ONNXRUNTIME
) -> Speed:
    """This machine's recorded speed for a model; measured (and recorded) when there is none.

    Recorded under what was asked (this machine, these threads, the first provider wanted), with
    what really ran: a GPU provider that falls back is not timed again at every start."""
    recorded = recorded_speed(model_dir, machine_description(runner.provider(providers), threads))
    if recorded is not None:
        return recorded
    log.info("%s: no speed recorded for this machine; timing a 640x480 frame", model_dir.name)
    return measure_and_record(model_dir, providers, threads, runner)


def measure_and_record(
    model_dir: Path, providers: list[str], threads: int | None = None, runner: Runner = ONNXRUNTIME
) -> Speed:
    """Time a model here and record it beside the model (saying why if a GPU provider fell back)."""
    from depthstream.model_config import ONNX_FILE, VERSION

    speed, warning = measure(model_dir / VERSION / ONNX_FILE, providers, threads, runner)
    if warning:
        log.warning("%s", warning)
    if not record_speed(model_dir, machine_description(runner.provider(providers), threads), speed):
        log.warning("%s: read-only, its speed here is not recorded (measured again next start)", model_dir)
    return speed


def read_speeds(model_dir: Path) -> dict[str, Speed]:
    """What was asked (machine_description) -> the speed measured, as recorded beside the model."""
    try:
        records = json.loads((model_dir / SPEED_FILE).read_text())
        return {
            str(key): Speed(float(entry["ms"]), str(entry["measured_on"])) for key, entry in records.items()
        }
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def record_speed(model_dir: Path, key: str, speed: Speed) -> bool:
    """Add this machine's speed to the model's record; False when the repository is read-only."""
    records = {k: {"ms": v.ms, "measured_on": v.machine} for k, v in read_speeds(model_dir).items()}
    records[key] = {"ms": speed.ms, "measured_on": speed.machine}
    return write_atomically(model_dir / SPEED_FILE, json.dumps(records, indent=2, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` whole (a reader never sees half a record, two writers never
    interleave); False where the directory is read-only."""
    try:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    except OSError:
        with contextlib.suppress(OSError, NameError):
            os.unlink(tmp.name)
        return False
    return True


def recorded_speed(model_dir: Path, key: str) -> Speed | None:
    return read_speeds(model_dir).get(key)
