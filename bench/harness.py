"""What the benchmarks share: the machine's description, an embedded Triton and a bridge of their
own on free ports."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from depthstream import accelerator
from serving.triton import TritonSettings, free_port

ROOT = Path(__file__).resolve().parent.parent


def server_settings(repository: Path, workdir: Path, **options) -> TritonSettings:
    """An embedded Triton of the benchmark's own, on free ports."""
    return TritonSettings.on_free_ports(repository, workdir, **options)


def machine() -> str:
    """The machine a figure was measured on: cores, CPU, GPUs (looked up, never assumed), OS."""
    found = accelerator.gpu_names()
    gpu = f"{len(found)} GPU ({', '.join(found)})" if found else "no GPU"
    return (
        f"{os.cpu_count()} cores ({accelerator.cpu_name()}), {gpu}, "
        f"{platform.system()} {platform.release().split('-')[0]}"
    )


class Bridge:
    """The bridge as its own process, as in production."""

    def __init__(self, grpc_url: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "--port",
                str(self.port),
                "--triton-url",
                grpc_url,
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        import urllib.request

        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the bridge did not become ready")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
