"""Which ONNX Runtime a machine gets, and which execution providers run the served models.

Standard library only at import time: ``make setup`` runs it with the system Python, before the
virtualenv exists (``python3 -m depthstream.accelerator requirements SRC DST``).

- A machine with an NVIDIA GPU (``nvidia-smi -L`` lists one) installs ``onnxruntime-gpu`` with the
  CUDA and cuDNN libraries from pip (its ``cuda`` and ``cudnn`` extras) instead of ``onnxruntime``;
  any other machine installs exactly ``requirements.txt``.
- The embedded Triton runs each model with TensorRT's provider where TensorRT's libraries are
  present, else CUDA's, else the CPU's; a GPU provider that cannot start falls back to the CPU,
  with a warning (``depthstream.runtime.open_session``).
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
DEVICES = ("auto", "cpu", "cuda", "tensorrt")

CPU_PACKAGE = "onnxruntime"
# the newest GPU build on PyPI (the CPU build is one release ahead); extras bring CUDA and cuDNN
GPU_REQUIREMENT = "onnxruntime-gpu[cuda,cudnn]==1.31.1"


def nvidia_gpus(run=subprocess.run) -> list[str]:
    """The NVIDIA GPUs ``nvidia-smi -L`` lists; none when the tool or a driver is missing."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listed.returncode != 0:
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.startswith("GPU ")]


@functools.lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    """The GPUs' names (``NVIDIA H100 80GB HBM3``), looked up once per process."""
    return tuple(re.sub(r"^GPU \d+: | \(UUID: [^)]*\)$", "", line) for line in nvidia_gpus())


def wants_gpu_build(choice: str, gpus: list[str]) -> bool:
    """``choice``: auto (a GPU build where nvidia-smi lists a GPU), cpu or gpu."""
    if choice not in ("auto", "cpu", "gpu"):
        raise ValueError(f"ONNXRUNTIME must be auto, cpu or gpu, not {choice!r}")
    return choice == "gpu" or (choice == "auto" and bool(gpus))


def requirements_for(text: str, gpu_build: bool) -> str:
    """requirements.txt with its ``onnxruntime==X`` line swapped for the GPU build when wanted."""
    pattern = re.compile(rf"^{CPU_PACKAGE}==\S+$", re.M)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"requirements must pin {CPU_PACKAGE} exactly once")
    return pattern.sub(GPU_REQUIREMENT, text) if gpu_build else text


def tensorrt_present() -> bool:
    """Whether TensorRT's runtime library can be loaded (ONNX Runtime's TensorRT provider needs it)."""
    return ctypes.util.find_library("nvinfer") is not None or importlib.util.find_spec("tensorrt") is not None


def providers_for(device: str, available: list[str], has_tensorrt: bool) -> list[str]:
    """The execution providers to ask ONNX Runtime for, best first, the CPU always last.

    ``device`` auto takes the best the installed ONNX Runtime offers; cuda and tensorrt ask for
    that provider even when it is not offered, so that the fallback says why."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        return [CPU]
    if device == "tensorrt":
        return [TENSORRT, CUDA, CPU]
    if device == "cuda":
        return [CUDA, CPU]
    if TENSORRT in available and CUDA in available and has_tensorrt:
        return [TENSORRT, CUDA, CPU]
    if CUDA in available:
        return [CUDA, CPU]
    return [CPU]


# The CPU flags that decide which runtime and precision are fastest (a Xeon's model name is
# often the generic "Intel(R) Xeon(R) Processor", the same with and without AMX).
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name(cpuinfo: str | None = None) -> str:
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else "unknown CPU"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    found = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return frozenset(found.group(1).split()) if found else frozenset()


def matrix_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The flags of MATRIX_FLAGS this CPU has, in that order."""
    flags = cpu_flags(cpuinfo)
    return tuple(flag for flag in MATRIX_FLAGS if flag in flags)


def has_bf16_engine(cpuinfo: str | None = None) -> bool:
    """A BF16 matrix engine (AMX or AVX512-BF16): where reduced precision can pay."""
    return bool(BF16_FLAGS & cpu_flags(cpuinfo))


def cpu_identity(cpuinfo: str | None = None) -> str:
    """The CPU as a speed record names it: model name and the flags that matter."""
    flags = matrix_flags(cpuinfo)
    return f"{cpu_name(cpuinfo)} [{' '.join(flags) or 'no AVX2'}]"


def _write_requirements(source: str, target: str, choice: str) -> int:
    gpus = nvidia_gpus()
    gpu_build = wants_gpu_build(choice, gpus)
    Path(target).write_text(requirements_for(Path(source).read_text(), gpu_build))
    if gpu_build:
        found = gpus[0] if gpus else "none found; ONNXRUNTIME=gpu asked for it"
        print(f"setup: ONNX Runtime GPU build ({GPU_REQUIREMENT}); NVIDIA GPU: {found}", file=sys.stderr)
    else:
        why = "ONNXRUNTIME=cpu" if choice == "cpu" else "nvidia-smi lists no NVIDIA GPU"
        print(f"setup: ONNX Runtime CPU build ({why})", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "requirements":
        print("usage: python -m depthstream.accelerator requirements SRC DST", file=sys.stderr)
        return 2
    try:
        return _write_requirements(argv[1], argv[2], os.environ.get("ONNXRUNTIME", "auto"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
