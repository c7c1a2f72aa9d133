"""Session fixtures: tiny random-weight checkpoints, their export, and a real tritonserver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from depthstream.contract import EXPORTABLE
from serving.triton import EmbeddedTriton
from tests.servers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, RunningBridge, bridge_settings, triton_settings

# Tests never reach the Hugging Face hub; the loading code is exercised on local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny versions of every curated architecture, with structured output, saved as their hub
    checkpoints are (save_pretrained; Depth Anything 3 as its package saves it)."""
    from export.architectures import random_weights_model
    from export.da3 import DEPTH_ANYTHING_3
    from tests.tiny_da3 import save_tiny

    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name, spec in EXPORTABLE.items():
        paths[name] = root / name
        if spec.model_type == DEPTH_ANYTHING_3:
            save_tiny(paths[name])
        else:
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


# What makes a test an integration test: a fixture that runs a real tritonserver, uvicorn or
# browser (the closure of a test's fixtures counts: strict_bridge uses triton). A test that
# starts one itself says so with @pytest.mark.integration; `make test-fast` fails one that
# does not (servers.refuse_in_fast_run).
SERVER_FIXTURES = frozenset({"triton", "bridge", "browser", "own_triton", "slow_triton", "two_tritons"})
# ...and an export test: the tiny models exported once per session (about a minute here), or
# each transformers family exported with --checkpoint (tests/test_any_checkpoint.py)
EXPORT_FIXTURES = frozenset(
    {
        "tiny_checkpoints",
        "tiny_repository",
        "family_checkpoints",
        "added_repository",
        "tiny_da3",
        "da3_repository",
    }
)


def pytest_collection_modifyitems(items):
    for item in items:
        used = set(item.fixturenames)
        if SERVER_FIXTURES & used or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.integration)
        if EXPORT_FIXTURES & used:
            item.add_marker(pytest.mark.export)


@pytest.fixture(autouse=True)
def no_server_in_a_fast_run(monkeypatch):
    """In `make test-fast`, a real tritonserver launched is a mis-marked test (one refused
    before it launches, a taken port say, is not)."""
    import serving.triton
    from tests.servers import FAST_ONLY, refuse_in_fast_run

    if FAST_ONLY:
        real_command = serving.triton.command

        def command(*args, **kwargs):
            refuse_in_fast_run("a real tritonserver")
            return real_command(*args, **kwargs)

        monkeypatch.setattr(serving.triton, "command", command)
