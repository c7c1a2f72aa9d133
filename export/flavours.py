"""Other flavours of the model repository, from the same contract and the same exports.

``python -m export.flavours cpu``: the onnxruntime backend on CPU instances, no TensorRT: for the
NGC Triton image on a CPU-only cluster (deploy/k8s/overlays/cpu).
``python -m export.flavours openvino``: the openvino backend of the same NGC image, for Intel CPU
nodes (deploy/k8s/overlays/cpu-intel), with the same names and tensors.
``python -m export.flavours tensorrt_plan``: configs for the plans that build_plans.sh built.
(The embedded flavour, for nvidia-pytriton's tritonserver, is serving.repository.)

What the openvino backend of the pinned image (24.10: OpenVINO 2024.4; its main branch is the
same) exposes, read from its source: ``PERFORMANCE_HINT``, ``NUM_STREAMS``,
``INFERENCE_NUM_THREADS`` and ``HINT_BF16`` (YES only), no compiled-model cache setting, and a
static batch of ``max_batch_size`` (smaller batches refused unless padded). What follows:

- No way to ask for FP32: on a CPU with a BF16 matrix engine (AMX) OpenVINO's default runs the
  whole graph in BF16, measured broken for these graphs (correlation 0.964 on a Xeon with AMX). So the
  flavour is for Intel nodes without one (AVX-512, VNNI), where the default is FP32: the overlay
  (deploy/k8s/overlays/cpu-intel) keeps it off AMX nodes, which keep overlays/cpu.
- BF16 twins are left out: their FP32 pre/post is a run-time mark (engines.KEEP_PRECISION) that
  an IR file does not carry (ov.save_model drops it: checked in the tests), so the backend
  would run them wholly in BF16. INT8 twins are left out: OpenVINO ran their dynamic-INT8 graph
  slower than ONNX Runtime.
- No compiled-model cache: each start compiles (seconds per model).
- The batch dimension is the model's own (``max_batch_size: 0``, dims ``[-1, -1, -1, 3]``), so
  a single frame runs as one, unpadded.

Not run here: no container engine on the machines this was built on; the configs are checked
with Triton's protobuf and the IRs with the openvino wheel.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from depthstream import model_config
from depthstream.contract import ModelSpec, Precision
from depthstream.model_config import CONFIG_FILE, ONNX_FILE, VERSION, exported_models
from export import configs
from export.da3 import DEPTH_ANYTHING_3
from export.repository import read_manifest


def _random_weights(source: Path, name: str) -> bool:
    manifest = read_manifest(source / name)
    return bool(manifest and manifest.random_weights)


def spec_in(source: Path, name: str) -> ModelSpec | None:
    """A model's spec as its exported config records it (curated or added: the repository is
    the catalog); None, said, for one whose config records none."""
    try:
        return model_config.spec_of(model_config.parse((source / name / CONFIG_FILE).read_text()))
    except (OSError, ValueError, text_format.ParseError) as exc:
        print(f"{name}: left out ({exc})")
        return None


def cpu_config(spec: ModelSpec, random_weights: bool) -> mc.ModelConfig:
    config = configs.onnxruntime_config(spec, random_weights, tensorrt_fp16=False)
    del config.instance_group[:]
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return config


def write_cpu(source: Path, target: Path) -> list[Path]:
    written = []
    for name in exported_models(source):
        spec = spec_in(source, name)
        if spec is None:
            continue
        if spec.precision == Precision.BF16:  # OpenVINO's: the onnxruntime backend would run FP32
            print(f"{name}: left out of the cpu flavour (a BF16 twin: the openvino flavour serves it)")
            continue
        version_dir = target / name / VERSION
        version_dir.mkdir(parents=True, exist_ok=True)
        onnx = version_dir / ONNX_FILE
        onnx.unlink(missing_ok=True)
        try:
            os.link(source / name / VERSION / ONNX_FILE, onnx)  # no second copy of the weights
        except OSError:
            shutil.copyfile(source / name / VERSION / ONNX_FILE, onnx)
        path = target / name / CONFIG_FILE
        path.write_text(configs.to_text(cpu_config(spec, _random_weights(source, name))))
        written.append(path)
    return written


IR_FILE = "model.xml"


def openvino_config(spec: ModelSpec, random_weights: bool) -> mc.ModelConfig:
    """The openvino backend's config for one model: latency first, one stream, batch in the model."""
    config = configs.onnxruntime_config(spec, random_weights, tensorrt_fp16=False)
    config.ClearField("dynamic_batching")  # needs max_batch_size > 0, which this backend pads
    config.backend = "openvino"
    config.max_batch_size = 0
    for tensor in (*config.input, *config.output):
        tensor.dims.insert(0, -1)
    config.default_model_filename = IR_FILE
    del config.instance_group[:]
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    config.parameters["NUM_STREAMS"].string_value = "1"
    config.parameters["PERFORMANCE_HINT"].string_value = "LATENCY"
    return config


