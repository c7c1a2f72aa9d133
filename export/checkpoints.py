"""Load a depth checkpoint: a Hugging Face hub id, or a local ``save_pretrained`` directory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModelForDepthEstimation, PreTrainedModel

from depthstream.contract import ModelSpec

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: PreTrainedModel  # or Depth Anything 3's network (export.da3), an nn.Module
    source: str  # hub id, local directory, or "random"
    random_weights: bool


def offline_message(spec: ModelSpec, reason: str) -> str:
    return (
        f"cannot download {spec.hub_id} for {spec.name} ({reason}). "
        f"Point the export at a local checkpoint with --weights DIR (a save_pretrained directory), "
        f"or run a smoke export with meaningless output with --random-weights "
        f"(make export WEIGHTS=random)."
    )


def download(spec: ModelSpec) -> Path:
    """Download the checkpoint from the hub (with huggingface_hub's progress bars)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    log.info("downloading %s from the Hugging Face hub", spec.hub_id)
    try:
        path = snapshot_download(
            spec.hub_id,
            allow_patterns=["config.json", "*.safetensors", "*.json"],
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(offline_message(spec, type(exc).__name__)) from None
    return Path(path)


def check_directory(spec: ModelSpec, directory: Path) -> None:
    """Refuse a directory that is missing or holds another architecture, with a clear message."""
    if not directory.is_dir():
        raise CheckpointError(f"--weights {directory}: no such directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"--weights {directory}: no config.json; expected a save_pretrained directory of {spec.hub_id}"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"--weights {directory}: config.json is not valid JSON ({exc})") from None
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type != spec.model_type or (architectures and spec.architecture not in architectures):
        raise CheckpointError(
            f"--weights {directory}: holds a {model_type!r} checkpoint "
            f"({', '.join(architectures) or 'no architectures listed'}), but {spec.name} needs "
            f"{spec.architecture} (model_type {spec.model_type!r}, like {spec.hub_id})"
        )
    check_depth_kind(spec, directory, config)


def check_depth_kind(spec: ModelSpec, directory: Path, config: dict) -> None:
    """A relative and a metric Depth Anything share model_type and architecture: refuse one for
    the other (its depth would be served in the wrong units), and a metric head of another range."""
    if spec.model_type != "depth_anything":
        return
    kind = config.get("depth_estimation_type", "relative")
    if kind != str(spec.depth):
        raise CheckpointError(
            f"--weights {directory}: holds a {kind} depth checkpoint, but {spec.name} is {spec.depth} "
            f"(like {spec.hub_id})"
        )
    if spec.max_depth_m is not None and config.get("max_depth") != spec.max_depth_m:
        raise CheckpointError(
            f"--weights {directory}: its metric head reaches {config.get('max_depth')} m, but {spec.name} "
            f"is the {spec.max_depth_m} m model (like {spec.hub_id})"
        )


def load_pretrained(spec: ModelSpec, directory: Path, source: str) -> LoadedCheckpoint:
    check_directory(spec, directory)
    try:
        model = AutoModelForDepthEstimation.from_pretrained(directory)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load {source} as {spec.name}: {exc}") from None
    if type(model).__name__ != spec.architecture:
        raise CheckpointError(f"{source} loads as {type(model).__name__}, not {spec.architecture}")
    return LoadedCheckpoint(model.eval(), source, random_weights=False)


def load_checkpoint(spec: ModelSpec, weights: Path | None, random_weights: bool) -> LoadedCheckpoint:
    if random_weights:
        from export.architectures import random_weights_model

        log.info(  # `python -m export` says it once, above its progress
            "%s: RANDOM WEIGHTS (--random-weights): a smoke model whose depth is MEANINGLESS",
            spec.name,
        )
        return LoadedCheckpoint(random_weights_model(spec), "random", random_weights=True)
    if weights is not None:
        return load_pretrained(spec, weights, str(weights))
    return load_pretrained(spec, download(spec), spec.hub_id)
