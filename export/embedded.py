"""Derive the embedded CPU flavour of a model repository for nvidia-pytriton's ``tritonserver``.

Each production model (onnxruntime backend) becomes a Python-backend model that runs the same
``model.onnx`` with ONNX Runtime. Generated at every start, so it never drifts from the source.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from export import configs
from export.repository import CONFIG_FILE, ONNX_FILE, VERSION

MODEL_PY = Path(__file__).with_name("python_backend_model.py")


class EmptyRepositoryError(Exception):
    pass


def exported_models(repository: Path) -> list[str]:
    """Names of the complete models in a repository (config plus ONNX)."""
    if not repository.is_dir():
        return []
    return sorted(
        path.name
        for path in repository.iterdir()
        if not path.name.startswith(".")
        and (path / CONFIG_FILE).is_file()
        and (path / VERSION / ONNX_FILE).is_file()
    )


def generate(
    repository: Path,
    target: Path,
    models: list[str] | None = None,
    threads: int | None = None,
    dynamic_batching: bool = False,  # see export.configs.embedded_config
    simulated_extra_ms: int = 0,  # a slower machine on purpose, for tests and overload drills
) -> list[str]:
    """Write the embedded flavour of ``repository`` into ``target`` (replacing it)."""
    available = exported_models(repository)
    hint = "run `make export` (or `make export WEIGHTS=random` for a smoke test) first"
    if not available:
        raise EmptyRepositoryError(f"{repository} holds no exported model; {hint}")
    missing = sorted(set(models or []) - set(available))
    if missing:
        raise EmptyRepositoryError(f"{repository} lacks {', '.join(missing)}; {hint}")
    names = models or available
    shutil.rmtree(target, ignore_errors=True)
    for name in names:
        source = repository / name
        production = configs.parse((source / CONFIG_FILE).read_text())
        onnx_path = str((source / VERSION / ONNX_FILE).resolve())
        embedded = configs.embedded_config(
            production, onnx_path, threads, dynamic_batching, simulated_extra_ms
        )
        version_dir = target / name / VERSION
        version_dir.mkdir(parents=True)
        (target / name / CONFIG_FILE).write_text(
            configs.to_text(
                embedded,
                header="# Embedded CPU flavour, generated from "
                f"{source / CONFIG_FILE} by export.embedded; do not edit.\n",
            )
        )
        shutil.copyfile(MODEL_PY, version_dir / "model.py")
    return names
