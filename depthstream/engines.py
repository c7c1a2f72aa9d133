"""The two CPU runtimes a served model can run on: ONNX Runtime and OpenVINO, on one model.onnx.

OpenVINO reads the exported ONNX (dynamic shapes and all) as it is. Its session here looks like
an ONNX Runtime session to the code that runs one (``run`` and ``get_providers``), so timing,
serving and the benchmark treat both alike (``depthstream.runtime.infer``).

Precision is always set explicitly: OpenVINO's CPU plugin defaults to BF16 where the CPU has a
BF16 matrix engine (AMX), and an FP32 name must be served in FP32.

OpenVINO is imported inside the functions: the bridge imports this package without it.
"""

from __future__ import annotations

import enum
import functools
import importlib.util
import tempfile
from pathlib import Path

import numpy as np


class Engine(enum.StrEnum):
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class InferencePrecision(enum.StrEnum):
    """OpenVINO's inference precision hint (ONNX Runtime runs the graph's own types)."""

    F32 = "f32"
    BF16 = "bf16"


ENGINE_CHOICES = ("auto", *Engine)  # auto: the faster one on this machine, measured
OPENVINO_PREFIX = "OpenVINO CPU"  # what an OpenVINO session reports as its provider
# What changes an OpenVINO timing besides the machine (part of its speed record's key)
OPENVINO_SETTINGS = "latency hint, one stream"


@functools.lru_cache(maxsize=1)
def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        import openvino as ov

        return ov.get_version().split("-")[0]
    except Exception:  # noqa: BLE001 - a broken install is an absent one, said by the caller
        return None


# Where a BF16 twin keeps FP32: everything the export fused around the network (its nodes are
# named outside the traced ``network`` module: the uint8 -> float, the bicubic resize in, the
# resize back) and the position-embedding interpolation, which is a resize too; the patch
# projection, attention, MLP and head run in BF16.
NETWORK_SCOPE = "/network/"
FP32_SCOPES_IN_NETWORK = ("/network/backbone/embeddings/",)
BF16_SCOPES_IN_FP32 = ("/network/backbone/embeddings/patch_embeddings/",)
# OpenVINO's run-time attribute that keeps a node in its original precision under a reduced
# inference precision (ov::disable_fp16_compression; the CPU plugin honours it for BF16 too)
KEEP_PRECISION = "disable_fp16_compression_0"


def stays_fp32(node_name: str) -> bool:
    """Whether a node of the exported graph keeps FP32 in a BF16 twin."""
    if not node_name.startswith(NETWORK_SCOPE):
        return True
    return node_name.startswith(FP32_SCOPES_IN_NETWORK) and not node_name.startswith(BF16_SCOPES_IN_FP32)


@functools.lru_cache(maxsize=1)
def bf16_capable() -> bool:
    """Whether OpenVINO's CPU plugin runs BF16 here (a BF16 matrix engine: AMX or AVX512-BF16).
    Elsewhere a BF16 hint silently runs FP32."""
    if openvino_version() is None:
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_cache_dir() -> Path:
    """OpenVINO's compiled-model cache: never beside the model (the repository may be read-only)."""
    return Path(tempfile.gettempdir()) / "depthstream-openvino-cache"


def is_openvino(provider: str) -> bool:
    return provider.startswith(OPENVINO_PREFIX)


def compile_properties(threads: int, precision: InferencePrecision, cache_dir: Path | None) -> dict[str, str]:
    """OpenVINO's settings for a served model: one stream of ``threads`` threads, latency first
    (one frame at a time, as the embedded Triton runs them), the precision explicit."""
    properties = {
        "INFERENCE_PRECISION_HINT": str(precision),
        "INFERENCE_NUM_THREADS": str(threads),
        "NUM_STREAMS": "1",
        "PERFORMANCE_HINT": "LATENCY",
    }
    if cache_dir is not None:
        properties["CACHE_DIR"] = str(cache_dir)
    return properties


def usable_cache(directory: Path) -> Path | None:
    """The compiled-model cache, made if need be; None where it cannot be (no cache: each start
    compiles again, which is slower but correct)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return directory


class OpenVinoSession:
    """An exported model.onnx compiled by OpenVINO for the CPU, run one request at a time."""

    def __init__(
        self, path: Path | str, threads: int, precision: InferencePrecision, cache_dir: Path | None = None
    ):
        import openvino as ov

        self.precision = InferencePrecision(precision)
        core = ov.Core()
        cache: Path | None = usable_cache(cache_dir if cache_dir is not None else default_cache_dir())
        model = str(path)
        if self.precision != InferencePrecision.F32:
            model = core.read_model(model)
            self.kept_fp32 = keep_pre_and_post_in_fp32(model)
        self.compiled = core.compile_model(model, "CPU", compile_properties(threads, self.precision, cache))
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]

    def get_providers(self) -> list[str]:
        return [f"{OPENVINO_PREFIX} {self.precision}"]

    def get_inputs(self) -> list:
        return [_Named(name) for name in self.input_names]

    def get_outputs(self) -> list:
        return [_Named(name) for name in self.output_names]

    def run(self, output_names, feeds: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        """ONNX Runtime's ``run``: the named outputs, copied out of OpenVINO's buffers (the next
        run reuses them)."""
        self.request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
        wanted = output_names or self.output_names
        return [np.array(self.request.get_tensor(name).data, copy=True) for name in wanted]


def keep_pre_and_post_in_fp32(model) -> int:
    """Mark the nodes that ``stays_fp32`` names; returns how many were marked."""
    marked = 0
    for node in model.get_ops():
        if stays_fp32(node.get_friendly_name()):
            node.get_rt_info()[KEEP_PRECISION] = ""
            marked += 1
    return marked


class _Named:
    """What ``get_inputs`` and ``get_outputs`` give: something with a ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
