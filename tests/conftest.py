"""Session fixtures: tiny random-weight checkpoints, their export, and a real tritonserver."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.contract import MODELS
from bridge.embedded_triton import EmbeddedTriton, TritonSettings
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
    for name, spec in MODELS.items():
        paths[name] = root / name
        random_weights_model(spec, tiny=True).save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="session")
def tiny_repository(tiny_checkpoints, tmp_path_factory) -> Path:
    """Both tiny models exported through `python -m export` into a model repository."""
    from export.__main__ import main

    repository = tmp_path_factory.mktemp("repo") / "model_repository"
    for name, checkpoint in tiny_checkpoints.items():
        assert main(["--model", name, "--weights", str(checkpoint), "--output", str(repository)]) == 0
    return repository


def triton_settings(repository: Path, workdir: Path, **overrides) -> TritonSettings:
    return TritonSettings(
        repository=repository,
        workdir=workdir,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        threads=1,
        **overrides,
    )


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
