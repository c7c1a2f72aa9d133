"""The embedded flavour of a model repository, for nvidia-pytriton's ``tritonserver``.

Each production model (onnxruntime backend, from ``make export``) becomes a Python-backend
model that runs the same ``model.onnx`` with ONNX Runtime or OpenVINO, whichever is measured
faster on this machine (``python_backend_model.py``, ``depthstream.engine_choice``). Generated at
every start, so it never drifts from the source.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from depthstream import engine_choice, engines, model_config, runtime
from depthstream.contract import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, Precision
from depthstream.model_config import (
    CONFIG_FILE,
    MEASURED_ON_PARAM,
    MS_PER_FRAME_PARAM,
    ONNX_FILE,
    VERSION,
    exported_models,
)

MODEL_PY = Path(__file__).with_name("python_backend_model.py")
log = logging.getLogger(__name__)


class EmptyRepositoryError(Exception):
    pass


def embedded_config(
    production: mc.ModelConfig,
    onnx_path: str,
    threads: int | None = None,
    dynamic_batching: bool = False,
    simulated_extra_ms: int = 0,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    speed: runtime.Speed | None = None,
    trt_cache: Path | None = None,
    runner: runtime.Runner = runtime.ONNXRUNTIME,
) -> mc.ModelConfig:
    """The Python-backend twin of a production config, running ``onnx_path``.

    Without the dynamic batcher by default, as measured by `make bench` on 2 cores: batches of
    four 640x480 frames ran at 1.1 frames/s against 1.9 one at a time, and the batcher's bounded
    queue policy (Triton 2.51) stalled 5-10% of requests by ~500 ms (p95 560 ms against 67 ms
    without it, Depth Anything @252 INT8). Load stays bounded upstream: the bridge keeps at
    most one request in flight per endpoint (sized from this config's one instance) and caps
    the streams. ``dynamic_batching=True`` keeps the production batcher, for the benchmark.
    """
    config = mc.ModelConfig()
    config.CopyFrom(production)
    config.ClearField("backend")
    config.ClearField("platform")
    config.ClearField("optimization")
    config.ClearField("instance_group")
    config.backend = "python"
    if not dynamic_batching:
        config.ClearField("dynamic_batching")
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    config.parameters["onnx_path"].string_value = onnx_path
    # One instance using every core: intra-op parallelism beats several competing instances
    # (one thread count for either runtime).
    config.parameters["intra_op_threads"].string_value = str(threads or os.cpu_count() or 1)
    config.parameters["engine"].string_value = str(runner.engine)
    config.parameters["precision"].string_value = str(runner.precision)
    # the contract's per-image limits, refused by the model before it runs anything
    config.parameters["max_image_pixels"].string_value = str(MAX_IMAGE_PIXELS)
    config.parameters["max_image_side"].string_value = str(MAX_IMAGE_SIDE)
    config.parameters["min_image_side"].string_value = str(MIN_IMAGE_SIDE)
    if simulated_extra_ms:
        config.parameters["simulated_extra_ms"].string_value = str(simulated_extra_ms)
    # ONNX Runtime's execution providers, best first (depthstream.accelerator chose them)
    config.parameters["providers"].string_value = ",".join(providers)
    if trt_cache is not None:  # compiled engines and models, kept across starts, out of the exports
        config.parameters["trt_cache"].string_value = str(trt_cache / "tensorrt")
        config.parameters["openvino_cache"].string_value = str(trt_cache / "openvino")
    if speed is not None:  # for the bridge's choice of a default model
        config.parameters[MS_PER_FRAME_PARAM].string_value = f"{speed.ms + simulated_extra_ms:.1f}"
        config.parameters[MEASURED_ON_PARAM].string_value = speed.machine
    return config


def servable_here(model_dir: Path) -> bool:
    """A BF16 twin judged on another machine is left out where OpenVINO runs no BF16: it would
    run FP32 on a slower path than its FP32 model's (said in the log)."""
    name = model_dir.name
    if model_config.precision_of(model_dir) != Precision.BF16 or engines.bf16_capable():
        return True
    log.warning("%s: left out: a BF16 twin, and OpenVINO runs no BF16 on this CPU", name)
    return False


def generate(
    repository: Path,
    target: Path,
    models: list[str] | None = None,
    threads: int | None = None,
    dynamic_batching: bool = False,
    simulated_extra_ms: int = 0,  # a slower machine on purpose, for tests and overload drills
    device: str = "auto",
    engine: str = "auto",
    replace: bool = True,
) -> list[str]:
    """Write the embedded flavour of ``repository`` into ``target`` (replacing it, or with
    ``replace=False`` adding these models to it), with each model's speed on this machine
    (measured once per machine and recorded beside the model)."""
    available = exported_models(repository)
    hint = "run `make export` (or `make export WEIGHTS=random` for a smoke test) first"
    if not available:
        raise EmptyRepositoryError(f"{repository} holds no exported model; {hint}")
    missing = sorted(set(models or []) - set(available))
    if missing:
        raise EmptyRepositoryError(f"{repository} lacks {', '.join(missing)}; {hint}")
    names = [name for name in models or available if servable_here(repository / name)]
    providers = tuple(runtime.wanted_providers(device))
    if engines.openvino_version() is None:
        log.warning("%s (make setup installs it)", engine_choice.NO_OPENVINO)
    if replace:
        shutil.rmtree(target, ignore_errors=True)
    for name in names:
        source = repository / name
        production = model_config.parse((source / CONFIG_FILE).read_text())
        onnx_path = str((source / VERSION / ONNX_FILE).resolve())
        choice = engine_choice.for_model(source, list(providers), threads, engine)
        log.info("%s: %s", name, choice.why)
        cache = (target.parent / "compiled" / name).resolve()
        embedded = embedded_config(
            production,
            onnx_path,
            threads,
            dynamic_batching,
            simulated_extra_ms,
            providers,
            choice.speed,
            cache,
            choice.runner,
        )
        version_dir = target / name / VERSION
        version_dir.mkdir(parents=True, exist_ok=not replace)
        header = (
            f"# Embedded flavour, generated from {source / CONFIG_FILE} by serving.repository; do not edit.\n"
        )
        (target / name / CONFIG_FILE).write_text(model_config.to_text(embedded, header))
        shutil.copyfile(MODEL_PY, version_dir / "model.py")
    return names
