"""The real servers the integration tests run: an embedded tritonserver's settings, a real
uvicorn serving the bridge in a thread, and headless Chromium's flags. The fixtures that hold
them for a session live in conftest.py; test modules import from here, never from conftest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from serving.triton import EmbeddedTriton, TritonSettings
from tests.helpers import free_port

# `make test-fast` sets it: a test that starts a real server there lacks its `integration` marker
FAST_ONLY = os.environ.get("DEPTHSTREAM_TESTS_FAST_ONLY") == "1"


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def triton_settings(repository: Path, workdir: Path, **overrides) -> TritonSettings:
    return TritonSettings.on_free_ports(repository, workdir, threads=1, **overrides)


def slowed_triton(repository: Path, workdir: Path, slow_ms: int, name: str) -> EmbeddedTriton:
    """A tritonserver serving the reference Depth Anything model only, each run ``slow_ms``
    slower: a slow machine, on purpose (use it as a context manager)."""
    settings = triton_settings(
        repository, workdir, models=("depth_anything_v2_small",), simulated_extra_ms=slow_ms
    )
    return EmbeddedTriton(settings, log_path=ARTIFACTS / f"tritonserver-{name}.log")


class RunningBridge:
    """A real uvicorn serving the bridge app in a background thread."""

    def __init__(self, settings) -> None:
        import threading

        from bridge.server import build_server

        self.settings = settings
        self.server = build_server(settings)
        self.server.config.log_level = "warning"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.settings.port}/ws"

    def __enter__(self) -> RunningBridge:
        import time

        refuse_in_fast_run("a real uvicorn")

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def bridge_settings(triton_url: str, **overrides):
    from bridge.settings import BridgeSettings

    return BridgeSettings(port=free_port(), triton_url=triton_url, **overrides)  # validated as built


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",  # a synthetic camera (a moving test pattern)
    "--use-fake-ui-for-media-stream",  # allow the camera without a prompt
    "--no-sandbox",
    # WebGL for the 3D view without a GPU: ANGLE on SwiftShader, Chromium's software renderer
    # (explicitly: Chromium is retiring the automatic fallback to it)
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    # this machine has no internet: no background connections
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def refuse_in_fast_run(what: str) -> None:
    """In `make test-fast`, starting ``what`` is a mis-marked test: fail it, saying so."""
    if FAST_ONLY:
        import pytest

        pytest.fail(
            f"this test starts {what}: mark it integration (tests/conftest.py assigns it from fixtures)"
        )
