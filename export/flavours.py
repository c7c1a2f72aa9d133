"""Other flavours of the model repository, from the same contract and the same exports.

``python -m export.flavours cpu``: the onnxruntime backend on CPU instances, no TensorRT: for the
NGC Triton image on a CPU-only cluster (deploy/k8s/overlays/cpu).
``python -m export.flavours tensorrt_plan``: configs for the plans that build_plans.sh built.
(The embedded flavour, for nvidia-pytriton's tritonserver, is serving.repository.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from depthstream.contract import MODELS
from depthstream.model_config import CONFIG_FILE, ONNX_FILE, VERSION, exported_models
from export import configs
from export.repository import read_manifest


def _random_weights(source: Path, name: str) -> bool:
    manifest = read_manifest(source / name)
    return bool(manifest and manifest.random_weights)


def cpu_config(name: str, random_weights: bool) -> mc.ModelConfig:
    config = configs.onnxruntime_config(MODELS[name], random_weights, tensorrt_fp16=False)
    del config.instance_group[:]
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return config


def write_cpu(source: Path, target: Path) -> list[Path]:
    written = []
    for name in exported_models(source):
        version_dir = target / name / VERSION
        version_dir.mkdir(parents=True, exist_ok=True)
        onnx = version_dir / ONNX_FILE
        onnx.unlink(missing_ok=True)
        try:
            os.link(source / name / VERSION / ONNX_FILE, onnx)  # no second copy of the weights
        except OSError:
            shutil.copyfile(source / name / VERSION / ONNX_FILE, onnx)
        path = target / name / CONFIG_FILE
        path.write_text(configs.to_text(cpu_config(name, _random_weights(source, name))))
        written.append(path)
    return written


def write_plans(source: Path, target: Path) -> list[Path]:
    written = []
    for name, spec in MODELS.items():
        if not (target / name / VERSION / "model.plan").is_file():
            continue
        path = target / name / CONFIG_FILE
        path.write_text(configs.to_text(configs.tensorrt_plan_config(spec, _random_weights(source, name))))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.flavours",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("flavour", choices=["cpu", "tensorrt_plan"])
    parser.add_argument("--source", type=Path, default=Path("model_repository"))
    parser.add_argument("--target", type=Path)
    args = parser.parse_args(argv)
    target = args.target or Path(
        {"cpu": "model_repository_cpu", "tensorrt_plan": "model_repository_trt"}[args.flavour]
    )
    written = (write_cpu if args.flavour == "cpu" else write_plans)(args.source, target)
    if not written:
        hint = "run `make export` first" if args.flavour == "cpu" else "run `make plans` on a GPU machine"
        print(f"error: nothing to write under {target}; {hint}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
