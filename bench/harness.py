"""What the benchmarks share: the machine's description, an embedded Triton and a bridge of their
own on free ports."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from depthstream import accelerator
from serving.triton import TritonSettings, free_port

ROOT = Path(__file__).resolve().parent.parent


def server_settings(repository: Path, workdir: Path, **options) -> TritonSettings:
    """An embedded Triton of the benchmark's own, on free ports."""
    return TritonSettings.on_free_ports(repository, workdir, **options)


def machine() -> str:
    """The machine a figure was measured on: cores, CPU with the matrix flags that decide the
    fastest runtime (AMX, AVX512-BF16, VNNI), GPUs (looked up, never assumed), OS."""
    found = accelerator.gpu_names()
    gpu = f"{len(found)} GPU ({', '.join(found)})" if found else "no GPU"
    return (
        f"{os.cpu_count()} cores ({accelerator.cpu_identity()}), {gpu}, "
        f"{platform.system()} {platform.release().split('-')[0]}"
    )


def commit() -> str:
    """The commit the figures are measured on, marked when the working tree differs from it."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # the measurements' own outputs do not make the code another
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit (no git)"
    return f"commit {sha}" + (" with uncommitted changes" if dirty else "")


def provenance() -> str:
    """Where and when a figure comes from: the machine, the date (UTC) and the commit."""
    return f"{machine()}, {time.strftime('%Y-%m-%d', time.gmtime())}, {commit()}"


def load_network(repository: Path, name: str):
    """The PyTorch model the export used (same source, same random seed in smoke mode)."""
    from depthstream.contract import MODELS
    from export.checkpoints import load_checkpoint
    from export.repository import read_manifest

    manifest = read_manifest(repository / name)
    if manifest is None:
        raise RuntimeError(f"{repository / name} has no export manifest: run `make export` again")
    spec = MODELS[name]
    weights = None if manifest.source in ("random", spec.hub_id) else Path(manifest.source)
    return load_checkpoint(spec, weights, manifest.random_weights).model


def run_alone(run, readme: Path | None) -> int:
    """``python -m bench.<measurement> [REPOSITORY]``: one measurement on its own, into
    bench/results/ (and its docs page where given)."""
    repository = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "model_repository"
    output = ROOT / "bench" / "results"
    output.mkdir(parents=True, exist_ok=True)
    run(repository, output, provenance(), readme)
    return 0


class Bridge:
    """The bridge as its own process, as in production (``extra``: more flags; ``log``: where
    its output goes). ``stop`` is SIGTERM, as a pod deletion: the bridge drains its streams."""

    def __init__(
        self, grpc_url: str, *extra: str, log: Path | None = None, shm_key: str = "", port: int | None = None
    ) -> None:
        self.port = port or free_port()  # a port of its own: a bridge started again keeps its port
        self.log = log.open("a") if log is not None else None
        args = ["--port", str(self.port), "--triton-url", grpc_url, *extra, "--log-level", "warning"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT if log else None,
            # Triton's shared-memory key, as make demo hands it over: a secret, so not a flag
            env={**os.environ, "BRIDGE_TRITON_SHM_KEY": shm_key},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/readyz", timeout=1)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the bridge did not become ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def metric(self, name: str) -> float:
        """The sum of the samples whose line starts with ``name`` on the bridge's /metrics."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        if self.log is not None:
            self.log.close()
