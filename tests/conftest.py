"""Session fixtures: tiny random-weight checkpoints, their export, and a real tritonserver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from depthstream.contract import EXPORTABLE
from serving.triton import EmbeddedTriton, TritonSettings
from tests.helpers import free_port

# Tests never reach the Hugging Face hub; the loading code is exercised on local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny versions of both architectures, with structured output, saved with save_pretrained."""
    from export.architectures import random_weights_model

    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name, spec in EXPORTABLE.items():
        paths[name] = root / name
        random_weights_model(spec, tiny=True).save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="session")
def tiny_repository(tiny_checkpoints, tmp_path_factory) -> Path:
    """Both tiny checkpoints exported through `python -m export`: every preset, INT8 included."""
    from export.__main__ import main

    repository = tmp_path_factory.mktemp("repo") / "model_repository"
    for name, checkpoint in tiny_checkpoints.items():
        args = [
            "--model",
            name,
            "--weights",
            str(checkpoint),
            "--output",
            str(repository),
            "--int8",
            "always",
        ]
        assert main(args) == 0
    return repository


def triton_settings(repository: Path, workdir: Path, **overrides) -> TritonSettings:
    return TritonSettings.on_free_ports(repository, workdir, threads=1, **overrides)


def slowed_triton(repository: Path, workdir: Path, slow_ms: int, name: str) -> EmbeddedTriton:
    """A tritonserver serving the reference Depth Anything model only, each run ``slow_ms``
    slower: a slow machine, on purpose (use it as a context manager)."""
    settings = triton_settings(
        repository, workdir, models=("depth_anything_v2_small",), simulated_extra_ms=slow_ms
    )
    return EmbeddedTriton(settings, log_path=ARTIFACTS / f"tritonserver-{name}.log")


@pytest.fixture(scope="session")
def triton(tiny_repository, tmp_path_factory) -> EmbeddedTriton:
    """A real tritonserver serving both tiny models, for the whole session."""
    workdir = tmp_path_factory.mktemp("triton")
    ARTIFACTS.mkdir(exist_ok=True)
    server = EmbeddedTriton(
        triton_settings(tiny_repository, workdir), log_path=ARTIFACTS / "tritonserver.log"
    )
    server.start()
    yield server
    server.stop()


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

    return BridgeSettings(port=free_port(), triton_url=triton_url, **overrides).validate()


@pytest.fixture(scope="session")
def bridge(triton) -> RunningBridge:
    """The bridge most tests stream through. Its default model is set: the automatic choice
    depends on the tiny models' speed on this machine (tests/test_default_model.py tests it)."""
    settings = bridge_settings(
        triton.settings.grpc_url,
        default_model="depth_anything_v2_small",
        triton_shm_key=triton.settings.shm_key,
    )  # as make demo runs it: frames through shared memory
    with RunningBridge(settings) as running:
        yield running


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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with a fake camera and WebGL on SwiftShader, for one test module (the
    Playwright sync API keeps an event loop running while it is open: asyncio.run would fail)."""
    from playwright import sync_api  # a requirement of the suite: missing, the tests fail

    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item (the browser test screenshots failures)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