def openvino_ir(onnx: Path, target: Path) -> None:
    """The exported graph as an OpenVINO IR, its weights in FP32 as exported (save_model would
    compress them to FP16 by default)."""
    import openvino as ov

    ov.save_model(ov.Core().read_model(str(onnx)), str(target), compress_to_fp16=False)


def openvino_left_out(spec: ModelSpec) -> str | None:
    precision = spec.precision
    if precision == Precision.INT8:
        return "an INT8 twin: OpenVINO ran its dynamic-INT8 graph slower than ONNX Runtime"
    if precision == Precision.BF16:
        return "a BF16 twin: its FP32 pre/post cannot travel in an IR, so the backend would run it wholly in BF16"
    if spec.model_type == DEPTH_ANYTHING_3:
        return (
            "Depth Anything 3: OpenVINO 2026.4's CPU plugin cannot run its graph (it sizes the "
            "resize matrices at hundreds of GB); the cpu flavour serves it"
        )
    return None


def write_openvino(source: Path, target: Path) -> list[Path]:
    written = []
    for name in exported_models(source):
        spec = spec_in(source, name)
        if spec is None:
            continue
        why = openvino_left_out(spec)
        if why is not None:
            print(f"{name}: left out of the openvino flavour ({why})")
            continue
        version_dir = target / name / VERSION
        version_dir.mkdir(parents=True, exist_ok=True)
        openvino_ir(source / name / VERSION / ONNX_FILE, version_dir / IR_FILE)
        path = target / name / CONFIG_FILE
        path.write_text(configs.to_text(openvino_config(spec, _random_weights(source, name))))
        written.append(path)
    return written


def write_plans(source: Path, target: Path) -> list[Path]:
    written = []
    for name in exported_models(source):
        if not (target / name / VERSION / "model.plan").is_file():
            continue
        spec = spec_in(source, name)
        if spec is None:
            continue
        path = target / name / CONFIG_FILE
        path.write_text(configs.to_text(configs.tensorrt_plan_config(spec, _random_weights(source, name))))
        written.append(path)
    return written


WRITERS = {"cpu": write_cpu, "openvino": write_openvino, "tensorrt_plan": write_plans}
TARGETS = {"cpu": "cpu", "openvino": "openvino", "tensorrt_plan": "trt"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.flavours",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("flavour", choices=list(WRITERS))
    parser.add_argument("--source", type=Path, default=Path("model_repository"))
    parser.add_argument("--target", type=Path)
    args = parser.parse_args(argv)
    target = args.target or Path(f"model_repository_{TARGETS[args.flavour]}")
    written = WRITERS[args.flavour](args.source, target)
    if not written:
        hint = (
            "run `make plans` on a GPU machine"
            if args.flavour == "tensorrt_plan"
            else "run `make export` first"
        )
        print(f"error: nothing to write under {target}; {hint}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
