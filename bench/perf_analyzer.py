"""Triton's own load generator, ``perf_analyzer``, on the same frames.

The ``tritonclient`` 2.45 wheel ships the binary (newer wheels do not); it cannot share the
virtualenv with nvidia-pytriton (which needs tritonclient ~= 2.50), so `make bench` downloads
that one wheel with pip into build/ and runs the binary from there. It needs two libraries that
nvidia-pytriton bundles under other names: libb64 and libcudart (linked, never used on CPU).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from bench.measure import Result

WHEEL = "tritonclient==2.45.0"
MEMBER = "tritonclient-2.45.0.data/data/bin/perf_analyzer"


def ensure_binary(workdir: Path) -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment it runs in; downloads the wheel once."""
    binary = workdir / "bin" / "perf_analyzer"
    libs = workdir / "libs"
    if not binary.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), WHEEL],
            check=True,
        )
        (wheel,) = workdir.glob("tritonclient-2.45.0-*.whl")
        binary.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            binary.write_bytes(archive.read(MEMBER))
        binary.chmod(0o755)
    import pytriton

    bundled = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    libs.mkdir(exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        link = libs / name
        if not link.exists():
            link.symlink_to(next(bundled.glob(pattern)))
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")])),
    }
    return binary, env


def measured_requests(profile: Path) -> tuple[int, float]:
    """Requests perf_analyzer completed and the seconds they spanned, counted from its own
    per-request export (every trial), not derived from its rate. (-1, nan) if it wrote none."""
    try:
        # the export embeds the raw input bytes: not all of it is UTF-8
        experiments = json.loads(profile.read_bytes().decode(errors="replace"))["experiments"]
    except (OSError, ValueError, KeyError):
        return -1, float("nan")
    requests = [r for e in experiments for r in e.get("requests", []) if r.get("response_timestamps")]
    if not requests:
        return 0, float("nan")
    start = min(r["timestamp"] for r in requests)
    end = max(r["response_timestamps"][-1] for r in requests)
    return len(requests), round((end - start) / 1e9, 2)


def run(
    binary: Path,
    env: dict[str, str],
    workdir: Path,
    url: str,
    model: str,
    frame: np.ndarray,
    concurrency: int,
    window_ms: int,
) -> Result:
    data = workdir / "input"
    data.mkdir(exist_ok=True)
    (data / "IMAGE").write_bytes(np.ascontiguousarray(frame).tobytes())  # raw bytes of a real photo
    report = workdir / f"{model}-c{concurrency}.csv"
    profile = workdir / f"{model}-c{concurrency}.json"
    profile.unlink(missing_ok=True)
    args = [
        *("-m", model, "-u", url, "-i", "grpc", "-b", "1"),
        f"--shape=IMAGE:{frame.shape[0]},{frame.shape[1]},3",
        f"--input-data={data}",
        f"--concurrency-range={concurrency}:{concurrency}",
        f"--measurement-interval={window_ms}",
        *("--stability-percentage=50", "--max-trials=4"),
        *("-f", str(report), f"--profile-export-file={profile}"),
    ]
    subprocess.run([str(binary), *args], check=True, env=env, capture_output=True, text=True, timeout=600)
    with report.open() as handle:
        row = next(csv.DictReader(handle))
    fps = float(row["Inferences/Second"])
    p50, p95, p99 = (round(float(row[f"p{q} latency"]) / 1e3, 1) for q in (50, 95, 99))  # microseconds
    frames, seconds = measured_requests(profile)
    return Result(
        "perf_analyzer (Triton gRPC)",
        model,
        f"{frame.shape[1]}x{frame.shape[0]}",
        concurrency,
        frames=frames,
        seconds=seconds,
        fps=round(fps, 2),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        cpu_ms_per_frame=float("nan"),
    )
